//! `certshift audit` against real, independently written mTLS servers on
//! loopback (nginx, haproxy, `openssl s_server`; .ci/run installs them),
//! configured the way their users configure them. Each test makes its PKI,
//! starts its servers (`common::peers`), runs the `certshift` binary with
//! `--json` and asserts the verdict of every check and the exit code: what
//! the audit tells a user about these servers is what they do.
//!
//! What they do, as observed here:
//! - All three verify with OpenSSL, which takes a CA certificate (CA:TRUE)
//!   as a client leaf: `ca-as-leaf` fails on every one of them in `--profile
//!   spiffe` (X.509-SVID forbids it) and is information in `x509`.
//! - None reads the SPIFFE ID nor authorizes by identity: in `--profile
//!   spiffe` the identity checks fail.
//! - nginx finishes the handshake and refuses with HTTP 400; haproxy and
//!   s_server refuse in the handshake, with the alert OpenSSL maps the
//!   verify error to.
//! - Of the mutated certificates (`mutation:*`), OpenSSL refuses every one
//!   whose rule binds all validators, and a few more (a duplicate
//!   extension, SHA-1, keyUsage without digitalSignature); it takes bad
//!   serials, a v1 certificate with extensions, an empty subject with a
//!   non-critical SAN, and every SPIFFE ID flaw (tests/it/pki_mutations.rs
//!   lists them one by one).
//! - OpenSSL resumes a session with the verification result stored in it:
//!   a client certificate that has expired since is accepted on resumption
//!   (see `nginx_resumes_sessions_of_expired_certificates`).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certshift::pki::{PkiOptions, Variant};
use common::own_ca::{init_ok, openssl, root, text, CA_EXT, P256};
use common::peers::{at, nginx_verify_on, start_haproxy, start_nginx, start_s_server, Peer};
use common::{certshift, TestPki};
use quick_junit::{Report, TestCaseStatus};
use serde_json::Value;

/// The audit arguments of every run here but the resumption one: the
/// expiry wait is that test's business.
const X509: &[&str] = &[
    "--profile",
    "x509",
    "--expect",
    "resumption-after-expiry=skip",
];

/// What an x509 audit with `X509` reports whatever the server: the SPIFFE
/// checks (and the SVID rule against CA leaves) are information, no other identity is given, resumption is
/// skipped, clock skew without --max-skew is information.
const X509_BASE: &[(&str, &str)] = &[
    ("wrong-trust-domain", "info"),
    ("no-spiffe-id", "info"),
    // X.509-SVID forbids a CA leaf; RFC 5280 path validation does not.
    ("ca-as-leaf", "info"),
    ("other-identity", "skip"),
    ("resumption-after-expiry", "skip"),
    ("clock-skew", "info"),
    // Weak crypto is information without --strict.
    ("weak-signature", "info"),
    ("weak-key", "info"),
    // Mutations whose rule binds SPIFFE validators only: information in
    // x509. (OpenSSL reads no SPIFFE ID and accepts every one of them.)
    ("mutation:two-spiffe-ids", "info"),
    ("mutation:spiffe-id-dot-segment", "info"),
    ("mutation:spiffe-id-percent-encoded", "info"),
    ("mutation:spiffe-id-uppercase-scheme", "info"),
    ("mutation:spiffe-id-port", "info"),
    ("mutation:spiffe-id-query", "info"),
    ("mutation:spiffe-uri-empty", "info"),
    // Mutations whose rule binds the issuing CA, and SHA-1: information
    // without --strict. OpenSSL refuses the duplicate extension and SHA-1
    // (security level 2) and the keyUsage without digitalSignature (the
    // sslclient purpose); it accepts the serials, the v1 certificate with
    // extensions, the empty subject and the trust domain's own SPIFFE ID.
    ("mutation:duplicate-extension", "info"),
    ("mutation:sha1-signature", "info"),
    ("mutation:negative-serial", "info"),
    ("mutation:serial-21-bytes", "info"),
    ("mutation:spiffe-id-without-path", "info"),
    ("mutation:key-usage-without-digital-signature", "info"),
    ("mutation:v1-with-extensions", "info"),
    ("mutation:empty-subject-non-critical-san", "info"),
];

/// The mutations every validator must refuse: the OpenSSL servers verifying
/// with `ssl_verify_client on`, `verify required` or `-Verify 1
/// -verify_return_error` refuse each one (they pass), even through nginx's
/// `optional_no_ca`; a server that ignores verification errors accepts them.
const VALIDATOR_MUTATIONS: &[&str] = &[
    "mutation:unknown-critical-extension",
    "mutation:bad-signature",
    "mutation:signature-algorithm-mismatch",
    "mutation:validity-reversed",
    "mutation:eku-server-auth-only",
    "mutation:issuer-not-ca",
    "mutation:path-len-exceeded",
    "mutation:name-constraints-violated",
];

/// The alert OpenSSL sends for each flaw when a verification error aborts
/// the handshake (`ssl_verify_alarm_type`): s_server and haproxy alike.
const OPENSSL_ALERTS: &[(&str, &str)] = &[
    ("untrusted-ca", "unknown_ca"),
    ("self-signed", "unknown_ca"),
    ("expired", "certificate_expired"),
    ("not-yet-valid", "bad_certificate"),
    ("revoked", "certificate_revoked"),
    ("wrong-eku", "unsupported_certificate"),
    ("missing-intermediate", "unknown_ca"),
];

/// The checks whose flawed certificate nginx refuses when verifying.
const NGINX_REFUSES: &[&str] = &[
    "no-client-cert",
    "untrusted-ca",
    "self-signed",
    "expired",
    "not-yet-valid",
    "revoked",
    "wrong-eku",
    "missing-intermediate",
];

/// One run of the `certshift audit` binary.
struct Audit {
    code: Option<i32>,
    stdout: String,
    json: Value,
    junit: PathBuf,
}

impl Audit {
    /// The report of the target at `peer`.
    fn of(&self, peer: &Peer) -> Target<'_> {
        let addr = peer.addr.to_string();
        let t = self.json["targets"]
            .as_array()
            .expect("targets in the JSON")
            .iter()
            .find(|t| t["address"] == addr.as_str())
            .unwrap_or_else(|| panic!("no target {addr} in\n{}", self.stdout));
        Target {
            json: t,
            audit: self,
        }
    }
}

/// One target's report.
struct Target<'a> {
    json: &'a Value,
    audit: &'a Audit,
}

impl Target<'_> {
    fn check(&self, id: &str) -> &Value {
        self.json["checks"]
            .as_array()
            .expect("checks in the JSON")
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in\n{}", self.audit.stdout))
    }

    fn verdicts(&self) -> BTreeMap<String, String> {
        self.json["checks"]
            .as_array()
            .expect("checks in the JSON")
            .iter()
            .map(|c| (string(&c["id"]), string(&c["verdict"])))
            .collect()
    }

    /// `LABEL OUTCOME` of each attempt, e.g. `1.3 alert:unknown_ca`.
    fn observed(&self, id: &str) -> Vec<String> {
        self.attempts(id)
            .map(|a| format!("{} {}", string(&a["label"]), string(&a["outcome"])))
            .collect()
    }

    /// The `resumed` flag of each attempt.
    fn resumed(&self, id: &str) -> Vec<Option<bool>> {
        self.attempts(id).map(|a| a["resumed"].as_bool()).collect()
    }

    fn attempts(&self, id: &str) -> impl Iterator<Item = &Value> {
        self.check(id)["observed"]
            .as_array()
            .expect("observed attempts")
            .iter()
    }

    /// Every verdict as `expected` (see [`verdicts`]), with the table on
    /// failure.
    fn assert_verdicts(&self, expected: &[(&str, &str)], what: &str) {
        assert_eq!(
            self.verdicts(),
            verdicts(expected),
            "{what}:\n{}",
            self.audit.stdout
        );
    }

    /// A server that verifies with OpenSSL, requires a certificate and
    /// aborts the handshake on any verification error (s_server `-Verify
    /// -verify_return_error`, haproxy `verify required`): every flaw refused
    /// with OpenSSL's alert, the CA certificate taken as a leaf.
    fn assert_strict_openssl(&self, what: &str) {
        self.assert_verdicts(X509_BASE, what);
        self.assert_openssl_alerts(what);
        assert_eq!(
            self.observed("no-client-cert"),
            [
                "1.3 alert:certificate_required",
                "1.2 alert:handshake_failure"
            ],
            "{what}"
        );
        assert_eq!(
            self.observed("ca-as-leaf"),
            ["1.3 http:200", "1.2 http:200"],
            "{what}"
        );
    }

    /// The same alert over TLS 1.3 and 1.2 for every flaw of
    /// [`OPENSSL_ALERTS`].
    fn assert_openssl_alerts(&self, what: &str) {
        for (id, alert) in OPENSSL_ALERTS {
            assert_eq!(
                self.observed(id),
                [format!("1.3 alert:{alert}"), format!("1.2 alert:{alert}")],
                "{what}: {id}"
            );
        }
    }
}

fn string(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Every check of the registry with its verdict: `pass` unless `other`
/// says otherwise (the last word wins).
fn verdicts(other: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = certshift::audit::checks()
        .iter()
        .map(|c| (c.id.to_string(), "pass".to_string()))
        .collect();
    for (id, v) in other {
        assert!(m.contains_key(*id), "no check {id}");
        m.insert(id.to_string(), v.to_string());
    }
    m
}

/// `certshift audit --pki PKI --target URL... --json --junit ARGS`, killed
/// after 90 s (every attempt has its own 5 s phase timeouts; this bounds a
/// hang of the whole run).
fn audit(pki: &Path, peers: &[&Peer], args: &[&str]) -> Audit {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let dir = pki.join(format!("audit-{}", RUN.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, junit) = (dir.join("audit.json"), dir.join("audit.xml"));
    let mut cmd = certshift();
    cmd.arg("audit").arg("--pki").arg(pki);
    for p in peers {
        cmd.args(["--target", &p.url()]);
    }
    cmd.arg("--json").arg(&json).arg("--junit").arg(&junit);
    cmd.args(args);
    let out = std::fs::File::create(dir.join("stdout")).unwrap();
    let err = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("run certshift audit");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for certshift audit") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let Some(status) = status else {
        panic!("certshift audit ran past 90 s:\n{stdout}\n{stderr}");
    };
    let json = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no JSON report ({status}):\n{stdout}\n{stderr}"));
    Audit {
        code: status.code(),
        stdout,
        json,
        junit,
    }
}

fn flat_pki() -> TestPki {
    TestPki::default_flat()
}

fn intermediate_pki() -> TestPki {
    TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    })
}

/// `ssl_verify_client on` + the PKI's CA + `ssl_crl`: nginx refuses (400)
/// every chain, validity, revocation and purpose flaw, but takes a CA
/// certificate as a leaf and never looks at the SPIFFE ID.
#[test]
fn nginx_verify_on_with_crl_enforces_ca_validity_revocation_but_not_identity() {
    let pki = intermediate_pki();
    // Leaf + intermediate above it: depth 2.
    let nginx = start_nginx(pki.path(), &nginx_verify_on(pki.path(), 2));

    let a = audit(pki.path(), &[&nginx], X509);
    let t = a.of(&nginx);
    t.assert_verdicts(X509_BASE, "nginx on + ssl_crl, x509");
    for id in NGINX_REFUSES {
        assert_eq!(t.observed(id), ["1.3 http:400", "1.2 http:400"], "{id}");
    }
    assert_eq!(t.observed("ca-as-leaf"), ["1.3 http:200", "1.2 http:200"]);
    // nginx's own 400 "The plain HTTP request was sent to HTTPS port".
    assert_eq!(
        t.observed("plaintext"),
        [format!("plain :{} http:400", nginx.addr.port())]
    );
    assert_eq!(a.code, Some(0), "nothing failed in x509:\n{}", a.stdout);

    let spiffe = [
        "--profile",
        "spiffe",
        "--other-identity",
        "checkout-service",
        "--expect",
        "resumption-after-expiry=skip",
    ];
    let a = audit(pki.path(), &[&nginx], &spiffe);
    let t = a.of(&nginx);
    // nginx reads no SPIFFE ID: every SPIFFE ID rule is broken unseen, but
    // the uppercase scheme, which is valid.
    let svid_fails = [
        "mutation:two-spiffe-ids",
        "mutation:spiffe-id-dot-segment",
        "mutation:spiffe-id-percent-encoded",
        "mutation:spiffe-id-port",
        "mutation:spiffe-id-query",
        "mutation:spiffe-uri-empty",
    ];
    // The issuer's and crypto rules stay information without --strict.
    let strict_only = X509_BASE.iter().copied().filter(|(id, _)| {
        id.starts_with("mutation:")
            && !svid_fails.contains(id)
            && *id != "mutation:spiffe-id-uppercase-scheme"
    });
    let expected: Vec<(&str, &str)> = [
        ("ca-as-leaf", "fail"),
        ("wrong-trust-domain", "fail"),
        ("no-spiffe-id", "fail"),
        ("other-identity", "fail"),
        ("resumption-after-expiry", "skip"),
        ("clock-skew", "info"),
        ("weak-signature", "info"),
        ("weak-key", "info"),
    ]
    .into_iter()
    .chain(svid_fails.map(|id| (id, "fail")))
    .chain(strict_only)
    .collect();
    t.assert_verdicts(&expected, "nginx on + ssl_crl, spiffe");
    for id in ["wrong-trust-domain", "no-spiffe-id", "other-identity"] {
        assert_eq!(t.observed(id), ["1.3 http:200", "1.2 http:200"], "{id}");
    }
    assert_eq!(a.code, Some(1));
}

/// `ssl_verify_client optional_no_ca` asks for a certificate and lets
/// through the chain errors nginx deems optional (unknown issuer,
/// self-signed): the trust checks fail, and a missing certificate passes.
/// With `ssl_crl` as well, a self-signed certificate is refused after all,
/// but only because OpenSSL finds no CRL of its issuer.
#[test]
fn nginx_optional_no_ca_is_flagged() {
    let pki = intermediate_pki();
    let ca = at(pki.path(), "ca/ca.crt");
    let optional = format!(
        "ssl_client_certificate {ca}; ssl_verify_client optional_no_ca; ssl_verify_depth 2;"
    );
    let plain = start_nginx(pki.path(), &optional);
    let crl = format!("{optional} ssl_crl {};", at(pki.path(), "ca/crl.pem"));
    let with_crl = start_nginx(pki.path(), &crl);

    let a = audit(pki.path(), &[&plain, &with_crl], X509);
    let holes = [
        ("no-client-cert", "fail"),
        ("untrusted-ca", "fail"),
        ("missing-intermediate", "fail"),
    ];
    let t = a.of(&plain);
    t.assert_verdicts(
        &[
            X509_BASE,
            &holes,
            &[("self-signed", "fail"), ("revoked", "fail")],
        ]
        .concat(),
        "optional_no_ca",
    );
    for id in ["no-client-cert", "untrusted-ca", "self-signed", "revoked"] {
        assert_eq!(t.observed(id), ["1.3 http:200", "1.2 http:200"], "{id}");
    }
    for id in ["expired", "not-yet-valid", "wrong-eku"] {
        assert_eq!(t.observed(id), ["1.3 http:400", "1.2 http:400"], "{id}");
    }

    let t = a.of(&with_crl);
    t.assert_verdicts(&[X509_BASE, &holes].concat(), "optional_no_ca + ssl_crl");
    assert_eq!(t.observed("self-signed"), ["1.3 http:400", "1.2 http:400"]);
    assert!(
        with_crl
            .log()
            .contains("verify error: (3:unable to get certificate CRL)"),
        "the refusal's real cause: {}",
        with_crl.log()
    );
    assert_eq!(a.code, Some(1));
}

/// `ssl_verify_client on` without `ssl_crl`: the revoked certificate is
/// accepted, and the hint names the CRL to install.
#[test]
fn nginx_without_ssl_crl_accepts_revoked_and_the_hint_names_the_crl() {
    let pki = flat_pki();
    let verify = format!(
        "ssl_client_certificate {}; ssl_verify_client on;",
        at(pki.path(), "ca/ca.crt")
    );
    let nginx = start_nginx(pki.path(), &verify);
    let a = audit(pki.path(), &[&nginx], X509);
    let t = a.of(&nginx);
    t.assert_verdicts(
        &[
            X509_BASE,
            &[
                ("revoked", "fail"),
                // A flat PKI has no intermediate to leave out.
                ("missing-intermediate", "skip"),
            ],
        ]
        .concat(),
        "nginx on without ssl_crl",
    );
    assert_eq!(t.observed("revoked"), ["1.3 http:200", "1.2 http:200"]);
    let hint = string(&t.check("revoked")["hint"]);
    assert!(
        hint.contains("ca/crl.pem") && hint.contains("ssl_crl"),
        "{hint}"
    );
    assert!(a.stdout.contains(&format!("hint: {hint}")), "{}", a.stdout);
    assert_eq!(a.code, Some(1));
}

/// What nginx 1.22 (OpenSSL 3.0) does with a session whose client
/// certificate expired after the full handshake: it resumes it and answers
/// 200, over TLS 1.3 (ticket) and TLS 1.2 (ticket, or session id from the
/// cache) alike, with stateless tickets (`ssl_session_tickets on` +
/// `ssl_session_cache shared`, the config; nginx's defaults resume
/// the same way) and with the session cache only (`ssl_session_tickets
/// off`): OpenSSL keeps the verification result in the session and does not
/// check the certificate again. Only when nginx cannot resume at all
/// (`ssl_session_tickets off` and the default `ssl_session_cache none`)
/// does the expired certificate go through a full handshake, where it is
/// refused (400).
#[test]
fn nginx_resumes_sessions_of_expired_certificates() {
    let pki = flat_pki();
    let verify = nginx_verify_on(pki.path(), 1);
    let tickets = start_nginx(
        pki.path(),
        &format!(
            "{verify} ssl_session_tickets on; ssl_session_timeout 1h; ssl_session_cache shared:SSL:1m;"
        ),
    );
    let cache_only = start_nginx(
        pki.path(),
        &format!(
            "{verify} ssl_session_tickets off; ssl_session_timeout 1h; ssl_session_cache shared:SSL:1m;"
        ),
    );
    let neither = start_nginx(pki.path(), &format!("{verify} ssl_session_tickets off;"));
    let args = ["--profile", "x509", "--short-lived", "2s"];
    let a = audit(pki.path(), &[&tickets, &cache_only, &neither], &args);
    let id = "resumption-after-expiry";
    for (peer, what) in [(&tickets, "tickets"), (&cache_only, "session cache")] {
        let t = a.of(peer);
        assert_eq!(string(&t.check(id)["verdict"]), "fail", "{what}");
        assert_eq!(
            t.observed(id),
            ["1.3 resumed http:200", "1.2 resumed http:200"],
            "{what}"
        );
        assert_eq!(t.resumed(id), [Some(true), Some(true)], "{what}");
    }
    let t = a.of(&neither);
    assert_eq!(string(&t.check(id)["verdict"]), "pass", "{}", a.stdout);
    assert_eq!(t.observed(id), ["1.3 full http:400", "1.2 full http:400"]);
    assert_eq!(t.resumed(id), [Some(false), Some(false)]);
    let notes = t.check(id)["notes"].to_string();
    assert!(notes.contains("did not resume"), "{notes}");
    assert_eq!(a.code, Some(1));
}

/// `openssl s_server -www`: `-Verify 1` requires a certificate, `-verify 1`
/// only requests one; with either, a verification error is printed and
/// ignored unless `-verify_return_error` aborts the handshake on it.
#[test]
fn openssl_s_server_verify_options() {
    let pki = intermediate_pki();
    let crl = ["-CRL", "ca/crl.pem", "-crl_check"];
    let ca = ["-CAfile", "ca/ca.crt"];
    let strict = start_s_server(
        pki.path(),
        &[&["-Verify", "1", "-verify_return_error"][..], &ca, &crl].concat(),
    );
    let requested = start_s_server(
        pki.path(),
        &[&["-verify", "1", "-verify_return_error"][..], &ca, &crl].concat(),
    );
    let presence_only = start_s_server(pki.path(), &[&["-Verify", "1"][..], &ca].concat());

    let a = audit(pki.path(), &[&strict, &requested, &presence_only], X509);
    let t = a.of(&strict);
    t.assert_strict_openssl("-Verify 1 -verify_return_error");
    // Plain HTTP is not TLS: s_server drops the connection.
    assert_eq!(
        t.observed("plaintext"),
        [format!("plain :{} closed_early", strict.addr.port())]
    );

    let t = a.of(&requested);
    t.assert_verdicts(
        &[X509_BASE, &[("no-client-cert", "fail")]].concat(),
        "-verify 1 -verify_return_error",
    );
    t.assert_openssl_alerts("-verify 1 -verify_return_error");
    assert_eq!(
        t.observed("no-client-cert"),
        ["1.3 http:200", "1.2 http:200"]
    );

    let t = a.of(&presence_only);
    let flaws = [
        "untrusted-ca",
        "self-signed",
        "expired",
        "not-yet-valid",
        "revoked",
        "wrong-eku",
        "missing-intermediate",
    ];
    // The mutations that add intermediates are still refused, with
    // unknown_ca: `-Verify 1` is also a verify depth of 1, and their chains
    // are longer than that.
    let deeper = [
        "mutation:issuer-not-ca",
        "mutation:path-len-exceeded",
        "mutation:name-constraints-violated",
    ];
    let failed: Vec<(&str, &str)> = flaws
        .iter()
        .chain(VALIDATOR_MUTATIONS.iter().filter(|id| !deeper.contains(id)))
        .map(|id| (*id, "fail"))
        .collect();
    t.assert_verdicts(&[X509_BASE, &failed].concat(), "-Verify 1");
    for id in deeper {
        assert_eq!(
            t.observed(id),
            ["1.3 alert:unknown_ca", "1.2 alert:unknown_ca"],
            "{id}"
        );
    }
    for id in flaws {
        assert_eq!(t.observed(id), ["1.3 http:200", "1.2 http:200"], "{id}");
    }
    assert_eq!(a.code, Some(1));
}

/// haproxy `verify required` with the CA and CRL on the bind line refuses
/// in the handshake with OpenSSL's alerts; like every OpenSSL server it
/// takes a CA certificate as a leaf.
#[test]
fn haproxy_verify_required_with_crl_file() {
    let pki = intermediate_pki();
    let bind = format!(
        "ca-file {} verify required crl-file {}",
        at(pki.path(), "ca/ca.crt"),
        at(pki.path(), "ca/crl.pem")
    );
    let haproxy = start_haproxy(pki.path(), &bind);
    let a = audit(pki.path(), &[&haproxy], X509);
    a.of(&haproxy)
        .assert_strict_openssl("haproxy verify required + crl-file");
    assert_eq!(a.code, Some(0), "nothing failed in x509:\n{}", a.stdout);
}

/// Bring your own CA: a root made by openssl, the test PKI issued under it
/// by `pki init --ca-cert --ca-key`; openssl verifies its identities
/// against the root and its CRL, and nginx trusting only that root and
/// that CRL passes the audit.
#[test]
fn own_root_ca_pki_verifies_with_openssl_and_passes_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    root(dir, "root", "ec", P256, &CA_EXT);
    let (pki, m) = init_ok(dir, "root.crt", "root.key", &[]);
    let verify = |cert: &str| {
        let cert = format!("pki/{cert}");
        let args = [
            "verify",
            "-CAfile",
            "root.crt",
            "-crl_check",
            "-CRLfile",
            "pki/ca/crl.pem",
            &cert,
        ];
        let out = openssl(dir, &args);
        (out.status.success(), text(&out))
    };
    let identity = &m.client("order-service").expect("order-service").cert;
    let (ok, out) = verify(identity);
    assert!(ok && out.contains(&format!("pki/{identity}: OK")), "{out}");
    let revoked = &m.variant(Variant::Revoked).expect("revoked").cert;
    let (ok, out) = verify(revoked);
    assert!(!ok && out.contains("certificate revoked"), "{out}");

    let trust = format!(
        "ssl_client_certificate {}; ssl_verify_client on; ssl_crl {};",
        dir.join("root.crt").display(),
        at(&pki, "ca/crl.pem")
    );
    let nginx = start_nginx(&pki, &trust);
    let a = audit(&pki, &[&nginx], X509);
    let t = a.of(&nginx);
    t.assert_verdicts(
        &[X509_BASE, &[("missing-intermediate", "skip")]].concat(),
        "nginx trusting the user's root",
    );
    for id in NGINX_REFUSES
        .iter()
        .filter(|id| **id != "missing-intermediate")
    {
        assert_eq!(t.observed(id), ["1.3 http:400", "1.2 http:400"], "{id}");
    }
    assert_eq!(a.code, Some(0), "{}", a.stdout);
}

/// The JUnit file of a failing audit: one testsuite per target, one
/// testcase per check in registry order, failures exactly the FAIL rows of
/// the JSON and of the table, INCONCLUSIVE and SKIP as skipped.
#[test]
fn junit_of_a_failing_nginx_audit_counts_what_json_and_table_count() {
    let pki = flat_pki();
    let optional = format!(
        "ssl_client_certificate {}; ssl_verify_client optional_no_ca;",
        at(pki.path(), "ca/ca.crt")
    );
    let nginx = start_nginx(pki.path(), &optional);
    let a = audit(pki.path(), &[&nginx], X509);
    assert_eq!(a.code, Some(1));
    let t = a.of(&nginx);
    let xml = std::fs::read_to_string(&a.junit).expect("the --junit file");
    let report = Report::deserialize_from_str(&xml).expect("JUnit parses");

    assert_eq!(report.test_suites.len(), 1);
    let suite = &report.test_suites[0];
    assert_eq!(suite.name.as_str(), nginx.url());
    let ids: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
    let registry: Vec<&str> = certshift::audit::checks().iter().map(|c| c.id).collect();
    assert_eq!(ids, registry);
    assert_eq!((suite.tests, report.tests), (ids.len(), ids.len()));

    let with = |v: &str| -> Vec<String> {
        t.verdicts()
            .into_iter()
            .filter(|(_, verdict)| verdict == v)
            .map(|(id, _)| id)
            .collect()
    };
    let mut failed = common::junit_failures(suite);
    failed.sort();
    assert_eq!(failed, with("fail"));
    assert_eq!(
        failed,
        ["no-client-cert", "revoked", "self-signed", "untrusted-ca"]
    );
    assert_eq!(
        (suite.failures, report.failures),
        (failed.len(), failed.len())
    );
    assert_eq!(a.json["summary"]["fail"], failed.len());
    assert_eq!((suite.errors, report.errors), (0, 0));
    let skipped = suite
        .test_cases
        .iter()
        .filter(|c| matches!(c.status, TestCaseStatus::Skipped { .. }))
        .count();
    assert_eq!(skipped, with("inconclusive").len() + with("skip").len());
    assert_eq!(suite.skipped, skipped);

    // The table: one row per check ending in its verdict, and the summary.
    let rows_failed = a
        .stdout
        .lines()
        .filter(|l| registry.iter().any(|id| l.starts_with(&format!("  {id} "))))
        .filter(|l| l.ends_with(" FAIL"))
        .count();
    assert_eq!(rows_failed, failed.len(), "{}", a.stdout);
    assert!(
        a.stdout.contains(&format!(" {} failed,", failed.len())),
        "{}",
        a.stdout
    );
}
