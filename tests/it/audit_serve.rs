//! `certshift audit` against the reference service in each enforcement
//! mode: real handshakes over loopback, verdicts read from the audit's own
//! report. The contract: `strict` passes every check but the mutations
//! webpki is lenient about (see [`WEBPKI_LENIENT`]); `permissive` fails
//! exactly `plaintext` and `no-client-cert`; `optional` fails exactly
//! `no-client-cert`; `any-ca` fails exactly the CA-trust checks.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use certshift::audit::{self, AuditArgs, AuditReport, Verdict};
use certshift::pki::PkiOptions;
use certshift::serve::{Enforcement, ServeArgs};
use common::{serve_args, start_serve_with, RunningServe, TestPki};

fn intermediate_pki() -> TestPki {
    TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    })
}

/// Only order-service may call /api/orders/*: the isolation check's
/// other identity (checkout-service) must get 403 there.
fn policy(pki: &TestPki) -> PathBuf {
    let path = pki.file("policy.toml");
    std::fs::write(
        &path,
        "[[rules]]\npaths = [\"/api/orders/*\"]\nprincipals = [\"cluster.local/ns/production/sa/order-service\"]\n",
    )
    .unwrap();
    path
}

async fn serve(pki: &TestPki, mode: Enforcement, with_policy: bool) -> RunningServe {
    start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        mode,
        policy: with_policy.then(|| policy(pki)),
        ..serve_args()
    })
    .await
}

/// Parse an audit command line the way the binary does.
fn args(extra: &[&str]) -> AuditArgs {
    common::audit_args(extra)
}

async fn audit(pki: &TestPki, s: &RunningServe, extra: &[&str]) -> AuditReport {
    let target = format!("https://{}/api/orders/1", s.addr);
    let dir = pki.path().to_str().unwrap().to_string();
    let mut all = vec!["--target", &target, "--pki", &dir];
    all.extend_from_slice(extra);
    audit::run(&args(&all)).await.expect("audit runs")
}

fn with(r: &AuditReport, verdict: Verdict) -> BTreeSet<&'static str> {
    r.targets[0]
        .checks
        .iter()
        .filter(|c| c.verdict == verdict)
        .map(|c| c.id)
        .collect()
}

fn verdict(r: &AuditReport, id: &str) -> Verdict {
    r.targets[0]
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .verdict
}

const FAST: &[&str] = &["--expect", "resumption-after-expiry=skip"];

/// The mutations `serve --mode strict` accepts although `--strict` holds it
/// to refusing them: rules on the issuing CA that webpki (rustls' verifier)
/// does not check on purpose, so a certificate from a trusted CA that broke
/// them gets through.
const WEBPKI_LENIENT: [&str; 4] = [
    // webpki reads serials leniently, "as there are widely-deployed trust
    // anchors ... that violate these constraints" (cert.rs).
    "mutation:negative-serial",
    "mutation:serial-21-bytes",
    // webpki checks an end entity's extendedKeyUsage, never its keyUsage.
    "mutation:key-usage-without-digital-signature",
    // webpki does not look at the subject of a leaf.
    "mutation:empty-subject-non-critical-san",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_passes_every_check_but_webpkis_leniencies_including_resumption_after_expiry() {
    let pki = intermediate_pki();
    let s = serve(&pki, Enforcement::Strict, true).await;
    // --strict: weak crypto must be refused too (webpki refuses SHA-1
    // signatures and RSA-1024 keys).
    let r = audit(
        &pki,
        &s,
        &["--other-identity", "checkout-service", "--strict"],
    )
    .await;
    let table = audit::output::table(&r);
    assert!(!r.passed(), "{table}");
    assert_eq!(
        with(&r, Verdict::Fail),
        BTreeSet::from(WEBPKI_LENIENT),
        "{table}"
    );
    assert_eq!(with(&r, Verdict::Skip), BTreeSet::new(), "{table}");
    assert_eq!(with(&r, Verdict::Inconclusive), BTreeSet::new(), "{table}");
    // clock-skew is information unless --max-skew is given.
    assert_eq!(
        with(&r, Verdict::Info),
        BTreeSet::from(["clock-skew"]),
        "{table}"
    );
    let t = &r.targets[0];
    assert_eq!(t.checks.len(), audit::checks().len());
    // Every refusal names its layer; strict refuses bad certificates in TLS.
    let expired = t.checks.iter().find(|c| c.id == "expired").unwrap();
    assert!(
        expired
            .observed
            .iter()
            .all(|o| o.layer == "tls" && o.outcome.to_string() == "alert:certificate_expired"),
        "{table}"
    );
    assert!(expired.warning.is_none(), "{table}");
    let other = t.checks.iter().find(|c| c.id == "other-identity").unwrap();
    assert!(
        other
            .observed
            .iter()
            .all(|o| o.outcome.to_string() == "http:403" && o.layer == "http"),
        "{table}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_fails_plaintext_and_no_client_cert() {
    let pki = intermediate_pki();
    let s = serve(&pki, Enforcement::Permissive, false).await;
    let r = audit(&pki, &s, FAST).await;
    let table = audit::output::table(&r);
    assert_eq!(
        with(&r, Verdict::Fail),
        BTreeSet::from(["plaintext", "no-client-cert"]),
        "{table}"
    );
    assert!(!r.passed());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_fails_no_client_cert() {
    let pki = intermediate_pki();
    let s = serve(&pki, Enforcement::Optional, false).await;
    let r = audit(&pki, &s, FAST).await;
    let table = audit::output::table(&r);
    assert_eq!(
        with(&r, Verdict::Fail),
        BTreeSet::from(["no-client-cert"]),
        "{table}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_ca_fails_exactly_the_ca_trust_checks() {
    let pki = intermediate_pki();
    let s = serve(&pki, Enforcement::AnyCa, false).await;
    let r = audit(&pki, &s, FAST).await;
    let table = audit::output::table(&r);
    // The chain is what any-ca does not check: mutations of the chain (and
    // of the issuer's signature, which only the chain's CA can verify) are
    // CA-trust checks too.
    assert_eq!(
        with(&r, Verdict::Fail),
        BTreeSet::from([
            "untrusted-ca",
            "self-signed",
            "missing-intermediate",
            "mutation:bad-signature",
            "mutation:issuer-not-ca",
            "mutation:path-len-exceeded",
            "mutation:name-constraints-violated",
        ]),
        "{table}"
    );
    for c in &r.targets[0].checks {
        if c.verdict == Verdict::Fail {
            assert!(c.hint.is_some(), "a failed check carries its hint: {table}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_valid_identity_makes_every_other_check_inconclusive() {
    // The service trusts another PKI's CA: everything is refused, which
    // proves nothing about enforcement.
    let pki = intermediate_pki();
    let other = TestPki::default_flat();
    let s = serve(&other, Enforcement::Strict, false).await;
    let r = audit(
        &pki,
        &s,
        &["--insecure", "--expect", "resumption-after-expiry=skip"],
    )
    .await;
    let table = audit::output::table(&r);
    assert_eq!(
        verdict(&r, "valid-identity-accepted"),
        Verdict::Fail,
        "{table}"
    );
    assert!(!r.passed());
    for c in r.targets[0].checks.iter().skip(1) {
        assert!(
            matches!(c.verdict, Verdict::Inconclusive | Verdict::Skip),
            "{} is {:?} although the sanity check failed:\n{table}",
            c.id,
            c.verdict
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_expectations_and_reject_statuses_change_the_verdicts() {
    let pki = TestPki::default_flat();
    let s = serve(&pki, Enforcement::Strict, true).await;
    // x509: the SPIFFE checks are information; a flat PKI has no
    // intermediate to leave out.
    let r = audit(
        &pki,
        &s,
        &[
            "--profile",
            "x509",
            "--expect",
            "resumption-after-expiry=skip",
        ],
    )
    .await;
    let table = audit::output::table(&r);
    assert_eq!(verdict(&r, "wrong-trust-domain"), Verdict::Info, "{table}");
    assert_eq!(verdict(&r, "no-spiffe-id"), Verdict::Info, "{table}");
    assert_eq!(
        verdict(&r, "missing-intermediate"),
        Verdict::Skip,
        "{table}"
    );
    assert_eq!(verdict(&r, "other-identity"), Verdict::Skip, "{table}");
    assert!(r.passed(), "{table}");
    // 403 no longer counts as a refusal: the isolation check now fails.
    let r = audit(
        &pki,
        &s,
        &[
            "--other-identity",
            "checkout-service",
            "--reject-status",
            "400,401",
            "--expect",
            "resumption-after-expiry=skip",
            "--expect",
            "revoked=skip",
        ],
    )
    .await;
    let table = audit::output::table(&r);
    assert_eq!(verdict(&r, "other-identity"), Verdict::Fail, "{table}");
    assert_eq!(verdict(&r, "revoked"), Verdict::Skip, "{table}");
    assert!(!r.passed());
    s.stop().await;
}

/// What `serve --mode strict` (rustls + webpki, the SPIFFE trust-domain
/// check, a policy on the path) does with each mutated certificate of the
/// identity, in real handshakes over TLS 1.3 and 1.2. A flat PKI, so an
/// added intermediate is the only thing wrong with its chain.
const SERVE_STRICT: &[(&str, &str)] = &[
    ("unknown-critical-extension", "alert:certificate_unknown"),
    ("unknown-non-critical-extension", "http:200"),
    ("duplicate-extension", "alert:certificate_unknown"),
    ("bad-signature", "alert:decrypt_error"),
    ("signature-algorithm-mismatch", "alert:certificate_unknown"),
    ("sha1-signature", "alert:decrypt_error"),
    // Lenient (webpki, on purpose): see WEBPKI_LENIENT.
    ("negative-serial", "http:200"),
    ("serial-21-bytes", "http:200"),
    ("serial-20-bytes", "http:200"),
    ("validity-reversed", "alert:certificate_expired"),
    // No valid SPIFFE ID in the trust domain: refused by serve's SPIFFE
    // verifier after webpki's chain checks.
    ("two-spiffe-ids", "alert:access_denied"),
    ("spiffe-id-dot-segment", "alert:access_denied"),
    ("spiffe-id-percent-encoded", "alert:access_denied"),
    // The scheme is case-insensitive (SPIFFE-ID §2.4): the identity itself.
    ("spiffe-id-uppercase-scheme", "http:200"),
    ("spiffe-id-port", "alert:access_denied"),
    ("spiffe-id-query", "alert:access_denied"),
    ("spiffe-uri-empty", "alert:access_denied"),
    // The trust domain's own ID passes the TLS layer (it is in the trust
    // domain); the policy, which names workloads, refuses it. Without a
    // policy serve accepts it.
    ("spiffe-id-without-path", "http:403"),
    // Lenient: webpki ignores an end entity's keyUsage.
    ("key-usage-without-digital-signature", "http:200"),
    ("eku-server-auth-only", "alert:unsupported_certificate"),
    ("issuer-not-ca", "alert:certificate_unknown"),
    ("path-len-exceeded", "alert:certificate_unknown"),
    // webpki processes no URI name constraint: it fails closed.
    ("name-constraints-violated", "alert:unknown_ca"),
    ("v1-with-extensions", "alert:certificate_unknown"),
    ("trailing-bytes", "alert:bad_certificate"),
    // Lenient: webpki does not look at a leaf's subject.
    ("empty-subject-non-critical-san", "http:200"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_serve_refuses_or_accepts_each_mutation_as_listed() {
    let pki = TestPki::default_flat();
    assert_eq!(pki.manifest.mutations.len(), SERVE_STRICT.len());
    assert_serve_strict_per_mutation(&pki, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_pkis_mutations_they_are_derived_from_the_identity() {
    // A PKI written before mutations: the audit derives each one in memory
    // from the identity and the issuing CA, with the same verdicts.
    let mut pki = TestPki::default_flat();
    std::fs::remove_dir_all(pki.file("mutations")).unwrap();
    pki.manifest.mutations.clear();
    std::fs::write(pki.file("manifest.toml"), pki.manifest.to_toml().unwrap()).unwrap();
    assert_serve_strict_per_mutation(&pki, &["derived from the identity in memory"]).await;
}

/// Audit `serve --mode strict` (with the policy) under `--strict`: each
/// mutation check observed [`SERVE_STRICT`]'s outcome over both TLS
/// versions, with `notes` (what the audit says of where it came from).
async fn assert_serve_strict_per_mutation(pki: &TestPki, notes: &[&str]) {
    let s = serve(pki, Enforcement::Strict, true).await;
    let fast = ["--strict", "--expect", "resumption-after-expiry=skip"];
    let r = audit(pki, &s, &fast).await;
    s.stop().await;
    let table = audit::output::table(&r);
    for (name, outcome) in SERVE_STRICT {
        let id = format!("mutation:{name}");
        let c = r.targets[0]
            .checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        let seen: Vec<String> = c.observed.iter().map(|o| o.outcome.to_string()).collect();
        assert_eq!(seen, [*outcome; 2], "{id}:\n{table}");
        assert_eq!(c.notes, notes, "{id}:\n{table}");
    }
}
