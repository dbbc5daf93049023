//! The generated test PKI judged by the real `openssl` binary: chains, CRLs,
//! purposes, the flaws of the bad variants, the facts the manifest records
//! and the key files. openssl shares no code with certshift's rustls and
//! x509-parser stack, so agreement here means the PKI works with the tools a
//! user points at it, not only with our own.
//!
//! openssl is required, not optional: CI installs it, and a missing binary
//! fails every test with a message saying so rather than skipping silently.

use crate::common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use certshift::pki::{KeyType, PkiOptions, Role, Variant};
use common::TestPki;

/// The PKI shapes every check runs against: the default flat P-256, RSA
/// leaves under an intermediate (so `tls.crt` carries a chain), and Ed25519.
fn shapes() -> [(&'static str, PkiOptions); 3] {
    let rsa = PkiOptions {
        key_type: KeyType::Rsa2048,
        intermediate: true,
        // RSA key generation dominates the run time; two services still
        // exercise "every client".
        services: vec!["order-service".into(), "checkout-service".into()],
        ..PkiOptions::default()
    };
    let ed25519 = PkiOptions {
        key_type: KeyType::Ed25519,
        ..PkiOptions::default()
    };
    [
        ("flat ecdsa-p256", PkiOptions::default()),
        ("intermediate rsa-2048", rsa),
        ("flat ed25519", ed25519),
    ]
}

/// Generate each shape in turn (one temp dir alive at a time) and check it.
fn for_each_pki(check: impl Fn(&str, &TestPki)) {
    for (label, opts) in shapes() {
        let pki = TestPki::new(opts);
        check(label, &pki);
    }
}

/// One finished openssl run.
struct Run {
    cmd: String,
    success: bool,
    stdout: String,
    /// stdout then stderr: `verify` splits its verdict across both.
    text: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (success: {}):\n{}",
            self.cmd, self.success, self.text
        )
    }
}

/// Run openssl in the PKI directory, so paths read as in the manifest.
fn openssl(pki: &TestPki, args: &[&str]) -> Run {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(pki.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `openssl` ({e}): these tests check the generated PKI with the real \
                 openssl binary; install it (e.g. `apt-get install openssl`) and put it on PATH"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    Run {
        cmd: format!("openssl {}", args.join(" ")),
        success: out.status.success(),
        stdout,
        text,
    }
}

/// `openssl verify -CAfile ca/ca.crt -purpose PURPOSE EXTRA... CERT`. With an
/// intermediate PKI the certificate file itself is passed as `-untrusted`,
/// since it carries the intermediate exactly as a TLS peer would send it.
fn verify(pki: &TestPki, cert: &str, purpose: &str, extra: &[&str]) -> Run {
    let mut args = vec!["verify", "-CAfile", "ca/ca.crt", "-purpose", purpose];
    if pki.manifest.intermediate {
        args.extend(["-untrusted", cert]);
    }
    args.extend_from_slice(extra);
    args.push(cert);
    openssl(pki, &args)
}

/// The output of a query that must succeed.
fn query(pki: &TestPki, args: &[&str]) -> String {
    let run = openssl(pki, args);
    assert!(run.success, "{run}");
    run.stdout
}

fn assert_verified(label: &str, run: &Run, cert: &str) {
    assert!(
        run.success && run.stdout.contains(&format!("{cert}: OK")),
        "{label}: openssl must accept {cert}: {run}"
    );
}

/// openssl must fail the verification and say one of `why` (the wording of
/// some errors changed between OpenSSL releases).
fn assert_rejected(label: &str, run: &Run, cert: &str, why: &[&str]) {
    assert!(
        !run.success,
        "{label}: openssl must reject {cert} ({why:?}): {run}"
    );
    assert!(
        why.iter().any(|w| run.text.contains(w)),
        "{label}: openssl rejected {cert} but not for {why:?}: {run}"
    );
}

fn variant_cert(pki: &TestPki, variant: Variant) -> String {
    pki.manifest
        .variant(variant)
        .unwrap_or_else(|| panic!("manifest has no {variant} credential"))
        .cert
        .clone()
}

const REVOKED: &[&str] = &["certificate revoked"];
const NO_ISSUER: &[&str] = &["unable to get local issuer certificate"];

#[test]
fn every_valid_client_verifies_for_ssl_client_with_and_without_the_crl() {
    for_each_pki(|label, pki| {
        let clients: Vec<_> = pki
            .manifest
            .credentials
            .iter()
            .filter(|e| e.role == Role::Client)
            .collect();
        assert_eq!(
            clients.len(),
            pki.manifest.services.len(),
            "{label}: one valid client per service"
        );
        for e in clients {
            let cert = e.cert.as_str();
            assert_verified(label, &verify(pki, cert, "sslclient", &[]), cert);
            let crl = ["-crl_check", "-CRLfile", "ca/crl.pem"];
            assert_verified(label, &verify(pki, cert, "sslclient", &crl), cert);
            if pki.manifest.intermediate {
                // Every CA on the path needs a CRL: the root's for the intermediate.
                let all = ["-crl_check_all", "-CRLfile", "ca/crl.pem"];
                assert_verified(label, &verify(pki, cert, "sslclient", &all), cert);
            }
        }
    });
}

#[test]
fn revoked_variant_is_rejected_only_once_the_crl_is_checked() {
    for_each_pki(|label, pki| {
        let cert = variant_cert(pki, Variant::Revoked);
        // Its only flaw is revocation: without the CRL it is a valid client.
        assert_verified(label, &verify(pki, &cert, "sslclient", &[]), &cert);
        let crl = ["-crl_check", "-CRLfile", "ca/crl.pem"];
        let run = verify(pki, &cert, "sslclient", &crl);
        assert_rejected(label, &run, &cert, REVOKED);
        if pki.manifest.intermediate {
            let all = ["-crl_check_all", "-CRLfile", "ca/crl.pem"];
            let run = verify(pki, &cert, "sslclient", &all);
            assert_rejected(label, &run, &cert, REVOKED);
        }
    });
}

#[test]
fn openssl_rejects_the_variants_whose_flaw_it_can_see() {
    for_each_pki(|label, pki| {
        let cases: [(Variant, &[&str]); 5] = [
            (Variant::Expired, &["certificate has expired"]),
            (Variant::NotYetValid, &["not yet valid"]),
            (Variant::UntrustedCa, NO_ISSUER),
            (
                Variant::SelfSigned,
                &["self-signed certificate", "self signed certificate"],
            ),
            // OpenSSL 3 says "unsuitable", 1.1 said "unsupported".
            (
                Variant::WrongEku,
                &[
                    "unsuitable certificate purpose",
                    "unsupported certificate purpose",
                ],
            ),
        ];
        for (variant, why) in cases {
            let cert = variant_cert(pki, variant);
            let run = verify(pki, &cert, "sslclient", &[]);
            assert_rejected(&format!("{label}, {variant}"), &run, &cert, why);
        }
    });
}

#[test]
fn rejected_variants_have_only_their_one_flaw() {
    // The flaw is isolated: lift openssl's one check and the chain is fine.
    // This is what makes a server's wrong verdict attributable to that check.
    for_each_pki(|label, pki| {
        for variant in [Variant::Expired, Variant::NotYetValid] {
            let cert = variant_cert(pki, variant);
            let run = verify(pki, &cert, "sslclient", &["-no_check_time"]);
            assert_verified(&format!("{label}, {variant}"), &run, &cert);
        }
        let cert = variant_cert(pki, Variant::WrongEku);
        let run = verify(pki, &cert, "sslserver", &[]);
        assert_verified(&format!("{label}, wrong-eku as sslserver"), &run, &cert);
        // Flaws openssl cannot see (they are in the SPIFFE identity): the
        // chain, validity and purpose must all be right.
        for variant in [Variant::WrongTrustDomain, Variant::NoSpiffeId] {
            let cert = variant_cert(pki, variant);
            let crl = ["-crl_check", "-CRLfile", "ca/crl.pem"];
            let run = verify(pki, &cert, "sslclient", &crl);
            assert_verified(&format!("{label}, {variant}"), &run, &cert);
        }
    });
}

#[test]
fn missing_intermediate_fails_without_the_intermediate_and_passes_with_it() {
    let opts = PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    };
    let pki = TestPki::new(opts);
    let cert = variant_cert(&pki, Variant::MissingIntermediate);
    let run_with = |args: &[&str]| {
        let mut all = vec!["verify", "-CAfile", "ca/ca.crt", "-purpose", "sslclient"];
        all.extend_from_slice(args);
        openssl(&pki, &all)
    };

    let run = run_with(&[&cert]);
    assert_rejected("missing-intermediate", &run, &cert, NO_ISSUER);
    // The file itself must not carry the intermediate either.
    let run = run_with(&["-untrusted", &cert, &cert]);
    assert_rejected(
        "missing-intermediate, own file untrusted",
        &run,
        &cert,
        NO_ISSUER,
    );
    // Supplying the intermediate out of band repairs it: nothing else is wrong.
    let run = run_with(&["-untrusted", "ca/intermediate.crt", &cert]);
    assert_verified("missing-intermediate, intermediate supplied", &run, &cert);

    let flat = TestPki::default_flat();
    assert!(
        flat.manifest
            .variant(Variant::MissingIntermediate)
            .is_none()
            && !flat.file("variants/missing-intermediate").exists(),
        "a flat PKI has no intermediate to leave out"
    );
}

#[test]
fn server_cert_verifies_for_ssl_server_and_its_names() {
    for_each_pki(|label, pki| {
        let cert = "server/tls.crt";
        assert_verified(label, &verify(pki, cert, "sslserver", &[]), cert);
        for name in [
            ["-verify_hostname", "localhost"],
            ["-verify_ip", "127.0.0.1"],
            ["-verify_ip", "::1"],
        ] {
            let run = verify(pki, cert, "sslserver", &name);
            assert_verified(&format!("{label}, {}", name[1]), &run, cert);
        }
        let run = verify(
            pki,
            cert,
            "sslserver",
            &["-verify_hostname", "evil.example"],
        );
        assert_rejected(label, &run, cert, &["hostname mismatch"]);
    });
}

#[test]
fn manifest_serial_fingerprint_and_spiffe_id_agree_with_openssl() {
    for_each_pki(|label, pki| {
        let m = &pki.manifest;
        for e in &m.credentials {
            let at = format!("{label}, {} ({})", e.name, e.cert);
            let serial = query(pki, &["x509", "-in", &e.cert, "-noout", "-serial"]);
            assert_eq!(serial.trim(), format!("serial={}", e.serial), "{at}");

            let fp = query(
                pki,
                &["x509", "-in", &e.cert, "-noout", "-fingerprint", "-sha256"],
            );
            let (_, hex) = fp
                .trim()
                .split_once('=')
                .unwrap_or_else(|| panic!("{at}: no '=' in openssl's fingerprint {fp:?}"));
            assert!(
                hex.eq_ignore_ascii_case(&e.sha256),
                "{at}: openssl says {hex}, manifest says {}",
                e.sha256
            );

            if !matches!(e.role, Role::Client | Role::Variant) {
                continue;
            }
            let san = query(
                pki,
                &["x509", "-in", &e.cert, "-noout", "-ext", "subjectAltName"],
            );
            let identity = e
                .identity
                .as_deref()
                .unwrap_or_else(|| panic!("{at}: a client credential must name its identity"));
            let own = format!("spiffe://cluster.local/ns/production/sa/{identity}");
            match e.variant {
                Some(Variant::NoSpiffeId) => {
                    assert_eq!(e.spiffe_id, None, "{at}");
                    assert!(!san.contains("spiffe://"), "{at}: {san}");
                }
                Some(Variant::WrongTrustDomain) => {
                    let evil = format!("spiffe://evil.example/ns/production/sa/{identity}");
                    assert_eq!(e.spiffe_id.as_deref(), Some(evil.as_str()), "{at}");
                    assert!(san.contains(&format!("URI:{evil}")), "{at}: {san}");
                    assert!(!san.contains("spiffe://cluster.local"), "{at}: {san}");
                }
                _ => {
                    assert_eq!(e.spiffe_id.as_deref(), Some(own.as_str()), "{at}");
                    assert!(san.contains(&format!("URI:{own}")), "{at}: {san}");
                }
            }
        }
    });
}

#[test]
fn every_key_is_private_pkcs8_and_matches_its_certificate() {
    for_each_pki(|label, pki| {
        let listed: BTreeSet<String> = pki
            .manifest
            .credentials
            .iter()
            .map(|e| e.key.clone())
            // The mutations carry the first identity's key (a copy, 0600;
            // tests/it/pki_mutations.rs checks both).
            .chain(pki.manifest.mutations.iter().map(|m| m.key.clone()))
            .collect();
        let mut on_disk = BTreeSet::new();
        key_files(pki.path(), pki.path(), &mut on_disk);
        assert_eq!(
            on_disk, listed,
            "{label}: every key file on disk is a manifest credential's key"
        );
        assert!(
            listed.contains("ca/ca.key") && listed.contains("other-ca/ca.key"),
            "{label}: {listed:?}"
        );

        for e in &pki.manifest.credentials {
            let at = format!("{label}, {}", e.key);
            let path = pki.file(&e.key);
            let pem = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{at}: {err}"));
            assert!(
                pem.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{at}: not PKCS#8: {}",
                pem.lines().next().unwrap_or("")
            );
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|err| panic!("{at}: {err}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{at}: mode {:o}", mode & 0o777);

            // Every TLS stack built on openssl (curl, nginx, s_client) loads
            // keys this way; a key openssl cannot read is unusable there.
            let run = openssl(pki, &["pkey", "-in", &e.key, "-pubout"]);
            assert!(run.success, "{at}: openssl cannot read the key: {run}");
            let from_key = run.stdout;
            let from_cert = query(pki, &["x509", "-in", &e.cert, "-noout", "-pubkey"]);
            assert!(
                from_key.contains("-----BEGIN PUBLIC KEY-----"),
                "{at}: {from_key}"
            );
            assert_eq!(from_key, from_cert, "{at} does not match {}", e.cert);
        }
    });
}

/// Every `*.key` under `dir`, relative to `root`. The PKI is two levels deep.
fn key_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            // Bounded: the PKI layout has no directory deeper than three.
            assert!(
                path.strip_prefix(root)
                    .map_or(0, |p| p.components().count())
                    <= 3,
                "unexpectedly deep PKI directory {}",
                path.display()
            );
            key_files(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "key") {
            let rel = path.strip_prefix(root).expect("under root");
            out.insert(rel.display().to_string());
        }
    }
}
