//! What an independent client-certificate test suite found (issue 11):
//! a Certificate message whose chain carries a zero-length or non-DER entry
//! after a valid leaf is refused, and two trusted CAs with the same name,
//! each with its own CRL, each have their clients judged by their own CRL.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use certshift::pki::{OwnCaFiles, PkiOptions};
use certshift::proxy::TlsMode;
use certshift::serve::{Enforcement, ServeArgs};
use certshift::tls::{ClientCert, Outcome, TlsVersion};
use common::*;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

/// The PKI's `order-service` leaf followed by `extra` as a second entry,
/// sent as is: rustls's client does not look inside the chain it presents.
fn leaf_then(pki: &TestPki, extra: &[u8]) -> ClientCert {
    let ClientCert::Always(ck) = pki.cert("order-service") else {
        unreachable!("TestPki::cert loads a fixed credential")
    };
    let chain = vec![ck.cert[0].clone(), CertificateDer::from(extra.to_vec())];
    ClientCert::Always(Arc::new(CertifiedKey::new(chain, ck.key.clone())))
}

/// Every bad chain refused with bad_certificate over TLS 1.2 and 1.3; the
/// same leaf alone served, so the refusal is the extra entry's.
async fn bad_entries_refused(pki: &TestPki, addr: SocketAddr, what: &str) {
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let good = probe_tls(pki, addr, pki.cert("order-service"), version, "/").await;
        assert_eq!(
            good.outcome,
            Outcome::Http(200),
            "{what} {version:?}: leaf alone"
        );
        for (name, extra) in [
            ("zero-length", &b""[..]),
            ("not DER", &b"garbage"[..]),
            ("DER with trailing bytes", &[0x30, 0x00, 0x00][..]),
        ] {
            let r = probe_tls(pki, addr, leaf_then(pki, extra), version, "/").await;
            assert_eq!(
                r.outcome,
                Outcome::Alert("bad_certificate".into()),
                "{what} {version:?}: leaf + {name} entry"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_entry_that_is_not_a_certificate_is_refused_by_serve_and_the_proxy() {
    let pki = TestPki::default_flat();
    for mode in [Enforcement::Strict, Enforcement::Optional] {
        let serve = start_serve(&pki, mode).await;
        bad_entries_refused(&pki, serve.addr, &format!("serve {mode:?}")).await;
        serve.stop().await;
    }
    let upstream = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, upstream.addr);
    args.listen_tls = TlsMode::Mtls;
    let proxy = start_proxy(args).await;
    bad_entries_refused(&pki, proxy.addr, "proxy --listen-tls mtls").await;
    proxy.stop().await;
    upstream.stop().await;
}

/// A PKI under an openssl-made root called `corp-root`, like every other
/// root made by this function.
fn pki_under_corp_root(ca_dir: &std::path::Path) -> TestPki {
    use common::own_ca::{root, CA_EXT, P256};
    root(ca_dir, "corp-root", "ec", P256, &CA_EXT);
    TestPki::new(PkiOptions {
        own_ca: Some(OwnCaFiles {
            cert: ca_dir.join("corp-root.crt"),
            key: ca_dir.join("corp-root.key"),
        }),
        ..PkiOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn two_cas_of_one_name_each_have_their_clients_judged_by_their_own_crl() {
    let (ca1, ca2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, two) = (
        pki_under_corp_root(ca1.path()),
        pki_under_corp_root(ca2.path()),
    );
    let subject = |p: &TestPki| {
        certshift::x509::CertFacts::from_der(
            &certshift::creds::load_chain(&p.file("ca/ca.crt")).unwrap()[0],
        )
        .unwrap()
        .subject
    };
    assert_eq!(
        subject(&one),
        subject(&two),
        "the point: one name, two keys"
    );
    let serve = start_serve_with(ServeArgs {
        cert: Some(one.file("server/tls.crt")),
        key: Some(one.file("server/tls.key")),
        client_ca: vec![one.file("ca/ca.crt"), two.file("ca/ca.crt")],
        crl: vec![one.file("ca/crl.pem"), two.file("ca/crl.pem")],
        mode: Enforcement::Strict,
        ..serve_args()
    })
    .await;
    for (label, pki) in [("first CA", &one), ("second CA", &two)] {
        for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
            let valid = probe_tls(&one, serve.addr, pki.cert("order-service"), version, "/").await;
            assert_eq!(
                valid.outcome,
                Outcome::Http(200),
                "{label} {version:?}: valid client"
            );
            let revoked = probe_tls(&one, serve.addr, pki.cert("revoked"), version, "/").await;
            assert_eq!(
                revoked.outcome,
                Outcome::Alert("certificate_revoked".into()),
                "{label} {version:?}: revoked client"
            );
        }
    }
    serve.stop().await;
}

#[test]
fn every_pki_init_names_its_root_uniquely() {
    let (a, b) = (TestPki::default_flat(), TestPki::default_flat());
    let subject = |p: &TestPki| {
        certshift::x509::CertFacts::from_der(
            &certshift::creds::load_chain(&p.file("ca/ca.crt")).unwrap()[0],
        )
        .unwrap()
        .subject
    };
    let (sa, sb) = (subject(&a), subject(&b));
    assert!(sa.contains("certshift test root CA "), "{sa}");
    assert_ne!(sa, sb, "two PKIs, two root names");
}
