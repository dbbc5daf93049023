//! `certshift demo`: the README's main job on the embedded default, in one
//! process, in about 15 seconds. A test PKI in a temporary directory, the
//! reference service in strict mode, the proxy presenting mostly the valid
//! identity and now and then every bad variant, open-loop load through it,
//! and a fresh client certificate minted every second.
//!
//! ```text
//!  load (plaintext, open loop) ──▶ proxy ──mTLS: valid or a bad variant──▶ serve --mode strict
//!                                    ▲ mint a new client certificate every second
//! ```
//!
//! It answers both questions at once: the verdict matrix per variant (does
//! the service enforce client certificates?) and the refusals of the valid
//! identity around each rotation (does it survive rotation under load?).

mod matrix;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use matrix::{matrix, render, Row};

use crate::creds::RotationKind;
use crate::load::{self, LoadConfig, LoadRun, Marks, Mode, Target};
use crate::metrics::{Metrics, Snapshot, VariantStats};
use crate::pki::{self, Expect, KeyType, PkiOptions, Role};
use crate::proxy::{Proxy, ProxyArgs, ProxyHandle};
use crate::report::{LoadReport, Outputs, RunInfo};
use crate::serve::{ServeArgs, Service};

/// Weight of the valid identity in the demo's plan; every bad variant (and
/// no certificate) gets [`BAD_WEIGHT`].
const VALID_WEIGHT: u32 = 85;
const BAD_WEIGHT: u32 = 2;

/// `certshift demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Key algorithm of the generated PKI.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,
    /// Keep the generated PKI in DIR (must be empty) instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub keep_pki: Option<PathBuf>,
    /// Where to write demo.json (the load report, the proxy's stats) and demo.svg.
    #[arg(long, value_name = "DIR", default_value = "certshift-demo")]
    pub out: PathBuf,
    /// Operations per second through the proxy.
    #[arg(long, default_value_t = 150.0, value_name = "N")]
    pub rate: f64,
    /// How long to run the load.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Mint a new client certificate this often.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub rotate_every: Duration,
}

/// Run the demo: Ok(false) when a verdict was wrong or the valid identity
/// was refused.
pub async fn run(args: &DemoArgs) -> anyhow::Result<bool> {
    if args.rotate_every < Duration::from_millis(100) || args.duration.is_zero() {
        anyhow::bail!("--rotate-every must be at least 100ms and --duration longer than 0");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let rig = Rig::start(args).await?;
    let (run, minted) = drive(args, &rig).await?;
    let (proxy_addr, snap) = rig.stop().await?;
    let report = run.report(RunInfo {
        target: proxy_addr.to_string(),
        mode: "request".into(),
        tls: "off".into(),
    });
    let (wrong, valid) = print_results(&report, &snap, minted);
    write_files(args, &run, &report, &snap, minted, wrong)?;
    let pass = wrong == 0 && valid.connections > 0;
    println!(
        "\n{}",
        if pass {
            "PASS: every variant got the verdict a strict mTLS service must give, and rotation refused nothing"
        } else {
            "FAIL: see the matrix above"
        }
    );
    Ok(pass)
}

/// The demo's PKI, strict service and proxy, running until [`Rig::stop`].
struct Rig {
    /// Removes the PKI on drop unless `--keep-pki` named a directory.
    _tmp: Option<tempfile::TempDir>,
    proxy_addr: SocketAddr,
    proxy: ProxyHandle,
    metrics: Metrics,
    proxy_stop: oneshot::Sender<()>,
    proxy_task: JoinHandle<()>,
    serve_stop: oneshot::Sender<()>,
    serve_task: JoinHandle<()>,
}

impl Rig {
    /// Generates the PKI (with an intermediate CA, so every variant exists),
    /// starts `serve --mode strict` and the proxy in front of it.
    async fn start(args: &DemoArgs) -> anyhow::Result<Rig> {
        let (tmp, dir) = match &args.keep_pki {
            Some(d) => (None, d.clone()),
            None => {
                let tmp =
                    tempfile::tempdir().context("creating a temporary directory for the PKI")?;
                let dir = tmp.path().to_path_buf();
                (Some(tmp), dir)
            }
        };
        let opts = PkiOptions {
            key_type: args.key_type,
            intermediate: true,
            ..PkiOptions::default()
        };
        let manifest = pki::init(&dir, &opts, false).context("generating the demo PKI")?;
        println!(
            "test PKI ({}, with an intermediate CA) in {}",
            manifest.key_type,
            dir.display()
        );

        let serve = ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki: Some(dir.clone()),
            no_watch: true,
            ..ServeArgs::default()
        };
        let service = Service::bind(serve.into_config()?).await?;
        let serve_addr = service.local_addr();
        let (serve_stop, rx) = oneshot::channel::<()>();
        let serve_task =
            tokio::spawn(service.run(async { drop(rx.await) }, Duration::from_secs(2)));

        let plan = plan(&manifest);
        let mut p = ProxyArgs::for_upstream(&serve_addr.to_string());
        p.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        p.pki = Some(dir);
        p.present = Some(plan.clone());
        p.seed = Some(1);
        p.admin = "off".into();
        p.no_watch = true;
        let metrics = Metrics::start();
        let proxy = Proxy::bind(p.into_config()?, metrics.clone()).await?;
        let (proxy_addr, handle) = (proxy.local_addr(), proxy.handle());
        let (proxy_stop, rx) = oneshot::channel::<()>();
        let proxy_task = tokio::spawn(proxy.run(async { drop(rx.await) }));
        println!("serve --mode strict on {serve_addr}; proxy on {proxy_addr} presenting {plan}");
        println!(
            "load: {:.0} requests/s for {:.0?} through the proxy; a new client certificate every {:.0?}\n",
            args.rate, args.duration, args.rotate_every
        );
        Ok(Rig {
            _tmp: tmp,
            proxy_addr,
            proxy: handle,
            metrics,
            proxy_stop,
            proxy_task,
            serve_stop,
            serve_task,
        })
    }

    /// The proxy's statistics, then both servers stopped.
    async fn stop(self) -> anyhow::Result<(SocketAddr, Snapshot)> {
        let snap = self.metrics.snapshot().await?;
        let _ = self.proxy_stop.send(());
        let _ = self.serve_stop.send(());
        let _ = tokio::join!(self.proxy_task, self.serve_task);
        Ok((self.proxy_addr, snap))
    }
}

/// `--present` for the demo: mostly the valid identity, and every bad
/// variant of the PKI (and no certificate) now and then.
fn plan(manifest: &pki::Manifest) -> String {
    let mut plan = vec![
        format!("valid={VALID_WEIGHT}"),
        format!("none={BAD_WEIGHT}"),
    ];
    plan.extend(
        manifest
            .credentials
            .iter()
            .filter(|e| e.role == Role::Variant)
            .filter_map(|e| e.variant)
            .map(|v| format!("{v}={BAD_WEIGHT}")),
    );
    plan.join(",")
}

/// Open-loop load through the proxy while a new client certificate is
/// minted every `--rotate-every`; the run and how many were minted.
async fn drive(args: &DemoArgs, rig: &Rig) -> anyhow::Result<(LoadRun, u32)> {
    let target = Target {
        addr: rig.proxy_addr,
        tls: None,
        method: hyper::Method::GET,
        path: "/api/demo".into(),
        authority: rig.proxy_addr.to_string(),
        confirm_window: Duration::from_millis(100),
    };
    let mut cfg = LoadConfig::new(target, Mode::Request, args.rate, args.duration);
    cfg.timeout = Duration::from_secs(5);
    cfg.progress = true;
    let marks = Marks::default();
    let load = {
        let marks = marks.clone();
        tokio::spawn(async move { load::run(&cfg, &marks, std::future::pending()).await })
    };
    let rotations = {
        let held = rig.proxy.credentials().clone();
        let every = args.rotate_every;
        let end = tokio::time::Instant::now() + args.duration;
        tokio::spawn(async move {
            let mut minted = 0u32;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            while tick.tick().await < end {
                // Key generation blocks: off the threads running the load.
                let h = held.clone();
                match tokio::task::spawn_blocking(move || h.mint()).await {
                    Ok(Ok(serial)) => {
                        marks.mark(RotationKind::Client, Some(serial));
                        minted += 1;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "minting a client certificate failed")
                    }
                    Err(e) => tracing::error!(error = %e, "the minting task failed"),
                }
            }
            minted
        })
    };
    let run = load.await.context("the load task failed")?;
    let minted = rotations.await.unwrap_or(0);
    Ok((run, minted))
}

/// The load table, the verdict matrix and the rotation line; how many
/// variants got a wrong verdict, and the valid identity's counts.
fn print_results(report: &LoadReport, snap: &Snapshot, minted: u32) -> (usize, VariantStats) {
    print!("{}", report.table());
    println!("(the bad variants' refusals reach the load as http:502 or a closed connection from the proxy: they are expected)\n");
    let (matrix, wrong) = verdict_matrix(snap);
    print!("{matrix}");
    let valid = snap.variant("valid").cloned().unwrap_or_default();
    println!(
        "\nrotation downtime: {} client rotations; the valid identity was refused {} times in {} connections{}",
        minted,
        valid.unexpected_reject,
        valid.connections,
        if valid.unexpected_reject == 0 { " (no downtime)" } else { "" }
    );
    (wrong, valid)
}

/// demo.json (the load report, the proxy's stats) and demo.svg in `--out`.
fn write_files(
    args: &DemoArgs,
    run: &LoadRun,
    report: &LoadReport,
    snap: &Snapshot,
    minted: u32,
    wrong: usize,
) -> anyhow::Result<()> {
    let json = args.out.join("demo.json");
    let outputs = Outputs {
        plot: Some(args.out.join("demo.svg")),
        ..Outputs::default()
    };
    crate::report::write_json_file(
        &json,
        &serde_json::json!({
            "load": report,
            "proxy": snap.to_stats_json(),
            "client_rotations": minted,
            "wrong_verdicts": wrong,
        }),
    )?;
    println!("json written to {}", json.display());
    for line in crate::report::write_outputs(&run.ops(), report, &outputs)? {
        println!("{line}");
    }
    Ok(())
}

/// Per variant: expected verdict, observed outcomes, count, and whether the
/// service got it right. The table, and how many variants were wrong.
fn verdict_matrix(snap: &Snapshot) -> (String, usize) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<9} {:>6}  {:<44} verdict",
        "variant", "expected", "count", "observed"
    );
    let mut wrong = 0;
    for (name, v) in snap.variants() {
        let expected = match v.expected() {
            Some(Expect::Accept) => "accept",
            Some(Expect::Reject) => "reject",
            None => "mixed",
        };
        let observed: Vec<String> = v.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        let bad = v.unexpected_accept + v.unexpected_reject;
        if bad > 0 {
            wrong += 1;
        }
        let verdict = match (v.unexpected_accept, v.unexpected_reject) {
            (0, 0) => "ok".to_string(),
            (a, 0) => format!("WRONG: {a} accepted"),
            (0, r) => format!("WRONG: {r} refused"),
            (a, r) => format!("WRONG: {a} accepted, {r} refused"),
        };
        let _ = writeln!(
            out,
            "{:<22} {:<9} {:>6}  {:<44} {verdict}",
            name,
            expected,
            v.connections,
            observed.join(", ")
        );
    }
    (out, wrong)
}
