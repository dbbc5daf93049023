//! The reference mTLS HTTP/1.1 service: the embedded default upstream, and
//! a peer whose enforcement can be switched off on purpose so that audits
//! have something to catch.
//!
//! Owns: the `serve` options, the accept loop (connection cap, handshake and
//! idle timeouts, graceful shutdown), permissive plaintext detection, hot
//! reload of its TLS material, and the HTTP handler with the authorization
//! policy. Never: verifies certificates itself (that is `tls`) or parses HTTP
//! by hand (that is hyper).

mod http;
pub mod policy;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::creds::{self, CredError, Live, ReloadStatus, ReloaderHandle};
use crate::pki::Manifest;
use crate::tls::{self, ClientAuth, ServerTlsMaterial, TlsVersions};
pub use policy::{Policy, PolicyError};

/// How the service enforces client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Require and verify a client certificate: chain, validity, CRL,
    /// clientAuth EKU and a SPIFFE ID in the trust domain.
    Strict,
    /// Strict for TLS, and also plaintext HTTP on the same port (Istio PERMISSIVE).
    Permissive,
    /// Ask for a certificate and verify it if sent, but serve without one
    /// (nginx `ssl_verify_client optional`).
    Optional,
    /// Require a certificate but verify nothing about it (nginx
    /// `optional_no_ca`, with a certificate required).
    AnyCa,
}

impl Mode {
    fn client_auth(self) -> ClientAuth {
        match self {
            Mode::Strict | Mode::Permissive => ClientAuth::Required,
            Mode::Optional => ClientAuth::Optional,
            Mode::AnyCa => ClientAuth::AnyCert,
        }
    }
}

/// `certshift serve` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM, PKCS#8).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA bundle that client certificates must chain to (repeatable).
    #[arg(long = "client-ca", value_name = "FILE")]
    pub client_ca: Vec<PathBuf>,
    /// CRL file (PEM) listing revoked client certificates (repeatable).
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// Take the server credential, client CA, CRL and trust domain from a
    /// `certshift pki init` directory; explicit flags override it.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// TLS versions to accept.
    #[arg(long, default_value = "1.2,1.3", value_name = "LIST")]
    pub tls_versions: TlsVersions,
    /// Client-certificate enforcement.
    #[arg(long, value_enum, default_value_t = Mode::Strict)]
    pub mode: Mode,
    /// Authorization policy (TOML, Istio AuthorizationPolicy style rules).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// SPIFFE trust domain a client identity must belong to (repeatable;
    /// default: the PKI's, else cluster.local).
    #[arg(long = "trust-domain", value_name = "DOMAIN")]
    pub trust_domain: Vec<String>,
    /// Time allowed for a TLS handshake (and for the first byte in permissive mode).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Close a keep-alive connection that sends no request for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Do not watch the credential files (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            cert: None,
            key: None,
            client_ca: Vec::new(),
            crl: Vec::new(),
            pki: None,
            tls_versions: TlsVersions::all(),
            mode: Mode::Strict,
            policy: None,
            trust_domain: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            no_watch: false,
        }
    }
}

/// A configuration error: names the flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{flag}: {problem}")]
    Config { flag: &'static str, problem: String },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Credentials(#[from] CredError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch credential files: {0}")]
    Watch(#[from] notify::Error),
}

/// Validated settings of a service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub files: ServerFiles,
    pub mode: Mode,
    pub versions: TlsVersions,
    pub policy: Option<Policy>,
    pub trust_domains: Vec<String>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub watch: bool,
}

/// The files a service's TLS material is read from (and re-read on reload).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cas: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
}

impl ServerFiles {
    pub fn all(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_cas.iter().cloned());
        v.extend(self.crls.iter().cloned());
        v
    }
}

impl ServeArgs {
    /// Resolve `--pki`, check required flags, load the policy.
    pub fn into_config(self) -> Result<ServeConfig, ServeError> {
        let manifest = match &self.pki {
            Some(dir) => Some(Manifest::load(dir)?),
            None => None,
        };
        let from_pki = |rel: &str| self.pki.as_deref().map(|d: &Path| d.join(rel));
        let need = |flag: &'static str, v: Option<PathBuf>| {
            v.ok_or(ServeError::Config {
                flag,
                problem: format!(
                    "required: pass {flag} FILE, or --pki DIR from `certshift pki init`"
                ),
            })
        };
        let cert = need(
            "--cert",
            self.cert.clone().or_else(|| from_pki("server/tls.crt")),
        )?;
        let key = need(
            "--key",
            self.key.clone().or_else(|| from_pki("server/tls.key")),
        )?;
        let client_cas = match (self.client_ca.is_empty(), from_pki("ca/ca.crt")) {
            (false, _) => self.client_ca.clone(),
            (true, Some(ca)) => vec![ca],
            (true, None) => Vec::new(),
        };
        if client_cas.is_empty() && self.mode != Mode::AnyCa {
            return Err(ServeError::Config {
                flag: "--client-ca",
                problem: format!(
                    "mode {:?} verifies client certificates: pass --client-ca FILE, or --pki DIR",
                    self.mode
                ),
            });
        }
        let crls = match (self.crl.is_empty(), from_pki("ca/crl.pem")) {
            (false, _) => self.crl.clone(),
            (true, Some(crl)) if crl.exists() => vec![crl],
            _ => Vec::new(),
        };
        let trust_domains = match (self.trust_domain.is_empty(), &manifest) {
            (false, _) => self.trust_domain.clone(),
            (true, Some(m)) => vec![m.trust_domain.clone()],
            (true, None) => vec!["cluster.local".to_string()],
        };
        if self.max_connections == 0 {
            return Err(ServeError::Config {
                flag: "--max-connections",
                problem: "must be at least 1".into(),
            });
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(ServeError::Config {
                flag: "--handshake-timeout/--idle-timeout",
                problem: "must be above zero (e.g. 10s)".into(),
            });
        }
        let policy = self.policy.as_deref().map(Policy::load).transpose()?;
        Ok(ServeConfig {
            listen: self.listen,
            files: ServerFiles {
                cert,
                key,
                client_cas,
                crls,
            },
            mode: self.mode,
            versions: self.tls_versions,
            policy,
            trust_domains,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            watch: !self.no_watch,
        })
    }
}

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

pub(crate) struct Shared {
    cfg: ServeConfig,
    tls: Live<ServerConfig>,
    counters: Counters,
}

/// A bound service, not yet accepting.
pub struct Service {
    listener: TcpListener,
    shared: Arc<Shared>,
    _reloader: Option<ReloaderHandle>,
}

/// Control of a running service: reload on demand, read its state.
#[derive(Clone)]
pub struct ServiceHandle {
    shared: Arc<Shared>,
}

impl Service {
    /// Load the TLS material (refusing bad files), bind, start watching.
    pub async fn bind(cfg: ServeConfig) -> Result<Service, ServeError> {
        let (config, fingerprint) = load_tls(&cfg)?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let shared = Arc::new(Shared {
            tls: Live::new(config, fingerprint),
            cfg,
            counters: Counters::default(),
        });
        let handle = ServiceHandle {
            shared: shared.clone(),
        };
        let paths = if shared.cfg.watch {
            shared.cfg.files.all()
        } else {
            Vec::new()
        };
        let reloader =
            creds::spawn_reloader(&paths, Duration::from_millis(200), true, move || {
                let _ = handle.reload();
            })?;
        Ok(Service {
            listener,
            shared,
            _reloader: Some(reloader),
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

    /// Serve until `shutdown` resolves, then stop accepting and give open
    /// connections `grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let limit = Arc::new(Semaphore::new(self.shared.cfg.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            // Take a slot before accepting: past the cap, clients wait in the
            // backlog instead of being accepted and starved.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let shared = self.shared.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                connection(shared, stream, peer, stop).await;
                drop(permit);
            });
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let all = self.shared.cfg.max_connections as u32;
        if tokio::time::timeout(grace, limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the {grace:?} grace period; closing them");
        }
    }
}

impl ServiceHandle {
    /// Re-read the TLS files and publish them if they changed and are good.
    /// A bad file keeps the current material serving; the error is counted.
    pub fn reload(&self) -> Result<bool, CredError> {
        match load_tls(&self.shared.cfg) {
            Ok((config, fingerprint)) => {
                let published = self.shared.tls.publish(config, fingerprint);
                if published {
                    tracing::info!("TLS material reloaded");
                }
                Ok(published)
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the previous TLS material keeps serving");
                self.shared.tls.record_failure(e.to_string());
                Err(e)
            }
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.shared.tls.status()
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

/// Read every file once, check it, build the config; the fingerprint is of
/// the bytes the config was built from.
fn load_tls(cfg: &ServeConfig) -> Result<(ServerConfig, Vec<u8>), CredError> {
    let f = &cfg.files;
    let mut hash = Sha256::new();
    let mut read = |p: &Path| -> Result<Vec<u8>, CredError> {
        let b = creds::read(p)?;
        hash.update((b.len() as u64).to_be_bytes());
        hash.update(&b);
        Ok(b)
    };
    let chain = creds::parse_chain(&f.cert, &read(&f.cert)?)?;
    let key = creds::parse_key(&f.key, &read(&f.key)?)?;
    let identity = creds::certified_key(&f.cert, chain, &f.key, key)?;
    let mut client_roots = rustls::RootCertStore::empty();
    for ca in &f.client_cas {
        creds::add_roots(&mut client_roots, ca, &read(ca)?)?;
    }
    let mut crls = Vec::new();
    for crl in &f.crls {
        crls.extend(creds::parse_crls(crl, &read(crl)?)?);
    }
    let material = ServerTlsMaterial {
        identity,
        client_roots,
        crls,
        trust_domains: cfg.trust_domains.clone(),
    };
    let config = tls::server_config(material, cfg.mode.client_auth(), &cfg.versions)?;
    Ok((config, hash.finalize().to_vec()))
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let c = &shared.counters;
    c.connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let hs_timeout = shared.cfg.handshake_timeout;
    if shared.cfg.mode == Mode::Permissive {
        // TLS records start with 0x16 (handshake); anything else is plaintext.
        let mut first = [0u8; 1];
        match tokio::time::timeout(hs_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != 0x16 => {
                c.plaintext_connections.fetch_add(1, Ordering::Relaxed);
                http::serve(shared.clone(), stream, http::Peer::plaintext(peer), stop).await;
                return;
            }
            Ok(Ok(1)) => {}
            _ => return,
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.current());
    match tokio::time::timeout(hs_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let (_, conn) = tls_stream.get_ref();
            let info = http::Peer::tls(peer, conn);
            http::serve(shared.clone(), tls_stream, info, stop).await;
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
