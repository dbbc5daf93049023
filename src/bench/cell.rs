//! One cell's run: `serve` on a thread of its own, the client on another,
//! each a current-thread runtime, so each side's CPU clock
//! (CLOCK_THREAD_CPUTIME_ID) is exactly that side's work. The client keeps
//! `connections` handshakes in flight (a closed loop) for the duration,
//! counting bytes through a wrapper around its socket and timing each
//! handshake into a histogram only it touches.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::matrix::Kx;
use super::BenchError;
use crate::metrics::cpu;
use crate::pki::KeyType;
use crate::serve::{ServeConfig, Service};
use crate::tls::{Outcome, TlsVersion};

/// Every phase of one connection (connect, handshake, request, close) must
/// finish within this; a cell never hangs on a stuck peer.
const PHASE: Duration = Duration::from_secs(10);

/// A request for the server thread's CPU clock, answered from that thread.
type Probe = mpsc::UnboundedSender<oneshot::Sender<Duration>>;

/// `serve` running on its own thread.
pub struct Server {
    pub addr: SocketAddr,
    probe: Probe,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(cfg: ServeConfig) -> Result<Server, BenchError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                // serve's per-start lines (revocation source, …) would
                // interleave with the table on every cell; failures are
                // counted and shown by the client side.
                let _quiet =
                    tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("starting the server runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let service = match Service::bind(cfg).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("starting serve: {e}")));
                            return;
                        }
                    };
                    let (probe, mut probes) =
                        mpsc::unbounded_channel::<oneshot::Sender<Duration>>();
                    let (stop, stopped) = oneshot::channel::<()>();
                    let _ = ready_tx.send(Ok((service.local_addr(), probe, stop)));
                    // On this runtime's only thread: the clock read is the server's.
                    tokio::spawn(async move {
                        while let Some(reply) = probes.recv().await {
                            let _ = reply.send(cpu::thread());
                        }
                    });
                    service
                        .run(
                            async {
                                let _ = stopped.await;
                            },
                            Duration::from_millis(200),
                        )
                        .await;
                });
            })
            .map_err(|e| BenchError::Io(format!("starting the server thread: {e}")))?;
        let ready = ready_rx
            .recv_timeout(PHASE)
            .map_err(|_| BenchError::Io("the bench server did not start within 10s".into()))?;
        let (addr, probe, stop) = ready.map_err(BenchError::Io)?;
        Ok(Server {
            addr,
            probe,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the client side runs.
pub struct ClientPlan {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    pub config: Arc<ClientConfig>,
    pub connections: usize,
    pub duration: Duration,
    pub request: bool,
    /// The server's CPU clock, read at the start and end of the window
    /// (none against an external `--target`).
    pub probe: Option<Probe>,
    /// Counts the server's CertificateRequests (see [`Asked`]).
    pub asked: Arc<AtomicU64>,
}

/// What the client saw over the measured window.
#[derive(Debug)]
pub struct ClientRun {
    pub handshakes: u64,
    pub resumed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub wall: Duration,
    pub client_cpu: Duration,
    pub server_cpu: Option<Duration>,
    pub latency_us: Histogram<u64>,
    pub c2s: u64,
    pub s2c: u64,
    pub tls: BTreeSet<String>,
    pub kx: BTreeSet<String>,
    pub key: Option<KeyType>,
    pub server_chain_len: Option<usize>,
    /// Handshakes in which the server asked for a client certificate.
    pub cert_requests: u64,
}

/// Run the client on a thread of its own and wait for it.
pub fn run_client(plan: ClientPlan) -> Result<ClientRun, BenchError> {
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| BenchError::Io(format!("starting the client runtime: {e}")))?;
            rt.block_on(client(plan))
        })
        .map_err(|e| BenchError::Io(format!("starting the client thread: {e}")))?
        .join()
        .map_err(|_| BenchError::Io("the bench client thread panicked".into()))?
}

async fn client(plan: ClientPlan) -> Result<ClientRun, BenchError> {
    let stats = RefCell::new(Stats::default());
    // Warm-up, not counted: one connection per slot, so a resumed cell
    // starts with tickets or session ids in the store.
    futures_util::future::join_all((0..plan.connections).map(|_| one(&plan, &stats))).await;
    {
        let s = stats.borrow();
        if s.ok == 0 {
            return Err(BenchError::Cell(format!(
                "no connection to {} succeeded: {}",
                plan.addr,
                s.first_error.as_deref().unwrap_or("unknown error")
            )));
        }
    }
    // The server's key and chain as the warm-up's full handshakes showed
    // them: a resumed session carries no certificates to read them from.
    let (key, chain) = {
        let s = stats.borrow();
        (s.key, s.server_chain_len)
    };
    *stats.borrow_mut() = Stats {
        key,
        server_chain_len: chain,
        ..Stats::default()
    };
    let server0 = server_cpu(plan.probe.as_ref()).await;
    let asked0 = plan.asked.load(Ordering::Relaxed);
    let (cpu0, t0) = (cpu::thread(), Instant::now());
    let end = t0 + plan.duration;
    futures_util::future::join_all((0..plan.connections).map(|_| async {
        while Instant::now() < end {
            one(&plan, &stats).await;
        }
    }))
    .await;
    let (cpu1, wall) = (cpu::thread(), t0.elapsed());
    let server1 = server_cpu(plan.probe.as_ref()).await;
    let cert_requests = plan.asked.load(Ordering::Relaxed).saturating_sub(asked0);
    let s = stats.into_inner();
    Ok(ClientRun {
        handshakes: s.ok,
        resumed: s.resumed,
        errors: s.errors,
        first_error: s.first_error,
        wall,
        client_cpu: cpu1.saturating_sub(cpu0),
        server_cpu: server0.zip(server1).map(|(a, b)| b.saturating_sub(a)),
        latency_us: s.latency_us,
        c2s: s.c2s,
        s2c: s.s2c,
        tls: s.tls,
        kx: s.kx,
        key: s.key,
        server_chain_len: s.server_chain_len,
        cert_requests,
    })
}

async fn server_cpu(probe: Option<&Probe>) -> Option<Duration> {
    let (tx, rx) = oneshot::channel();
    probe?.send(tx).ok()?;
    tokio::time::timeout(PHASE, rx).await.ok()?.ok()
}

#[derive(Debug)]
struct Stats {
    ok: u64,
    resumed: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
    c2s: u64,
    s2c: u64,
    tls: BTreeSet<String>,
    kx: BTreeSet<String>,
    key: Option<KeyType>,
    server_chain_len: Option<usize>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ok: 0,
            resumed: 0,
            errors: 0,
            first_error: None,
            // 1 µs to 1 min, 3 significant digits: the project's histograms.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("invariant: constant, valid histogram bounds"),
            c2s: 0,
            s2c: 0,
            tls: BTreeSet::new(),
            kx: BTreeSet::new(),
            key: None,
            server_chain_len: None,
        }
    }
}

/// One connection: connect, handshake (timed), the request if asked, close.
async fn one(plan: &ClientPlan, stats: &RefCell<Stats>) {
    let bytes = Arc::new(Counters::default());
    let result = connection(plan, bytes.clone()).await;
    let mut s = stats.borrow_mut();
    match result {
        Ok(seen) => {
            s.ok += 1;
            s.resumed += u64::from(seen.resumed);
            let _ = s
                .latency_us
                .record(seen.handshake.as_micros().max(1) as u64);
            s.c2s += bytes.written.load(Ordering::Relaxed);
            s.s2c += bytes.read.load(Ordering::Relaxed);
            if let Some(v) = seen.tls {
                s.tls.insert(v.to_string());
            }
            if let Some(k) = seen.kx {
                s.kx.insert(k);
            }
            if seen.key.is_some() {
                s.key = seen.key;
                s.server_chain_len = seen.chain_len;
            }
        }
        Err(e) => {
            s.errors += 1;
            s.first_error.get_or_insert(e.to_string());
        }
    }
}

/// What a connection's own TLS state said.
struct Seen {
    handshake: Duration,
    resumed: bool,
    tls: Option<TlsVersion>,
    kx: Option<String>,
    key: Option<KeyType>,
    chain_len: Option<usize>,
}

async fn connection(plan: &ClientPlan, bytes: Arc<Counters>) -> Result<Seen, Outcome> {
    let start = Instant::now();
    let tcp = crate::net::connect(plan.addr, (start + PHASE).into()).await?;
    let io = Counting {
        inner: tcp,
        c: bytes,
    };
    let connector = tokio_rustls::TlsConnector::from(plan.config.clone());
    let mut tls =
        match tokio::time::timeout(PHASE, connector.connect(plan.server_name.clone(), io)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(crate::tls::classify_io(&e)),
            Err(_) => return Err(Outcome::HandshakeTimeout),
        };
    let handshake = start.elapsed();
    let conn = tls.get_ref().1;
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    // A resumed session carries no certificates on the wire; the key type
    // and chain are read from full handshakes only.
    let certs = conn.peer_certificates().filter(|_| !resumed);
    let seen = Seen {
        handshake,
        resumed,
        tls: conn.protocol_version().and_then(TlsVersion::of),
        kx: conn.negotiated_key_exchange_group().map(|g| {
            Kx::of(g.name()).map_or_else(|| format!("{:?}", g.name()), |k| k.name().into())
        }),
        key: certs
            .and_then(|c| c.first())
            .and_then(|der| crate::x509::CertFacts::from_der(der).ok())
            .map(|f| KeyType::like(&f.key)),
        chain_len: certs.map(<[_]>::len),
    };
    let until = tokio::time::Instant::now() + PHASE;
    if plan.request {
        let host = format!("{}", plan.addr);
        let mut http = crate::net::HttpClient::handshake(tls, until).await?;
        let req = crate::net::http::request(&hyper::Method::GET, "/", &host, true)?;
        let resp = http.send(req, until).await?;
        let status = resp.status();
        http.drain(resp, until).await?;
        if !status.is_success() {
            return Err(Outcome::Io(format!("the service answered {status}")));
        }
        return Ok(seen);
    }
    // Close (close_notify), then read to the end: a TLS 1.3 server's
    // tickets, or its refusal of our certificate, arrive after our Finished.
    let closed = async {
        tls.shutdown().await?;
        let mut sink = [0u8; 4096];
        loop {
            match tls.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // The service may close without its own close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(PHASE, closed).await {
        Ok(Ok(())) => Ok(seen),
        Ok(Err(e)) => Err(crate::tls::classify_io(&e)),
        Err(_) => Err(Outcome::Timeout),
    }
}

/// Bytes through one connection's socket, each way.
#[derive(Debug, Default)]
struct Counters {
    read: AtomicU64,
    written: AtomicU64,
}

/// The client's socket, counting what crosses it (TLS records and all).
struct Counting {
    inner: TcpStream,
    c: Arc<Counters>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.c.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.c.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The client's certificate resolver, counting its calls: rustls asks it
/// exactly when the server sent a CertificateRequest, so the count is the
/// connections' own evidence that `auth=on` took effect (and `auth=off`
/// and resumption asked for nothing).
#[derive(Debug)]
pub struct Asked {
    pub inner: Arc<dyn rustls::client::ResolvesClientCert>,
    pub count: Arc<AtomicU64>,
}

impl rustls::client::ResolvesClientCert for Asked {
    fn resolve(
        &self,
        hints: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.resolve(hints, schemes)
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}
