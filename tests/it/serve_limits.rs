//! A hostile or broken peer cannot stall `serve`: a silent connection, a
//! garbage ClientHello and a slow client each cost only themselves.

use crate::common;

use std::time::Duration;

use certshift::serve::ServeArgs;
use certshift::tls::{Outcome, TlsVersion};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_garbage_peers_do_not_block_others_and_are_timed_out() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        handshake_timeout: Duration::from_millis(500),
        ..serve_args()
    })
    .await;
    // Ten connections that never speak.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(serve.addr).await.unwrap());
    }
    // One that sends garbage instead of a ClientHello.
    let mut garbage = TcpStream::connect(serve.addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile a real client is served at once.
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        probe_tls(
            &pki,
            serve.addr,
            pki.cert("order-service"),
            TlsVersion::Tls13,
            "/",
        ),
    )
    .await
    .expect("a real client must not wait behind silent peers");
    assert_eq!(r.outcome, Outcome::Http(200));

    // The garbage connection is closed, not left hanging.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), async {
        let mut total = 0;
        loop {
            match garbage.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("garbage peer must be disconnected");
    assert!(n < 64, "only an alert may come back, got {n} bytes");

    // Silent peers are dropped after the handshake timeout.
    for mut s in silent {
        let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "silent peer must be closed by the handshake timeout"
        );
    }
    let c = serve.handle.counters();
    assert!(serve.handle.connections().closed_handshake_timeout >= 10);
    assert!(
        c.handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        max_connections: 2,
        // Both may sit in their handshake: only the connection cap is tested here.
        max_handshakes: Some(2),
        handshake_timeout: Duration::from_millis(800),
        ..serve_args()
    })
    .await;
    // Two silent peers hold both slots.
    let mut a = TcpStream::connect(serve.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _b = TcpStream::connect(serve.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("order-service"),
        TlsVersion::Tls12,
        "/",
    )
    .await;
    assert_eq!(
        r.outcome,
        Outcome::Http(200),
        "the third client is served at once"
    );
    // The longest idle, the first silent peer, was closed to make room.
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_millis(500), a.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the longest-idle peer is closed"
    );
    assert!(serve.handle.connections().shed_at_cap >= 1);
    serve.stop().await;
}

async fn permissive(pki: &TestPki, tweak: impl FnOnce(&mut ServeArgs)) -> RunningServe {
    let mut args = ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        mode: certshift::serve::Enforcement::Permissive,
        ..serve_args()
    };
    tweak(&mut args);
    start_serve_with(args).await
}

/// Read until EOF or error; `None` if still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keepalive_and_silent_plaintext_peers_are_closed() {
    let pki = TestPki::default_flat();
    let serve = permissive(&pki, |a| {
        a.idle_timeout = Duration::from_millis(300);
        a.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    // A kept-alive connection gets its answer, then is closed when idle.
    let mut s = TcpStream::connect(serve.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("idle keep-alive connection must be closed");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // A peer that never sends its first byte is closed too.
    let mut silent = TcpStream::connect(serve.addr).await.unwrap();
    let got = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("silent peer must be closed");
    assert!(got.is_empty());
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_reads_loses_its_slot() {
    let pki = TestPki::default_flat();
    let serve = permissive(&pki, |a| {
        a.max_connections = 1;
        a.idle_timeout = Duration::from_millis(500);
    })
    .await;
    // Pipeline requests and never read: the service's writes stall.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hog = socket.connect(serve.addr).await.unwrap();
    let flood = tokio::spawn(async move {
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        for _ in 0..100 {
            if hog.write_all(&req).await.is_err() {
                break;
            }
        }
        hog
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The only slot is taken; it must come back once the stalled write times out.
    let r = tokio::time::timeout(Duration::from_secs(10), probe_plain(serve.addr, "/healthz"))
        .await
        .expect("the stalled connection must release its slot");
    assert_eq!(r.outcome, Outcome::Http(200));
    flood.abort();
    serve.stop().await;
}
