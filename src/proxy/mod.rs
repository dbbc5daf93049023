//! The intercepting proxy: terminates the client's connection (plaintext,
//! TLS or mTLS), originates TLS to the service presenting the credential the
//! plan picks for this connection, relays bytes, and records what every
//! handshake cost and how every connection ended.
//!
//! Owns: the accept loop (connection cap, timeouts, drain), the per-connection
//! experiment (plan pick, upstream connect and handshake, relay, outcome),
//! and what `--on-rotate` does to connections that outlive their credential.
//! Never: parses credentials (that is `creds`), decides verdicts (that is
//! `tls::Outcome`), or keeps statistics itself (that is `metrics`).

mod config;
mod relay;
mod rotation;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use config::{
    split_host_port, ConfigError, ConfigFile, FileError, OnRotate, ProxyArgs, ProxyConfig, TlsMode,
};
pub use relay::{http_status, relay, Relayed};
pub use rotation::{Rotating, KIND_CLIENT, KIND_SERVER, KIND_TRUST};

use crate::accept::{serve_connections, RunState};
use crate::creds::{self, CredError, ReloaderHandle};
use crate::metrics::{ConnReport, Metrics, Phase, Phases};
use crate::pki::Variant;
use crate::plan::Presented;
use crate::tls::{self, ClientCert, Outcome, UpstreamVerifier};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--upstream-name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("cannot watch credential files: {0}")]
    Watch(#[from] notify::Error),
}

/// State every connection task shares; read-mostly.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<ProxyConfig>,
    pub(crate) rotating: Arc<Rotating>,
    pub(crate) metrics: Metrics,
    /// One client config per presentable credential, built once: rotation
    /// changes what their resolvers and verifier read, not the configs.
    upstream_configs: HashMap<Presented, Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    next: AtomicU64,
    pub(crate) downstream_failures: AtomicU64,
}

/// A bound proxy, not yet accepting.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
    _reloader: ReloaderHandle,
    _schedule: Option<AbortOnDrop>,
}

/// Control of a running proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Load and check every credential, bind, start the rotation sources.
    pub async fn bind(cfg: ProxyConfig, metrics: Metrics) -> Result<Proxy, ProxyError> {
        let cfg = Arc::new(cfg);
        let rotating = Arc::new(Rotating::load(cfg.clone(), metrics.clone())?);
        let server_name = ServerName::try_from(cfg.upstream_name.clone())
            .map_err(|_| ProxyError::ServerName(cfg.upstream_name.clone()))?;
        let upstream_configs = upstream_configs(&cfg, &rotating)?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let watched = if cfg.watch {
            rotating.watched()
        } else {
            Vec::new()
        };
        let r = rotating.clone();
        let reloader =
            creds::spawn_reloader(&watched, Duration::from_millis(200), true, move || {
                let _ = r.reload_files();
            })?;
        let schedule = rotating.spawn_schedule().map(AbortOnDrop);
        let shared = Arc::new(Shared {
            cfg,
            rotating,
            metrics,
            upstream_configs,
            server_name,
            next: AtomicU64::new(0),
            downstream_failures: AtomicU64::new(0),
        });
        Ok(Proxy {
            listener,
            shared,
            _reloader: reloader,
            _schedule: schedule,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.shared.cfg.listen)
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Proxy until `shutdown` resolves; then stop accepting, wait up to
    /// `--drain-timeout` for open connections, and close the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared.clone();
        let (max, drain) = (shared.cfg.max_connections, shared.cfg.drain_timeout);
        serve_connections(
            self.listener,
            max,
            shutdown,
            drain,
            move |stream, peer, phase| connection(shared.clone(), stream, peer, phase),
        )
        .await;
    }
}

impl ProxyHandle {
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn rotating(&self) -> &Arc<Rotating> {
        &self.shared.rotating
    }

    /// Downstream handshakes that failed (not upstream experiments).
    pub fn downstream_failures(&self) -> u64 {
        self.shared.downstream_failures.load(Ordering::Relaxed)
    }
}

fn upstream_configs(
    cfg: &ProxyConfig,
    rotating: &Rotating,
) -> Result<HashMap<Presented, Arc<ClientConfig>>, CredError> {
    let verifier = Arc::new(UpstreamVerifier::new(
        rotating.upstream_roots.clone(),
        cfg.upstream_spiffe_id.clone(),
    ));
    let mut certs: Vec<(Presented, ClientCert)> = vec![(Presented::None, ClientCert::None)];
    if let Some(live) = &rotating.client {
        certs.push((
            Presented::Variant(Variant::Valid),
            ClientCert::Live(live.clone()),
        ));
    }
    for (v, files) in &cfg.variants {
        let ck = creds::load_certified_key(&files.cert, &files.key)?;
        certs.push((Presented::Variant(*v), ClientCert::Always(ck)));
    }
    let mut map = HashMap::new();
    for (presented, cert) in certs {
        // Plain TLS upstream presents nothing, whatever the plan says.
        let cert = if cfg.upstream_tls == TlsMode::Mtls {
            cert
        } else {
            ClientCert::None
        };
        let mut config = tls::client_config_verified_by(verifier.clone(), cert, &cfg.versions)?;
        // Resumption would let a rotated-away identity live on in resumed
        // sessions and hide verdicts: every connection is a full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        map.insert(presented, Arc::new(config));
    }
    Ok(map)
}

/// One downstream connection: one upstream experiment.
async fn connection(
    shared: Arc<Shared>,
    down: TcpStream,
    peer: SocketAddr,
    closing: watch::Receiver<RunState>,
) {
    let at = Instant::now();
    let _ = down.set_nodelay(true);
    let cfg = &shared.cfg;
    let mut phases = Phases::default();

    let server_gen = shared.rotating.server_generation.subscribe();
    let down: Box<dyn Io> = match (&shared.rotating.server, cfg.listen_tls) {
        (Some(live), TlsMode::Tls | TlsMode::Mtls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(live.current());
            let started = Instant::now();
            match tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(down)).await {
                Ok(Ok(s)) => {
                    phases.set(Phase::DownstreamHandshake, started.elapsed());
                    Box::new(s)
                }
                Ok(Err(e)) => {
                    shared.downstream_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, outcome = %tls::classify_io(&e), "downstream handshake refused");
                    return;
                }
                Err(_) => {
                    shared.downstream_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "downstream handshake timed out");
                    return;
                }
            }
        }
        _ => Box::new(down),
    };

    // Picked only now, so refused downstream clients use up no plan slot.
    let presented = shared
        .cfg
        .plan
        .pick(shared.next.fetch_add(1, Ordering::Relaxed));
    let client_gen = shared.rotating.client_generation.subscribe();
    let (outcome, http_status) = experiment(
        &shared,
        presented,
        &mut phases,
        down,
        closing,
        client_gen,
        server_gen,
    )
    .await;
    phases.set(Phase::Lifetime, at.elapsed());
    tracing::debug!(%peer, variant = presented.name(), %outcome, "connection done");
    shared.metrics.record(ConnReport {
        at,
        variant: presented.name().to_string(),
        expect: presented.expect(),
        outcome,
        http_status,
        phases,
    });
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connect upstream presenting `presented`, relay, and say how it ended.
async fn experiment(
    shared: &Shared,
    presented: Presented,
    phases: &mut Phases,
    mut down: Box<dyn Io>,
    closing: watch::Receiver<RunState>,
    client_gen: watch::Receiver<u64>,
    server_gen: watch::Receiver<u64>,
) -> (Outcome, Option<u16>) {
    let cfg = &shared.cfg;
    let started = Instant::now();
    let tcp = match tokio::time::timeout(
        cfg.connect_timeout,
        TcpStream::connect(cfg.upstream.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(&mut down, tls::classify_io(&e), presented).await,
        Err(_) => return fail(&mut down, Outcome::ConnectTimeout, presented).await,
    };
    let _ = tcp.set_nodelay(true);
    phases.set(Phase::UpstreamConnect, started.elapsed());
    let up: Box<dyn Io> = if cfg.upstream_tls == TlsMode::Off {
        Box::new(tcp)
    } else {
        // Without mTLS upstream every connection presents nothing.
        let key = if cfg.upstream_tls == TlsMode::Mtls {
            presented
        } else {
            Presented::None
        };
        let Some(config) = shared.upstream_configs.get(&key) else {
            // bind() builds a config for every credential the plan can pick.
            return fail(
                &mut down,
                Outcome::Tls("no_config_for_variant".into()),
                presented,
            )
            .await;
        };
        let hs = Instant::now();
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        match tokio::time::timeout(
            cfg.handshake_timeout,
            connector.connect(shared.server_name.clone(), tcp),
        )
        .await
        {
            Ok(Ok(s)) => {
                phases.set(Phase::UpstreamHandshake, hs.elapsed());
                Box::new(s)
            }
            Ok(Err(e)) => return fail(&mut down, tls::classify_io(&e), presented).await,
            Err(_) => return fail(&mut down, Outcome::HandshakeTimeout, presented).await,
        }
    };
    let relay_start = started.elapsed();
    let cancel = cancel_on(cfg, presented, closing, client_gen, server_gen);
    let (r, mut down) = relay(down, up, cfg.idle_timeout, cancel).await;
    if let Some(fb) = r.first_byte {
        phases.set(Phase::FirstByte, relay_start + fb);
    }
    if r.first_byte.is_none() && !r.cancelled {
        if r.downstream_http {
            // Tell an HTTP client why, instead of an empty reply.
            let _ = write_502(&mut down, &r.outcome, presented).await;
        }
        let _ = tokio::time::timeout(cfg.idle_timeout, down.shutdown()).await;
    }
    (r.outcome, r.http_status)
}

/// Resolves when this connection must end: the proxy is closing, or the
/// credential it was established with rotated away (per `--on-rotate`).
async fn cancel_on(
    cfg: &ProxyConfig,
    presented: Presented,
    mut closing: watch::Receiver<RunState>,
    mut client_gen: watch::Receiver<u64>,
    mut server_gen: watch::Receiver<u64>,
) {
    let rotated = async {
        let uses_client = presented == Presented::Variant(Variant::Valid);
        let uses_server = cfg.listen_tls != TlsMode::Off;
        tokio::select! {
            r = client_gen.changed(), if uses_client => if r.is_err() { std::future::pending::<()>().await },
            r = server_gen.changed(), if uses_server => if r.is_err() { std::future::pending::<()>().await },
            else => std::future::pending::<()>().await,
        }
    };
    let policy = async {
        match cfg.on_rotate {
            OnRotate::Keep => std::future::pending::<()>().await,
            OnRotate::Reset => rotated.await,
            OnRotate::Drain(d) => {
                rotated.await;
                tokio::time::sleep(d).await;
            }
        }
    };
    tokio::select! {
        _ = policy => {}
        // Draining lets a connection finish; only Closing cuts it.
        _ = closing.wait_for(|p| *p >= RunState::Closing) => {}
    }
}

async fn fail(
    down: &mut Box<dyn Io>,
    outcome: Outcome,
    presented: Presented,
) -> (Outcome, Option<u16>) {
    // Read what the client sent, briefly, to answer an HTTP client in kind.
    let mut buf = [0u8; 16];
    let http = matches!(
        tokio::time::timeout(Duration::from_millis(100), tokio::io::AsyncReadExt::read(down, &mut buf)).await,
        Ok(Ok(n)) if relay::looks_like_http_request(&buf[..n])
    );
    if http {
        let _ = write_502(down, &outcome, presented).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), down.shutdown()).await;
    (outcome, None)
}

async fn write_502<W: AsyncWrite + Unpin + ?Sized>(
    down: &mut W,
    outcome: &Outcome,
    presented: Presented,
) -> std::io::Result<()> {
    let body = format!("certshift: the upstream did not accept the connection ({outcome}); presented credential: {presented}\n");
    let resp = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\nx-certshift-outcome: {outcome}\r\nx-certshift-variant: {presented}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    down.write_all(resp.as_bytes()).await?;
    down.flush().await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
