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

pub use matrix::{matrix, render, Row};

use crate::load::{self, LoadConfig, Marks, Mode, Target};
use crate::metrics::{Metrics, Snapshot};
use crate::pki::{self, Expect, KeyType, PkiOptions, Role};
use crate::proxy::{Proxy, ProxyArgs};
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
    let tmp;
    let dir = match &args.keep_pki {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory for the PKI")?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
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
    let (serve_stop, rx) = tokio::sync::oneshot::channel::<()>();
    let serve_task = tokio::spawn(service.run(async { drop(rx.await) }, Duration::from_secs(2)));

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
    let mut p = ProxyArgs::for_upstream(&serve_addr.to_string());
    p.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    p.pki = Some(dir.clone());
    p.present = Some(plan.join(","));
    p.seed = Some(1);
    p.admin = "off".into();
    p.no_watch = true;
    let metrics = Metrics::start();
    let proxy = Proxy::bind(p.into_config()?, metrics.clone()).await?;
    let (proxy_addr, handle) = (proxy.local_addr(), proxy.handle());
    let (proxy_stop, rx) = tokio::sync::oneshot::channel::<()>();
    let proxy_task = tokio::spawn(proxy.run(async { drop(rx.await) }));
    println!(
        "serve --mode strict on {serve_addr}; proxy on {proxy_addr} presenting {}",
        plan.join(",")
    );
    println!(
        "load: {:.0} requests/s for {:.0?} through the proxy; a new client certificate every {:.0?}\n",
        args.rate, args.duration, args.rotate_every
    );

    let target = Target {
        addr: proxy_addr,
        tls: None,
        method: hyper::Method::GET,
        path: "/api/demo".into(),
        authority: proxy_addr.to_string(),
        confirm_window: Duration::from_millis(100),
    };
    let mut cfg = LoadConfig::new(target, Mode::Request, args.rate, args.duration);
    cfg.timeout = Duration::from_secs(5);
    cfg.progress = true;
    let marks = Marks::default();
    let load = {
        let (cfg, marks) = (cfg.clone(), marks.clone());
        tokio::spawn(async move { load::run(&cfg, &marks, std::future::pending()).await })
    };
    let rotations = {
        let (marks, rotating) = (marks.clone(), handle.rotating().clone());
        let every = args.rotate_every;
        let end = tokio::time::Instant::now() + args.duration;
        tokio::spawn(async move {
            let mut minted = 0u32;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            while tick.tick().await < end {
                match rotating.mint() {
                    Ok(serial) => {
                        marks.mark("client", Some(serial));
                        minted += 1;
                    }
                    Err(e) => tracing::error!(error = %e, "minting a client certificate failed"),
                }
            }
            minted
        })
    };
    let run = load.await.context("the load task failed")?;
    let minted = rotations.await.unwrap_or(0);
    let snap = metrics.snapshot().await?;
    let _ = proxy_stop.send(());
    let _ = serve_stop.send(());
    let _ = tokio::join!(proxy_task, serve_task);

    let report = LoadReport::from_run(
        &run,
        RunInfo {
            target: proxy_addr.to_string(),
            mode: "request".into(),
            tls: "off".into(),
        },
    );
    print!("{}", report.table());
    println!("(the bad variants' refusals reach the load as http:502 or a closed connection from the proxy: they are expected)\n");
    let (matrix, wrong) = verdict_matrix(&snap);
    print!("{matrix}");
    let valid = snap.variant("valid").cloned().unwrap_or_default();
    println!(
        "\nrotation downtime: {} client rotations; the valid identity was refused {} times in {} connections{}",
        minted,
        valid.unexpected_reject,
        valid.connections,
        if valid.unexpected_reject == 0 { " (no downtime)" } else { "" }
    );

    let json = args.out.join("demo.json");
    let svg = args.out.join("demo.svg");
    let outputs = Outputs {
        plot: Some(svg),
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
    for line in crate::report::write_outputs(&run, &report, &outputs)? {
        println!("{line}");
    }
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
