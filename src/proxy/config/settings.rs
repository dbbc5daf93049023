//! [`ProxyConfig`]: the proxy's settings once validated, which the engine
//! trusts without checking again.
//!
//! Owns: the validated settings' shape. Never: parses or checks anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::flags::{OnRotate, TlsMode};
use crate::creds::ServerFiles;
use crate::plan::{Plan, Swap};
use crate::tls::{ClientAuth, KxGroups, TlsVersions};

/// Where the identity's credential comes from.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One phase of `--plan-schedule`: `plan` becomes active `after` the
/// previous phase did (the first: after the proxy started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPhase {
    pub after: Duration,
    pub plan: Plan,
    /// `None`: the swap mode in force stays.
    pub swap: Option<Swap>,
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
    /// `--upstream-kx`: the groups offered to the service, in order.
    pub upstream_kx: KxGroups,
    pub trust_domains: Vec<String>,
    pub client: Option<ClientFiles>,
    /// The CA `client` must chain to when that is known (the PKI's, for its
    /// own identity): a reload that does not is refused.
    pub client_ca: Option<PathBuf>,
    /// Bad variants' credentials, from the PKI manifest: name -> files.
    pub variants: Vec<(crate::pki::Variant, ClientFiles)>,
    /// The mutated certificates `pki init` wrote (`mutations/<name>/`), from
    /// the PKI manifest, in catalogue order; empty for a PKI written before
    /// mutations existed.
    pub mutations: Vec<(crate::plan::MutationId, ClientFiles)>,
    /// The plan before the first phase of `plan_schedule`.
    pub plan: Plan,
    /// `--swap` and `--swap-every`: the unit of one experiment.
    pub swap: Swap,
    /// `--upstream-reuse`: in request mode, keep upstream connections per
    /// presented credential (at most this many idle each); 0: a fresh
    /// handshake per request.
    pub upstream_pool: usize,
    /// `--plan-schedule`: plans applied on a timer, in order, each like a
    /// `PUT /plan`. Empty without the flag.
    pub plan_schedule: Vec<PlanPhase>,
    pub rotate_every: Option<Duration>,
    pub rotate_jitter: Duration,
    /// CA that mints rotated leaves, and the chain that follows them.
    pub rotate_ca: Option<(PathBuf, PathBuf)>,
    pub on_rotate: OnRotate,
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub max_connections: usize,
    /// `--max-handshakes`, resolved (a quarter of `max_connections` by default).
    pub max_handshakes: usize,
    pub backlog: u32,
    /// `--workers`, resolved: accept loops, each on its own thread and socket.
    pub workers: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub json: Option<PathBuf>,
    pub watch: bool,
    /// The fingerprint poll's period (`--reload-poll`), `None` when off.
    pub reload_poll: Option<Duration>,
}

impl ProxyConfig {
    /// What the downstream listener allows.
    pub fn listen_limits(&self) -> crate::accept::Limits {
        crate::accept::Limits {
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            handshake_timeout: self.handshake_timeout,
            header_timeout: self.header_timeout,
            tls: self.listen_tls != TlsMode::Off,
        }
    }

    /// Downstream client authentication.
    pub fn listen_auth(&self) -> ClientAuth {
        match self.listen_tls {
            TlsMode::Mtls => ClientAuth::Required,
            _ => ClientAuth::Off,
        }
    }
}
