//! The proxy's cost: one mTLS experiment through the proxy (TLS terminated
//! and re-originated, handshakes on both sides) against the same experiment
//! direct to the service, and relay throughput for a bulk transfer. All
//! in-process on loopback, against `serve --mode strict` (or, for bulk, a
//! strict mTLS server that streams a fixed body).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certshift::creds;
use certshift::metrics::Metrics;
use certshift::net::{HttpClient, Timeouts, TlsTarget};
use certshift::pki::KeyType;
use certshift::probe::{self, Probe};
use certshift::proxy::{Proxy, ProxyArgs, TlsMode};
use certshift::tls::{client_config, ClientCert, Outcome, TlsVersions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BULK: usize = 16 * 1024 * 1024;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_proxy(
    dir: &std::path::Path,
    upstream: SocketAddr,
    listen_tls: TlsMode,
) -> SocketAddr {
    start_proxy_swapping(dir, upstream, listen_tls, None).await
}

async fn start_proxy_swapping(
    dir: &std::path::Path,
    upstream: SocketAddr,
    listen_tls: TlsMode,
    swap: Option<&str>,
) -> SocketAddr {
    let mut a = ProxyArgs::for_upstream(&upstream.to_string());
    a.swap = swap.map(str::to_string);
    a.listen = loopback();
    a.listen_tls = listen_tls;
    a.admin = "off".into();
    a.pki = Some(dir.to_path_buf());
    a.upstream_name = Some("localhost".into());
    a.no_watch = true;
    let proxy = Proxy::bind(a.into_config().unwrap(), Metrics::start())
        .await
        .unwrap();
    let addr = proxy.local_addr();
    tokio::spawn(proxy.run(std::future::pending()));
    addr
}

/// A strict mTLS server that writes `BULK` bytes to every client, then closes.
async fn start_bulk_server(dir: &std::path::Path) -> SocketAddr {
    let files = creds::ServerFiles {
        cert: dir.join("server/tls.crt"),
        key: dir.join("server/tls.key"),
        client_cas: vec![dir.join("ca/ca.crt")],
        crls: vec![],
    };
    let material = files
        .read(
            &mut creds::Sources::default(),
            &["cluster.local".to_string()],
        )
        .unwrap();
    let config = certshift::tls::server_config(
        material,
        certshift::tls::ClientAuth::Required,
        &TlsVersions::all(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let chunk = vec![0x5au8; 64 * 1024];
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let chunk = chunk.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    // Read the request first: closing with unread input makes
                    // the kernel reset the connection and drop data in flight.
                    let mut req = [0u8; 2];
                    if tls.read_exact(&mut req).await.is_err() {
                        return;
                    }
                    for _ in 0..BULK / chunk.len() {
                        if tls.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

fn proxy_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = common::order_service_pki(KeyType::EcdsaP256);
    // `serving` lives to the end of the benchmark: dropping it stops `serve`.
    let (serving, proxy_mtls, bulk_proxy) = rt.block_on(async {
        let serving = common::start_serve(dir.path()).await;
        let proxy_mtls = start_proxy(dir.path(), serving.addr, TlsMode::Mtls).await;
        let bulk = start_bulk_server(dir.path()).await;
        let bulk_proxy = start_proxy(dir.path(), bulk, TlsMode::Off).await;
        (serving, proxy_mtls, bulk_proxy)
    });
    let serve = serving.addr;
    let roots = common::roots(dir.path());
    let cert = common::order_service_cert(dir.path());
    let config =
        Arc::new(client_config(roots, ClientCert::Always(cert), &TlsVersions::all()).unwrap());
    let name = ServerName::try_from("localhost").unwrap();

    let mut group = c.benchmark_group("mtls_request");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    for (label, addr) in [("direct", serve), ("proxied", proxy_mtls)] {
        let p = Probe::new(addr, Some((config.clone(), name.clone())));
        group.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                assert_eq!(probe::run(&p).await.outcome, Outcome::Http(200));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("relay");
    group
        .throughput(Throughput::Bytes(BULK as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("bulk_16MiB_plain_in_mtls_out", |b| {
        b.to_async(&rt).iter(|| async {
            let mut s = tokio::net::TcpStream::connect(bulk_proxy).await.unwrap();
            s.write_all(b"go").await.unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            assert_eq!(total, BULK, "bytes relayed");
        })
    });
    group.finish();
}

/// CPU time of the whole process (every thread) so far.
use certshift::metrics::cpu::process as process_cpu;

/// One request on a kept-alive connection, its body read to the end.
async fn keep_alive_request(client: &mut HttpClient) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    assert!(client.ready(until).await.unwrap(), "connection still open");
    let req = certshift::net::http::request(&hyper::Method::GET, "/k", "localhost", false).unwrap();
    let resp = client.send(req, until).await.unwrap();
    assert_eq!(resp.status(), 200);
    client.drain(resp, until).await.unwrap();
}

async fn keep_alive_client(addr: SocketAddr, tls: Option<&TlsTarget>) -> HttpClient {
    let timeouts = Timeouts::per_phase(Duration::from_secs(5), Duration::from_secs(5));
    let opened = certshift::net::open(addr, tls, timeouts).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    HttpClient::handshake(opened.stream, until).await.unwrap()
}

/// Per request on one kept-alive connection: straight to the service (mTLS),
/// through the proxy in connection mode (plaintext in, the bytes relayed
/// over one upstream mTLS connection), and in request mode (each request
/// parsed, picked for, and sent over a pooled upstream connection). The
/// `_cpu` group reports process CPU per request instead of wall time: its
/// proxied minus direct figure is what the proxy spends per request.
fn keep_alive_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = common::order_service_pki(KeyType::EcdsaP256);
    let (serving, by_connection, by_request) = rt.block_on(async {
        let serving = common::start_serve(dir.path()).await;
        let by_connection =
            start_proxy_swapping(dir.path(), serving.addr, TlsMode::Off, None).await;
        let by_request =
            start_proxy_swapping(dir.path(), serving.addr, TlsMode::Off, Some("request")).await;
        (serving, by_connection, by_request)
    });
    let roots = common::roots(dir.path());
    let cert = common::order_service_cert(dir.path());
    let config =
        Arc::new(client_config(roots, ClientCert::Always(cert), &TlsVersions::all()).unwrap());
    let target: TlsTarget = (config, ServerName::try_from("localhost").unwrap());
    let clients = [
        ("direct_mtls", serving.addr, Some(&target)),
        ("proxied_connection_mode", by_connection, None),
        ("proxied_request_mode_pooled", by_request, None),
    ];
    for (group_name, cpu) in [
        ("keep_alive_request", false),
        ("keep_alive_request_cpu", true),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .measurement_time(Duration::from_secs(4))
            .sample_size(30);
        for (label, addr, tls) in clients {
            let client = rt.block_on(keep_alive_client(addr, tls));
            let client = tokio::sync::Mutex::new(client);
            group.bench_function(label, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let client = &client;
                    async move {
                        let mut c = client.lock().await;
                        let (wall, cpu0) = (std::time::Instant::now(), process_cpu());
                        for _ in 0..iters {
                            keep_alive_request(&mut c).await;
                        }
                        match cpu {
                            true => process_cpu() - cpu0,
                            false => wall.elapsed(),
                        }
                    }
                })
            });
        }
        group.finish();
    }
    drop(serving);
}

criterion_group!(benches, proxy_benches, keep_alive_benches);
criterion_main!(benches);
