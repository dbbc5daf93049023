//! `proxy --upstream-kx`: the key-exchange groups offered to the service
//! take effect against a real, independently written server (`openssl
//! s_server` restricted to one group), the group the service picked is
//! remembered (the next connection's ClientHello carries just its share:
//! no HelloRetryRequest, fewer bytes up), and a bad list is refused naming
//! the flag and the accepted groups. The suite negotiated is AES-128-GCM,
//! which the proxy prefers upstream.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use certshift::proxy::{ConfigError, ProxyArgs};
use certshift::tls::Outcome;
use common::peers::start_s_server;
use common::*;
use tokio::net::TcpListener;

/// A TCP relay on 127.0.0.1:0 to `to` that records, per connection, the
/// bytes the client side sent: what the proxy's ClientHellos cost on the wire.
async fn counting_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        // s_server serves one connection at a time: so does the relay.
        while let Ok((mut down, _)) = listener.accept().await {
            let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let copied = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::io::copy_bidirectional(&mut down, &mut up),
            )
            .await;
            if let Ok(Ok((upward, _))) = copied {
                record.lock().unwrap().push(upward);
            }
        }
    });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_offered_groups_take_effect_and_the_services_pick_is_remembered() {
    if !have("openssl") {
        eprintln!("skipped: openssl not installed");
        return;
    }
    let pki = TestPki::default_flat();
    // OpenSSL agrees on secp384r1 only.
    let s_server = start_s_server(
        pki.path(),
        &[
            "-Verify",
            "1",
            "-CAfile",
            "ca/ca.crt",
            "-groups",
            "secp384r1",
        ],
    );
    let (relay, sent) = counting_relay(s_server.addr).await;

    // Nothing in common: the handshake fails, the client gets the 502.
    let mut a = proxy_args(&pki, relay);
    a.upstream_kx = "x25519,secp256r1".parse().unwrap();
    let proxy = start_proxy(a).await;
    let r = probe_plain(proxy.addr, "/").await;
    assert_eq!(r.outcome, Outcome::Http(502), "{r:?}\n{}", s_server.log());
    proxy.stop().await;

    // secp384r1 offered second: the first connection sends an X25519 share
    // and meets a HelloRetryRequest; the next ones send the secp384r1
    // share at once.
    let mut a = proxy_args(&pki, relay);
    a.upstream_kx = "x25519,secp384r1".parse().unwrap();
    let proxy = start_proxy(a).await;
    sent.lock().unwrap().clear();
    for _ in 0..3 {
        let r = probe_plain(proxy.addr, "/").await;
        assert_eq!(r.outcome, Outcome::Http(200), "{r:?}\n{}", s_server.log());
        // s_server -www reports the session; OpenSSL follows the client's
        // order, and the proxy puts AES-128-GCM first (tls::preferring_aes128).
        let page = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).to_string();
        assert!(page.contains("Cipher is TLS_AES_128_GCM_SHA256"), "{page}");
    }
    proxy.stop().await;
    assert!(
        wait_until(std::time::Duration::from_secs(5), || sent
            .lock()
            .unwrap()
            .len()
            >= 3)
        .await,
        "three upstream connections"
    );
    let up = sent.lock().unwrap().clone();
    // One ClientHello less (over 100 bytes: its random, cipher suites,
    // extensions and a key share) on each later connection.
    assert!(
        up[1] + 100 < up[0] && up[2] + 100 < up[0],
        "bytes sent upstream per connection: {up:?}"
    );
}

#[test]
fn a_bad_group_list_is_refused_naming_the_flag_and_the_accepted_groups() {
    let err = ProxyArgs::from_flags(["--upstream", "127.0.0.1:1", "--upstream-kx", "ffdhe2048"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--upstream-kx"), "{err}");
    assert!(
        err.contains("x25519, secp256r1, secp384r1, X25519MLKEM768"),
        "{err}"
    );

    let pki = TestPki::default_flat();
    let mut a = proxy_args(&pki, "127.0.0.1:1".parse().unwrap());
    a.tls_versions = "1.2".parse().unwrap();
    a.upstream_kx = "X25519MLKEM768".parse().unwrap();
    let e = a.into_config().unwrap_err();
    assert!(
        matches!(
            &e,
            ConfigError::Flag {
                flag: "--upstream-kx",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("TLS 1.2"), "{e}");
}
