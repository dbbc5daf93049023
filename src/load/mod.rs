//! `certshift load`: an open-loop load generator that presents client
//! certificates. Every operation has an intended start time; latency runs
//! from it (coordinated omission corrected), the uncorrected service time is
//! kept beside it, and operations over `--max-in-flight` are counted as
//! dropped, never skipped.
//!
//! ```text
//!  LoadArgs ──validate──▶ LoadSetup (target, TLS, client credential)
//!        └─ engine::run ─▶ workers (schedule, op, record) ─▶ LoadRun
//!                             └─▶ report: table, JSON, HdrHistogram log, SVG
//! ```
//!
//! Owns: the schedule, the operations and what they measure. Never: decides
//! a verdict on its own vocabulary (outcomes are `tls::Outcome`), or hides a
//! stall by waiting for a response before sending the next operation.

pub mod analysis;
pub mod engine;
mod marks;
pub mod op;
mod progress;
pub mod record;
pub mod schedule;
mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

pub use engine::{run, LoadConfig, LoadRun};
pub use marks::{Mark, Marks};
pub use op::Target;

use crate::creds::{self, Loaded, Publisher, RotationKind, Sources};
use crate::net::TlsTarget;
use crate::pki::PkiDir;
use crate::report::Outputs;
use crate::tls::{client_config, ClientCert, TlsMode, TlsVersions};

/// The highest `--rate` one process takes. One process drives thousands of
/// handshakes per second per core; a million operations a second is already
/// far past what it can send, and above it the schedule itself (one clock
/// tick per operation) becomes the work. More load is more processes, their
/// HdrHistogram logs combined with `certshift report merge`.
pub const MAX_RATE: f64 = 1_000_000.0;

/// The longest `--coalesce`: beyond it the added lateness, not the
/// service, would be what the latencies show.
pub const MAX_COALESCE: Duration = Duration::from_millis(10);

/// What one operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A new connection and a full handshake, then confirmed acceptance.
    Handshake,
    /// A new connection and one HTTP/1.1 request.
    Request,
    /// Requests over `--connections` persistent connections.
    Keepalive,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Handshake => "handshake",
            Mode::Request => "request",
            Mode::Keepalive => "keepalive",
        }
    }
}

/// `certshift load` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The service to load, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// TLS towards the target.
    #[arg(long, value_enum, default_value_t = TlsMode::Mtls)]
    pub tls: TlsMode,
    /// CA bundle that signed the target's certificate (default with --pki: its ca/ca.crt).
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Name to verify the target's certificate against (default: the target's host).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Client certificate (leaf first, then chain); reloaded when the file changes.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// A PKI written by `certshift pki init`: its CA and a service's client identity.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// The service whose client identity to present (default: the PKI's first).
    #[arg(long, value_name = "SERVICE")]
    pub identity: Option<String>,
    /// TLS versions to offer.
    #[arg(long, default_value = "1.2,1.3", value_name = "LIST")]
    pub tls_versions: TlsVersions,
    /// Resume TLS sessions; the report gives the resumed share.
    #[arg(long)]
    pub resume: bool,
    /// What one operation is.
    #[arg(long, value_enum, default_value_t = Mode::Request)]
    pub mode: Mode,
    /// Request path (request and keepalive modes).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Persistent connections (keepalive mode).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub connections: usize,
    /// Operations started per second, whatever the service does.
    #[arg(long, default_value_t = 100.0, value_name = "N")]
    pub rate: f64,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Run at the same rate this long first, without counting.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Start the operations due within each window of this length together,
    /// at its end: one timer wake for several operations, so the generator
    /// costs less CPU per operation at low rates, for up to this much added
    /// latency, which stays in the corrected latency. 0s: each at its own time.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub coalesce: Duration,
    /// Operations allowed in flight at once; operations over it are counted as dropped.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_in_flight: usize,
    /// Bound on each operation, connect to response; running out is a timeout outcome.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Handshake mode over TLS 1.3: how long to wait for evidence of acceptance.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub confirm_window: Duration,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (for `certshift report merge` and HdrHistogram's tools).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Interval of the HdrHistogram log.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub hdr_interval: Duration,
    /// Plot latency percentiles and failures over time, with rotations marked, as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Never draw the live progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Do not reload the client certificate when its files change.
    #[arg(long)]
    pub no_watch: bool,
}

/// A validated `load`: what to run and where its client credential lives.
pub struct LoadSetup {
    pub config: LoadConfig,
    /// The presented credential and its files, when it can rotate.
    pub client: Option<RotatingClient>,
    /// Where the run's rotations are marked (the client credential's
    /// publications among them).
    pub marks: Marks,
    pub outputs: Outputs,
    pub tls: TlsMode,
    pub target_name: String,
    pub watch: bool,
}

/// Why a load could not start. Every variant names the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{flag}: {problem}")]
    Flag { flag: &'static str, problem: String },
    #[error("--target: cannot resolve {target}")]
    Resolve {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--pki: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Credentials(#[from] creds::CredError),
    #[error("watching the client certificate files")]
    Watch(#[source] notify::Error),
}

fn flag(flag: &'static str, problem: impl Into<String>) -> LoadError {
    LoadError::Flag {
        flag,
        problem: problem.into(),
    }
}

impl LoadArgs {
    /// Check every flag and load the credentials; errors name the flag.
    pub async fn setup(&self) -> Result<LoadSetup, LoadError> {
        self.check_numbers()?;
        let (method, addr) = (self.request_method()?, self.resolve().await?);
        let pki = self.pki.as_deref().map(PkiDir::open).transpose()?;
        let marks = Marks::default();
        let (tls, client) = self.tls(pki.as_ref(), &marks)?;
        let target = Target {
            addr,
            tls,
            method,
            path: self.path.clone(),
            authority: self.target.clone(),
            confirm_window: self.confirm_window,
        };
        let mut config = LoadConfig::new(target, self.mode, self.rate, self.duration);
        config.connections = self.connections;
        config.warmup = self.warmup;
        config.max_in_flight = self.max_in_flight;
        config.coalesce = self.coalesce;
        config.timeout = self.timeout;
        config.progress = !self.no_progress;
        Ok(LoadSetup {
            config,
            client,
            marks,
            outputs: Outputs {
                json: self.json.clone(),
                hdr_log: self.hdr_log.clone(),
                hdr_interval: self.hdr_interval,
                plot: self.plot.clone(),
            },
            tls: self.tls,
            target_name: self.target.clone(),
            watch: !self.no_watch,
        })
    }

    /// Rates, durations, bounds.
    fn check_numbers(&self) -> Result<(), LoadError> {
        check_rate(self.rate).map_err(|problem| flag("--rate", problem))?;
        if self.duration.is_zero() {
            return Err(flag("--duration", "must be longer than 0 (e.g. 10s)"));
        }
        if self.duration.saturating_add(self.warmup) > Duration::from_secs(30 * 86_400) {
            return Err(flag("--duration", "with --warmup, at most 30 days"));
        }
        if self.max_in_flight == 0 {
            return Err(flag("--max-in-flight", "must be at least 1"));
        }
        if self.coalesce > MAX_COALESCE {
            return Err(flag(
                "--coalesce",
                format!(
                    "at most {MAX_COALESCE:?} (an operation may start this late, and every \
                     latency carries it); 0s starts each at its own time"
                ),
            ));
        }
        if self.timeout.is_zero() {
            return Err(flag("--timeout", "must be longer than 0 (e.g. 10s)"));
        }
        if self.hdr_interval < Duration::from_millis(1) {
            return Err(flag("--hdr-interval", "must be at least 1ms"));
        }
        if self.mode == Mode::Keepalive && self.connections == 0 {
            return Err(flag("--connections", "keepalive mode needs at least 1"));
        }
        Ok(())
    }

    /// `--method` and `--path`.
    fn request_method(&self) -> Result<hyper::Method, LoadError> {
        let method = hyper::Method::from_bytes(self.method.as_bytes()).map_err(|_| {
            flag(
                "--method",
                format!("{:?} is not an HTTP method", self.method),
            )
        })?;
        if !self.path.starts_with('/') || self.path.parse::<hyper::Uri>().is_err() {
            return Err(flag(
                "--path",
                format!("{:?} is not an absolute path (e.g. /api/health)", self.path),
            ));
        }
        Ok(method)
    }

    async fn resolve(&self) -> Result<SocketAddr, LoadError> {
        if let Err(e) = crate::net::parse_host_port(&self.target) {
            return Err(flag("--target", e.to_string()));
        }
        tokio::net::lookup_host(&self.target)
            .await
            .map_err(|source| LoadError::Resolve {
                target: self.target.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| {
                flag(
                    "--target",
                    format!("{} resolves to no address", self.target),
                )
            })
    }

    /// The TLS side: roots, the client credential (rotating, its
    /// publications marked on `marks`), resumption, the name to verify.
    fn tls(
        &self,
        pki: Option<&PkiDir>,
        marks: &Marks,
    ) -> Result<(Option<TlsTarget>, Option<RotatingClient>), LoadError> {
        if self.tls != TlsMode::Mtls && (self.cert.is_some() || self.identity.is_some()) {
            return Err(flag("--cert", "a client certificate needs --tls mtls"));
        }
        if self.tls == TlsMode::Off {
            return Ok((None, None));
        }
        let cas = match (&self.ca[..], pki) {
            ([], Some(pki)) => vec![pki.ca_cert()],
            ([], None) => return Err(flag("--ca", "TLS needs the CA that signed the target's certificate: pass --ca FILE or --pki DIR")),
            (cas, _) => cas.to_vec(),
        };
        let roots = creds::load_roots(&cas)?;
        let mut client = None;
        let cert = if self.tls == TlsMode::Mtls {
            let (cert, key) = self.client_files(pki)?;
            let publisher = client_publisher(cert.clone(), key.clone(), marks)?;
            let live = publisher.live().clone();
            client = Some((Arc::new(publisher), [cert, key]));
            ClientCert::Live(live)
        } else {
            ClientCert::None
        };
        let mut config = client_config(roots, cert, &self.tls_versions)?;
        config.resumption = if self.resume {
            rustls::client::Resumption::in_memory_sessions(1024)
        } else {
            rustls::client::Resumption::disabled()
        };
        let host = crate::net::split_host_port(&self.target).map_or("", |(h, _)| h);
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
        let name = ServerName::try_from(name.clone()).map_err(|_| {
            flag(
                "--server-name",
                format!("{name:?} is not a DNS name or IP address"),
            )
        })?;
        Ok((Some((Arc::new(config), name)), client))
    }

    fn client_files(&self, pki: Option<&PkiDir>) -> Result<(PathBuf, PathBuf), LoadError> {
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            return Ok((c.clone(), k.clone()));
        }
        let Some(pki) = pki else {
            return Err(flag("--cert", "mTLS needs a client identity: pass --cert/--key, or --pki DIR [--identity SERVICE], or use --tls tls"));
        };
        let service = match &self.identity {
            Some(s) => s.clone(),
            None => pki.manifest().services.first().cloned().unwrap_or_default(),
        };
        let files = pki.client(&service).ok_or_else(|| {
            flag(
                "--identity",
                format!(
                    "{service:?} is not a service of the PKI in {}; it has {}",
                    pki.dir().display(),
                    pki.manifest().services.join(", ")
                ),
            )
        })?;
        Ok((files.cert, files.key))
    }
}

/// `--rate` of `load` and `rotation-test`: positive, finite, at most
/// [`MAX_RATE`]; the problem, for the caller to attach to its flag.
pub fn check_rate(rate: f64) -> Result<(), String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!(
            "{rate} must be a positive number of operations per second"
        ));
    }
    if rate > MAX_RATE {
        return Err(format!(
            "{rate} is above the limit of {MAX_RATE} operations per second: one process cannot send that many, and every operation it cannot send would still be scheduled; for more load run several processes and combine their --hdr-log files with `certshift report merge`"
        ));
    }
    Ok(())
}

/// A client credential that reloads from its files.
type RotatingClient = (Arc<Publisher<CertifiedKey>>, [PathBuf; 2]);

/// The client credential's one publication path: its files, checked, every
/// publication marked on the run's timeline.
fn client_publisher(
    cert: PathBuf,
    key: PathBuf,
    marks: &Marks,
) -> Result<Publisher<CertifiedKey>, creds::CredError> {
    Publisher::load(
        RotationKind::Client,
        move || {
            let mut src = Sources::default();
            let ck = creds::read_client_pair(&mut src, &cert, &key)?;
            Ok(Loaded {
                serial: creds::leaf_serial(&ck),
                value: ck,
                fingerprint: src.fingerprint(),
            })
        },
        Arc::new(marks.clone()),
    )
}

impl LoadSetup {
    /// Reload the client credential when its files change; each
    /// publication is marked on the run's timeline, and a bad file keeps
    /// the old credential.
    pub fn watch(&self) -> Result<Option<creds::ReloaderHandle>, LoadError> {
        let Some((publisher, files)) = self.client.clone().filter(|_| self.watch) else {
            return Ok(None);
        };
        let handle = creds::spawn_reloader(&files, Duration::from_millis(200), false, move || {
            let _ = publisher.reload();
        })
        .map_err(LoadError::Watch)?;
        Ok(Some(handle))
    }

    pub fn describe(&self) -> crate::report::RunInfo {
        crate::report::RunInfo {
            target: self.target_name.clone(),
            mode: self.config.mode.name().into(),
            tls: format!("{:?}", self.tls).to_lowercase(),
        }
    }
}

/// `certshift load`: exit 1 when an operation was lost (failed or dropped).
pub async fn command(args: LoadArgs) -> anyhow::Result<bool> {
    let setup = args.setup().await?;
    let _watch = setup.watch()?;
    let stop = crate::net::shutdown_signal()?;
    let run = engine::run(&setup.config, &setup.marks, stop).await;
    let report = run.report(setup.describe());
    print!("{}", report.table());
    for line in crate::report::write_outputs(&run.ops(), &report, &setup.outputs)? {
        println!("{line}");
    }
    Ok(report.lost() == 0)
}
