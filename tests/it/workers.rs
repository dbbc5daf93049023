//! Per-core workers (`--workers`): one listening socket per worker on the
//! same port (SO_REUSEPORT, port 0 resolved once), every worker accepting
//! and serving, the listener's gauges process-wide, and a bad count refused
//! naming the flag.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use certshift::serve::ServeArgs;
use certshift::tls::{Outcome, TlsVersion};
use common::*;

/// Connections opened at once: the kernel spreads them over the workers'
/// sockets by a hash of their addresses, so with a worker that does not
/// accept, about one in `workers` of them would go unanswered.
const CONNECTIONS: usize = 48;

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_served_on_every_worker_and_the_gauges_return_to_zero() {
    let pki = Arc::new(TestPki::default_flat());
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        workers: Some(3),
        ..serve_args()
    })
    .await;
    if have("ss") {
        assert_eq!(
            listen_backlogs(serve.addr).len(),
            3,
            "one socket per worker, all on the port 0 gave"
        );
    }
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (pki, addr) = (pki.clone(), serve.addr);
        probes.spawn(async move {
            let cert = pki.cert("order-service");
            let r = probe_tls(&pki, addr, cert, TlsVersion::Tls13, "/");
            tokio::time::timeout(Duration::from_secs(10), r).await
        });
    }
    while let Some(r) = probes.join_next().await {
        let r = r.unwrap().expect("every connection is answered");
        assert_eq!(r.outcome, Outcome::Http(200));
    }
    let handle = serve.handle.clone();
    let settled = wait_until(Duration::from_secs(5), || {
        let c = handle.connections();
        (c.open, c.in_handshake) == (0, 0)
    })
    .await;
    let c = serve.handle.connections();
    assert!(settled, "the gauges count across workers: {c:?}");
    assert_eq!(c.accepted, CONNECTIONS as u64, "{c:?}");
    assert_eq!(
        serve
            .handle
            .counters()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        CONNECTIONS as u64
    );

    // The proxy's listener the same way, relaying to that service.
    let mut args = proxy_args(&pki, serve.addr);
    args.workers = Some(2);
    let proxy = start_proxy(args).await;
    if have("ss") {
        assert_eq!(listen_backlogs(proxy.addr).len(), 2);
    }
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let addr = proxy.addr;
        probes.spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), probe_plain(addr, "/")).await
        });
    }
    while let Some(r) = probes.join_next().await {
        let r = r.unwrap().expect("every proxied connection is answered");
        assert_eq!(r.outcome, Outcome::Http(200));
    }
    let handle = proxy.handle.clone();
    let settled = wait_until(Duration::from_secs(5), || {
        let c = handle.connections();
        (c.open, c.in_handshake) == (0, 0)
    })
    .await;
    let c = proxy.handle.connections();
    assert!(settled, "{c:?}");
    assert_eq!(c.accepted, CONNECTIONS as u64, "{c:?}");
    let snap = proxy.stop().await;
    assert_eq!(snap.totals().connections, CONNECTIONS as u64);
    serve.stop().await;
}

#[tokio::test]
async fn a_worker_count_out_of_range_is_refused_naming_the_flag() {
    let pki = TestPki::default_flat();
    let dir = pki.path().to_str().unwrap();
    for args in [
        vec![
            "serve",
            "--pki",
            dir,
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "0",
        ],
        vec![
            "proxy",
            "--pki",
            dir,
            "--upstream",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1000",
        ],
    ] {
        let out = certshift_output(&args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--workers") && err.contains("give 1 to 256"),
            "{args:?}: {err}"
        );
    }
}
