//! `serve` judged by real handshakes: every manifest credential gets the
//! verdict each mode must give, over TLS 1.2 and 1.3, with the rejection
//! named. These pin the contracts `certshift audit` checks: `strict` fails
//! nothing, `permissive` fails exactly plaintext and no-client-cert,
//! `optional` exactly no-client-cert, `any-ca` exactly the CA-trust checks,
//! `off` every certificate check (it never asks for one).

use crate::common;

use certshift::pki::{KeyType, OwnCaFiles, PkiOptions, Variant};
use certshift::serve::{Enforcement, ServeArgs};
use certshift::tls::{ClientCert, Outcome, TlsVersion};
use common::*;

/// The alert a strict rustls-based server sends for each variant.
fn strict_alert(variant: Variant) -> &'static str {
    match variant {
        Variant::Valid => unreachable!("valid is accepted"),
        Variant::Expired | Variant::NotYetValid => "certificate_expired",
        Variant::UntrustedCa | Variant::SelfSigned | Variant::MissingIntermediate => "unknown_ca",
        Variant::Revoked => "certificate_revoked",
        Variant::WrongEku => "unsupported_certificate",
        Variant::WrongTrustDomain | Variant::NoSpiffeId => "access_denied",
        Variant::CaAsLeaf => "certificate_unknown",
    }
}

/// What `mode` must do with a credential: every mode judges a presented
/// certificate as strict does, except that any-ca takes one whose only
/// defect is that no trusted CA issued it.
fn expected(mode: Enforcement, variant: Variant) -> Outcome {
    let ca_trust = matches!(
        variant,
        Variant::UntrustedCa | Variant::SelfSigned | Variant::MissingIntermediate
    );
    match (mode, variant) {
        (_, Variant::Valid) => Outcome::Http(200),
        // Never asked for, the certificate is never sent, let alone judged.
        (Enforcement::Off, _) => Outcome::Http(200),
        (Enforcement::AnyCa, _) if ca_trust => Outcome::Http(200),
        _ => Outcome::Alert(strict_alert(variant).into()),
    }
}

/// What `mode` must do with TLS and no client certificate.
fn expected_without_certificate(mode: Enforcement) -> Outcome {
    match mode {
        Enforcement::Strict | Enforcement::AnyCa => Outcome::Alert("certificate_required".into()),
        Enforcement::Permissive | Enforcement::Optional | Enforcement::Off => Outcome::Http(200),
    }
}

/// Every client credential of `pki`, no certificate, and plaintext against
/// `mode`; each answer must be `expected`'s, and what is accepted must be
/// echoed as presented.
async fn matrix(pki: &TestPki, mode: Enforcement) {
    let serve = start_serve(pki, mode).await;
    let mut checked = 0;
    for version in TlsVersion::ALL {
        for e in pki.manifest.clients() {
            let r = probe_tls(pki, serve.addr, pki.cert(&e.name), version, "/api/orders").await;
            let variant = e.variant.expect("client entries carry a variant");
            let want = expected(mode, variant);
            assert_eq!(r.outcome, want, "{mode:?}: {} over TLS {version}", e.name);
            if want == Outcome::Http(200) {
                let body = echo(&r);
                let presented = match mode {
                    // No CertificateRequest: the client sends nothing.
                    Enforcement::Off => serde_json::Value::Null,
                    _ => e.spiffe_id.clone().unwrap().into(),
                };
                assert_eq!(
                    body["peer"], presented,
                    "service must report the presented identity"
                );
                assert_eq!(body["tls_version"], version.to_string());
                assert_eq!(body["path"], "/api/orders");
                let serial = match mode {
                    Enforcement::Off => serde_json::Value::Null,
                    _ => e.serial.clone().into(),
                };
                assert_eq!(body["serial"], serial);
            }
            checked += 1;
        }
        let r = probe_tls(pki, serve.addr, ClientCert::None, version, "/").await;
        let want = expected_without_certificate(mode);
        assert_eq!(
            r.outcome, want,
            "{mode:?}: no certificate over TLS {version}"
        );
        if want == Outcome::Http(200) {
            assert_eq!(echo(&r)["peer"], serde_json::Value::Null);
            assert_eq!(echo(&r)["tls_version"], version.to_string());
        }
    }
    let variants = match pki.manifest.variant(Variant::MissingIntermediate) {
        Some(_) => 10,
        None => 9,
    };
    assert_eq!(
        checked,
        2 * (pki.manifest.services.len() + variants),
        "every client credential was presented"
    );
    let plain = probe_plain(serve.addr, "/api/orders").await;
    if mode == Enforcement::Permissive {
        assert_eq!(plain.outcome, Outcome::Http(200), "plaintext");
        assert_eq!(echo(&plain)["peer"], serde_json::Value::Null);
        assert_eq!(echo(&plain)["tls_version"], serde_json::Value::Null);
    } else {
        assert!(
            !plain.outcome.accepted(),
            "{mode:?} must not serve plaintext: {}",
            plain.outcome
        );
    }
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_gives_every_credential_its_expected_verdict() {
    matrix(&TestPki::default_flat(), Enforcement::Strict).await;
}

/// `--mode off` (bench's auth=off baseline): TLS served, no certificate asked for.
#[tokio::test(flavor = "multi_thread")]
async fn off_serves_tls_without_asking_for_a_certificate() {
    matrix(&TestPki::default_flat(), Enforcement::Off).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_with_an_intermediate_and_rsa_keys() {
    let pki = TestPki::new(PkiOptions {
        key_type: KeyType::Rsa2048,
        intermediate: true,
        ..PkiOptions::default()
    });
    assert!(pki.manifest.variant(Variant::MissingIntermediate).is_some());
    matrix(&pki, Enforcement::Strict).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_with_ed25519_and_p384_keys() {
    for key_type in [KeyType::Ed25519, KeyType::EcdsaP384] {
        let services = vec!["order-service".to_string()];
        let pki = TestPki::new(PkiOptions {
            key_type,
            services,
            ..PkiOptions::default()
        });
        matrix(&pki, Enforcement::Strict).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls13_rejection_arrives_after_the_client_handshake_completes() {
    // The client's side of a TLS 1.3 handshake finishes before the server
    // has judged the certificate: only the response read shows the alert.
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("untrusted-ca"),
        TlsVersion::Tls13,
        "/",
    )
    .await;
    assert!(
        r.handshake.is_some() && r.tls_version == Some(TlsVersion::Tls13),
        "client handshake completed: {r:?}"
    );
    assert_eq!(r.outcome, Outcome::Alert("unknown_ca".into()));
    assert!(!r.outcome.accepted());
    // Over TLS 1.2 the same refusal happens inside the handshake.
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("untrusted-ca"),
        TlsVersion::Tls12,
        "/",
    )
    .await;
    assert!(r.handshake.is_none(), "TLS 1.2 handshake must fail: {r:?}");
    assert_eq!(r.outcome, Outcome::Alert("unknown_ca".into()));
    serve.stop().await;
}

fn with_intermediate() -> TestPki {
    TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn permissive_serves_plaintext_and_tls_without_a_certificate_and_judges_one_sent() {
    matrix(&with_intermediate(), Enforcement::Permissive).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_serves_without_a_certificate_but_refuses_bad_ones() {
    matrix(&with_intermediate(), Enforcement::Optional).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn any_ca_accepts_any_issuer_and_refuses_every_other_defect() {
    matrix(&with_intermediate(), Enforcement::AnyCa).await;
    matrix(&TestPki::default_flat(), Enforcement::AnyCa).await;
}

/// A PKI issued under the user's own intermediate (openssl-made, its root's
/// key never seen by certshift), `serve --pki` with its CRL: the CRL, signed
/// by the intermediate, speaks for the leaves; nobody here can sign one for
/// the intermediate itself, and that must not turn every client away.
#[tokio::test(flavor = "multi_thread")]
async fn strict_under_the_users_own_intermediate_with_its_crl() {
    let ca_dir = tempfile::tempdir().unwrap();
    common::own_ca::team_chain(ca_dir.path());
    let pki = TestPki::new(PkiOptions {
        own_ca: Some(OwnCaFiles {
            cert: ca_dir.path().join("team-chain.crt"),
            key: ca_dir.path().join("team-ca.key"),
        }),
        ..PkiOptions::default()
    });
    assert!(
        pki.file("ca/crl.pem").exists(),
        "serve --pki loads this CRL"
    );
    assert!(pki.manifest.variant(Variant::MissingIntermediate).is_some());
    let serve = start_serve(&pki, Enforcement::Strict).await;
    for version in TlsVersion::ALL {
        let ok = probe_tls(&pki, serve.addr, pki.cert("order-service"), version, "/").await;
        assert_eq!(ok.outcome, Outcome::Http(200), "TLS {version}");
        let revoked = probe_tls(&pki, serve.addr, pki.cert("revoked"), version, "/").await;
        assert_eq!(
            revoked.outcome,
            Outcome::Alert("certificate_revoked".into()),
            "TLS {version}"
        );
    }
    serve.stop().await;
    matrix(&pki, Enforcement::Strict).await;
}

/// When the CRLs do cover the chain (certshift's own root and intermediate
/// both sign one), an intermediate its root revokes takes its leaves down;
/// with only the intermediate's CRL, the leaves are still judged by it.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_intermediate_is_refused_when_a_crl_covers_it() {
    use certshift::x509::{CertFacts, CrlFacts};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateRevocationListDer;

    let pki = with_intermediate();
    let read = |rel: &str| std::fs::read_to_string(pki.file(rel)).unwrap();
    let intermediate = CertFacts::from_der(
        &rustls_pki_types::CertificateDer::from_pem_slice(read("ca/intermediate.crt").as_bytes())
            .unwrap(),
    )
    .unwrap();
    // ca/crl.pem holds the intermediate's CRL (revoking `revoked`) and the root's.
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(read("ca/crl.pem").as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let pem_crl = |der: &[u8]| pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()));
    let of_intermediate = crls
        .iter()
        .find(|c| CrlFacts::from_der(c).unwrap().issuer == intermediate.subject)
        .expect("the intermediate's CRL");
    let root = authority(&pki);
    let serial = certshift::pki::serial_number(&intermediate.serial).unwrap();
    let root_revokes_it = root
        .crl(
            &[serial],
            time::OffsetDateTime::now_utc(),
            std::time::Duration::from_secs(86400),
        )
        .unwrap();
    for (name, crls, valid) in [
        (
            "leaf-only.pem",
            pem_crl(of_intermediate),
            Outcome::Http(200),
        ),
        (
            "chain.pem",
            pem_crl(of_intermediate) + &root_revokes_it,
            Outcome::Alert("certificate_revoked".into()),
        ),
    ] {
        std::fs::write(pki.file(name), crls).unwrap();
        let serve = start_serve_with(ServeArgs {
            pki: Some(pki.path().to_path_buf()),
            crl: vec![pki.file(name)],
            ..serve_args()
        })
        .await;
        for version in TlsVersion::ALL {
            let r = probe_tls(&pki, serve.addr, pki.cert("order-service"), version, "/").await;
            assert_eq!(r.outcome, valid, "{name} over TLS {version}");
            let r = probe_tls(&pki, serve.addr, pki.cert("revoked"), version, "/").await;
            assert_eq!(
                r.outcome,
                Outcome::Alert("certificate_revoked".into()),
                "{name} over TLS {version}"
            );
        }
        serve.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_allows_order_service_and_denies_inventory_service() {
    let pki = TestPki::default_flat();
    let policy = pki.file("policy.toml");
    std::fs::write(
        &policy,
        "[[rules]]\npaths = [\"/api/payment/*\"]\nmethods = [\"POST\", \"GET\"]\nprincipals = [\"cluster.local/ns/production/sa/order-service\"]\n\n[[rules]]\npaths = [\"/healthz\", \"/public/*\"]\n",
    )
    .unwrap();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        policy: Some(policy),
        ..serve_args()
    })
    .await;
    // (client, path, status, why)
    let cases = [
        (
            "order-service",
            "/api/payment/process",
            200,
            "the rule names order-service",
        ),
        (
            "inventory-service",
            "/api/payment/process",
            403,
            "no rule names inventory-service",
        ),
        (
            "order-service",
            "/api/orders",
            403,
            "no rule names this path",
        ),
        (
            "order-service",
            "/api/payment/../orders",
            403,
            "dot segments cannot borrow a permission",
        ),
        (
            "order-service",
            "/api/payment%2Fprocess",
            400,
            "an encoded slash is refused",
        ),
        (
            "inventory-service",
            "/public/x",
            200,
            "a rule without principals admits any verified peer",
        ),
    ];
    for version in TlsVersion::ALL {
        for (client, path, status, why) in cases {
            let r = probe_tls(&pki, serve.addr, pki.cert(client), version, path).await;
            assert_eq!(
                r.outcome,
                Outcome::Http(status),
                "{client} {path} over TLS {version}: {why}"
            );
            match status {
                200 => assert_eq!(
                    echo(&r)["peer"],
                    pki.entry(client).spiffe_id.clone().unwrap()
                ),
                403 => {
                    assert_eq!(r.body_text(), "RBAC: access denied");
                    assert!(!r.outcome.accepted());
                }
                _ => {}
            }
        }
    }
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_versions_limit_what_the_service_speaks() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        tls_versions: "1.3".parse().unwrap(),
        ..serve_args()
    })
    .await;
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("order-service"),
        TlsVersion::Tls13,
        "/",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Http(200));
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("order-service"),
        TlsVersion::Tls12,
        "/",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Alert("protocol_version".into()));
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_matrix_against_a_dead_service_is_inconclusive_not_a_pass() {
    let pki = TestPki::default_flat();
    // A port nobody listens on: bind, note it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rows = certshift::demo::matrix(addr, pki.path(), &pki.manifest, &"1.3".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(rows.len(), pki.manifest.clients().count() + 1);
    for r in &rows {
        assert!(
            !r.pass,
            "{} must not pass against a dead service",
            r.credential
        );
        assert_eq!(r.observed, Outcome::ConnectRefused);
        assert!(r.verdict().contains("inconclusive"), "{}", r.verdict());
    }
}
