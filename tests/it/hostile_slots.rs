//! Hostile peers against the connection slots of `serve` and the proxy
//! (issue 11): slow ClientHellos and slow request headers are closed at
//! their deadlines and counted, a full handshake cap or connection cap
//! makes room for a legitimate client instead of turning it away, the
//! backlog is what was asked for, the gauges show in `/metrics`, and a
//! process out of file descriptors stays up and answers its admin API.
//! Every slow peer is written here, on real sockets on 127.0.0.1.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certshift::proxy::TlsMode;
use certshift::serve::ServeArgs;
use certshift::tls::{Outcome, TlsVersion};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `s` within `limit` (EOF or an error).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn serve_with(pki: &TestPki, tweak: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
    let mut a = ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        ..serve_args()
    };
    tweak(&mut a);
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_hello_is_closed_at_the_handshake_deadline_and_counted() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(serve_with(&pki, |a| {
        a.handshake_timeout = Duration::from_millis(600);
    }))
    .await;
    assert_eq!(
        slow_hellos(serve.addr, 3).await,
        [true; 3],
        "a slow ClientHello must be closed at the handshake deadline"
    );
    let c = serve.handle.connections();
    assert_eq!(c.closed_handshake_timeout, 3, "{c:?}");
    assert_eq!((c.open, c.in_handshake), (0, 0), "{c:?}");
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_hello_at_the_proxy_tls_listener_is_closed_and_counted() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Tls;
    args.handshake_timeout = Duration::from_millis(600);
    let proxy = start_proxy(args).await;
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    let peer = tokio::spawn(trickle(
        s,
        HELLO_START,
        Duration::from_millis(100),
        Duration::from_secs(5),
    ));
    // While it trickles, it is open and in its handshake.
    assert!(
        wait_until(Duration::from_millis(400), || {
            let c = proxy.handle.connections();
            (c.open, c.in_handshake) == (1, 1)
        })
        .await,
        "{:?}",
        proxy.handle.connections()
    );
    assert!(peer.await.unwrap(), "closed at the handshake deadline");
    let c = proxy.handle.connections();
    assert_eq!(c.closed_handshake_timeout, 1, "{c:?}");
    assert_eq!((c.open, c.in_handshake), (0, 0), "{c:?}");
    let snap = proxy.stop().await;
    assert_eq!(snap.totals().connections, 0, "no experiment for it");
    serve.stop().await;
}

/// A TLS connection to `addr` presenting `cert`, handshake done.
async fn tls_connect(
    pki: &TestPki,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let roots = certshift::creds::load_roots(&[pki.file("ca/ca.crt")]).unwrap();
    let config = certshift::tls::client_config(
        roots,
        pki.cert("order-service"),
        &certshift::tls::TlsVersions::only(TlsVersion::Tls12),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_header_is_closed_at_the_header_deadline_and_counted() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(serve_with(&pki, |a| {
        a.header_timeout = Duration::from_millis(600);
        // Longer than the header deadline: the deadline is what closes it.
        a.idle_timeout = Duration::from_secs(30);
    }))
    .await;
    // A client with a valid certificate that sends its header one byte
    // every 100 ms (TLS 1.2: the handshake is over when connect returns).
    let mut tls = tls_connect(&pki, serve.addr).await;
    let header = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        for b in header {
            if tls.write_all(&[*b]).await.is_err() || tls.flush().await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 64];
        matches!(tls.read(&mut buf).await, Ok(0) | Err(_))
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "a slow header must be closed at the header deadline"
    );
    assert!(
        wait_until(Duration::from_secs(2), || serve
            .handle
            .connections()
            .closed_header_timeout
            == 1)
        .await,
        "{:?}",
        serve.handle.connections()
    );
    // A prompt client on the same service is served.
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("order-service"),
        TlsVersion::Tls13,
        "/",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Http(200));
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_handshake_cap_filled_by_slow_peers_a_legitimate_client_is_served() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(serve_with(&pki, |a| {
        a.max_connections = 64;
        a.max_handshakes = Some(8);
        // The deadline would free them only after the test: the cap must.
        a.handshake_timeout = Duration::from_secs(30);
    }))
    .await;
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(serve.addr).await.unwrap();
        s.write_all(&HELLO_START[..3]).await.unwrap();
        slow.push(s);
    }
    // Every slot of the handshake cap is held by a slow peer when the
    // legitimate client arrives.
    assert!(
        wait_until(Duration::from_secs(3), || serve
            .handle
            .connections()
            .accepted
            == 40)
        .await,
        "{:?}",
        serve.handle.connections()
    );
    for _ in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            probe_tls(
                &pki,
                serve.addr,
                pki.cert("order-service"),
                TlsVersion::Tls13,
                "/",
            ),
        )
        .await
        .expect("a legitimate client must not wait behind slow handshakes");
        assert_eq!(r.outcome, Outcome::Http(200));
    }
    let c = serve.handle.connections();
    assert!(c.shed_at_handshake_cap >= 32, "{c:?}");
    assert!(c.in_handshake <= 8, "{c:?}");
    // The oldest slow peer was among those closed.
    assert!(closed_within(&mut slow[0], Duration::from_secs(2)).await);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_proxy_connection_cap_idle_sockets_are_shed_for_a_legitimate_client() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Off;
    args.max_connections = 16;
    // Idle sockets outlive the test unless the cap closes them.
    args.header_timeout = Duration::from_secs(30);
    args.idle_timeout = Duration::from_secs(60);
    let proxy = start_proxy(args).await;
    let admin = start_admin(&proxy, None).await;
    // Idle plaintext sockets, four times the cap: they never send a byte.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Each accept past the cap closes one: 48 closed once all 64 are in
    // (`accepted` moves just before the shed, so wait for both).
    assert!(
        wait_until(Duration::from_secs(3), || {
            let c = proxy.handle.connections();
            c.accepted == 64 && c.shed_at_cap == 48
        })
        .await,
        "{:?}",
        proxy.handle.connections()
    );
    // The gauges are in /metrics and /stats while the idle sockets are held.
    let (status, metrics) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(
        metric(&metrics, "certshift_listener_open_connections", None),
        16.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE certshift_listener_handshaking_connections gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"certshift_listener_closed_total{reason="shed_at_cap"} 48"#),
        "{metrics}"
    );
    let (status, stats) = admin_get(admin, "/stats").await;
    assert_eq!(status, 200, "{stats}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["listener"]["open"], 16, "{stats}");
    // A legitimate client is served through the proxy at once.
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(5), probe_plain(proxy.addr, "/"))
            .await
            .expect("a legitimate client must not wait behind idle sockets");
        assert_eq!(r.outcome, Outcome::Http(200));
    }
    let c = proxy.handle.connections();
    // The first legitimate client found the cap full; the later ones find
    // the slot the one before them left.
    assert!(c.shed_at_cap > 48, "{c:?}");
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2)).await,
        "the longest idle went first"
    );
    proxy.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_proxy_client_is_closed_at_the_first_byte_deadline_and_costs_no_upstream() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Off;
    args.header_timeout = Duration::from_millis(500);
    let proxy = start_proxy(args).await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert_eq!(proxy.handle.connections().closed_header_timeout, 1);
    // It never reached the service: no experiment, no upstream connection.
    assert_eq!(
        serve
            .handle
            .counters()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let snap = proxy.stop().await;
    assert_eq!(snap.totals().connections, 0);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_client_trickling_its_request_header_is_closed_and_costs_no_upstream() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Off;
    args.header_timeout = Duration::from_millis(600);
    let proxy = start_proxy(args).await;
    // Two slowloris peers: a header byte every 100 ms, never the blank line.
    let head = b"GET /api/orders HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    let slow = (0..2).map(|_| async {
        let s = TcpStream::connect(proxy.addr).await.unwrap();
        trickle(s, head, Duration::from_millis(100), Duration::from_secs(5)).await
    });
    let closed = futures_util::future::join_all(slow).await;
    assert_eq!(
        closed,
        [true, true],
        "the proxy closes a header that never ends"
    );
    assert_eq!(proxy.handle.connections().closed_header_timeout, 2);
    // Their bytes never went upstream: the service saw no connection.
    let upstream = || {
        serve
            .handle
            .counters()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(upstream(), 0);
    // A client whose head arrives in pieces inside the deadline is served.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /api/orders HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"st: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .expect("the proxy answers within 5 s")
        .unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(upstream(), 1);
    let snap = proxy.stop().await;
    assert_eq!(snap.totals().connections, 1);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backlog_flag_is_applied_to_the_listener() {
    if !have("ss") {
        eprintln!("skipping: ss (iproute2) not installed");
        return;
    }
    let pki = TestPki::default_flat();
    // Every worker's socket (SO_REUSEPORT, one per worker) has the backlog.
    let serve = start_serve_with(serve_with(&pki, |a| {
        a.backlog = 77;
        a.workers = Some(2);
    }))
    .await;
    assert_eq!(listen_backlogs(serve.addr), ["77", "77"]);
    // And the default is 1024, not tokio's 128, on every worker's socket.
    let default = start_serve_with(serve_with(&pki, |_| {})).await;
    let workers = certshift::accept::resolve_workers(None).unwrap();
    assert_eq!(listen_backlogs(default.addr), vec!["1024"; workers]);
    serve.stop().await;
    default.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_the_proxy_stays_up_answers_healthz_and_warns_rate_limited() {
    use std::io::{BufRead, BufReader};
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    // The limit is set for the child only, by the shell that execs it.
    let script = format!(
        "ulimit -n 64 && exec '{}' proxy --upstream {} --upstream-name localhost --pki '{}' \
         --listen 127.0.0.1:0 --admin 127.0.0.1:0 --header-timeout 60s --idle-timeout 60s",
        env!("CARGO_BIN_EXE_certshift"),
        serve.addr,
        pki.path().display()
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut child = Kill(child);
    let (mut listen, mut admin) = (None, None);
    for _ in 0..10 {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        if let Some(a) = l.trim().strip_prefix("listening on ") {
            listen = a.parse::<SocketAddr>().ok();
        }
        if let Some(a) = l.trim().strip_prefix("admin on ") {
            admin = a.parse::<SocketAddr>().ok();
            break;
        }
    }
    let (listen, admin) = (listen.expect("listening line"), admin.expect("admin line"));
    // More sockets than the child has descriptors, held open.
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(listen)).await
        {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the proxy must stay up"
    );
    let (status, body) = admin_get(admin, "/healthz").await;
    assert_eq!(
        status, 200,
        "admin /healthz must answer out of descriptors: {body:?}"
    );
    // A legitimate client still gets through.
    let r = tokio::time::timeout(Duration::from_secs(5), probe_plain(listen, "/"))
        .await
        .expect("a legitimate client is served");
    assert_eq!(r.outcome, Outcome::Http(200));
    let (_, stats) = admin_get(admin, "/stats").await;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats["listener"]["fd_exhausted"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["listener"]["shed_fd_exhausted"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    // The log: the warning names the limit, and is not repeated 20 times a second.
    let text = std::fs::read_to_string(log.path()).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("out of file descriptors"))
        .collect();
    assert!(!warnings.is_empty(), "{text}");
    assert!(warnings[0].contains("limit=64"), "{}", warnings[0]);
    assert!(warnings[0].contains("open_descriptors="), "{}", warnings[0]);
    assert!(
        warnings.len() <= 2,
        "rate-limited to one per 5 s: {warnings:#?}"
    );
    drop(held);
    drop(child);
    serve.stop().await;
}

#[test]
fn an_upstream_dial_failing_for_want_of_descriptors_is_local() {
    // What connect() returns when the process or the system is out of
    // descriptors: our side could not try, the service decided nothing.
    for errno in [24, 23] {
        let e = std::io::Error::from_raw_os_error(errno);
        let o = certshift::tls::classify_io(&e);
        assert_eq!(o.to_string(), "local:fd_exhausted");
        assert_eq!(o.verdict(), certshift::tls::Verdict::Inconclusive);
    }
}
