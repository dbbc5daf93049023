//! `serve` judged by real handshakes: every manifest credential gets the
//! verdict a strict server must give, over TLS 1.2 and 1.3, with the
//! rejection named; the broken modes accept exactly what they should.

mod common;

use certshift::pki::{KeyType, PkiOptions, Variant};
use certshift::serve::Enforcement;
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

async fn strict_matrix(pki: &TestPki) {
    let serve = start_serve(pki, Enforcement::Strict).await;
    let mut checked = 0;
    for version in TlsVersion::ALL {
        for e in pki.manifest.clients() {
            let r = probe_tls(pki, serve.addr, pki.cert(&e.name), version, "/api/orders").await;
            let variant = e.variant.expect("client entries carry a variant");
            if variant == Variant::Valid {
                assert_eq!(
                    r.outcome,
                    Outcome::Http(200),
                    "{} over TLS {version}",
                    e.name
                );
                let body = echo(&r);
                assert_eq!(
                    body["peer"],
                    e.spiffe_id.clone().unwrap(),
                    "service must report the presented identity"
                );
                assert_eq!(body["tls_version"], version.to_string());
                assert_eq!(body["path"], "/api/orders");
                assert_eq!(body["serial"], e.serial);
            } else {
                let want = Outcome::Alert(strict_alert(variant).into());
                assert_eq!(r.outcome, want, "{variant} over TLS {version}");
            }
            checked += 1;
        }
        let r = probe_tls(pki, serve.addr, ClientCert::None, version, "/").await;
        assert_eq!(
            r.outcome,
            Outcome::Alert("certificate_required".into()),
            "no certificate over TLS {version}"
        );
    }
    let variants = if pki.manifest.intermediate { 10 } else { 9 };
    assert_eq!(
        checked,
        2 * (pki.manifest.services.len() + variants),
        "every client credential was presented"
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_gives_every_credential_its_expected_verdict() {
    strict_matrix(&TestPki::default_flat()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_with_an_intermediate_and_rsa_keys() {
    let pki = TestPki::new(PkiOptions {
        key_type: KeyType::Rsa2048,
        intermediate: true,
        ..PkiOptions::default()
    });
    assert!(pki.manifest.variant(Variant::MissingIntermediate).is_some());
    strict_matrix(&pki).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_with_ed25519_and_p384_keys() {
    for key_type in [KeyType::Ed25519, KeyType::EcdsaP384] {
        let services = vec!["order-service".to_string()];
        strict_matrix(&TestPki::new(PkiOptions {
            key_type,
            services,
            ..PkiOptions::default()
        }))
        .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn permissive_also_serves_plaintext_and_stays_strict_for_tls() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Permissive).await;
    let r = probe_plain(serve.addr, "/api/orders").await;
    assert_eq!(r.outcome, Outcome::Http(200));
    assert_eq!(echo(&r)["peer"], serde_json::Value::Null);
    assert_eq!(echo(&r)["tls_version"], serde_json::Value::Null);
    for version in TlsVersion::ALL {
        let ok = probe_tls(&pki, serve.addr, pki.cert("order-service"), version, "/").await;
        assert_eq!(ok.outcome, Outcome::Http(200));
        let bad = probe_tls(&pki, serve.addr, pki.cert("expired"), version, "/").await;
        assert_eq!(bad.outcome, Outcome::Alert("certificate_expired".into()));
        let none = probe_tls(&pki, serve.addr, ClientCert::None, version, "/").await;
        assert_eq!(none.outcome, Outcome::Alert("certificate_required".into()));
    }
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_serves_without_a_certificate_but_refuses_bad_ones() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Optional).await;
    for version in TlsVersion::ALL {
        let none = probe_tls(&pki, serve.addr, ClientCert::None, version, "/").await;
        assert_eq!(
            none.outcome,
            Outcome::Http(200),
            "no certificate over {version}"
        );
        assert_eq!(echo(&none)["peer"], serde_json::Value::Null);
        for e in pki.manifest.clients() {
            let r = probe_tls(&pki, serve.addr, pki.cert(&e.name), version, "/").await;
            let variant = e.variant.unwrap();
            assert_eq!(
                r.outcome.accepted(),
                variant == Variant::Valid,
                "{} over {version}: {}",
                e.name,
                r.outcome
            );
        }
    }
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn any_ca_accepts_every_certificate_and_refuses_none() {
    let pki = TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    });
    let serve = start_serve(&pki, Enforcement::AnyCa).await;
    for version in TlsVersion::ALL {
        for e in pki.manifest.clients() {
            let r = probe_tls(&pki, serve.addr, pki.cert(&e.name), version, "/").await;
            assert_eq!(
                r.outcome,
                Outcome::Http(200),
                "any-ca must accept {} over {version}",
                e.name
            );
            assert_eq!(
                echo(&r)["peer"],
                e.spiffe_id
                    .clone()
                    .map(Into::into)
                    .unwrap_or(serde_json::Value::Null)
            );
        }
        let none = probe_tls(&pki, serve.addr, ClientCert::None, version, "/").await;
        assert_eq!(none.outcome, Outcome::Alert("certificate_required".into()));
    }
    serve.stop().await;
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
    let serve = start_serve_with(certshift::serve::ServeArgs {
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
    let serve = start_serve_with(certshift::serve::ServeArgs {
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
