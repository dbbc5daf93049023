//! `certshift rotation-test`: does certificate rotation cause downtime?
//! Open-loop load runs while credentials rotate on a schedule; the report
//! gives, per rotation, the window around it, the longest run of failures
//! and the total lost. Exit 0 when nothing was lost, 1 otherwise.
//!
//! ```text
//!  embedded default (all in this process, PKI in a temp dir):
//!    request/keepalive: load ──plaintext──▶ proxy ──mTLS (rotating client cert)──▶ serve (strict)
//!    handshake:         load ──mTLS (rotating client cert)──────────────────────▶ serve (strict)
//!  --target ADDR: load ──mTLS──▶ your service; client rotations minted from --pki's CA
//! ```
//!
//! A CA-bundle rotation follows the sequence a mesh needs: add the new root
//! to every trust bundle, switch issuance to it, then drop the old root.
//! `--no-overlap` skips the first step, and the outage that follows is the
//! point of the flag.

mod rig;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::load::{LoadConfig, Marks, Mode};
use crate::metrics::fmt_ms;
use crate::pki::KeyType;
use crate::report::rotation::{render, Summary, WindowReport};
use crate::report::{LoadReport, Outputs, RotationMark};

pub use rig::Rig;

/// What rotates.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Rotate {
    /// The client certificate presented to the service.
    Client,
    /// The service's own certificate.
    Server,
    /// The root CA: trust bundles and issuance.
    CaBundle,
    /// Client, server and CA bundle in turn.
    All,
}

impl Rotate {
    /// The kind rotation `i` performs.
    pub fn kind(self, i: usize) -> Rotate {
        match self {
            Rotate::All => [Rotate::Client, Rotate::Server, Rotate::CaBundle][i % 3],
            k => k,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rotate::Client => "client",
            Rotate::Server => "server",
            Rotate::CaBundle => "ca-bundle",
            Rotate::All => "all",
        }
    }
}

/// `certshift rotation-test` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RotationTestArgs {
    /// What to rotate.
    #[arg(long, value_enum, default_value_t = Rotate::Client)]
    pub rotate: Rotate,
    /// How many rotations.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rotations: usize,
    /// Time between rotations (also before the first and after the last).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Operations per second.
    #[arg(long, default_value_t = 200.0, value_name = "N")]
    pub rate: f64,
    /// What one operation is (as in `load`).
    #[arg(long, value_enum, default_value_t = Mode::Request)]
    pub mode: Mode,
    /// Persistent connections (keepalive mode).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub connections: usize,
    /// Bound on each operation.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// CA-bundle rotation without adding the new root first: shows the outage.
    #[arg(long)]
    pub no_overlap: bool,
    /// Key algorithm of the embedded PKI.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,
    /// Test your own service instead of the embedded default (client rotations only).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// With --target: the PKI whose CA issues the rotated client certificates.
    #[arg(long, value_name = "DIR", requires = "target")]
    pub pki: Option<PathBuf>,
    /// With --target: the service identity to present (default: the PKI's first).
    #[arg(long, value_name = "SERVICE", requires = "target")]
    pub identity: Option<String>,
    /// With --target: the name to verify the service's certificate against.
    #[arg(long, value_name = "NAME", requires = "target")]
    pub server_name: Option<String>,
    /// With --target: the request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Plot the run as SVG, rotations marked.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Never draw the live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// `certshift rotation-test`: Ok(false) when anything was lost.
pub async fn command(args: RotationTestArgs) -> anyhow::Result<bool> {
    if args.rotations == 0 || args.rotations > 10_000 {
        anyhow::bail!("--rotations: must be between 1 and 10000");
    }
    if args.interval < Duration::from_millis(100) {
        anyhow::bail!("--interval: must be at least 100ms, so each rotation has a window");
    }
    if let Err(problem) = crate::load::check_rate(args.rate) {
        anyhow::bail!("--rate: {problem}");
    }
    if args.no_overlap && matches!(args.rotate, Rotate::Client | Rotate::Server) {
        // Only a CA-bundle rotation has an overlap (the new root added to
        // every bundle before issuance switches); accepting the flag here
        // would run an ordinary rotation and report it as "no overlap".
        anyhow::bail!(
            "--no-overlap with --rotate {}: --no-overlap skips adding the new root to the trust bundles before issuance switches, so it applies only to --rotate ca-bundle (or all); a {} rotation has no overlap to skip. Drop --no-overlap, or use --rotate ca-bundle",
            args.rotate.name(),
            args.rotate.name()
        );
    }
    if args.target.is_some() && args.rotate != Rotate::Client {
        anyhow::bail!(
            "--rotate {}: with --target only client rotations are possible (certshift does not control your service's certificate or trust bundle); run without --target for the embedded default",
            args.rotate.name()
        );
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory for the PKI")?;
    let rig = Rig::start(&args, tmp.path()).await?;
    println!("{}", rig.describe());
    if args.mode == Mode::Keepalive {
        println!("note: keepalive holds {} connections open; a rotated credential is used only by connections opened after it", args.connections);
    }
    let (report, summary) = run(&args, &rig).await?;
    rig.stop().await;
    print!("{}", report.table());
    print!("{}", render(&summary));
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        #[serde(flatten)]
        report: &'a LoadReport,
        rotation_test: &'a Summary,
    }
    if let Some(path) = &args.json {
        crate::report::write_json_file(
            path,
            &Doc {
                report: &report,
                rotation_test: &summary,
            },
        )?;
        println!("json written to {}", path.display());
    }
    Ok(summary.passed)
}

/// Each rotation's `(from, at, to)` in ms: the "before" window is
/// `[from, at)`, the "after" window `[at, to)`. Consecutive rotations split
/// the time between them at its midpoint, the first window starts with the
/// run and the last one ends with it (`end_ms`, past the last operation's
/// due time), so every operation belongs to exactly one window and the
/// windows' attempted counts sum to the run's.
fn window_bounds(starts: &[RotationMark], end_ms: u64) -> Vec<(u64, u64, u64)> {
    let at: Vec<u64> = starts.iter().map(|m| m.t_ms).collect();
    let mid = |a: u64, b: u64| a + b.saturating_sub(a) / 2;
    (0..at.len())
        .map(|i| {
            let from = if i == 0 { 0 } else { mid(at[i - 1], at[i]) };
            let to = at
                .get(i + 1)
                .map_or(end_ms.max(at[i] + 1), |&next| mid(at[i], next));
            (from, at[i], to)
        })
        .collect()
}

/// Drive the load and the rotations; the run's report and its rotation summary.
pub async fn run(args: &RotationTestArgs, rig: &Rig) -> anyhow::Result<(LoadReport, Summary)> {
    let n = args.rotations;
    let interval = args.interval;
    let duration = u32::try_from(n + 1)
        .ok()
        .and_then(|k| interval.checked_mul(k))
        .filter(|d| *d <= Duration::from_secs(7 * 86_400))
        .context("--rotations × --interval: longer than a week; use fewer rotations or a shorter interval")?;
    let mut cfg = LoadConfig::new(rig.target(args), args.mode, args.rate, duration);
    cfg.connections = args.connections;
    cfg.timeout = args.timeout;
    cfg.progress = !args.no_progress;
    cfg.max_in_flight = 10_000;
    let marks = Marks::default();
    let load = {
        let (cfg, marks) = (cfg.clone(), marks.clone());
        tokio::spawn(async move { crate::load::run(&cfg, &marks, std::future::pending()).await })
    };
    // The engine's measurement starts 20 ms after it is spawned; rotation i
    // happens i intervals after that.
    let origin = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut failures = Vec::new();
    // Where each rotation's marks begin: the rotation starts at its first.
    let mut first_mark = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(origin + interval * (i as u32 + 1)).await;
        first_mark.push(marks.all().len());
        if let Err(e) = rig
            .rotate(args.rotate.kind(i), args.no_overlap, interval, &marks)
            .await
        {
            failures.push(format!("rotation {}: {e:#}", i + 1));
        }
    }
    let run = load.await.context("the load task failed")?;
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    let report = run.report(rig.info(args));
    let ops = run.ops();
    let interval_ms = interval.as_millis() as u64;
    let end_ms = (report.duration_s * 1000.0) as u64;
    // A rotation that finished after the load did was not measured: say so
    // rather than pass it.
    if let Some(late) = report.rotations.iter().find(|r| r.t_ms >= end_ms) {
        anyhow::bail!(
            "the {} step at {} came after the load ended ({}): rotations took longer than --interval allows; use a longer --interval",
            late.kind,
            fmt_ms(late.t_ms),
            fmt_ms(end_ms)
        );
    }
    let all_marks = marks.all();
    let starts: Vec<RotationMark> = first_mark
        .iter()
        .filter_map(|&i| all_marks.get(i))
        .filter_map(|m| {
            Some(RotationMark {
                t_ms: run.t_ms(m.at)?,
                kind: m.kind.clone(),
                serial: m.serial.clone(),
            })
        })
        .collect();
    // Rounded up: the last operation is due strictly before the schedule's
    // end, so its whole millisecond is before this.
    let windows_end = (report.duration_s * 1000.0).ceil() as u64;
    let windows: Vec<WindowReport> = window_bounds(&starts, windows_end)
        .into_iter()
        .enumerate()
        .map(|(i, (from, at, to))| {
            let (before, after) = (ops.window(from, at), ops.window(at, to));
            WindowReport {
                index: i + 1,
                kind: args.rotate.kind(i).name().into(),
                t_ms: at,
                lost: before.failed + before.dropped + after.failed + after.dropped,
                before,
                after,
            }
        })
        .collect();
    let summary = Summary {
        rotate: args.rotate.name().into(),
        topology: rig.topology(args).into(),
        rotations: n,
        interval_ms,
        no_overlap: args.no_overlap,
        windows,
        longest_failure_run: report.downtime.longest_failure_run,
        lost: report.lost(),
        passed: report.lost() == 0 && report.attempted > 0,
        upstream_outcomes: rig.upstream_outcomes().await,
    };
    if let Some(path) = &args.plot {
        let outputs = Outputs {
            plot: Some(path.clone()),
            ..Outputs::default()
        };
        for line in crate::report::write_outputs(&run.ops(), &report, &outputs)? {
            println!("{line}");
        }
    }
    Ok((report, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(t_ms: u64) -> RotationMark {
        RotationMark {
            t_ms,
            kind: "client".into(),
            serial: None,
        }
    }

    #[test]
    fn windows_tile_the_run_without_overlap() {
        let b = window_bounds(&[mark(600), mark(1200), mark(1810)], 2400);
        assert_eq!(b, [(0, 600, 900), (900, 1200, 1505), (1505, 1810, 2400)]);
        for pair in b.windows(2) {
            assert_eq!(pair[0].2, pair[1].0, "{b:?}");
        }
        assert_eq!(window_bounds(&[mark(5)], 5), [(0, 5, 6)]);
        assert!(window_bounds(&[], 100).is_empty());
    }
}
