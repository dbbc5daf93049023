//! What happens to connections that outlive their credential
//! (`--on-rotate`), to a service with the wrong SPIFFE ID
//! (`--upstream-spiffe-id`), and to the downstream server certificate when
//! its files change.

use crate::common;

use std::time::Duration;

use certshift::proxy::{OnRotate, TlsMode};
use certshift::serve::Enforcement;
use certshift::tls::{Outcome, TlsVersion};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A kept-alive plaintext connection through the proxy: send one request,
/// read one response.
async fn request(s: &mut TcpStream) -> Option<String> {
    s.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    // Read until the JSON echo is complete: it may arrive in pieces.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn with_policy(policy: OnRotate) -> (bool, bool) {
    with_policy_counted(policy).await.0
}

/// Also the final counters of the `valid` presentations: outcome → count.
async fn with_policy_counted(
    policy: OnRotate,
) -> ((bool, bool), std::collections::BTreeMap<String, u64>) {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.on_rotate = policy;
    let proxy = start_proxy(args).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    for i in 0..SERVED {
        let answer = request(&mut s).await.expect("request before the rotation");
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
    }
    proxy
        .handle
        .credentials()
        .mint()
        .expect("mint a new client leaf");
    let closed_fast = closed_within(&mut s, Duration::from_millis(1000)).await;
    let closed_later = closed_fast || closed_within(&mut s, Duration::from_secs(4)).await;
    let snap = proxy.stop().await;
    serve.stop().await;
    // Every response it was served counts by its status.
    assert_eq!(
        snap.http_statuses(),
        &std::collections::BTreeMap::from([(200, SERVED)])
    );
    let outcomes = snap.variant("valid").unwrap().outcomes.clone();
    ((closed_fast, closed_later), outcomes)
}

/// Responses served on the kept-alive connection before the rotation.
const SERVED: u64 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn reset_closes_old_connections_at_once() {
    let (closed, outcomes) = with_policy_counted(OnRotate::Reset).await;
    assert_eq!(closed, (true, true));
    // The connection served its requests before the reset: it counts by
    // the status it was served, not as cancelled (and each response by its
    // status, asserted in `with_policy_counted`).
    assert_eq!(
        outcomes,
        std::collections::BTreeMap::from([("http:200".to_string(), 1)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_closes_them_after_the_grace() {
    assert_eq!(
        with_policy(OnRotate::Drain(Duration::from_millis(2500))).await,
        (false, true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_leaves_them_serving_with_the_old_identity() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let before = request(&mut s).await.unwrap();
    let serial = proxy.handle.credentials().mint().unwrap();
    assert!(!closed_within(&mut s, Duration::from_millis(500)).await);
    let after = request(&mut s)
        .await
        .expect("the kept connection still serves");
    let old = &pki.entry("order-service").serial;
    assert!(
        before.contains(old.as_str()) && after.contains(old.as_str()),
        "kept connections keep the old identity"
    );
    // A new connection uses the new identity.
    let fresh = echo(&probe_plain(proxy.addr, "/").await);
    assert_eq!(fresh["serial"], serial);
    proxy.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_spiffe_id_is_verified() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.upstream_spiffe_id =
        Some("spiffe://cluster.local/ns/production/sa/certshift-serve".into());
    let proxy = start_proxy(args).await;
    assert_eq!(
        probe_plain(proxy.addr, "/").await.outcome,
        Outcome::Http(200)
    );
    proxy.stop().await;

    let mut args = proxy_args(&pki, serve.addr);
    args.upstream_spiffe_id =
        Some("spiffe://cluster.local/ns/production/sa/payment-service".into());
    let proxy = start_proxy(args).await;
    let r = probe_plain(proxy.addr, "/").await;
    assert_eq!(r.outcome, Outcome::Http(502));
    assert!(
        r.body_text().contains("verify:identity_mismatch"),
        "{}",
        r.body_text()
    );
    let snap = proxy.stop().await;
    assert_eq!(
        snap.variant("valid")
            .unwrap()
            .outcomes
            .get("verify:identity_mismatch"),
        Some(&1)
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_downstream_server_certificate_rotates_on_file_change() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    // The proxy's own listener identity lives in its own files.
    let dir = pki.file("listener");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(pki.file("server/tls.crt"), dir.join("tls.crt")).unwrap();
    std::fs::copy(pki.file("server/tls.key"), dir.join("tls.key")).unwrap();
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Tls;
    args.listen_cert = Some(dir.join("tls.crt"));
    args.listen_key = Some(dir.join("tls.key"));
    let proxy = start_proxy(args).await;
    let seen = || async {
        let r = probe_tls(
            &pki,
            proxy.addr,
            certshift::tls::ClientCert::None,
            TlsVersion::Tls13,
            "/",
        )
        .await;
        assert_eq!(r.outcome, Outcome::Http(200));
        sha256(r.server_cert.as_deref().unwrap())
    };
    let before = seen().await;
    let (cert, key) = mint_server(&pki);
    let tmp = dir.join("new.tmp");
    std::fs::write(&tmp, key).unwrap();
    std::fs::rename(&tmp, dir.join("tls.key")).unwrap();
    std::fs::write(&tmp, &cert).unwrap();
    std::fs::rename(&tmp, dir.join("tls.crt")).unwrap();
    let live = proxy
        .handle
        .credentials()
        .server
        .as_ref()
        .unwrap()
        .live()
        .clone();
    assert!(wait_until(Duration::from_secs(5), || live.status().reloads >= 1).await);
    assert_ne!(seen().await, before);
    let snap = proxy.stop().await;
    assert_eq!(snap.to_stats_json()["rotations"]["server"], 1);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_crl_rotates_with_the_trust_bundle() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let ca = certshift::pki::Authority::from_pem(
        &std::fs::read_to_string(pki.file("ca/ca.crt")).unwrap(),
        &std::fs::read_to_string(pki.file("ca/ca.key")).unwrap(),
    )
    .unwrap();
    let server_serial = &pki
        .manifest
        .find(certshift::pki::Role::Server, "server")
        .unwrap()
        .serial;
    let crl_revoking = |serials: &[&str]| {
        let serials: Vec<_> = serials
            .iter()
            .map(|s| certshift::pki::serial_number(s).unwrap())
            .collect();
        ca.crl(
            &serials,
            time::OffsetDateTime::now_utc(),
            Duration::from_secs(86400),
        )
        .unwrap()
    };
    let crl = pki.file("upstream-crl.pem");
    std::fs::write(&crl, crl_revoking(&[server_serial])).unwrap();
    let mut args = proxy_args(&pki, serve.addr);
    args.upstream_crl = vec![crl.clone()];
    let proxy = start_proxy(args).await;
    let r = probe_plain(proxy.addr, "/").await;
    assert_eq!(r.outcome, Outcome::Http(502));
    assert!(
        r.body_text().contains("verify:revoked"),
        "{}",
        r.body_text()
    );

    // A new CRL without the service's serial: the bundle rotates, traffic flows.
    let tmp = pki.file("crl.tmp");
    std::fs::write(&tmp, crl_revoking(&["0A"])).unwrap();
    std::fs::rename(&tmp, &crl).unwrap();
    let live = proxy.handle.credentials().trust.live().clone();
    assert!(wait_until(Duration::from_secs(5), || live.status().reloads >= 1).await);
    assert_eq!(
        probe_plain(proxy.addr, "/").await.outcome,
        Outcome::Http(200)
    );
    let snap = proxy.stop().await;
    assert_eq!(snap.to_stats_json()["rotations"]["trust-bundle"], 1);
    assert_eq!(
        snap.variant("valid")
            .unwrap()
            .outcomes
            .get("verify:revoked"),
        Some(&1)
    );
    serve.stop().await;
}
