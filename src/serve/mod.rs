//! The reference mTLS HTTP/1.1 service: the embedded default upstream, and
//! a peer whose enforcement can be switched off on purpose so that audits
//! have something to catch.
//!
//! Owns: the accept loop (connection cap, handshake, idle and write
//! timeouts, graceful then forced shutdown), permissive plaintext detection,
//! hot reload of its TLS material and policy, and the HTTP handler with the
//! authorization policy; its counters, reload statuses and revocation source
//! (what the CRLs in service say), which `serve --admin` shows through the
//! shared admin server (the `admin` module, a layer above). Never: verifies
//! certificates itself (that is `tls`) or parses HTTP by hand (that is hyper).

mod config;
mod http;
pub mod policy;
mod write_deadline;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use crate::creds::ServerFiles;
pub use config::{AdminBind, Enforcement, ServeArgs, ServeConfig, ServeError};
pub use policy::{Policy, PolicyError};

use crate::accept::{self, serve_workers, ConnCounts, ConnStats, Listeners, RunState, Tracked};
use crate::creds::{
    self, CredError, Loaded, Publisher, ReloadStatus, ReloaderHandle, RotationKind, RotationLog,
    Sources,
};
use crate::tls::{self, ClientAuth, TlsVersions};
use crate::x509::{rfc3339, CrlFacts};

/// Counters of a running service (atomics: touched on every connection).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    /// Handshakes refused (timeouts are the listener's `closed_handshake_timeout`).
    pub handshake_failures: AtomicU64,
    pub plaintext_connections: AtomicU64,
    pub requests: AtomicU64,
    /// Requests refused: by the policy (403) or for an expired client
    /// certificate (495).
    pub denied: AtomicU64,
    /// Of `denied`, the 495s: a client certificate outside its validity
    /// window at request time (a resumed session or a long connection).
    pub expired_certificates: AtomicU64,
}

/// What every connection of one service shares: its settings, the live TLS
/// config and policy (swapped on reload), and its counters.
pub(crate) struct ServiceState {
    cfg: ServeConfig,
    tls: Publisher<ServedTls>,
    policy: Publisher<Option<Policy>, PolicyError>,
    counters: Counters,
    /// The listener's gauges and close counters.
    connections: Arc<ConnStats>,
}

/// The TLS material in service: the config every handshake takes, and
/// what its CRLs said when they were loaded (shown in `/stats`).
pub(crate) struct ServedTls {
    config: Arc<ServerConfig>,
    crls: Vec<CrlStatus>,
}

/// One CRL clients are checked against, as loaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrlStatus {
    pub issuer: String,
    /// Serials it revokes.
    pub revoked: usize,
    /// RFC 3339; past it the list is stale (the issuer promised a newer one).
    pub next_update: Option<String>,
}

/// Where the service learns of revoked client certificates: `/stats`'
/// `revocation`, so running without any source is never silent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RevocationStatus {
    /// `"crl"`, or `"none"`: revoked client certificates are accepted.
    pub source: &'static str,
    /// The CRL files read on every reload.
    pub files: Vec<String>,
    /// The CRLs in service, from those files.
    pub crls: Vec<CrlStatus>,
    /// With no source, what that means and how to add one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
}

/// What running without a revocation source means, and the fix: logged at
/// startup, shown in `/stats`.
const NO_CRL: &str =
    "no CRL: revoked client certificates are accepted (pass --crl FILE, or --pki DIR)";

/// A bound service, not yet accepting.
pub struct Service {
    /// One socket per worker (`--workers`).
    listeners: Listeners,
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
        // Running without revocation is allowed (a CA may publish no CRL)
        // but never silent: logged here, and shown in `/stats`.
        let revocation = cfg.files.revocation();
        match &revocation {
            creds::Revocation::None => tracing::warn!(revocation = "none", "{NO_CRL}"),
            creds::Revocation::Crls(files) => {
                tracing::info!(crls = ?files, "revocation checked against these CRLs")
            }
        }
        // `serve` keeps no timeline: publications are logged and counted.
        let log: Arc<dyn RotationLog> = Arc::new(());
        let tls = {
            let (files, domains) = (cfg.files.clone(), cfg.trust_domains.clone());
            let (auth, versions) = (cfg.mode.client_auth(), cfg.versions.clone());
            Publisher::load(
                RotationKind::Server,
                move || load_tls(&files, &domains, auth, &versions),
                log.clone(),
            )?
        };
        tls.live().set_revocation(revocation);
        let policy = match cfg.policy_path.clone() {
            Some(path) => {
                let allow_empty = cfg.allow_empty_policy;
                Publisher::load(
                    RotationKind::Policy,
                    move || load_policy(&path, allow_empty),
                    log,
                )
                .map_err(ServeError::Policy)?
            }
            // A policy given in code, with no file to reload it from.
            None => Publisher::fixed(RotationKind::Policy, cfg.policy.clone(), log),
        };
        let listeners =
            accept::bind_workers(cfg.listen, cfg.backlog, cfg.workers).map_err(|source| {
                ServeError::Bind {
                    addr: cfg.listen,
                    source,
                }
            })?;
        let shared = Arc::new(ServiceState {
            tls,
            policy,
            cfg,
            counters: Counters::default(),
            connections: Arc::default(),
        });
        let handle = ServiceHandle {
            shared: shared.clone(),
        };
        let mut paths = shared.cfg.files.all();
        paths.extend(shared.cfg.policy_path.iter().cloned());
        let triggers = creds::Triggers {
            debounce: Duration::from_millis(200),
            events: shared.cfg.watch,
            poll: shared.cfg.reload_poll,
            sighup: true,
        };
        let reloader = creds::spawn_reloader_with(&paths, triggers, move || {
            let _ = handle.reload();
            let _ = handle.reload_policy();
        })
        .map_err(ServeError::Watch)?;
        Ok(Service {
            listeners,
            shared,
            _reloader: reloader,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.local_addr()
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
        serve_workers(
            self.listeners,
            shared.cfg.limits,
            shared.connections.clone(),
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
    /// Blocking: call it off the runtime's threads.
    pub fn reload(&self) -> Result<bool, CredError> {
        self.shared.tls.reload()
    }

    /// Re-read the policy file, if there is one; a bad file keeps the old policy.
    pub fn reload_policy(&self) -> Result<bool, PolicyError> {
        self.shared.policy.reload()
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

    /// The policy file reloads read, if the policy came from one.
    pub fn policy_file(&self) -> Option<&Path> {
        self.shared.cfg.policy_path.as_deref()
    }

    /// Where revoked client certificates are learnt of, and what the CRLs
    /// in service say.
    pub fn revocation(&self) -> RevocationStatus {
        let files = &self.shared.cfg.files.crls;
        let none = files.is_empty();
        RevocationStatus {
            source: if none { "none" } else { "crl" },
            files: files.iter().map(|f| f.display().to_string()).collect(),
            crls: self.shared.tls.current().crls.clone(),
            warning: none.then_some(NO_CRL),
        }
    }

    /// The listener's connection gauges and close counters.
    pub fn connections(&self) -> ConnCounts {
        self.shared.connections.counts()
    }
}

/// Read every TLS file once, check it, build the config.
fn load_tls(
    files: &ServerFiles,
    trust_domains: &[String],
    auth: ClientAuth,
    versions: &TlsVersions,
) -> Result<Loaded<ServedTls>, CredError> {
    let mut src = Sources::default();
    let material = files.read(&mut src, trust_domains)?;
    let serial = material.identity.cert.first().map(creds::serial_of);
    // The verifier has parsed each CRL already; one that does not parse
    // here is shown without its facts rather than failing the load.
    let crls = material
        .crls
        .iter()
        .map(|der| match CrlFacts::from_der(der) {
            Ok(f) => CrlStatus {
                issuer: f.issuer,
                revoked: f.revoked.len(),
                next_update: f.next_update.map(rfc3339),
            },
            Err(e) => CrlStatus {
                issuer: format!("(unreadable: {e})"),
                revoked: 0,
                next_update: None,
            },
        })
        .collect();
    Ok(Loaded {
        value: ServedTls {
            config: Arc::new(tls::server_config(material, auth, versions)?),
            crls,
        },
        fingerprint: src.fingerprint(),
        serial,
    })
}

fn load_policy(path: &Path, allow_empty: bool) -> Result<Loaded<Option<Policy>>, PolicyError> {
    let mut src = Sources::default();
    let bytes = src.read(path).map_err(|e| PolicyError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let policy = Policy::from_toml_str(&path.display().to_string(), &text)?
        .require_rules(path, allow_empty)?;
    Ok(Loaded {
        value: Some(policy),
        fingerprint: src.fingerprint(),
        serial: None,
    })
}

async fn connection(
    shared: Arc<ServiceState>,
    stream: Tracked<TcpStream>,
    peer: SocketAddr,
    phase: watch::Receiver<RunState>,
) {
    let c = &shared.counters;
    c.connections.fetch_add(1, Ordering::Relaxed);
    let slot = stream.slot().clone();
    let _ = stream.get_ref().set_nodelay(true);
    let write_limit = shared.cfg.idle_timeout;
    // No timeouts here: the accept loop closes a connection whose handshake
    // (or, in permissive mode, first byte) or first request header is late,
    // and counts it.
    if shared.cfg.mode == Enforcement::Permissive {
        // TLS records start with 0x16 (handshake); anything else is plaintext.
        let mut first = [0u8; 1];
        match stream.get_ref().peek(&mut first).await {
            Ok(1) if first[0] != 0x16 => {
                c.plaintext_connections.fetch_add(1, Ordering::Relaxed);
                slot.handshake_done();
                let io = write_deadline::WriteDeadline::new(stream, write_limit);
                http::serve(shared.clone(), io, http::Peer::plaintext(peer), phase, slot).await;
                return;
            }
            Ok(1) => {}
            _ => return,
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.current().config.clone());
    let io = write_deadline::WriteDeadline::new(stream, write_limit);
    // The stream is boxed once here: hyper and the service hold it by
    // pointer, where by value it was stored once per layer it passed
    // through (five copies of a TLS connection per held connection).
    match acceptor.accept(io).await.map(Box::new) {
        Ok(tls_stream) => {
            slot.handshake_done();
            let (_, conn) = tls_stream.get_ref();
            let info = http::Peer::tls(peer, conn);
            http::serve(shared.clone(), tls_stream, info, phase, slot).await;
        }
        Err(e) => {
            c.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, outcome = %tls::classify_io(&e), error = %e, "TLS handshake refused");
        }
    }
}
