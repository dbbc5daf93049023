//! `certshift bench`: what a handshake costs on each side, next to what its
//! cryptography alone costs.
//!
//! A matrix of cells ([`matrix`]: key type, TLS version, full/resumed, key
//! exchange, client auth, chain depth). Each cell runs `serve` on one
//! thread and a closed-loop client on another, in this process on loopback
//! ([`cell`]), with credentials issued per key type by `pki`
//! ([`material`]); beside it, the cost of the cell's public-key operations
//! alone ([`limit`]). The report's shape, table and plot are
//! `report::bench`'s. Never: asserts a speed (users judge the figures).

mod cell;
mod limit;
mod material;
mod matrix;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;

use crate::accept::Limits as ConnLimits;
use crate::pki::KeyType;
use crate::report::bench::{self as out, BenchReport};
use crate::serve::{Enforcement, ServeConfig};
use crate::tls::{ClientCert, TlsVersion, TlsVersions};
pub use matrix::{FilterError, Kx};

use cell::{ClientPlan, ClientRun, Server};
use limit::{Limits, SideLimits};
use material::Material;
use matrix::{CellSpec, Filter};

/// `certshift bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Keep only these axis values: AXIS=V1,V2 words, e.g. `--filter
    /// key=ecdsa-p256,rsa-2048 tls=1.3 kx=x25519`. Axes: key (ecdsa-p256,
    /// ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096), tls (1.2, 1.3),
    /// resume (full, resumed), kx (x25519, secp256r1, secp384r1,
    /// x25519mlkem768), auth (on, off), chain (2 = leaf+root, 3 =
    /// leaf+intermediate+root). Unnamed axes keep every value. Without
    /// --filter or --all: a representative subset of about 30 s.
    #[arg(long, num_args = 1.., value_name = "AXIS=VALUES")]
    pub filter: Vec<String>,
    /// The whole matrix (384 combinations; minutes at the default duration).
    #[arg(long, conflicts_with = "filter")]
    pub all: bool,
    /// Measured time per cell (after one warm-up connection per slot).
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Connections in flight at once (the closed loop).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Send one HTTP request on each connection (GET /, Connection: close).
    #[arg(long)]
    pub request: bool,
    /// Run the client side against this service instead of an embedded
    /// `serve`: client CPU and latency only (server columns "-"); key and
    /// chain are the server's, auth is on with --cert/--key.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// With --target: the CA bundle the server's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "target")]
    pub ca: Option<PathBuf>,
    /// With --target: the client certificate chain to present (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["target", "key"])]
    pub cert: Option<PathBuf>,
    /// With --target: the client certificate's key (PEM, PKCS#8).
    #[arg(long, value_name = "FILE", requires_all = ["target", "cert"])]
    pub key: Option<PathBuf>,
    /// With --target: the name to verify the server's certificate for
    /// (default: the host of --target).
    #[arg(long, value_name = "NAME", requires = "target")]
    pub server_name: Option<String>,
    /// Write the report as JSON (schema `certshift-bench/1`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Plot CPU per handshake per cell, both sides, with the limit marked (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{flag}: {problem}")]
    Config { flag: &'static str, problem: String },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Credentials(#[from] crate::creds::CredError),
    #[error("{0}")]
    Io(String),
    #[error("measuring the limit: {0}")]
    Limit(String),
    #[error("{0}")]
    Cell(String),
    #[error(transparent)]
    Output(#[from] crate::report::OutputError),
}

/// Run `certshift bench`: the table on stdout, then the files asked for.
pub fn command(args: &BenchArgs) -> anyhow::Result<bool> {
    let report = run(args)?;
    print!("{}", out::render(&report));
    if let Some(path) = &args.json {
        crate::report::write_json_file(path, &report)?;
        println!("json written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        out::write_svg(path, &report).map_err(BenchError::from)?;
        println!("plot written to {}", path.display());
    }
    Ok(report.cells.iter().all(|c| c.handshakes > 0))
}

/// Measure every selected cell.
pub fn run(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    if !(1..=4096).contains(&args.connections) {
        return Err(BenchError::Config {
            flag: "--connections",
            problem: format!("{} is out of range; give 1 to 4096", args.connections),
        });
    }
    if args.duration.is_zero() || args.duration > Duration::from_secs(3600) {
        return Err(BenchError::Config {
            flag: "--duration",
            problem: "give a duration above 0 and at most 1h per cell (e.g. 2s)".into(),
        });
    }
    let (cells, selection) = if args.all {
        (Filter::default().cells(), "the full matrix".to_string())
    } else if !args.filter.is_empty() {
        let f = Filter::parse(&args.filter)?;
        (f.cells(), format!("--filter {}", args.filter.join(" ")))
    } else {
        (
            matrix::default_subset(),
            matrix::DEFAULT_SELECTION.to_string(),
        )
    };
    let mut report = BenchReport {
        schema: out::SCHEMA.into(),
        target: args.target.clone(),
        duration_ms: args.duration.as_millis() as u64,
        connections: args.connections,
        request: args.request,
        selection,
        limit_definition: out::LIMIT_DEFINITION.into(),
        cells: Vec::new(),
        skipped: Vec::new(),
    };
    let mut limits = Limits::new();
    match &args.target {
        Some(target) => run_target(args, target, &cells, &mut limits, &mut report)?,
        None => run_embedded(args, &cells, &mut limits, &mut report)?,
    }
    Ok(report)
}

fn run_embedded(
    args: &BenchArgs,
    cells: &[CellSpec],
    limits: &mut Limits,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let mut materials: HashMap<(KeyType, bool), Material> = HashMap::new();
    for spec in cells {
        if let Some(reason) = spec.unsupported() {
            report.skipped.push(out::Skipped {
                axes: spec.axes(),
                reason,
            });
            continue;
        }
        let m = match materials.entry((spec.key, spec.intermediate)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Material::generate(spec.key, spec.intermediate)?)
            }
        };
        limits.seed(spec.key, &m.server_key)?;
        let server = Server::start(serve_config(m, spec.auth))?;
        let cert = match spec.auth {
            true => ClientCert::Always(m.client.clone()),
            false => ClientCert::None,
        };
        let asked = Arc::default();
        let config = client_config(
            m.roots.clone(),
            cert,
            spec.tls,
            spec.kx,
            spec.resumed,
            Arc::clone(&asked),
        )?;
        let run = cell::run_client(ClientPlan {
            addr: server.addr,
            server_name: ServerName::try_from(material::SERVER_NAME)
                .map_err(|e| BenchError::Io(e.to_string()))?,
            config,
            connections: args.connections,
            duration: args.duration,
            request: args.request,
            probe: Some(server.probe()),
            asked,
        });
        drop(server);
        let run = run.map_err(|e| BenchError::Cell(format!("cell {spec}: {e}")))?;
        let limit = limits.cell(spec)?;
        report
            .cells
            .push(figures(spec.axes(), &run, Some(limit), true));
    }
    Ok(())
}

/// `serve` as `certshift serve` would run with this material: strict
/// (auth on) or server-only TLS (auth off), both TLS versions, no file
/// watching (nothing changes during a bench).
fn serve_config(m: &Material, auth: bool) -> ServeConfig {
    let args = crate::serve::ServeArgs::default();
    ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        files: m.server.clone(),
        mode: if auth {
            Enforcement::Strict
        } else {
            Enforcement::Off
        },
        versions: TlsVersions::all(),
        policy: None,
        policy_path: None,
        trust_domains: vec![material::TRUST_DOMAIN.into()],
        idle_timeout: args.idle_timeout,
        limits: ConnLimits {
            max_connections: args.max_connections,
            max_handshakes: ConnLimits::default_max_handshakes(args.max_connections),
            handshake_timeout: args.handshake_timeout,
            header_timeout: args.header_timeout,
            tls: true,
        },
        backlog: args.backlog,
        // One loop on the bench server's own thread: its CPU clock is the
        // server side's cost.
        workers: 1,
        watch: false,
        reload_poll: None,
        allow_empty_policy: false,
        admin: None,
    }
}

/// A client config for one cell: one TLS version, one key-exchange group
/// (the provider's list cut to it, so the client offers exactly that key
/// share), resumption on or off.
fn client_config(
    roots: RootCertStore,
    cert: ClientCert,
    tls: TlsVersion,
    kx: Kx,
    resumed: bool,
    asked: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    let mut provider = (*crate::creds::provider()).clone();
    provider.kx_groups = vec![kx.group()];
    let mut config =
        crate::tls::client_config_with(Arc::new(provider), roots, cert, &TlsVersions::only(tls))?;
    config.client_auth_cert_resolver = Arc::new(cell::Asked {
        inner: config.client_auth_cert_resolver.clone(),
        count: asked,
    });
    config.resumption = match resumed {
        // TLS 1.3 tickets; TLS 1.2 session ids and tickets (whichever the
        // server hands out: `serve` keeps a session cache, so ids).
        true => rustls::client::Resumption::in_memory_sessions(256)
            .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOrTickets),
        false => rustls::client::Resumption::disabled(),
    };
    Ok(Arc::new(config))
}

fn run_target(
    args: &BenchArgs,
    target: &str,
    cells: &[CellSpec],
    limits: &mut Limits,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let config_err = |flag, problem: String| BenchError::Config { flag, problem };
    let (host, _) = crate::net::split_host_port(target).ok_or_else(|| {
        config_err(
            "--target",
            format!("{target:?} is not HOST:PORT (e.g. localhost:8443)"),
        )
    })?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(target)
        .map_err(|e| config_err("--target", format!("{target}: {e}")))?
        .next()
        .ok_or_else(|| config_err("--target", format!("{target} resolves to no address")))?;
    let name = args.server_name.clone().unwrap_or_else(|| host.to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| config_err("--server-name", format!("{name:?}: {e}")))?;
    let ca = args.ca.as_ref().ok_or_else(|| {
        config_err(
            "--ca",
            "required with --target: the CA bundle the server's certificate chains to".into(),
        )
    })?;
    let roots = crate::creds::load_roots(std::slice::from_ref(ca))?;
    let client = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some(crate::creds::load_certified_key(c, k)?),
        _ => None,
    };
    let client_key = client.as_ref().and_then(|ck| {
        let leaf = ck.cert.first()?;
        let facts = crate::x509::CertFacts::from_der(leaf).ok()?;
        Some((KeyType::like(&facts.key), ck.cert.len()))
    });
    // Key type, chain depth and auth are the service's and the given
    // credential's: one cell per (tls, resume, kx) the selection names.
    let mut seen = Vec::new();
    for spec in cells {
        let key = (spec.tls, spec.resumed, spec.kx);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let mut axes = spec.axes();
        axes.auth = if client.is_some() { "on" } else { "off" }.into();
        if let Some(reason) = spec.unsupported() {
            report.skipped.push(out::Skipped { axes, reason });
            continue;
        }
        let cert = client.clone().map_or(ClientCert::None, ClientCert::Always);
        let asked = Arc::default();
        let config = client_config(
            roots.clone(),
            cert,
            spec.tls,
            spec.kx,
            spec.resumed,
            Arc::clone(&asked),
        )?;
        let run = cell::run_client(ClientPlan {
            addr,
            server_name: server_name.clone(),
            config,
            connections: args.connections,
            duration: args.duration,
            request: args.request,
            probe: None,
            asked,
        });
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                report.skipped.push(out::Skipped {
                    axes,
                    reason: format!("{target} refused this cell: {e}"),
                });
                continue;
            }
        };
        axes.key = run.key.map_or_else(|| "?".into(), |k| k.name().into());
        axes.chain = run
            .server_chain_len
            .map_or_else(|| "?".into(), |n| (n + 1).to_string());
        // The limit from what the server showed: its leaf's key type (its
        // CAs assumed of the same type) and the certificates it sent.
        let limit = match (run.key, run.server_chain_len) {
            (Some(k), Some(n)) => {
                Some(limits.handshake(k, spec.tls, spec.kx, spec.resumed, client_key, n)?)
            }
            _ => None,
        };
        report.cells.push(figures(axes, &run, limit, false));
    }
    Ok(())
}

/// A cell's row of the report from its run and its limit.
fn figures(
    axes: out::Axes,
    run: &ClientRun,
    limit: Option<SideLimits>,
    has_server: bool,
) -> out::Cell {
    let n = run.handshakes.max(1) as f64;
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n;
    let cpu_client = per(run.client_cpu);
    let cpu_server = run.server_cpu.filter(|_| has_server).map(per);
    let (eff_c, clamp_c) = match limit {
        Some(l) => {
            let (e, c) = out::efficiency(l.client, cpu_client);
            (Some(e), c)
        }
        None => (None, false),
    };
    let (eff_s, clamp_s) = match (limit, cpu_server) {
        (Some(l), Some(s)) => {
            let (e, c) = out::efficiency(l.server, s);
            (Some(e), c)
        }
        _ => (None, false),
    };
    let resumed_share = run.resumed as f64 / n;
    let ms = |q: f64| run.latency_us.value_at_quantile(q) as f64 / 1000.0;
    out::Cell {
        axes,
        handshakes: run.handshakes,
        errors: run.errors,
        first_error: run.first_error.clone(),
        hs_per_s: run.handshakes as f64 / run.wall.as_secs_f64().max(1e-9),
        cpu_us: out::Sides {
            client: Some(cpu_client),
            server: cpu_server,
        },
        limit_us: out::Sides {
            client: limit.map(|l| l.client),
            server: limit.filter(|_| has_server).map(|l| l.server),
        },
        efficiency: out::Sides {
            client: eff_c,
            server: eff_s,
        },
        clamped: clamp_c || clamp_s,
        latency_ms: out::Latency {
            p50: ms(0.5),
            p99: ms(0.99),
        },
        bytes: out::Bytes {
            c2s: run.c2s as f64 / n,
            s2c: run.s2c as f64 / n,
        },
        resumed_share,
        observed: out::Observed {
            tls: run.tls.iter().cloned().collect(),
            kx: run.kx.iter().cloned().collect(),
            key: run.key.map(|k| k.name().into()),
            server_chain_len: run.server_chain_len,
            resumed_share,
            cert_requested_share: run.cert_requests as f64 / n,
        },
    }
}
