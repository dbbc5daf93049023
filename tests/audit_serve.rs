//! `certshift audit` against the reference service in each enforcement
//! mode: real handshakes over loopback, verdicts read from the audit's own
//! report. The contract: `strict` passes every check; `permissive` fails
//! exactly `plaintext` and `no-client-cert`; `optional` fails exactly
//! `no-client-cert`; `any-ca` fails exactly the CA-trust checks.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use certshift::audit::{self, AuditArgs, AuditReport, Verdict};
use certshift::cli::{Cli, Command};
use certshift::pki::PkiOptions;
use certshift::serve::{Enforcement, ServeArgs};
use clap::Parser;
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
    let mut argv = vec!["certshift", "audit"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)
        .expect("audit flags parse")
        .command
    {
        Command::Audit(a) => *a,
        other => panic!("parsed as {other:?}"),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_passes_every_check_including_resumption_after_expiry() {
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
    assert!(r.passed(), "{table}");
    assert_eq!(with(&r, Verdict::Fail), BTreeSet::new(), "{table}");
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
    assert_eq!(
        with(&r, Verdict::Fail),
        BTreeSet::from(["untrusted-ca", "self-signed", "missing-intermediate"]),
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
