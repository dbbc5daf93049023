//! `certshift proxy` options and their validation into a [`ProxyConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};

use super::file::{self, ConfigFile, FileError};
use crate::creds::ServerFiles;
use crate::pki::PkiDir;
use crate::plan::{Plan, PlanError};
use crate::tls::{ClientAuth, TlsVersions};

const MAX_CONNECTIONS: usize = 1 << 20;
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

pub use crate::tls::TlsMode;

/// What becomes of connections established with a credential that rotated away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRotate {
    /// Let them run.
    Keep,
    /// Close them this long after the rotation.
    Drain(Duration),
    /// Close them now.
    Reset,
}

impl std::str::FromStr for OnRotate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(OnRotate::Keep),
            "reset" => Ok(OnRotate::Reset),
            d => match d.strip_prefix("drain:") {
                Some(d) => humantime::parse_duration(d)
                    .map(OnRotate::Drain)
                    .map_err(|e| format!("drain:{d}: {e}")),
                None => Err(format!(
                    "{s:?}: use keep, reset or drain:DURATION (e.g. drain:5s)"
                )),
            },
        }
    }
}

/// `certshift proxy` options.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    // `--config FILE`. First: it records which flags were given before the
    // fields below take their values out of the matches (see `file.rs`).
    #[command(flatten)]
    pub config: ConfigFile,
    /// Downstream address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub listen: SocketAddr,
    /// TLS toward the downstream client (off: the application speaks
    /// plaintext to its local sidecar, as on Istio's outbound path).
    #[arg(long, value_enum, default_value_t = TlsMode::Off)]
    pub listen_tls: TlsMode,
    /// Downstream server certificate chain (default with --pki: server/tls.crt).
    #[arg(long, value_name = "FILE")]
    pub listen_cert: Option<PathBuf>,
    /// Downstream server key (default with --pki: server/tls.key).
    #[arg(long, value_name = "FILE")]
    pub listen_key: Option<PathBuf>,
    /// CA bundle downstream client certificates must chain to (repeatable; default with --pki: ca/ca.crt).
    #[arg(long, value_name = "FILE")]
    pub listen_client_ca: Vec<PathBuf>,
    /// CRL for downstream client certificates (repeatable; default with --pki: ca/crl.pem).
    #[arg(long, value_name = "FILE")]
    pub listen_crl: Vec<PathBuf>,

    /// The service to forward to (required unless --config sets upstream).
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "config",
        default_value = "",
        hide_default_value = true
    )]
    pub upstream: String,
    /// TLS toward the service.
    #[arg(long, value_enum, default_value_t = TlsMode::Mtls)]
    pub upstream_tls: TlsMode,
    /// CA bundle the service's certificate must chain to (repeatable; default with --pki: ca/ca.crt).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// CRL the service's certificate is checked against (repeatable; rotates with the trust bundle).
    #[arg(long, value_name = "FILE")]
    pub upstream_crl: Vec<PathBuf>,
    /// Name sent as SNI and verified in the service's certificate (default: the host part of --upstream).
    #[arg(long, value_name = "NAME")]
    pub upstream_name: Option<String>,
    /// SPIFFE ID the service's certificate must carry.
    #[arg(long, value_name = "ID")]
    pub upstream_spiffe_id: Option<String>,
    /// TLS versions offered to the service.
    #[arg(long, default_value = "1.2,1.3", value_name = "LIST")]
    pub tls_versions: TlsVersions,

    /// Client certificate chain presented upstream as the identity.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// A `certshift pki init` directory: the identity, the bad variants, CAs and CRL.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// The service whose identity the proxy presents (with --pki; default: the PKI's first service).
    #[arg(long, value_name = "SERVICE")]
    pub identity: Option<String>,

    /// Weights over what each connection presents, e.g. valid=90,expired=5,none=5.
    #[arg(
        long,
        value_name = "NAME=WEIGHT,...",
        conflicts_with = "present_sequence"
    )]
    pub present: Option<String>,
    /// A cycled sequence of what connections present, e.g. valid,revoked,none.
    #[arg(long, value_name = "NAME,...")]
    pub present_sequence: Option<String>,
    /// Seed for --present (printed at startup; default: random).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Mint a fresh client leaf (new key, new serial, same identity) this often.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub rotate_every: Option<Duration>,
    /// Add up to this much random delay to each scheduled rotation.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub rotate_jitter: Option<Duration>,
    /// CA certificate that signs minted leaves (default with --pki: the issuing CA).
    #[arg(long, value_name = "FILE", requires = "rotate_ca_key")]
    pub rotate_ca_cert: Option<PathBuf>,
    /// Key of --rotate-ca-cert.
    #[arg(long, value_name = "FILE", requires = "rotate_ca_cert")]
    pub rotate_ca_key: Option<PathBuf>,
    /// Connections established with a rotated-away credential: keep, reset, or drain:DURATION.
    #[arg(long, default_value = "keep", value_name = "POLICY")]
    pub on_rotate: OnRotate,

    /// Admin API address, or `off`.
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR|off")]
    pub admin: String,
    /// Bearer token required on every admin request (required for a non-loopback --admin).
    #[arg(
        long,
        env = "CERTSHIFT_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Time allowed for each TLS handshake (downstream and upstream).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Time allowed to connect to the service.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Close a connection with no traffic either way for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// On SIGINT/SIGTERM, wait this long for open connections before closing them.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Write the final summary as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Do not watch credential files (SIGHUP and POST /rotate still reload).
    #[arg(long)]
    pub no_watch: bool,
}

impl ProxyArgs {
    /// The options as `certshift proxy --upstream ADDR` with no other flag.
    pub fn for_upstream(upstream: &str) -> Self {
        let cmd = ProxyArgs::augment_args(clap::Command::new("proxy"));
        // Our own defaults parse; --upstream is the only required flag.
        let m = cmd
            .try_get_matches_from(["proxy", "--upstream", upstream])
            .expect("invariant: proxy defaults parse");
        ProxyArgs::from_arg_matches(&m).expect("invariant: proxy defaults parse")
    }
}

/// A configuration error: the flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag}: {problem}")]
    Flag { flag: &'static str, problem: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    File(#[from] FileError),
}

fn flag(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Flag {
        flag,
        problem: problem.into(),
    }
}

/// Where the identity's credential comes from.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Validated proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub listen_tls: TlsMode,
    /// Downstream TLS material (when `listen_tls` is not off).
    pub listen_files: Option<ServerFiles>,
    pub upstream: String,
    pub upstream_tls: TlsMode,
    pub upstream_name: String,
    pub upstream_cas: Vec<PathBuf>,
    pub upstream_crls: Vec<PathBuf>,
    pub upstream_spiffe_id: Option<String>,
    pub versions: TlsVersions,
    pub trust_domains: Vec<String>,
    pub client: Option<ClientFiles>,
    /// Bad variants' credentials, from the PKI manifest: name -> files.
    pub variants: Vec<(crate::pki::Variant, ClientFiles)>,
    pub plan: Plan,
    pub rotate_every: Option<Duration>,
    pub rotate_jitter: Duration,
    /// CA that mints rotated leaves, and the chain that follows them.
    pub rotate_ca: Option<(PathBuf, PathBuf)>,
    pub on_rotate: OnRotate,
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub json: Option<PathBuf>,
    pub watch: bool,
}

impl ProxyArgs {
    fn validate(self) -> Result<ProxyConfig, ConfigError> {
        let pki = self.pki.as_deref().map(PkiDir::open).transpose()?;
        let manifest = pki.as_ref().map(PkiDir::manifest);
        let server = pki.as_ref().and_then(PkiDir::server);

        let plan = match (&self.present, &self.present_sequence) {
            (Some(w), _) => Plan::parse_weights(w, self.seed.unwrap_or_else(rand::random))?,
            (None, Some(s)) => Plan::parse_sequence(s)?,
            (None, None) => Plan::valid_only(),
        };

        // The identity and the bad variants.
        let identity = match (manifest, &self.identity) {
            (Some(m), Some(id)) if m.client(id).is_none() => {
                return Err(flag(
                    "--identity",
                    format!(
                        "{id:?} is not a service of the PKI; it has {}",
                        m.services.join(", ")
                    ),
                ))
            }
            (Some(m), id) => id.clone().or_else(|| m.services.first().cloned()),
            (None, Some(_)) => return Err(flag("--identity", "needs --pki DIR")),
            (None, None) => None,
        };
        let client = match (&self.client_cert, &self.client_key, &pki, &identity) {
            (Some(c), Some(k), _, _) => Some(ClientFiles {
                cert: c.clone(),
                key: k.clone(),
            }),
            (_, _, Some(pki), Some(id)) => pki.client(id).map(|f| ClientFiles {
                cert: f.cert,
                key: f.key,
            }),
            _ => None,
        };
        let mut variants = Vec::new();
        for v in plan.needs() {
            let Some(pki) = &pki else {
                return Err(flag(
                    "--present",
                    format!(
                        "presenting {v} needs --pki DIR (the bad credentials come from the PKI)"
                    ),
                ));
            };
            let Some(f) = pki.variant(v) else {
                return Err(flag("--present", format!("the PKI in {} has no {v} credential (missing-intermediate needs `pki init --intermediate`)", pki.dir().display())));
            };
            variants.push((
                v,
                ClientFiles {
                    cert: f.cert,
                    key: f.key,
                },
            ));
        }
        if self.upstream_tls != TlsMode::Mtls
            && plan.items().iter().any(|(p, w)| {
                *w > 0
                    && !matches!(
                        p,
                        crate::plan::Presented::Variant(crate::pki::Variant::Valid)
                    )
            })
        {
            return Err(flag("--present", "bad variants and `none` need --upstream-tls mtls: without client certificates upstream, every connection presents nothing"));
        }
        let presents_valid = plan.items().iter().any(|(p, w)| {
            *w > 0 && *p == crate::plan::Presented::Variant(crate::pki::Variant::Valid)
        });
        if self.upstream_tls == TlsMode::Mtls && presents_valid && client.is_none() {
            return Err(flag("--client-cert", "mTLS upstream needs a client identity: pass --client-cert/--client-key, or --pki DIR [--identity SERVICE]"));
        }

        let (host, _) = split_host_port(&self.upstream).ok_or_else(|| {
            flag(
                "--upstream",
                format!("{:?} is not HOST:PORT", self.upstream),
            )
        })?;
        let upstream_cas = match (
            self.upstream_ca.is_empty(),
            pki.as_ref().map(PkiDir::ca_cert),
        ) {
            (false, _) => self.upstream_ca.clone(),
            (true, Some(ca)) => vec![ca],
            (true, None) => Vec::new(),
        };
        if self.upstream_tls != TlsMode::Off && upstream_cas.is_empty() {
            return Err(flag("--upstream-ca", "TLS upstream needs the CA that signed the service's certificate: pass --upstream-ca FILE or --pki DIR"));
        }

        let listen_files = match self.listen_tls {
            TlsMode::Off => None,
            mode => {
                let cert = self
                    .listen_cert
                    .clone()
                    .or_else(|| server.as_ref().map(|f| f.cert.clone()))
                    .ok_or_else(|| {
                        flag(
                            "--listen-cert",
                            "required with --listen-tls tls|mtls (or --pki DIR)",
                        )
                    })?;
                let key = self
                    .listen_key
                    .clone()
                    .or_else(|| server.as_ref().map(|f| f.key.clone()))
                    .ok_or_else(|| {
                        flag(
                            "--listen-key",
                            "required with --listen-tls tls|mtls (or --pki DIR)",
                        )
                    })?;
                let client_cas = match (
                    mode,
                    self.listen_client_ca.is_empty(),
                    pki.as_ref().map(PkiDir::ca_cert),
                ) {
                    (TlsMode::Mtls, false, _) => self.listen_client_ca.clone(),
                    (TlsMode::Mtls, true, Some(ca)) => vec![ca],
                    (TlsMode::Mtls, true, None) => {
                        return Err(flag(
                            "--listen-client-ca",
                            "required with --listen-tls mtls (or --pki DIR)",
                        ))
                    }
                    _ => Vec::new(),
                };
                let crls = match (
                    mode,
                    self.listen_crl.is_empty(),
                    self.listen_client_ca.is_empty(),
                    pki.as_ref().map(PkiDir::crl),
                ) {
                    (TlsMode::Mtls, false, _, _) => self.listen_crl.clone(),
                    (TlsMode::Mtls, true, true, Some(crl)) if crl.exists() => vec![crl],
                    _ => Vec::new(),
                };
                Some(ServerFiles {
                    cert,
                    key,
                    client_cas,
                    crls,
                })
            }
        };

        let rotate_ca = match (&self.rotate_ca_cert, &self.rotate_ca_key, &pki) {
            (Some(c), Some(k), _) => Some((c.clone(), k.clone())),
            (_, _, Some(pki)) => pki.issuing_ca().map(|f| (f.cert, f.key)),
            _ => None,
        };
        if self.rotate_every.is_some() && rotate_ca.is_none() {
            return Err(flag(
                "--rotate-every",
                "minting needs a CA: pass --rotate-ca-cert/--rotate-ca-key, or --pki DIR",
            ));
        }
        if let Some(d) = self.rotate_every {
            if d < Duration::from_millis(10) {
                return Err(flag("--rotate-every", "give at least 10ms"));
            }
        }

        let admin = match self.admin.as_str() {
            "off" => None,
            a => Some(
                a.parse::<SocketAddr>()
                    .map_err(|e| flag("--admin", format!("{a:?}: {e}; give IP:PORT or off")))?,
            ),
        };
        if let Some(a) = admin {
            if !a.ip().is_loopback() && self.admin_token.as_deref().is_none_or(str::is_empty) {
                return Err(flag("--admin", format!("{a} is not a loopback address: the admin API can rotate credentials, so a non-loopback bind requires --admin-token TOKEN")));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(flag(
                "--max-connections",
                format!("give 1 to {MAX_CONNECTIONS}"),
            ));
        }
        for (f, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--connect-timeout", self.connect_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--drain-timeout", self.drain_timeout),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(flag(f, "give a duration above 0 and at most 1d (e.g. 10s)"));
            }
        }
        let trust_domains = vec![manifest
            .as_ref()
            .map_or("cluster.local".to_string(), |m| m.trust_domain.clone())];
        Ok(ProxyConfig {
            listen: self.listen,
            listen_tls: self.listen_tls,
            listen_files,
            upstream_name: self
                .upstream_name
                .clone()
                .unwrap_or_else(|| host.to_string()),
            upstream: self.upstream.clone(),
            upstream_tls: self.upstream_tls,
            upstream_cas,
            upstream_crls: self.upstream_crl.clone(),
            upstream_spiffe_id: self.upstream_spiffe_id,
            versions: self.tls_versions,
            trust_domains,
            client,
            variants,
            plan,
            rotate_every: self.rotate_every,
            rotate_jitter: self.rotate_jitter.unwrap_or_default(),
            rotate_ca,
            on_rotate: self.on_rotate,
            admin,
            admin_token: self.admin_token.filter(|t| !t.is_empty()),
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            drain_timeout: self.drain_timeout,
            json: self.json,
            watch: !self.no_watch,
        })
    }
}

impl ProxyConfig {
    /// Downstream client authentication.
    pub fn listen_auth(&self) -> ClientAuth {
        match self.listen_tls {
            TlsMode::Mtls => ClientAuth::Required,
            _ => ClientAuth::Off,
        }
    }
}

/// `host:port`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
}

impl ProxyArgs {
    /// Merges `--config FILE` under the given flags (`file.rs`), then
    /// validates the result once, whichever source each setting came from.
    pub fn into_config(self) -> Result<ProxyConfig, ConfigError> {
        let (args, origin) = file::merge(self)?;
        args.validate().map_err(|e| match origin {
            Some(o) => o.blame(e),
            None => e,
        })
    }
}
