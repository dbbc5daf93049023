//! "Bring your own CA": `certshift pki init --ca-cert --ca-key` under CAs the
//! `openssl` binary makes here, as a user's would be made elsewhere (an
//! ECDSA P-384 root, an RSA root, an intermediate with and without its
//! root), judged by `openssl verify`; and the pairs that must be refused
//! before anything is written. The CAs are made by `common::own_ca`.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use certshift::pki::{IssuedBy, Manifest, Role, Variant};
use common::certshift;
use common::own_ca::*;

/// `openssl verify -CAfile ca/ca.crt -untrusted CERT -purpose P EXTRA CERT`
/// in the PKI: the file itself supplies the chain, as a TLS peer sends it.
fn verify(pki: &Path, cert: &str, purpose: &str, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "-CAfile", "ca/ca.crt", "-untrusted", cert];
    args.extend(["-purpose", purpose]);
    args.extend_from_slice(extra);
    args.push(cert);
    openssl(pki, &args)
}

fn accepted(pki: &Path, cert: &str, purpose: &str, extra: &[&str]) {
    let out = verify(pki, cert, purpose, extra);
    assert!(
        out.status.success() && text(&out).contains(&format!("{cert}: OK")),
        "openssl must accept {cert}: {}",
        text(&out)
    );
}

fn rejected(pki: &Path, cert: &str, extra: &[&str], why: &[&str]) {
    let out = verify(pki, cert, "sslclient", extra);
    let t = text(&out);
    assert!(
        !out.status.success() && why.iter().any(|w| t.contains(w)),
        "openssl must reject {cert} for {why:?}: {t}"
    );
}

const CRL: [&str; 3] = ["-crl_check", "-CRLfile", "ca/crl.pem"];

fn variant(m: &Manifest, v: Variant) -> String {
    m.variant(v)
        .unwrap_or_else(|| panic!("no {v} in the manifest"))
        .cert
        .clone()
}

/// What every PKI under a user's CA must satisfy, whatever the CA's shape;
/// `anchor` is the user's certificate `ca/ca.crt` must be.
fn check_pki(pki: &Path, m: &Manifest, leaf_issuer: IssuedBy, anchor: &Path) {
    let anchor = anchor.to_str().expect("temp paths are UTF-8");
    assert_eq!(
        der_of(pki, "ca/ca.crt"),
        der_of(pki, anchor),
        "ca/ca.crt is {anchor}"
    );
    for e in m.credentials.iter().filter(|e| e.role == Role::Client) {
        accepted(pki, &e.cert, "sslclient", &CRL);
        assert_eq!(e.issuer, Some(leaf_issuer), "{}", e.name);
    }
    accepted(
        pki,
        "server/tls.crt",
        "sslserver",
        &["-verify_hostname", "localhost"],
    );

    let revoked = variant(m, Variant::Revoked);
    accepted(pki, &revoked, "sslclient", &[]);
    rejected(pki, &revoked, &CRL, &["certificate revoked"]);
    let cases: [(Variant, &[&str]); 5] = [
        (Variant::Expired, &["certificate has expired"]),
        (Variant::NotYetValid, &["not yet valid"]),
        (
            Variant::UntrustedCa,
            &["unable to get local issuer certificate"],
        ),
        (
            Variant::SelfSigned,
            &["self-signed certificate", "self signed certificate"],
        ),
        (
            Variant::WrongEku,
            &[
                "unsuitable certificate purpose",
                "unsupported certificate purpose",
            ],
        ),
    ];
    for (v, why) in cases {
        rejected(pki, &variant(m, v), &[], why);
    }
    // Flaws openssl cannot see: everything else about them is right.
    for v in [Variant::WrongTrustDomain, Variant::NoSpiffeId] {
        accepted(pki, &variant(m, v), "sslclient", &CRL);
    }
    let ca_as_leaf = variant(m, Variant::CaAsLeaf);
    let bc = must(
        pki,
        &[
            "x509",
            "-in",
            &ca_as_leaf,
            "-noout",
            "-ext",
            "basicConstraints",
        ],
    );
    assert!(bc.contains("CA:TRUE"), "{bc}");

    let by = |v| m.variant(v).and_then(|e| e.issuer);
    assert_eq!(by(Variant::UntrustedCa), Some(IssuedBy::UntrustedCa));
    assert_eq!(by(Variant::SelfSigned), Some(IssuedBy::Itself));
    assert_eq!(by(Variant::Expired), Some(leaf_issuer));
    assert!(
        m.credentials.iter().all(|e| e.issuer.is_some()),
        "every entry names its signer"
    );
}

/// No file under the PKI holds the user's key (any line of its PEM body),
/// and every file holding a private key is 0600.
fn check_key_not_copied(pki: &Path, user_key: &Path) {
    let key = std::fs::read_to_string(user_key).unwrap();
    let body: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(!body.is_empty());
    let mut files = Vec::new();
    walk(pki, &mut files);
    assert!(files.len() > 20, "{files:?}");
    for f in files {
        let content = std::fs::read_to_string(&f).unwrap_or_default();
        for line in &body {
            assert!(
                !content.contains(line),
                "{} holds the user's CA key",
                f.display()
            );
        }
        if content.contains("PRIVATE KEY-----") {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn der_of(dir: &Path, pem: &str) -> String {
    must(dir, &["x509", "-in", pem, "-outform", "DER"])
}

#[test]
fn ecdsa_p384_root_issues_every_credential_and_its_key_stays_home() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    root(dir, "root", "ec", P384, &CA_EXT);
    let (pki, m) = init_ok(dir, "root.crt", "root.key", &[]);

    check_pki(&pki, &m, IssuedBy::UserCa, &dir.join("root.crt"));
    assert!(
        m.variant(Variant::MissingIntermediate).is_none(),
        "no intermediate to leave out"
    );

    let ca = m.user_ca.as_ref().expect("manifest names the user's CA");
    let fp = must(
        dir,
        &[
            "x509",
            "-in",
            "root.crt",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert!(fp.trim().ends_with(&ca.sha256), "{fp} vs {}", ca.sha256);
    assert_eq!(ca.subject, "O=Example Corp, CN=root");
    assert_eq!(ca.kind, "root");
    let key_path = std::fs::canonicalize(dir.join("root.key")).unwrap();
    assert_eq!(ca.key, key_path.display().to_string());
    let entry = m.find(Role::Ca, "ca").unwrap();
    assert_eq!(
        entry.key, ca.key,
        "the CA entry points at the user's key, not a copy"
    );
    assert_eq!(entry.issuer, Some(IssuedBy::External));
    assert!(!pki.join("ca/ca.key").exists());

    let crl_issuer = must(&pki, &["crl", "-in", "ca/crl.pem", "-noout", "-issuer"]);
    assert!(
        crl_issuer.contains("CN = root"),
        "the CRL is signed by the user's CA: {crl_issuer}"
    );
    check_key_not_copied(&pki, &dir.join("root.key"));
}

#[test]
fn rsa_root_with_a_certshift_intermediate_and_ed25519_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    root(dir, "rsa-root", "rsa:2048", &[], &CA_EXT);
    let args = [
        "--intermediate",
        "--key-type",
        "ed25519",
        "--service",
        "order-service",
    ];
    let (pki, m) = init_ok(dir, "rsa-root.crt", "rsa-root.key", &args);

    check_pki(
        &pki,
        &m,
        IssuedBy::GeneratedIntermediate,
        &dir.join("rsa-root.crt"),
    );
    let inter = m.find(Role::IntermediateCa, "intermediate-ca").unwrap();
    assert_eq!(inter.issuer, Some(IssuedBy::UserCa));
    assert!(
        pki.join("ca/intermediate.key").is_file(),
        "certshift's own intermediate key is written"
    );
    // Both CAs on the path are certshift's to sign a CRL for.
    accepted(
        &pki,
        "clients/order-service/tls.crt",
        "sslclient",
        &["-crl_check_all", "-CRLfile", "ca/crl.pem"],
    );
    let missing = variant(&m, Variant::MissingIntermediate);
    rejected(
        &pki,
        &missing,
        &[],
        &["unable to get local issuer certificate"],
    );
    check_key_not_copied(&pki, &dir.join("rsa-root.key"));
}

#[test]
fn intermediate_with_its_root_trusts_the_root_and_sends_the_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    team_chain(dir);
    let (pki, m) = init_ok(dir, "team-chain.crt", "team-ca.key", &[]);

    check_pki(&pki, &m, IssuedBy::UserCa, &dir.join("corp-root.crt"));
    let chain = std::fs::read_to_string(pki.join("clients/order-service/tls.crt")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + the user's intermediate"
    );
    let ca = m.user_ca.as_ref().unwrap();
    assert_eq!(
        (ca.kind.as_str(), ca.trust_anchor.as_str()),
        ("intermediate", "O=Example Corp, CN=corp-root")
    );
    let user = m.find(Role::IntermediateCa, "user-ca").unwrap();
    assert_eq!(der_of(&pki, &user.cert), der_of(dir, "team-ca.crt"));
    let missing = variant(&m, Variant::MissingIntermediate);
    rejected(
        &pki,
        &missing,
        &[],
        &["unable to get local issuer certificate"],
    );
    check_key_not_copied(&pki, &dir.join("team-ca.key"));

    // Given alone, the intermediate is the anchor: OpenSSL accepts it only
    // as a partial chain, and no variant can leave out what is not sent.
    std::fs::remove_dir_all(&pki).unwrap();
    let (pki, m) = init_ok(dir, "team-ca.crt", "team-ca.key", &[]);
    assert_eq!(der_of(&pki, "ca/ca.crt"), der_of(dir, "team-ca.crt"));
    let cert = "clients/order-service/tls.crt";
    accepted(&pki, cert, "sslclient", &["-partial_chain"]);
    assert!(m.variant(Variant::MissingIntermediate).is_none());
}

/// rotation-test against a service whose PKI was issued under the user's
/// intermediate: the rotated client certificates are minted by that
/// intermediate (certshift never holds the root's key) and carry it in
/// their chain, so a strict service trusting only the root accepts every
/// one of them.
#[test]
fn rotation_test_mints_under_the_users_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    team_chain(dir);
    let (pki, _) = init_ok(dir, "team-chain.crt", "team-ca.key", &[]);
    let pki_arg = pki.display().to_string();
    let file = |rel: &str| pki.join(rel).display().to_string();
    // With the PKI's CRL, signed by the user's intermediate: it speaks for
    // the leaves, and serve does not ask for the intermediate's own status,
    // which only the user's root could sign.
    let serve = common::spawn_certshift(
        &[
            "serve".into(),
            "--cert".into(),
            file("server/tls.crt"),
            "--key".into(),
            file("server/tls.key"),
            "--client-ca".into(),
            file("ca/ca.crt"),
            "--crl".into(),
            file("ca/crl.pem"),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--mode".into(),
            "strict".into(),
        ],
        |l| l.starts_with("listening on "),
    );
    let out = certshift()
        .args([
            "rotation-test",
            "--target",
            &serve.addr().to_string(),
            "--pki",
            &pki_arg,
            "--server-name",
            "localhost",
            "--rotations",
            "2",
            "--interval",
            "300ms",
            "--rate",
            "50",
            "--mode",
            "handshake",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (text_of(&out.stdout), text_of(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains("attempted 45"), "{stdout}");
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bad_pairs_exit_2_naming_the_file_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    root(dir, "good", "ec", P256, &CA_EXT);
    root(dir, "other", "ec", P256, &CA_EXT);
    let leaf_ext = ["-addext", "basicConstraints=critical,CA:FALSE"];
    root(dir, "leaf", "ec", P256, &leaf_ext);
    let pathlen0 = ["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"];
    root(dir, "tight", "ec", P256, &pathlen0);
    // Expired yesterday: signed with a negative lifetime.
    csr_ca(dir, "old", None, "-1");

    let cases: [(&str, &str, &[&str], &str, &str); 5] = [
        (
            "good.crt",
            "other.key",
            &[],
            "other.key",
            "does not match the certificate in good.crt",
        ),
        (
            "leaf.crt",
            "leaf.key",
            &[],
            "leaf.crt",
            "is not a CA certificate",
        ),
        ("old.crt", "old.key", &[], "old.crt", "expired at"),
        (
            "tight.crt",
            "tight.key",
            &["--intermediate"],
            "tight.crt",
            "pathlen:0",
        ),
        (
            "good.key",
            "good.key",
            &[],
            "good.key",
            "no certificate (it holds PRIVATE KEY)",
        ),
    ];
    for (cert, key, extra, file, why) in cases {
        let out = init(dir, cert, key, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cert}/{key}: {}", text(&out));
        assert!(
            err.contains(&format!("{file}: ")) && err.contains(why),
            "{cert}/{key}: {err}"
        );
        assert!(
            !dir.join("pki").exists(),
            "{cert}/{key}: nothing may be written"
        );
        let key_body = std::fs::read_to_string(dir.join(key)).unwrap();
        let line = key_body.lines().nth(1).unwrap();
        assert!(
            !text(&out).contains(line),
            "the key never reaches the output"
        );
    }
    // The same pair is fine without the option it cannot serve.
    init_ok(dir, "tight.crt", "tight.key", &["--service", "a"]);
}
