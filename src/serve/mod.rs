//! The reference mTLS HTTP/1.1 service: the embedded default upstream, and
//! a peer whose enforcement can be switched off on purpose so that audits
//! have something to catch.
//!
//! Owns: the accept loop (connection cap, handshake, idle and write
//! timeouts, graceful then forced shutdown), permissive plaintext detection,
//! hot reload of its TLS material and policy, and the HTTP handler with the
//! authorization policy. Never: verifies certificates itself (that is `tls`)
//! or parses HTTP by hand (that is hyper).

mod config;
mod http;
pub mod policy;
mod write_deadline;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use crate::creds::ServerFiles;
pub use config::{Enforcement, ServeArgs, ServeConfig, ServeError};
pub use policy::{Policy, PolicyError};

use crate::accept::{serve_connections, RunState};
use crate::creds::{self, CredError, Live, ReloadStatus, ReloaderHandle};
use crate::tls;

/// Counters of a running service (atomics: touched on every connection).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub plaintext_connections: AtomicU64,
    pub requests: AtomicU64,
    pub denied: AtomicU64,
}

/// What every connection of one service shares: its settings, the live TLS
/// config and policy (swapped on reload), and its counters.
pub(crate) struct ServiceState {
    cfg: ServeConfig,
    tls: Live<ServerConfig>,
    policy: Live<Option<Policy>>,
    /// Serialises reloads: two reloads racing could otherwise publish the
    /// older files last. Never taken on the handshake or request path.
    reload_lock: Mutex<()>,
    counters: Counters,
}

/// A bound service, not yet accepting.
pub struct Service {
    listener: TcpListener,
    shared: Arc<ServiceState>,
    _reloader: ReloaderHandle,
}

/// Control of a running service: reload on demand, read its state.
#[derive(Clone)]
pub struct ServiceHandle {
    shared: Arc<ServiceState>,
}

impl Service {
    /// Load the TLS material (refusing bad files), bind, start watching.
    pub async fn bind(cfg: ServeConfig) -> Result<Service, ServeError> {
        let (config, fingerprint) = load_tls(&cfg)?;
        let policy_fingerprint = match &cfg.policy_path {
            Some(p) => fingerprint_of(&creds::read(p)?),
            None => Vec::new(),
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let shared = Arc::new(ServiceState {
            tls: Live::new(config, fingerprint),
            policy: Live::new(cfg.policy.clone(), policy_fingerprint),
            cfg,
            reload_lock: Mutex::new(()),
            counters: Counters::default(),
        });
        let handle = ServiceHandle {
            shared: shared.clone(),
        };
        let mut paths = Vec::new();
        if shared.cfg.watch {
            paths = shared.cfg.files.all();
            paths.extend(shared.cfg.policy_path.iter().cloned());
        }
        let reloader = creds::spawn_reloader(&paths, Duration::from_millis(200), true, move || {
            let _ = handle.reload();
            let _ = handle.reload_policy();
        })
        .map_err(ServeError::Watch)?;
        Ok(Service {
            listener,
            shared,
            _reloader: reloader,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().unwrap_or(self.shared.cfg.listen)
    }

    pub fn handle(&self) -> ServiceHandle {
        ServiceHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serve until `shutdown` resolves, then stop accepting, give open
    /// connections `grace` to finish their request, and close the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let shared = self.shared.clone();
        let max = shared.cfg.max_connections;
        serve_connections(
            self.listener,
            max,
            shutdown,
            grace,
            move |stream, peer, phase| connection(shared.clone(), stream, peer, phase),
        )
        .await;
    }
}

impl ServiceHandle {
    /// Re-read the TLS files and publish them if they changed and are good.
    /// A bad file keeps the current material serving; the error is counted.
    pub fn reload(&self) -> Result<bool, CredError> {
        let _one_at_a_time = lock(&self.shared.reload_lock);
        let live = &self.shared.tls;
        match load_tls(&self.shared.cfg) {
            Ok((config, fingerprint)) => {
                Ok(published(live.publish(config, fingerprint), "TLS material"))
            }
            Err(e) => Err(refused(live, e, "TLS material")),
        }
    }

    /// Re-read the policy file, if there is one; a bad file keeps the old policy.
    pub fn reload_policy(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.shared.cfg.policy_path else {
            return Ok(false);
        };
        let _one_at_a_time = lock(&self.shared.reload_lock);
        let live = &self.shared.policy;
        let loaded = creds::read(path)
            .map_err(|e| PolicyError::Read {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })
            .and_then(|bytes| {
                let text = String::from_utf8_lossy(&bytes);
                Policy::from_toml_str(&path.display().to_string(), &text)
                    .map(|p| (p, fingerprint_of(&bytes)))
            });
        match loaded {
            Ok((policy, fingerprint)) => {
                Ok(published(live.publish(Some(policy), fingerprint), "policy"))
            }
            Err(e) => Err(refused(live, e, "policy")),
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.shared.tls.status()
    }

    pub fn policy_reload_status(&self) -> ReloadStatus {
        self.shared.policy.status()
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

fn published(yes: bool, what: &str) -> bool {
    if yes {
        tracing::info!("{what} reloaded");
    }
    yes
}

fn refused<T, E: std::fmt::Display>(live: &Live<T>, e: E, what: &str) -> E {
    tracing::error!(error = %e, "{what} reload refused; the previous {what} keeps serving");
    live.record_failure(e.to_string());
    e
}

fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fingerprint_of(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Read every file once, check it, build the config.
fn load_tls(cfg: &ServeConfig) -> Result<(ServerConfig, Vec<u8>), CredError> {
    let (material, fingerprint) = cfg.files.load(&cfg.trust_domains)?;
    Ok((
        tls::server_config(material, cfg.mode.client_auth(), &cfg.versions)?,
        fingerprint,
    ))
}

async fn connection(
    shared: Arc<ServiceState>,
    stream: TcpStream,
    peer: SocketAddr,
    phase: watch::Receiver<RunState>,
) {
    let c = &shared.counters;
    c.connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let hs_timeout = shared.cfg.handshake_timeout;
    let write_limit = shared.cfg.idle_timeout;
    if shared.cfg.mode == Enforcement::Permissive {
        // TLS records start with 0x16 (handshake); anything else is plaintext.
        let mut first = [0u8; 1];
        match tokio::time::timeout(hs_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != 0x16 => {
                c.plaintext_connections.fetch_add(1, Ordering::Relaxed);
                let io = write_deadline::WriteDeadline::new(stream, write_limit);
                http::serve(shared.clone(), io, http::Peer::plaintext(peer), phase).await;
                return;
            }
            Ok(Ok(1)) => {}
            _ => return,
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.current());
    let io = write_deadline::WriteDeadline::new(stream, write_limit);
    match tokio::time::timeout(hs_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls_stream)) => {
            let (_, conn) = tls_stream.get_ref();
            let info = http::Peer::tls(peer, conn);
            http::serve(shared.clone(), tls_stream, info, phase).await;
        }
        Ok(Err(e)) => {
            c.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, outcome = %tls::classify_io(&e), error = %e, "TLS handshake refused");
        }
        Err(_) => {
            c.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}
