//! A resumed TLS session must not let an expired identity in. rustls checks
//! a client certificate in a full handshake only; a TLS 1.3 ticket or a
//! TLS 1.2 session id brings back the chain it was verified with. `serve`
//! keeps resumption on and re-checks the certificate's validity on every
//! request: 495 with the reason, in every mode.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certshift::net::{self, http, HttpClient, Timeouts, TlsTarget};
use certshift::pki::{key_pem, pem_cert, LeafSpec, Usage};
use certshift::serve::Enforcement;
use certshift::tls::{client_config, ClientCert, Outcome, TlsVersion, TlsVersions};
use certshift::x509::{rfc3339, CertFacts};
use common::*;
use rustls_pki_types::ServerName;
use time::OffsetDateTime;
use tokio::time::Instant;

/// What one request over a new connection saw.
#[derive(Debug)]
struct Seen {
    outcome: Outcome,
    /// The client's side of the handshake resumed a session.
    resumed: Option<bool>,
    body: String,
}

/// Connect with `target` (whose `ClientConfig` keeps the sessions that
/// resume) and GET /api/orders.
async fn request(addr: SocketAddr, target: &TlsTarget) -> Seen {
    let limit = Duration::from_secs(5);
    let failed = |outcome| Seen {
        outcome,
        resumed: None,
        body: String::new(),
    };
    let opened = match net::open(addr, Some(target), Timeouts::per_phase(limit, limit)).await {
        Ok(o) => o,
        Err(f) => return failed(f.outcome),
    };
    let resumed = opened.tls.as_ref().and_then(|t| t.resumed);
    let until = Instant::now() + limit;
    let req = http::request(&hyper::Method::GET, "/api/orders", &addr.to_string(), true)
        .expect("request");
    let mut client = match HttpClient::handshake(opened.stream, until).await {
        Ok(c) => c,
        Err(outcome) => {
            return Seen {
                outcome,
                resumed,
                body: String::new(),
            }
        }
    };
    match client.send(req, until).await {
        Ok(resp) => {
            let outcome = Outcome::Http(resp.status().as_u16());
            let body = client.collect(resp, 64 * 1024, until).await;
            Seen {
                outcome,
                resumed,
                body: String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned(),
            }
        }
        Err(outcome) => Seen {
            outcome,
            resumed,
            body: String::new(),
        },
    }
}

/// order-service's identity in a leaf from the PKI's CA that lives `for_`
/// from now, as a client credential; and its notAfter as written (whole
/// seconds).
fn short_lived(pki: &TestPki, for_: Duration) -> (ClientCert, OffsetDateTime) {
    let ca = authority(pki);
    let mut spec = LeafSpec::new(
        "order-service",
        Usage::Client,
        OffsetDateTime::now_utc(),
        for_,
    );
    spec.spiffe_id = pki.entry("order-service").spiffe_id.clone();
    let issued = ca.issue(&spec, pki.manifest.key_type).expect("issue");
    let dir = pki.file("short-lived");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), pem_cert(&issued.cert)).unwrap();
    std::fs::write(dir.join("tls.key"), key_pem(&issued.key)).unwrap();
    let key = certshift::creds::load_certified_key(&dir.join("tls.crt"), &dir.join("tls.key"))
        .expect("load short-lived leaf");
    let not_after = CertFacts::from_der(&issued.cert).unwrap().not_after;
    (ClientCert::Always(key), not_after)
}

/// A client config presenting `cert` over `version`, with rustls's default
/// in-memory session store: every connection made with it may resume.
fn target(pki: &TestPki, cert: &ClientCert, version: TlsVersion) -> TlsTarget {
    let roots = certshift::creds::load_roots(&[pki.file("ca/ca.crt")]).expect("roots");
    let config = client_config(roots, cert.clone(), &TlsVersions::only(version)).expect("config");
    let name = ServerName::try_from("localhost").expect("server name");
    (Arc::new(config), name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_resumed_after_the_client_certificate_expired_gets_495_in_every_mode() {
    let pki = TestPki::default_flat();
    let modes = [
        Enforcement::Strict,
        Enforcement::Permissive,
        Enforcement::Optional,
        Enforcement::AnyCa,
    ];
    let mut serves = Vec::new();
    for mode in modes {
        serves.push((mode, start_serve(&pki, mode).await));
    }
    let (cert, not_after) = short_lived(&pki, Duration::from_secs(3));
    // One config per service and version: rustls keys its session store by
    // server name, which every service here shares.
    let mut cases = Vec::new();
    for (mode, serve) in &serves {
        for version in TlsVersion::ALL {
            cases.push((*mode, serve, version, target(&pki, &cert, version)));
        }
    }

    for (mode, serve, version, target) in &cases {
        let full = request(serve.addr, target).await;
        assert_eq!(full.outcome, Outcome::Http(200), "{mode:?} TLS {version}");
        assert_eq!(full.resumed, Some(false), "{mode:?} TLS {version}");
        // serve issues resumption (a TLS 1.3 ticket, a TLS 1.2 session id),
        // and a resumed session is served while the certificate holds.
        let again = request(serve.addr, target).await;
        assert_eq!(
            (&again.outcome, again.resumed),
            (&Outcome::Http(200), Some(true)),
            "{mode:?} TLS {version} resumes"
        );
    }
    assert!(
        OffsetDateTime::now_utc() < not_after,
        "the certificate expired before the requests meant to be made while \
         it held: the machine is too slow for this test's 3 s leaf"
    );

    let wait = not_after - OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;

    let why = format!(
        "client certificate expired at {} (session resumed)",
        rfc3339(not_after)
    );
    for (mode, serve, version, target) in &cases {
        let late = request(serve.addr, target).await;
        assert_eq!(
            late.resumed,
            Some(true),
            "{mode:?} TLS {version}: the session resumed"
        );
        assert_eq!(late.outcome, Outcome::Http(495), "{mode:?} TLS {version}");
        assert!(!late.outcome.accepted());
        assert_eq!(late.body, why, "{mode:?} TLS {version}");
        // Without a session to resume, the handshake itself refuses.
        let fresh = request(serve.addr, &self::target(&pki, &cert, *version)).await;
        assert_eq!(
            fresh.outcome,
            Outcome::Alert("certificate_expired".into()),
            "{mode:?} TLS {version}: a full handshake"
        );
    }
    for (mode, serve) in serves {
        let c = serve.handle.counters();
        let expired = c
            .expired_certificates
            .load(std::sync::atomic::Ordering::Relaxed);
        let denied = c.denied.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((expired, denied), (2, 2), "{mode:?}: one 495 per version");
        serve.stop().await;
    }
}
