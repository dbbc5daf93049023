//! `certshift proxy` flags as clap parses them: [`ProxyArgs`], and
//! [`ConfigFile`], the `--config FILE` argument that also records which
//! flags the command line gave.
//!
//! Owns: every flag's name, default, `--help` text and value syntax (the
//! file's keys are these ids, so this is the one list of settings).
//! Never: checks how settings combine (that is `validate`) or reads files.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, ValueHint};

use crate::tls::{KxGroups, TlsVersions};

pub use crate::tls::TlsMode;

/// Pairs of ids that are one setting: the command line giving either
/// overrides both of the file's keys.
pub(super) const PAIRS: [[&str; 2]; 3] = [
    ["present", "present_sequence"],
    ["client_cert", "client_key"],
    ["rotate_ca_cert", "rotate_ca_key"],
];

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
                // clap and the file both show the value already.
                None => Err("use keep, reset or drain:DURATION (e.g. drain:5s)".into()),
            },
        }
    }
}

/// `--upstream-reuse on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    On,
    Off,
}

impl std::str::FromStr for Reuse {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(Reuse::On),
            "off" => Ok(Reuse::Off),
            _ => Err("use on (a pool of upstream connections per presented credential) or off (a fresh handshake per request)".into()),
        }
    }
}

/// `certshift proxy` options.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    // `--config FILE`. First: it records which flags were given before the
    // fields below take their values out of the matches.
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
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub listen_cert: Option<PathBuf>,
    /// Downstream server key (default with --pki: server/tls.key).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub listen_key: Option<PathBuf>,
    /// CA bundle downstream client certificates must chain to (repeatable; default with --pki: ca/ca.crt).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub listen_client_ca: Vec<PathBuf>,
    /// CRL for downstream client certificates (repeatable; default with --pki: ca/crl.pem).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
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
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub upstream_ca: Vec<PathBuf>,
    /// CRL the service's certificate is checked against (repeatable; rotates with the trust bundle).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
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
    /// Key-exchange groups offered to the service, most preferred first
    /// (x25519, secp256r1, secp384r1, X25519MLKEM768). Whatever the list, the
    /// proxy remembers the group the service picks and from then on sends only
    /// that key share (no resumption: every connection is still a full
    /// handshake). The default puts the post-quantum hybrid first, so a
    /// service that supports it gets it; against one that does not (OpenSSL
    /// 3.0, nginx, haproxy) only the first connection pays the unused ML-KEM
    /// key generation (~1.2 KB more ClientHello). `x25519,...` first never
    /// pays it, but a post-quantum service then costs one HelloRetryRequest
    /// (or, if it accepts X25519, gets no post-quantum key exchange).
    #[arg(
        long,
        default_value = "X25519MLKEM768,x25519,secp256r1,secp384r1",
        value_name = "LIST"
    )]
    pub upstream_kx: KxGroups,

    /// Client certificate chain presented upstream as the identity.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Key of --client-cert.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// A `certshift pki init` directory: the identity, the bad variants, the mutated certificates, CAs and CRL.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub pki: Option<PathBuf>,
    /// The service whose identity the proxy presents (with --pki; default: the PKI's first service).
    #[arg(long, value_name = "SERVICE")]
    pub identity: Option<String>,

    /// Weights over what each connection presents, e.g. valid=90,expired=5,none=5;
    /// mutation:<name> is one mutated certificate, `mutations=W` spreads W evenly over all of them.
    #[arg(
        long,
        value_name = "NAME=WEIGHT,...",
        conflicts_with = "present_sequence"
    )]
    pub present: Option<String>,
    /// A cycled sequence of what connections present, e.g. valid,revoked,mutation:bad-signature;
    /// `mutations` is every mutation in catalogue order.
    #[arg(long, value_name = "NAME,...")]
    pub present_sequence: Option<String>,
    /// Seed for --present (printed at startup; default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Change the plan on a timer: a TOML file of `[[phase]]` tables, each
    /// `after = "30s"` (since the previous phase; the first: since start)
    /// and `present = "..."` or `present_sequence = "..."` (optional `seed`).
    /// The flags above are the plan before the first phase; the last phase stays.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub plan_schedule: Option<PathBuf>,

    /// Mint a fresh client leaf (new key, new serial, same identity) this often.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub rotate_every: Option<Duration>,
    /// Add up to this much random delay to each scheduled rotation.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub rotate_jitter: Option<Duration>,
    /// CA certificate that signs minted leaves (default with --pki: the issuing CA).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "rotate_ca_key")]
    pub rotate_ca_cert: Option<PathBuf>,
    /// Key of --rotate-ca-cert.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "rotate_ca_cert")]
    pub rotate_ca_key: Option<PathBuf>,
    /// Connections established with a rotated-away credential: keep, reset, or drain:DURATION.
    /// (With --swap request a rotation takes effect at the next request instead.)
    #[arg(long, default_value = "keep", value_name = "POLICY")]
    pub on_rotate: OnRotate,

    /// The unit of one experiment. `connection`: the plan picks per downstream connection
    /// and bytes are relayed as they are. `request`: the proxy speaks HTTP/1.1 and HTTP/2
    /// downstream and picks per request; each request goes upstream over a connection that
    /// presented exactly that credential, and its response carries x-certshift-variant,
    /// x-certshift-serial and x-certshift-outcome. [default: connection]
    #[arg(long, value_name = "connection|request")]
    pub swap: Option<String>,
    /// With --swap request: keep a pick for this many requests of one downstream
    /// connection (for services that cache identity per connection). Implies --swap request.
    #[arg(long, value_name = "N")]
    pub swap_every: Option<u32>,
    /// With --swap request: `on` keeps upstream connections per presented credential
    /// (a rotated credential gets new ones; the old drain); `off` makes a fresh upstream
    /// handshake for every request.
    #[arg(long, default_value = "on", value_name = "on|off")]
    pub upstream_reuse: Reuse,
    /// With --upstream-reuse on: idle upstream connections kept per presented credential.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub upstream_pool: usize,

    /// Admin API address, or `off`. `PUT /plan` there changes the plan while traffic flows,
    /// with JSON {"present": "valid=80,expired=20", "seed": 7} or {"present_sequence": "valid,expired"};
    /// `GET /plan` shows it.
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

    /// Downstream connections open at once; at the cap a new connection closes the longest-idle one.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Downstream connections still in their TLS handshake at once; at the cap a new
    /// connection closes the oldest handshake [default: a quarter of --max-connections].
    #[arg(long, value_name = "N")]
    pub max_handshakes: Option<usize>,
    /// Listen backlog: connections the kernel queues before they are accepted
    /// (capped by net.core.somaxconn).
    #[arg(long, default_value_t = crate::accept::DEFAULT_BACKLOG, value_name = "N")]
    pub backlog: u32,
    /// Worker threads, each with its own listening socket (SO_REUSEPORT) and
    /// accept loop; a connection (and its upstream) stays on the worker that
    /// accepted it [default: half the CPUs, at least 1].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Time allowed for each TLS handshake (downstream, from accept, and upstream).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Time allowed from the end of the downstream handshake (from accept without
    /// TLS) to the client's first byte (with --swap request: its first request header).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Time allowed to connect to the service.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Close a connection with no traffic either way for this long.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// On SIGINT/SIGTERM, wait this long for open connections before closing them.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Write the final summary as JSON.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub json: Option<PathBuf>,
    /// Also re-read the credential files this often and reload when their
    /// bytes changed: the fallback for a missed file event (default 5s
    /// while watching; 0 disables; with --no-watch, polls only if given).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub reload_poll: Option<Duration>,
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

    /// Parses `certshift proxy FLAGS...` exactly as the binary does (so
    /// flags given here override `--config`), for tests and embedders.
    pub fn from_flags<I, T>(flags: I) -> Result<ProxyArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let cmd = ProxyArgs::augment_args(Command::new("proxy"));
        let argv =
            std::iter::once(OsString::from("proxy")).chain(flags.into_iter().map(Into::into));
        ProxyArgs::from_arg_matches(&cmd.try_get_matches_from(argv)?)
    }
}

/// `--rotate-every` and the timeouts; the message says how to write one.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("not a duration ({e}); write e.g. \"500ms\", \"5s\" or \"1m30s\""))
}

/// `--config FILE`, and which flags the command line gave. Flattened as the
/// first field of [`ProxyArgs`] so it sees every argument before the derived
/// code takes the values out of the matches.
///
/// clap fills in defaults, so a parsed [`ProxyArgs`] cannot tell
/// `--listen-tls off` from no flag at all; the file layer asks
/// [`ConfigFile::given`] instead. This works wherever `ProxyArgs` is parsed by
/// clap (the binary, [`ProxyArgs::from_flags`]) and needs no argv.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// The TOML file, if any.
    pub path: Option<PathBuf>,
    /// Argument ids (= file keys) whose value came from the command line or
    /// the environment (`CERTSHIFT_ADMIN_TOKEN`).
    given: BTreeSet<String>,
}

impl ConfigFile {
    /// `--config path` with no flag given: the file overrides every field
    /// it sets. For callers that build [`ProxyArgs`] by hand.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        ConfigFile {
            path: Some(path.into()),
            given: BTreeSet::new(),
        }
    }

    /// Did the command line give this key's setting (or its pair's)?
    pub(super) fn given(&self, key: &str) -> bool {
        match PAIRS.iter().find(|p| p.contains(&key)) {
            Some(p) => p.iter().any(|k| self.given.contains(*k)),
            None => self.given.contains(key),
        }
    }
}

impl Args for ConfigFile {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_hint(ValueHint::FilePath)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Read settings from this TOML file: keys are these flags' names with _ for -, e.g. listen_tls = \"mtls\" (examples: configs/proxy-*.toml); flags given here override it"),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ConfigFile {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = m
            .ids()
            .map(|id| id.as_str())
            .filter(|id| {
                matches!(
                    m.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(String::from)
            .collect();
        Ok(ConfigFile {
            path: m.get_one::<PathBuf>("config").cloned(),
            given,
        })
    }

    /// The file layer updates [`ProxyArgs`] one key at a time from matches
    /// without `--config`; those must leave the path and the given flags as
    /// the command line set them.
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        if m.contains_id("config") {
            *self = Self::from_arg_matches(m)?;
        }
        Ok(())
    }
}
