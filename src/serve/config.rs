//! `certshift serve` options and their validation into a [`ServeConfig`]:
//! raw flags become checked settings here, once; the service trusts them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};

use super::policy::{Policy, PolicyError};
use crate::accept::Limits;
use crate::creds::{CredError, ServerFiles};
use crate::net::check_admin_bind;
use crate::pki::PkiDir;
use crate::tls::{ClientAuth, TlsVersions};

/// Upper bounds that keep arithmetic on user-given values from overflowing.
const MAX_CONNECTIONS: usize = 1 << 20;
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Linux silently caps a larger backlog at net.core.somaxconn anyway.
const MAX_BACKLOG: u32 = 1 << 16;

/// How the service enforces client certificates (`--mode`; the flag keeps
/// its name, the type says what it selects). Every mode refuses a request
/// whose client certificate has expired since the handshake (a resumed
/// session) with 495.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Require and verify a client certificate: chain, validity, CRL,
    /// clientAuth EKU and a SPIFFE ID in the trust domain.
    Strict,
    /// Plaintext HTTP and TLS on the same port (Istio PERMISSIVE): TLS
    /// without a client certificate is served too, a presented one is
    /// verified as in strict.
    Permissive,
    /// Ask for a certificate and verify it if sent, but serve without one
    /// (nginx `ssl_verify_client optional`).
    Optional,
    /// Require a certificate and verify it as strict does, except whether
    /// it chains to a trusted CA (nginx `optional_no_ca`, with a
    /// certificate required).
    AnyCa,
    /// Server-only TLS: never ask for a client certificate. The baseline
    /// `certshift bench` prices mTLS against (`auth=off`); an audit fails it.
    Off,
}

impl Enforcement {
    pub(crate) fn client_auth(self) -> ClientAuth {
        match self {
            Enforcement::Strict => ClientAuth::Required,
            // A port that serves plaintext to anyone gains nothing from
            // refusing TLS without a certificate; Istio's PERMISSIVE sidecar
            // takes both. A certificate that is sent is still judged.
            Enforcement::Permissive | Enforcement::Optional => ClientAuth::Optional,
            Enforcement::AnyCa => ClientAuth::AnyCa,
            Enforcement::Off => ClientAuth::Off,
        }
    }
}

/// `certshift serve` options.
#[derive(Debug, Clone, Args)]
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
    /// CRL file (PEM) listing revoked client certificates (repeatable). With
    /// CRLs, a client's leaf must be covered by one from its issuer; a CA
    /// certificate on its path is checked where one covers it.
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// Take the server credential, client CA, CRL and trust domain from a
    /// `certshift pki init` directory; explicit flags override it.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// TLS versions to accept.
    #[arg(long, default_value = "1.2,1.3", value_name = "LIST")]
    pub tls_versions: TlsVersions,
    /// Client-certificate enforcement. In every mode, a request whose client
    /// certificate has expired since its handshake (a resumed session) gets 495.
    #[arg(long, value_enum, default_value_t = Enforcement::Strict)]
    pub mode: Enforcement,
    /// Authorization policy (TOML, Istio AuthorizationPolicy style rules).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// SPIFFE trust domain a client identity must belong to (repeatable;
    /// default: the PKI's, else cluster.local).
    #[arg(long = "trust-domain", value_name = "DOMAIN")]
    pub trust_domain: Vec<String>,
    /// Time allowed for a TLS handshake, from accept (and for the first byte in permissive mode).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Time allowed from the end of the handshake to the end of the first request's header.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Close a keep-alive connection that sends no request for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Connections open at once; at the cap a new connection closes the longest-idle one.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections still in their TLS handshake at once; at the cap a new
    /// connection closes the oldest handshake [default: a quarter of --max-connections].
    #[arg(long, value_name = "N")]
    pub max_handshakes: Option<usize>,
    /// Listen backlog: connections the kernel queues before they are accepted
    /// (capped by net.core.somaxconn).
    #[arg(long, default_value_t = crate::accept::DEFAULT_BACKLOG, value_name = "N")]
    pub backlog: u32,
    /// Worker threads, each with its own listening socket (SO_REUSEPORT) and
    /// accept loop; a connection stays on the worker that accepted it
    /// [default: half the CPUs, at least 1].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Do not watch the credential files for changes (SIGHUP still
    /// reloads; so does --reload-poll when given).
    #[arg(long)]
    pub no_watch: bool,
    /// Also re-read the credential and policy files this often and reload
    /// when their bytes changed: the fallback for a missed file event
    /// (default 5s while watching; 0 disables).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reload_poll: Option<Duration>,
    /// Accept a policy file with no rules (it denies every request). Without
    /// it such a file is refused at startup and on reload.
    #[arg(long)]
    pub allow_empty_policy: bool,
    /// Admin API address (GET /healthz, /stats, /metrics), printed as
    /// `admin on ADDR` after the `listening on` line [default: none]. Off
    /// loopback (0.0.0.0 included) only with --admin-token.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Bearer token required on every admin request (required for a
    /// non-loopback --admin; at least 16 non-whitespace characters).
    #[arg(
        long,
        env = "CERTSHIFT_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

impl Default for ServeArgs {
    /// Exactly what `certshift serve` with no flags means.
    fn default() -> Self {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        // The defaults are ours and parse; no flag is required.
        let matches = cmd
            .try_get_matches_from(["serve"])
            .expect("invariant: serve's defaults parse");
        ServeArgs::from_arg_matches(&matches).expect("invariant: serve's defaults parse")
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
    pub mode: Enforcement,
    pub versions: TlsVersions,
    /// The policy as loaded at startup; reloaded from `policy_path`.
    pub policy: Option<Policy>,
    pub policy_path: Option<PathBuf>,
    pub trust_domains: Vec<String>,
    pub idle_timeout: Duration,
    /// Connection and handshake caps, handshake and header deadlines.
    pub limits: Limits,
    pub backlog: u32,
    /// Accept loops, each on its own thread and socket (1: on the caller's runtime).
    pub workers: usize,
    pub watch: bool,
    /// The fingerprint poll's period, `None` when off.
    pub reload_poll: Option<Duration>,
    pub allow_empty_policy: bool,
    /// The admin API's address, if any, and the token it requires.
    pub admin: Option<AdminBind>,
}

/// Where `serve`'s admin API listens and the token it requires. Its Debug
/// never shows the token.
#[derive(Clone)]
pub struct AdminBind {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBind")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ServeArgs {
    /// Resolve `--pki`, check required flags, load the policy.
    pub fn into_config(self) -> Result<ServeConfig, ServeError> {
        let pki = self.pki.as_deref().map(PkiDir::open).transpose()?;
        let manifest = pki.as_ref().map(PkiDir::manifest);
        let server = pki.as_ref().and_then(PkiDir::server);
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
            self.cert
                .clone()
                .or_else(|| server.as_ref().map(|f| f.cert.clone())),
        )?;
        let key = need("--key", self.key.clone().or_else(|| server.map(|f| f.key)))?;
        let client_cas = match (self.client_ca.is_empty(), pki.as_ref().map(PkiDir::ca_cert)) {
            (false, _) => self.client_ca.clone(),
            (true, Some(ca)) => vec![ca],
            (true, None) => Vec::new(),
        };
        if client_cas.is_empty() && !matches!(self.mode, Enforcement::AnyCa | Enforcement::Off) {
            return Err(ServeError::Config {
                flag: "--client-ca",
                problem: format!(
                    "mode {:?} verifies client certificates: pass --client-ca FILE, or --pki DIR",
                    self.mode
                ),
            });
        }
        // The PKI's CRL speaks only for the PKI's CA: with another client CA,
        // it would make every one of that CA's clients "unknown revocation status".
        let crls = match (
            self.crl.is_empty(),
            self.client_ca.is_empty(),
            pki.as_ref().map(PkiDir::crl),
        ) {
            (false, _, _) => self.crl.clone(),
            // A PKI always has its CRL: without it revocation would stop
            // being checked, silently (a revoked client served).
            (true, true, Some(crl)) if !crl.exists() => {
                return Err(ServeError::Config {
                    flag: "--pki",
                    problem: format!(
                        "{} is missing, so revoked clients would be served; restore it, \
                         re-run `certshift pki init`, or pass --crl FILE",
                        crl.display()
                    ),
                })
            }
            (true, true, Some(crl)) => vec![crl],
            _ => Vec::new(),
        };
        let trust_domains = match (self.trust_domain.is_empty(), manifest) {
            (false, _) => self.trust_domain.clone(),
            (true, Some(m)) => vec![m.trust_domain.clone()],
            (true, None) => vec!["cluster.local".to_string()],
        };
        for td in &trust_domains {
            crate::spiffe::parse_trust_domain(td).map_err(|e| ServeError::Config {
                flag: "--trust-domain",
                problem: e.to_string(),
            })?;
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ServeError::Config {
                flag: "--max-connections",
                problem: format!(
                    "{} is out of range; give 1 to {MAX_CONNECTIONS}",
                    self.max_connections
                ),
            });
        }
        let max_handshakes = self
            .max_handshakes
            .unwrap_or(Limits::default_max_handshakes(self.max_connections));
        if !(1..=self.max_connections).contains(&max_handshakes) {
            return Err(ServeError::Config {
                flag: "--max-handshakes",
                problem: format!(
                    "{max_handshakes} is out of range; give 1 to --max-connections ({})",
                    self.max_connections
                ),
            });
        }
        if !(1..=MAX_BACKLOG).contains(&self.backlog) {
            return Err(ServeError::Config {
                flag: "--backlog",
                problem: format!("{} is out of range; give 1 to {MAX_BACKLOG}", self.backlog),
            });
        }
        let workers =
            crate::accept::resolve_workers(self.workers).map_err(|problem| ServeError::Config {
                flag: "--workers",
                problem,
            })?;
        for (flag, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--header-timeout", self.header_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(ServeError::Config {
                    flag,
                    problem: "give a duration above 0 and at most 1d (e.g. 10s)".into(),
                });
            }
        }
        if self.reload_poll.is_some_and(|d| d > MAX_TIMEOUT) {
            return Err(ServeError::Config {
                flag: "--reload-poll",
                problem: "give a duration of at most 1d (e.g. 5s), or 0 to disable".into(),
            });
        }
        // The proxy's rule, from the same function: loopback, or a token.
        let admin = match self.admin {
            Some(addr) => Some(AdminBind {
                addr,
                token: check_admin_bind(addr, self.admin_token.as_deref()).map_err(|e| {
                    ServeError::Config {
                        flag: e.flag,
                        problem: e.problem,
                    }
                })?,
            }),
            None => None,
        };
        // Loaded now so that a bad policy is a startup error (exit 2).
        let policy = self
            .policy
            .as_deref()
            .map(|p| Policy::load(p)?.require_rules(p, self.allow_empty_policy))
            .transpose()?;
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
            policy_path: self.policy.clone(),
            trust_domains,
            idle_timeout: self.idle_timeout,
            limits: Limits {
                max_connections: self.max_connections,
                max_handshakes,
                handshake_timeout: self.handshake_timeout,
                header_timeout: self.header_timeout,
                // Permissive mode too: its first byte is waited for as part of the handshake.
                tls: true,
            },
            backlog: self.backlog,
            workers,
            watch: !self.no_watch,
            reload_poll: crate::creds::poll_period(!self.no_watch, self.reload_poll),
            allow_empty_policy: self.allow_empty_policy,
            admin,
        })
    }
}
