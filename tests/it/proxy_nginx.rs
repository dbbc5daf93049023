//! The proxy against a real, independently written mTLS server: nginx from
//! Debian with `ssl_verify_client on` and the PKI's CRL (.ci/run installs
//! it). nginx finishes the handshake and answers 400 for a refused
//! certificate; it checks chains, validity, revocation and purpose, but not
//! the SPIFFE identity nor CA:TRUE on a leaf, and the proxy must show
//! exactly those as enforcement holes.

use crate::common;

use std::collections::BTreeSet;

use certshift::pki::PkiOptions;
use certshift::plan::Presented;
use certshift::tls::{Outcome, TlsVersion, TlsVersions};
use common::peers::{nginx_verify_on, start_nginx};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn nginx_refusals_are_counted_and_its_identity_holes_show_as_unexpected_accepts() {
    let pki = TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    });
    let nginx = start_nginx(pki.path(), &nginx_verify_on(pki.path(), 3));
    for version in TlsVersion::ALL {
        let mut args = proxy_args(&pki, nginx.addr);
        args.present_sequence = Some(
            none_and_variants()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
        );
        args.tls_versions = TlsVersions::only(version);
        let proxy = start_proxy(args).await;
        for p in none_and_variants() {
            let r = probe_plain(proxy.addr, "/").await;
            match p {
                Presented::None => {
                    assert_eq!(r.outcome, Outcome::Http(400), "{p} over TLS {version}")
                }
                _ => assert!(
                    matches!(r.outcome, Outcome::Http(200 | 400)),
                    "{p} over TLS {version}: {}",
                    r.outcome
                ),
            }
        }
        let snap = proxy.stop().await;
        let holes: BTreeSet<&str> = snap
            .variants()
            .filter(|(_, v)| v.unexpected_accept > 0)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            holes,
            BTreeSet::from(["ca-as-leaf", "no-spiffe-id", "wrong-trust-domain"]),
            "over TLS {version}, nginx enforces chain, validity, CRL and purpose but not identity"
        );
        for refused in [
            "expired",
            "not-yet-valid",
            "untrusted-ca",
            "self-signed",
            "revoked",
            "wrong-eku",
            "missing-intermediate",
            "none",
        ] {
            let v = snap.variant(refused).unwrap();
            assert_eq!(
                v.outcomes.get("http:400"),
                Some(&1),
                "{refused} over TLS {version}: {:?}",
                v.outcomes
            );
        }
        assert_eq!(
            snap.variant("valid").unwrap().outcomes.get("http:200"),
            Some(&1)
        );
        assert_eq!(snap.totals().unexpected_reject, 0);
    }
}
