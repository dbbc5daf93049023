//! The mutated certificates `pki init` writes (`mutations/<name>/`), judged
//! by independent validators: `openssl verify` with the flags that make
//! OpenSSL check each rule, and nginx `ssl_verify_client on` in real
//! handshakes (through `certshift audit`). Each table states per mutation
//! what the validator does, and where it is lenient, that it is.
//!
//! A flat PKI: `pki init --intermediate`'s intermediate has
//! pathLenConstraint 0, so the mutations that add an intermediate below it
//! would also exceed that, and the one change would not be the only one.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use certshift::pki::{Expect, MUTATIONS};
use common::own_ca::{openssl, text};
use common::peers::{nginx_verify_on, start_nginx};
use common::{certshift, TestPki};
use serde_json::Value;

/// What `openssl verify` says of a mutation, and with which extra flags.
struct Verify {
    name: &'static str,
    /// Beyond `-CAfile ca/ca.crt -untrusted tls.crt -purpose sslclient`.
    flags: &'static [&'static str],
    /// `None`: verification succeeds; `Some(text)`: it fails saying `text`.
    error: Option<&'static str>,
    /// Whether OpenSSL checks the mutation's rule at all; when it does not,
    /// its OK says nothing against the catalogue's verdict.
    checks_rule: bool,
}

const fn v(
    name: &'static str,
    flags: &'static [&'static str],
    error: Option<&'static str>,
    checks_rule: bool,
) -> Verify {
    Verify {
        name,
        flags,
        error,
        checks_rule,
    }
}

const STRICT: &[&str] = &["-x509_strict"];

/// Every mutation, as OpenSSL 3.0 judges it.
const OPENSSL_VERIFY: &[Verify] = &[
    v(
        "unknown-critical-extension",
        &[],
        Some("unhandled critical extension"),
        true,
    ),
    v("unknown-non-critical-extension", STRICT, None, true),
    // Duplicate extensions make the certificate invalid as it is parsed.
    v(
        "duplicate-extension",
        &[],
        Some("invalid certificate"),
        true,
    ),
    v("bad-signature", &[], Some("verification failed"), true),
    v(
        "signature-algorithm-mismatch",
        &[],
        Some("certificate signature failure"),
        true,
    ),
    // Security level 1 (80 bits) refuses SHA-1; level 0 (the CLI's default
    // for `verify`) takes it.
    v(
        "sha1-signature",
        &["-auth_level", "1"],
        Some("CA signature digest algorithm too weak"),
        true,
    ),
    // OpenSSL reads any serial, strict or not: RFC 5280 asks users to
    // handle non-conforming serials gracefully.
    v("negative-serial", STRICT, None, false),
    v("serial-21-bytes", STRICT, None, false),
    v("serial-20-bytes", STRICT, None, true),
    // notBefore is the identity's notAfter, in the future.
    v(
        "validity-reversed",
        &[],
        Some("certificate is not yet valid"),
        true,
    ),
    // OpenSSL knows nothing of SPIFFE: a URI SAN is a name like any other.
    v("two-spiffe-ids", STRICT, None, false),
    v("spiffe-id-dot-segment", STRICT, None, false),
    v("spiffe-id-percent-encoded", STRICT, None, false),
    v("spiffe-id-uppercase-scheme", STRICT, None, false),
    v("spiffe-id-port", STRICT, None, false),
    v("spiffe-id-query", STRICT, None, false),
    v("spiffe-uri-empty", STRICT, None, false),
    v("spiffe-id-without-path", STRICT, None, false),
    // The sslclient purpose wants digitalSignature or keyAgreement.
    v(
        "key-usage-without-digital-signature",
        &[],
        Some("unsuitable certificate purpose"),
        true,
    ),
    v(
        "eku-server-auth-only",
        &[],
        Some("unsuitable certificate purpose"),
        true,
    ),
    v("issuer-not-ca", &[], Some("invalid CA certificate"), true),
    v(
        "path-len-exceeded",
        &[],
        Some("path length constraint exceeded"),
        true,
    ),
    // OpenSSL processes URI name constraints (the SPIFFE ID's host).
    v(
        "name-constraints-violated",
        &[],
        Some("permitted subtree violation"),
        true,
    ),
    v(
        "v1-with-extensions",
        STRICT,
        Some("Using cert extension requires at least X509v3"),
        true,
    ),
    // `verify` reads PEM and d2i stops at the certificate's end: the stray
    // bytes are invisible here. In a handshake OpenSSL refuses them (see
    // the nginx test).
    v("trailing-bytes", STRICT, None, false),
    v(
        "empty-subject-non-critical-san",
        STRICT,
        Some("Subject empty and Subject Alt Name extension not critical"),
        true,
    ),
];

#[test]
fn openssl_verify_agrees_with_the_catalogue_where_it_checks_the_rule() {
    let pki = TestPki::default_flat();
    let dir = pki.path();
    let listed: Vec<&str> = OPENSSL_VERIFY.iter().map(|v| v.name).collect();
    let catalogue: Vec<&str> = MUTATIONS.iter().map(|m| m.name).collect();
    assert_eq!(
        listed, catalogue,
        "one row per mutation, in catalogue order"
    );
    assert_eq!(pki.manifest.mutations.len(), MUTATIONS.len());
    for (row, m) in OPENSSL_VERIFY.iter().zip(MUTATIONS) {
        let entry = pki
            .manifest
            .mutations
            .iter()
            .find(|e| e.name == m.name)
            .unwrap();
        assert_eq!(
            (entry.expect, entry.changes.as_str()),
            (m.expect, m.changes)
        );
        let cert = entry.cert.as_str();
        let mut args = vec![
            "verify",
            "-CAfile",
            "ca/ca.crt",
            "-untrusted",
            cert,
            "-purpose",
            "sslclient",
        ];
        args.extend_from_slice(row.flags);
        args.push(cert);
        let out = openssl(dir, &args);
        let said = text(&out);
        match row.error {
            None => assert!(
                out.status.success() && said.contains(&format!("{cert}: OK")),
                "{}: openssl verify {args:?}:\n{said}",
                m.name
            ),
            Some(error) => assert!(
                !out.status.success() && said.contains(error),
                "{}: openssl verify {args:?} should fail with {error:?}:\n{said}",
                m.name
            ),
        }
        if row.checks_rule {
            let refused = row.error.is_some();
            assert_eq!(
                refused,
                m.expect == Expect::Reject,
                "{}: openssl checks this rule and disagrees with the catalogue",
                m.name
            );
        }
    }
}

#[test]
fn mutation_files_hold_the_identitys_key_written_private() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::default_flat();
    let identity = pki.entry("order-service");
    let key = std::fs::read(pki.file(&identity.key)).unwrap();
    for e in &pki.manifest.mutations {
        assert_eq!(e.identity, "order-service");
        assert_eq!(e.path, format!("mutations/{}", e.name));
        let path = pki.file(&e.key);
        assert_eq!(std::fs::read(&path).unwrap(), key, "{}", e.name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", e.name);
    }
}

/// What nginx 1.22 (OpenSSL 3.0) does with each mutation: `ssl_verify_client
/// on` + `ssl_crl`, depth 3 (the longest mutated chain has two added
/// intermediates). `400`: refused after the handshake (nginx answers a
/// failed verification with HTTP 400); `200`: accepted.
const NGINX: &[(&str, u16)] = &[
    ("unknown-critical-extension", 400),
    ("unknown-non-critical-extension", 200),
    ("duplicate-extension", 400),
    ("bad-signature", 400),
    ("signature-algorithm-mismatch", 400),
    // Debian's OpenSSL defaults to security level 2: no SHA-1.
    ("sha1-signature", 400),
    // Lenient: OpenSSL takes any serial.
    ("negative-serial", 200),
    ("serial-21-bytes", 200),
    ("serial-20-bytes", 200),
    ("validity-reversed", 400),
    // Lenient: nginx reads no SPIFFE ID, so none of these rules apply.
    ("two-spiffe-ids", 200),
    ("spiffe-id-dot-segment", 200),
    ("spiffe-id-percent-encoded", 200),
    ("spiffe-id-uppercase-scheme", 200),
    ("spiffe-id-port", 200),
    ("spiffe-id-query", 200),
    ("spiffe-uri-empty", 200),
    ("spiffe-id-without-path", 200),
    ("key-usage-without-digital-signature", 400),
    ("eku-server-auth-only", 400),
    ("issuer-not-ca", 400),
    ("path-len-exceeded", 400),
    ("name-constraints-violated", 400),
    // Lenient: without X509_V_FLAG_X509_STRICT, OpenSSL takes a v1
    // certificate with extensions and an empty subject with a
    // non-critical SAN.
    ("v1-with-extensions", 200),
    ("trailing-bytes", 0),
    ("empty-subject-non-critical-san", 200),
];

#[test]
fn nginx_verify_on_gives_the_verdicts_listed_per_mutation() {
    let pki = TestPki::default_flat();
    let nginx = start_nginx(pki.path(), &nginx_verify_on(pki.path(), 3));
    let json = audit(pki.path(), &nginx.url());
    let checks = json["targets"][0]["checks"].as_array().expect("checks");
    let observed: BTreeMap<String, Vec<String>> = checks
        .iter()
        .filter(|c| {
            c["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("mutation:"))
        })
        .map(|c| {
            let id = c["id"]
                .as_str()
                .unwrap()
                .trim_start_matches("mutation:")
                .to_string();
            let seen = c["observed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["outcome"].as_str().unwrap_or_default().to_string())
                .collect();
            (id, seen)
        })
        .collect();
    assert_eq!(observed.len(), MUTATIONS.len(), "{json}");
    for (name, status) in NGINX {
        let want = match status {
            // In the handshake, OpenSSL refuses a certificate entry longer
            // than the certificate ("cert length mismatch"): decode_error.
            0 => vec!["alert:decode_error".to_string(); 2],
            s => vec![format!("http:{s}"); 2],
        };
        assert_eq!(observed[*name], want, "{name}\n{}", nginx.log());
    }
}

/// `certshift audit --json` of `url` with the PKI, x509 profile, no
/// resumption wait; the report.
fn audit(pki: &Path, url: &str) -> Value {
    let json = pki.join("audit.json");
    let mut child = certshift()
        .args([
            "audit",
            "--profile",
            "x509",
            "--expect",
            "resumption-after-expiry=skip",
        ])
        .arg("--pki")
        .arg(pki)
        .args(["--target", url, "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run certshift audit");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("wait for the audit").is_none() {
        assert!(Instant::now() < deadline, "certshift audit ran past 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON")
}

#[test]
fn pki_inspect_says_what_a_mutation_changes() {
    let pki = TestPki::default_flat();
    let inspect = |name: &str| {
        let out = certshift()
            .args(["pki", "inspect"])
            .arg(pki.file(&format!("mutations/{name}/tls.crt")))
            .output()
            .expect("run pki inspect");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let port = certshift::pki::mutate::find("spiffe-id-port").unwrap();
    let (ok, text) = inspect(port.name);
    assert!(ok, "{text}");
    assert!(
        text.contains("spiffe-id-port (a conforming validator must reject it)")
            && text.contains(port.changes)
            && text.contains(port.rule),
        "{text}"
    );
    // A certificate no parser reads: the error says it is the mutation.
    let (ok, text) = inspect("trailing-bytes");
    assert!(!ok, "{text}");
    assert!(
        text.contains("mutation trailing-bytes") && text.contains("2 stray bytes"),
        "{text}"
    );
}
