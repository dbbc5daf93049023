//! The proxy in front of `certshift serve`: what each connection presented,
//! what the service answered, and how the proxy counted it.

use crate::common;

use certshift::pki::{PkiOptions, Variant};
use certshift::plan::Presented;
use certshift::proxy::TlsMode;
use certshift::serve::Enforcement;
use certshift::tls::{ClientCert, Outcome, TlsVersion};
use common::*;

/// Every presentable name of an --intermediate PKI.
fn everything() -> String {
    none_and_variants()
        .map(|p| p.name().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_in_mtls_out_reaches_the_service_as_the_identity() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.identity = Some("checkout-service".into());
    let proxy = start_proxy(args).await;
    let r = probe_plain(proxy.addr, "/api/orders").await;
    assert_eq!(r.outcome, Outcome::Http(200));
    let body = echo(&r);
    assert_eq!(
        body["peer"],
        "spiffe://cluster.local/ns/production/sa/checkout-service"
    );
    assert_eq!(body["serial"], pki.entry("checkout-service").serial);
    let snap = proxy.stop().await;
    let t = snap.totals();
    assert_eq!((t.connections, t.ok, t.unexpected_reject), (1, 1, 0));
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_in_front_and_behind_and_the_proxy_refuses_a_client_without_a_certificate() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Mtls;
    args.identity = Some("payment-service".into());
    let proxy = start_proxy(args).await;
    for version in TlsVersion::ALL {
        let r = probe_tls(&pki, proxy.addr, pki.cert("order-service"), version, "/x").await;
        assert_eq!(r.outcome, Outcome::Http(200), "TLS {version}");
        // The service sees the proxy's identity, not the downstream client's.
        assert_eq!(
            echo(&r)["peer"],
            "spiffe://cluster.local/ns/production/sa/payment-service"
        );
        let r = probe_tls(&pki, proxy.addr, ClientCert::None, version, "/x").await;
        assert_eq!(
            r.outcome,
            Outcome::Alert("certificate_required".into()),
            "TLS {version}"
        );
        let r = probe_tls(&pki, proxy.addr, pki.cert("untrusted-ca"), version, "/x").await;
        assert_eq!(
            r.outcome,
            Outcome::Alert("unknown_ca".into()),
            "TLS {version}"
        );
    }
    let h = proxy.handle.clone();
    assert!(
        wait_until(std::time::Duration::from_secs(3), || h
            .downstream_failures()
            == 4)
        .await,
        "4 refused downstream handshakes"
    );
    let snap = proxy.stop().await;
    assert_eq!(
        snap.totals().connections,
        2,
        "refused downstream clients make no upstream experiment"
    );
    serve.stop().await;
}

/// Every presentable credential through the proxy against `mode`; returns
/// the observed outcome per presented name.
async fn through_proxy(
    pki: &TestPki,
    mode: Enforcement,
    version: TlsVersion,
) -> (Vec<(Presented, Outcome)>, certshift::metrics::Snapshot) {
    let serve = start_serve(pki, mode).await;
    let mut args = proxy_args(pki, serve.addr);
    args.present_sequence = Some(everything());
    args.tls_versions = certshift::tls::TlsVersions::only(version);
    let proxy = start_proxy(args).await;
    let mut seen = Vec::new();
    for p in none_and_variants() {
        // The sequence is cycled in connection order, one request at a time.
        let r = probe_plain(proxy.addr, "/api/orders").await;
        let outcome = match r.outcome {
            // The proxy answers an HTTP client with 502 and names the outcome.
            Outcome::Http(502) => {
                let text = r.body_text();
                assert!(
                    text.contains(&format!("presented credential: {p}")),
                    "{text}"
                );
                Outcome::Http(502)
            }
            o => o,
        };
        seen.push((p, outcome));
    }
    let snap = proxy.stop().await;
    serve.stop().await;
    (seen, snap)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_variant_gets_the_manifest_verdict_from_a_strict_service() {
    let pki = TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    });
    for version in TlsVersion::ALL {
        let (seen, snap) = through_proxy(&pki, Enforcement::Strict, version).await;
        for (p, outcome) in &seen {
            let want_ok = *p == Presented::Variant(Variant::Valid);
            assert_eq!(
                *outcome == Outcome::Http(200),
                want_ok,
                "{p} over TLS {version}: {outcome}"
            );
            // The proxy's record of a refusal must be a refusal the service
            // gave (a TLS alert), not a failure of ours.
            let recorded = snap.variant(p.name()).unwrap();
            let refused = recorded.outcomes.keys().all(|o| o.starts_with("alert:"));
            assert_eq!(
                refused, !want_ok,
                "{p} over TLS {version}: {:?}",
                recorded.outcomes
            );
        }
        let t = snap.totals();
        assert_eq!(t.connections, seen.len() as u64);
        assert_eq!(
            (t.unexpected_accept, t.unexpected_reject),
            (0, 0),
            "TLS {version}"
        );
        // The proxy's own record names the refusal.
        let expired = snap.variant("expired").expect("expired was presented");
        assert_eq!(
            expired.outcomes.get("alert:certificate_expired"),
            Some(&1),
            "TLS {version}"
        );
        let none = snap.variant("none").expect("none was presented");
        assert_eq!(
            none.outcomes.get("alert:certificate_required"),
            Some(&1),
            "TLS {version}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_any_ca_service_shows_up_as_unexpected_accepts_for_the_chain_variants() {
    let pki = TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    });
    let (_, snap) = through_proxy(&pki, Enforcement::AnyCa, TlsVersion::Tls13).await;
    for p in none_and_variants() {
        let v = snap
            .variant(p.name())
            .unwrap_or_else(|| panic!("{p} was presented"));
        // any-ca checks everything but the issuer: only the variants whose
        // one defect is the CA trust get through, and a certificate is
        // still required.
        let hole = matches!(
            p,
            Presented::Variant(
                Variant::UntrustedCa | Variant::SelfSigned | Variant::MissingIntermediate
            )
        );
        assert_eq!(v.unexpected_accept, u64::from(hole), "{p}");
        assert_eq!(v.unexpected_reject, 0, "{p}");
    }
    assert_eq!(snap.totals().unexpected_accept, 3);
}
