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
mod engine;
pub mod op;
mod progress;
pub mod record;
pub mod schedule;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

pub use engine::{run, LoadConfig, LoadRun, Mark, Marks};
pub use op::Target;

use crate::creds::{self, Live};
use crate::pki::PkiDir;
use crate::report::{LoadReport, Outputs};
use crate::tls::{client_config, ClientCert, TlsMode, TlsVersions};

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
    pub client: Option<(Arc<Live<CertifiedKey>>, PathBuf, PathBuf)>,
    pub outputs: Outputs,
    pub tls: TlsMode,
    pub target_name: String,
    pub watch: bool,
}

impl LoadArgs {
    /// Check every flag and load the credentials; errors name the flag.
    pub async fn setup(&self) -> anyhow::Result<LoadSetup> {
        let usage = |flag: &str, msg: String| anyhow::anyhow!("{flag}: {msg}");
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(usage(
                "--rate",
                format!(
                    "{} must be a positive number of operations per second",
                    self.rate
                ),
            ));
        }
        if self.duration.is_zero() {
            return Err(usage(
                "--duration",
                "must be longer than 0 (e.g. 10s)".into(),
            ));
        }
        if self.duration.saturating_add(self.warmup) > Duration::from_secs(30 * 86_400) {
            return Err(usage("--duration", "with --warmup, at most 30 days".into()));
        }
        if self.max_in_flight == 0 {
            return Err(usage("--max-in-flight", "must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err(usage(
                "--timeout",
                "must be longer than 0 (e.g. 10s)".into(),
            ));
        }
        if self.hdr_interval < Duration::from_millis(1) {
            return Err(usage("--hdr-interval", "must be at least 1ms".into()));
        }
        if self.mode == Mode::Keepalive && self.connections == 0 {
            return Err(usage(
                "--connections",
                "keepalive mode needs at least 1".into(),
            ));
        }
        let method = hyper::Method::from_bytes(self.method.as_bytes()).map_err(|_| {
            usage(
                "--method",
                format!("{:?} is not an HTTP method", self.method),
            )
        })?;
        if !self.path.starts_with('/') || self.path.parse::<hyper::Uri>().is_err() {
            return Err(usage(
                "--path",
                format!("{:?} is not an absolute path (e.g. /api/health)", self.path),
            ));
        }
        let (host, _) = crate::proxy::split_host_port(&self.target)
            .ok_or_else(|| usage("--target", format!("{:?} is not HOST:PORT", self.target)))?;
        let addr: SocketAddr = tokio::net::lookup_host(&self.target)
            .await
            .with_context(|| format!("--target: cannot resolve {}", self.target))?
            .next()
            .ok_or_else(|| {
                usage(
                    "--target",
                    format!("{} resolves to no address", self.target),
                )
            })?;
        let pki = self.pki.as_deref().map(PkiDir::open).transpose()?;

        let mut client = None;
        let tls = match self.tls {
            TlsMode::Off => None,
            mode => {
                let cas = match (&self.ca[..], &pki) {
                    ([], Some(pki)) => vec![pki.ca_cert()],
                    ([], None) => return Err(usage("--ca", "TLS needs the CA that signed the target's certificate: pass --ca FILE or --pki DIR".into())),
                    (cas, _) => cas.to_vec(),
                };
                let roots = creds::load_roots(&cas)?;
                let cert = if mode == TlsMode::Mtls {
                    let (cert, key) = self.client_files(pki.as_ref())?;
                    let (ck, fp) = creds::load_client_pair(&cert, &key)?;
                    let live = Arc::new(Live::new(ck, fp));
                    client = Some((live.clone(), cert, key));
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
                let name = self
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    usage(
                        "--server-name",
                        format!("{name:?} is not a DNS name or IP address"),
                    )
                })?;
                Some((Arc::new(config), name))
            }
        };
        if self.tls != TlsMode::Mtls && (self.cert.is_some() || self.identity.is_some()) {
            return Err(usage(
                "--cert",
                "a client certificate needs --tls mtls".into(),
            ));
        }
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
        config.timeout = self.timeout;
        config.progress = !self.no_progress;
        Ok(LoadSetup {
            config,
            client,
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

    fn client_files(&self, pki: Option<&PkiDir>) -> anyhow::Result<(PathBuf, PathBuf)> {
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            return Ok((c.clone(), k.clone()));
        }
        let Some(pki) = pki else {
            anyhow::bail!("--cert: mTLS needs a client identity: pass --cert/--key, or --pki DIR [--identity SERVICE], or use --tls tls");
        };
        let service = match &self.identity {
            Some(s) => s.clone(),
            None => pki.manifest().services.first().cloned().unwrap_or_default(),
        };
        let files = pki.client(&service).ok_or_else(|| {
            anyhow::anyhow!(
                "--identity: {service:?} is not a service of the PKI in {}; it has {}",
                pki.dir().display(),
                pki.manifest().services.join(", ")
            )
        })?;
        Ok((files.cert, files.key))
    }
}

impl LoadSetup {
    /// Reload the client credential when its files change, marking each
    /// rotation on the run's timeline. A bad file keeps the old one.
    pub fn watch(&self, marks: &Marks) -> anyhow::Result<Option<creds::ReloaderHandle>> {
        let Some((live, cert, key)) = self.client.clone().filter(|_| self.watch) else {
            return Ok(None);
        };
        let marks = marks.clone();
        let paths = [cert.clone(), key.clone()];
        let handle = creds::spawn_reloader(&paths, Duration::from_millis(200), false, move || {
            match creds::load_client_pair(&cert, &key) {
                Ok((ck, fp)) => {
                    let serial = creds::leaf_serial(&ck);
                    if live.publish(ck, fp) {
                        tracing::info!(serial = serial.as_deref().unwrap_or("-"), "client certificate rotated");
                        marks.mark("client", serial);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "client certificate reload refused; the previous one stays");
                    live.record_failure(e.to_string());
                }
            }
        })
        .context("watching the client certificate files")?;
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
    let marks = Marks::default();
    let _watch = setup.watch(&marks)?;
    let stop = crate::cli::shutdown_signal()?;
    let run = engine::run(&setup.config, &marks, stop).await;
    let report = LoadReport::from_run(&run, setup.describe());
    print!("{}", report.table());
    for line in crate::report::write_outputs(&run, &report, &setup.outputs)? {
        println!("{line}");
    }
    Ok(report.lost() == 0)
}
