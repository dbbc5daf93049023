//! The intercepting proxy: terminates the client's connection (plaintext,
//! TLS or mTLS), originates TLS to the service presenting the credential the
//! plan picks for this connection (`--swap connection`: bytes relayed,
//! responses counted by `net::framing`) or for each request (`--swap request`:
//! `request` and `pool`, the connection kept on its thread by `inline`),
//! and records what every handshake cost and how every experiment ended.
//!
//! Owns: the accept loop (connection cap, timeouts, drain), the per-connection
//! experiment (plan pick, upstream connect and handshake, relay, outcome),
//! the refusal answered to an HTTP client in either mode, and what
//! `--on-rotate` does to connections that outlive their credential.
//! Never: parses credentials (that is `creds`), decides verdicts (that is
//! `tls::Outcome`), or keeps statistics itself (that is `metrics`).

mod config;
mod inline;
mod live_plan;
mod pool;
mod relay;
mod request;
mod rotation;
mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use config::{
    ConfigError, ConfigFile, FileError, OnRotate, PlanPhase, ProxyArgs, ProxyConfig, TlsMode,
};
pub use live_plan::{ActivePlan, LivePlan, PlanChangeError};
pub use relay::{relay, Relayed};
pub use rotation::{MintError, ProxyCredentials};

use crate::accept::{
    self, serve_workers, ConnCounts, ConnStats, Listeners, RunState, Slot, Tracked,
};
use crate::creds::{self, CredError, ReloaderHandle};
use crate::metrics::{ConnReport, Metrics, Phase, Phases, Statuses};
use crate::net::{self, AbortOnDrop, AsyncIo, Timeouts, TlsTarget};
use crate::pki::Variant;
use crate::plan::{Presented, Swap};
use crate::tls::{self, ClientCert, Outcome, UpstreamVerifier};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredError),
    #[error("cannot set up minting of client certificates (--rotate-every, --rotate-ca-cert, POST /rotate?mint)")]
    Mint(#[from] MintError),
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
pub(crate) struct ProxyState {
    pub(crate) cfg: Arc<ProxyConfig>,
    pub(crate) creds: Arc<ProxyCredentials>,
    pub(crate) metrics: Metrics,
    /// One client config per presentable credential, built once: rotation
    /// changes what their resolvers and verifier read, not the configs.
    upstream_targets: HashMap<Presented, TlsTarget>,
    /// The plan in force; `PUT /plan` and `--plan-schedule` publish anew.
    pub(crate) plan: Arc<LivePlan>,
    /// `--swap request`'s upstream connections, per presented credential.
    upstreams: pool::Upstreams,
    pub(crate) downstream_failures: AtomicU64,
    /// The downstream listener's gauges and close counters.
    connections: Arc<ConnStats>,
}

/// A bound proxy, not yet accepting.
pub struct Proxy {
    /// One socket per worker (`--workers`).
    listeners: Listeners,
    shared: Arc<ProxyState>,
    _reloader: ReloaderHandle,
    _schedule: Option<AbortOnDrop<()>>,
    _plan_schedule: Option<AbortOnDrop<()>>,
}

/// Control of a running proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<ProxyState>,
}

impl Proxy {
    /// Load and check every credential, bind, start the rotation sources.
    pub async fn bind(cfg: ProxyConfig, metrics: Metrics) -> Result<Proxy, ProxyError> {
        let cfg = Arc::new(cfg);
        let held = Arc::new(ProxyCredentials::load(cfg.clone(), metrics.clone())?);
        let server_name = ServerName::try_from(cfg.upstream_name.clone())
            .map_err(|_| ProxyError::ServerName(cfg.upstream_name.clone()))?;
        let upstream_targets: HashMap<Presented, TlsTarget> = upstream_configs(&cfg, &held)?
            .into_iter()
            .map(|(presented, config)| (presented, (config, server_name.clone())))
            .collect();
        let presentable: HashSet<Presented> = upstream_targets.keys().copied().collect();
        let pooled: HashMap<Presented, Option<TlsTarget>> = match cfg.upstream_tls {
            TlsMode::Off => HashMap::from([(Presented::None, None)]),
            _ => upstream_targets
                .iter()
                .map(|(p, t)| (*p, Some(t.clone())))
                .collect(),
        };
        let upstreams = pool::Upstreams::new(
            pooled,
            cfg.upstream.clone(),
            Timeouts::per_phase(cfg.connect_timeout, cfg.handshake_timeout),
            cfg.upstream_pool,
        );
        let plan = Arc::new(LivePlan::new(
            cfg.plan.clone(),
            cfg.swap,
            presentable,
            cfg.upstream_tls,
            metrics.clone(),
        ));
        let listeners =
            accept::bind_workers(cfg.listen, cfg.backlog, cfg.workers).map_err(|source| {
                ProxyError::Bind {
                    addr: cfg.listen,
                    source,
                }
            })?;
        let triggers = creds::Triggers {
            debounce: Duration::from_millis(200),
            events: cfg.watch,
            poll: cfg.reload_poll,
            sighup: true,
        };
        let r = held.clone();
        let reloader = creds::spawn_reloader_with(&held.watched(), triggers, move || {
            let _ = r.reload_files();
        })?;
        let schedule = held.spawn_schedule().map(AbortOnDrop);
        let plan_schedule = plan
            .spawn_schedule(cfg.plan_schedule.clone())
            .map(AbortOnDrop);
        let connections = Arc::new(ConnStats::default());
        // `/stats` and `/metrics` show the listener beside the experiments.
        metrics.attach_listener(connections.clone());
        let shared = Arc::new(ProxyState {
            connections,
            cfg,
            creds: held,
            metrics,
            upstream_targets,
            plan,
            upstreams,
            downstream_failures: AtomicU64::new(0),
        });
        Ok(Proxy {
            listeners,
            shared,
            _reloader: reloader,
            _schedule: schedule,
            _plan_schedule: plan_schedule,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.local_addr()
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
        let (limits, drain) = (shared.cfg.listen_limits(), shared.cfg.drain_timeout);
        serve_workers(
            self.listeners,
            limits,
            shared.connections.clone(),
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

    pub fn credentials(&self) -> &Arc<ProxyCredentials> {
        &self.shared.creds
    }

    /// The plan in force, and the one way to change it.
    pub fn plan(&self) -> &Arc<LivePlan> {
        &self.shared.plan
    }

    /// Downstream handshakes refused (not upstream experiments; handshake
    /// timeouts are in [`ProxyHandle::connections`]).
    pub fn downstream_failures(&self) -> u64 {
        self.shared.downstream_failures.load(Ordering::Relaxed)
    }

    /// The downstream listener's connection gauges and close counters.
    pub fn connections(&self) -> ConnCounts {
        self.shared.connections.counts()
    }
}

fn upstream_configs(
    cfg: &ProxyConfig,
    held: &ProxyCredentials,
) -> Result<HashMap<Presented, Arc<ClientConfig>>, CredError> {
    let verifier = Arc::new(UpstreamVerifier::new(
        held.trust.live().clone(),
        cfg.upstream_spiffe_id.clone(),
    ));
    let mut certs: Vec<(Presented, ClientCert)> = vec![(Presented::None, ClientCert::None)];
    if let Some(client) = &held.client {
        certs.push((
            Presented::Variant(Variant::Valid),
            ClientCert::Live(client.live().clone()),
        ));
    }
    for (v, files) in &cfg.variants {
        let ck = creds::load_certified_key(&files.cert, &files.key)?;
        certs.push((Presented::Variant(*v), ClientCert::Always(ck)));
    }
    for (m, files) in &cfg.mutations {
        let ck = rotation::load_mutation(files)?;
        certs.push((Presented::Mutation(*m), ClientCert::Always(ck)));
    }
    // One provider and one key-exchange hint for every credential's config:
    // they all talk to the same service, which picks the same group.
    let provider = Arc::new(tls::preferring_aes128(&cfg.upstream_kx.provider()));
    let resumption = tls::KxHint::resumption();
    let mut map = HashMap::new();
    for (presented, cert) in certs {
        // Plain TLS upstream presents nothing, whatever the plan says.
        let cert = if cfg.upstream_tls == TlsMode::Mtls {
            cert
        } else {
            ClientCert::None
        };
        let mut config = tls::client_config_verified_with(
            provider.clone(),
            verifier.clone(),
            cert,
            &cfg.versions,
        )?;
        // Resumption would let a rotated-away identity live on in resumed
        // sessions and hide verdicts: every connection is a full handshake.
        // Only the group the service picked is remembered (`--upstream-kx`).
        config.resumption = resumption.clone();
        map.insert(presented, Arc::new(config));
    }
    Ok(map)
}

/// One downstream connection: one upstream experiment (`--swap
/// connection`), or an HTTP server whose every request is one (`request`).
async fn connection(
    shared: Arc<ProxyState>,
    down: Tracked<TcpStream>,
    peer: SocketAddr,
    closing: watch::Receiver<RunState>,
) {
    let at = Instant::now();
    let slot = down.slot().clone();
    let _ = down.get_ref().set_nodelay(true);
    let cfg = &shared.cfg;
    let mut phases = Phases::default();
    // Loaded once, before the handshake: the swap mode decides what ALPN
    // offers. A change after this point applies from the next connection
    // (in request mode: from the next request).
    let active = shared.plan.current();
    let per_request = active.swap != Swap::Connection;

    let server_gen = shared.creds.server.as_ref().map(|p| p.subscribe());
    let mut downstream_handshake = None;
    let down: Box<dyn AsyncIo> = match (&shared.creds.server, cfg.listen_tls) {
        (Some(server), TlsMode::Tls | TlsMode::Mtls) => {
            let config = match per_request {
                true => request::offering_h2(&server.current()),
                false => server.current(),
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let started = Instant::now();
            // No timeout here: the accept loop closes (and counts) a
            // handshake that outlives --handshake-timeout.
            match acceptor.accept(down).await {
                Ok(s) => {
                    downstream_handshake = Some(started.elapsed());
                    Box::new(s)
                }
                Err(e) => {
                    shared.downstream_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, outcome = %tls::classify_io(&e), "downstream handshake refused");
                    return;
                }
            }
        }
        _ => Box::new(down),
    };
    slot.handshake_done();
    if per_request {
        request::serve(shared.clone(), down, downstream_handshake, closing, slot).await;
        return;
    }
    // Nothing goes upstream before the client has said something: a silent
    // or slow client costs no upstream connection and no plan slot, and the
    // accept loop closes it at --header-timeout.
    let Some(down) = first_bytes(down, peer).await else {
        return;
    };
    slot.request_started();
    if let Some(hs) = downstream_handshake {
        phases.set(Phase::DownstreamHandshake, hs);
    }

    // Picked only now, so refused downstream clients use up no plan slot.
    let presented = active.pick_next();
    let client_gen = shared.creds.client.as_ref().map(|p| p.subscribe());
    // Boxed, as `refuse` is: the connection's future is what every held
    // connection costs, and a value passed down by move is stored once per
    // level it passes through.
    let cancel = Box::pin(cancel_on(
        &shared.cfg,
        presented,
        closing,
        client_gen,
        server_gen,
    ));
    let (outcome, responses) =
        experiment(&shared, &slot, presented, &mut phases, down, cancel).await;
    phases.set(Phase::Lifetime, at.elapsed());
    tracing::debug!(%peer, variant = presented.name(), %outcome, "connection done");
    shared.metrics.record(ConnReport {
        at,
        variant: presented.name().to_string(),
        expect: presented.expected(),
        outcome,
        responses,
        phases,
    });
}

impl ProxyState {
    /// The credential whose upstream config serves `presented`: without
    /// mTLS upstream every connection presents nothing.
    fn upstream_key(&self, presented: Presented) -> Presented {
        match self.cfg.upstream_tls {
            TlsMode::Mtls => presented,
            _ => Presented::None,
        }
    }

    /// The serial `presented` shows the service now, for the headers.
    fn serial(&self, presented: Presented) -> Arc<str> {
        self.upstreams
            .credential(self.upstream_key(presented))
            .map_or_else(|| Arc::from("none"), |c| c.serial.clone())
    }
}

/// Waits for the client's first bytes and puts them back in front of the
/// stream. When they begin an HTTP/1 request, waits for its whole head
/// too: a client that trickles its header (slowloris) then costs no
/// upstream handshake either, and the accept loop closes it at
/// --header-timeout, as `serve` would. Bytes that are not HTTP/1 (another
/// protocol, HTTP/2's preface) go upstream as they come. A client that
/// closes early still makes its experiment with what it sent (the service
/// reads EOF, as before); `None` on a read error.
async fn first_bytes(mut down: Box<dyn AsyncIo>, peer: SocketAddr) -> Option<Box<dyn AsyncIo>> {
    let mut first = Vec::with_capacity(FIRST_READ);
    loop {
        match down.read_buf(&mut first).await {
            Ok(0) => break,
            Ok(_) if !crate::net::framing::request_head_pending(&first) => break,
            Ok(_) => {
                if first.len() == first.capacity() {
                    first.reserve(FIRST_READ);
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "downstream failed before its request went upstream");
                return None;
            }
        }
    }
    Some(Box::new(net::Prefixed::new(first, down)))
}

/// The first read's buffer; a longer head grows it (up to framing's bound).
const FIRST_READ: usize = 16 * 1024;

/// Connect upstream presenting `presented`, relay, and say how it ended.
async fn experiment(
    shared: &ProxyState,
    slot: &Slot,
    presented: Presented,
    phases: &mut Phases,
    mut down: Box<dyn AsyncIo>,
    cancel: impl Future<Output = ()>,
) -> (Outcome, Statuses) {
    let cfg = &shared.cfg;
    let key = shared.upstream_key(presented);
    let tls = match cfg.upstream_tls {
        TlsMode::Off => None,
        _ => match shared.upstream_targets.get(&key) {
            Some(t) => Some(t),
            // bind() builds a config for every credential the plan can pick.
            None => {
                let outcome = Outcome::Tls("no_config_for_variant".into());
                refuse(shared, &mut down, &outcome, presented, Seen::Nothing).await;
                return (outcome, Statuses::default());
            }
        },
    };
    let timeouts = Timeouts::per_phase(cfg.connect_timeout, cfg.handshake_timeout);
    let opened = match net::open(cfg.upstream.as_str(), tls, timeouts).await {
        Ok(o) => o,
        Err(f) => {
            if let Some(c) = f.connected {
                phases.set(Phase::UpstreamConnect, c - f.started);
            }
            refuse(shared, &mut down, &f.outcome, presented, Seen::Nothing).await;
            return (f.outcome, Statuses::default());
        }
    };
    phases.set(Phase::UpstreamConnect, opened.connected - opened.started);
    if let Some(hs) = opened.handshake_time() {
        phases.set(Phase::UpstreamHandshake, hs);
    }
    let relay_start = opened.started.elapsed();
    // What the handshake showed (the service's certificate among it) is not
    // needed past here: free it rather than hold it for the connection's life.
    drop(opened.tls);
    let up = opened.stream;
    let (r, mut down) = relay(down, up, cfg.idle_timeout, cancel).await;
    if r.idle {
        // Closed for --idle-timeout: the listener's idle count.
        slot.timed_out();
    }
    if let Some(fb) = r.first_byte {
        phases.set(Phase::FirstByte, relay_start + fb);
    }
    match (r.first_byte, r.cancelled) {
        // Refused before any answer (a TLS 1.3 client-certificate alert
        // arrives after the handshake, often before the client's request):
        // tell an HTTP client why, instead of an empty reply.
        (None, false) => {
            let seen = match (r.bytes_up, r.downstream_http) {
                (0, _) => Seen::Nothing,
                (_, true) => Seen::Http,
                (_, false) => Seen::Other,
            };
            refuse(shared, &mut down, &r.outcome, presented, seen).await;
            (r.outcome, r.responses)
        }
        // Served, then ended by `--on-rotate` or shutdown: the client got
        // its answers, so the connection counts by the status it was first
        // served, and each response by its own status.
        (Some(_), true) => (
            r.responses.first().map_or(Outcome::Ok, Outcome::Http),
            r.responses,
        ),
        _ => (r.outcome, r.responses),
    }
}

/// Resolves when this connection must end: the proxy is closing, or the
/// credential it was established with rotated away (per `--on-rotate`).
async fn cancel_on(
    cfg: &ProxyConfig,
    presented: Presented,
    mut closing: watch::Receiver<RunState>,
    client_gen: Option<watch::Receiver<u64>>,
    server_gen: Option<watch::Receiver<u64>>,
) {
    let rotated = async {
        let uses_client = presented == Presented::Variant(Variant::Valid);
        let uses_server = cfg.listen_tls != TlsMode::Off;
        tokio::select! {
            () = changed(client_gen.filter(|_| uses_client)) => {}
            () = changed(server_gen.filter(|_| uses_server)) => {}
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

/// Resolves on the next publication; never when there is nothing to watch.
async fn changed(generation: Option<watch::Receiver<u64>>) {
    match generation {
        Some(mut g) => {
            if g.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// What the client had sent when the upstream refused.
enum Seen {
    Nothing,
    /// An HTTP/1 request head, already passed on.
    Http,
    /// Bytes that are not HTTP: nothing to answer in kind.
    Other,
}

/// Answer a refused connection: an HTTP client gets the `502` (`504` on a
/// timeout) with the `x-certshift-*` headers, never a bare close. Reads the
/// request head first when it has not come yet, and lingers after answering
/// so unread request bytes do not turn the close into a reset that loses
/// the answer.
///
/// Boxed: it is the rare path, and by value its 4 KiB linger buffer would
/// size the future of every connection, held ones included.
fn refuse<'a>(
    shared: &'a ProxyState,
    down: &'a mut Box<dyn AsyncIo>,
    outcome: &'a Outcome,
    presented: Presented,
    seen: Seen,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(refuse_now(shared, down, outcome, presented, seen))
}

async fn refuse_now(
    shared: &ProxyState,
    down: &mut Box<dyn AsyncIo>,
    outcome: &Outcome,
    presented: Presented,
    seen: Seen,
) {
    let http = match seen {
        Seen::Http => true,
        Seen::Other => false,
        Seen::Nothing => relay::read_request_head(down, HEAD_WAIT).await,
    };
    if http {
        let serial = shared.serial(presented);
        let answer = request::refusal_http1(outcome, presented, &serial);
        let _ = tokio::time::timeout(HEAD_WAIT, async {
            down.write_all(&answer).await?;
            down.flush().await
        })
        .await;
    }
    let _ = tokio::time::timeout(HEAD_WAIT, down.shutdown()).await;
    relay::linger(down, HEAD_WAIT).await;
}

/// How long a refused client gets to send its request head, and to take
/// the answer.
const HEAD_WAIT: Duration = Duration::from_secs(2);
