//! `certshift report merge LOG...` and `certshift report show FILE.json`.
//!
//! Merging is how certshift scales past one machine: every `load` instance
//! (a process, a pod of a Kubernetes Job) writes an HdrHistogram interval
//! log; merge adds the histograms, aligns the intervals on wall-clock time,
//! and sums the counts certshift keeps in the logs' comment lines. Logs from
//! other HdrHistogram writers merge too: their counts come from the
//! histograms alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::output::{write_json, write_plot};
use super::plot::Point;
use super::{Bucket, Downtime, LoadCpu, LoadPhase, LoadReport, RotationMark, RunInfo};
use crate::metrics::hdrlog::{self, ParsedLog};
use crate::metrics::{add_counts, PhaseHist};

/// `certshift report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReportCommand {
    /// Merge HdrHistogram interval logs from several `load` runs into one report.
    Merge {
        /// Logs written by `certshift load --hdr-log` (or any HdrHistogram interval log).
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
        /// Write the merged report as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Plot the merged run as SVG.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Print the tables of a JSON report again (load, rotation-test or bench).
    Show {
        #[arg(value_name = "FILE.json")]
        file: PathBuf,
    },
}

/// Run `report`; Ok(false) when the report shows lost operations.
pub fn run(args: &ReportArgs) -> anyhow::Result<bool> {
    match &args.command {
        ReportCommand::Merge { logs, json, plot } => {
            let parsed = logs
                .iter()
                .map(|p| {
                    let bytes =
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                    hdrlog::read(&bytes).with_context(|| {
                        format!("{} is not an HdrHistogram interval log", p.display())
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let names: Vec<String> = logs.iter().map(|p| p.display().to_string()).collect();
            let (report, points, bucket_ms) = merge(&parsed, names)?;
            print!("{}", report.table());
            if let Some(path) = json {
                write_json(path, &report)?;
                println!("json written to {}", path.display());
            }
            if let Some(path) = plot {
                write_plot(path, &report, &points, bucket_ms)?;
                println!("plot written to {}", path.display());
            }
            Ok(report.lost() == 0)
        }
        ReportCommand::Show { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            // A bench report names its schema; load and rotation-test
            // reports carry no `schema` key.
            if value.get("schema").and_then(|s| s.as_str()) == Some(super::bench::SCHEMA) {
                let report: super::bench::BenchReport = serde_json::from_value(value)
                    .with_context(|| {
                        format!(
                            "{} says it is a {} report but does not match that contract",
                            file.display(),
                            super::bench::SCHEMA
                        )
                    })?;
                print!("{}", super::bench::render(&report));
                return Ok(true);
            }
            let report: LoadReport = serde_json::from_value(value.clone()).with_context(|| {
                format!(
                    "{} is not a certshift load or rotation-test report",
                    file.display()
                )
            })?;
            print!("{}", report.table());
            if let Some(rt) = value.get("rotation_test") {
                print!("{}", super::rotation::render_value(rt));
            }
            Ok(report.lost() == 0)
        }
    }
}

/// Merge parsed logs: the report, plot points per interval, and the
/// interval width.
pub fn merge(
    logs: &[ParsedLog],
    names: Vec<String>,
) -> anyhow::Result<(LoadReport, Vec<Point>, u64)> {
    let aligned = Aligned::new(logs);
    let mut report = aligned.empty_report(names);
    let metas: Vec<LoadReport> = logs
        .iter()
        .filter_map(|l| l.meta.iter().find_map(|m| serde_json::from_str(m).ok()))
        .collect();
    if metas.len() == logs.len() && !metas.is_empty() {
        // Every log is certshift's: sum what it counted.
        sum_counts(&mut report, &metas, logs, &aligned);
    } else {
        count_from_histograms(&mut report, &aligned);
    }
    let points = aligned.timeline(&mut report);
    Ok((report, points, aligned.bucket_ms))
}

/// The logs' histograms on one clock: the earliest start is 0, intervals
/// of instances that started a few ms apart share buckets of the narrowest
/// interval.
struct Aligned {
    origin: SystemTime,
    bucket_ms: u64,
    totals: BTreeMap<String, PhaseHist>,
    /// Interval start (ms from origin) → tag → histogram.
    by_interval: BTreeMap<u64, BTreeMap<String, PhaseHist>>,
}

impl Aligned {
    fn new(logs: &[ParsedLog]) -> Self {
        let origin = logs.iter().map(start_of).min().unwrap_or(UNIX_EPOCH);
        let bucket_ms = logs
            .iter()
            .flat_map(|l| l.intervals.iter().map(|i| i.length_ms.max(1)))
            .min()
            .unwrap_or(1000);
        let mut a = Aligned {
            origin,
            bucket_ms,
            totals: BTreeMap::new(),
            by_interval: BTreeMap::new(),
        };
        for log in logs {
            for iv in &log.intervals {
                let at = a.ms_since(log.at(iv.start_ms)) / bucket_ms * bucket_ms;
                for (tag, h) in &iv.hists {
                    let tag = if tag.is_empty() {
                        "request"
                    } else {
                        tag.as_str()
                    };
                    a.totals.entry(tag.to_string()).or_default().merge(h);
                    a.by_interval
                        .entry(at)
                        .or_default()
                        .entry(tag.to_string())
                        .or_default()
                        .merge(h);
                }
            }
        }
        a
    }

    fn ms_since(&self, t: SystemTime) -> u64 {
        t.duration_since(self.origin)
            .unwrap_or_default()
            .as_millis() as u64
    }

    fn count(&self, tag: &str) -> u64 {
        self.totals.get(tag).map_or(0, PhaseHist::count)
    }

    /// Percentiles per phase of the tags `{prefix}{phase}`.
    fn percentiles(&self, prefix: &str) -> BTreeMap<String, crate::metrics::Percentiles> {
        LoadPhase::ALL
            .iter()
            .map(|p| {
                let tag = format!("{prefix}{}", p.name());
                let q = self
                    .totals
                    .get(&tag)
                    .map(PhaseHist::percentiles)
                    .unwrap_or_default();
                (p.name().to_string(), q)
            })
            .collect()
    }

    /// The report with the histograms' latencies and nothing counted yet.
    fn empty_report(&self, names: Vec<String>) -> LoadReport {
        LoadReport {
            info: RunInfo::default(),
            rate: 0.0,
            duration_s: 0.0,
            warmup_s: 0.0,
            started_unix_ms: self
                .origin
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            attempted: 0,
            succeeded: 0,
            failed: 0,
            dropped: 0,
            cancelled: 0,
            achieved_rate: 0.0,
            throughput: 0.0,
            outcomes: BTreeMap::new(),
            latency_us: self.percentiles(""),
            service_time_us: self.percentiles("service-"),
            resumption: None,
            confirmations: BTreeMap::new(),
            downtime: Downtime::default(),
            timeline: Vec::new(),
            rotations: Vec::new(),
            interrupted: false,
            ops_not_logged: 0,
            cpu: None,
            merged_from: names,
        }
    }

    /// The merged timeline (into `report`) and the plot points, per bucket.
    fn timeline(&self, report: &mut LoadReport) -> Vec<Point> {
        let mut points = Vec::new();
        for (at, hists) in &self.by_interval {
            let n = |t: &str| hists.get(t).map_or(0, PhaseHist::count);
            let q = hists
                .get("request")
                .map(PhaseHist::percentiles)
                .unwrap_or_default();
            let (total, failed) = (n("request"), n("failed"));
            report.timeline.push(Bucket {
                t_ms: *at,
                ok: total - failed.min(total),
                failed,
                dropped: 0,
            });
            points.push(Point {
                t_ms: *at,
                p50_us: q.p50,
                p90_us: q.p90,
                p99_us: q.p99,
                max_us: q.max,
                ok: total - failed.min(total),
                failed,
            });
        }
        points
    }
}

/// When a log started: its header, or its first interval.
fn start_of(l: &ParsedLog) -> SystemTime {
    l.start
        .unwrap_or_else(|| l.at(l.intervals.first().map_or(0, |i| i.start_ms)))
}

/// Every log is certshift's: the totals are the sums of what each counted;
/// distinct targets or modes are joined, rotations placed on the merged
/// timeline, the longest failure run is the longest of any.
fn sum_counts(report: &mut LoadReport, metas: &[LoadReport], logs: &[ParsedLog], a: &Aligned) {
    let distinct = |f: fn(&RunInfo) -> &str| {
        let set: std::collections::BTreeSet<&str> = metas.iter().map(|m| f(&m.info)).collect();
        set.into_iter().collect::<Vec<_>>().join(",")
    };
    report.info = RunInfo {
        target: distinct(|i| &i.target),
        mode: distinct(|i| &i.mode),
        tls: distinct(|i| &i.tls),
    };
    for (m, log) in metas.iter().zip(logs) {
        report.rate += m.rate;
        report.duration_s = report.duration_s.max(m.duration_s);
        report.attempted += m.attempted;
        report.succeeded += m.succeeded;
        report.failed += m.failed;
        report.dropped += m.dropped;
        report.cancelled += m.cancelled;
        report.achieved_rate += m.achieved_rate;
        report.throughput += m.throughput;
        report.interrupted |= m.interrupted;
        report.ops_not_logged += m.ops_not_logged;
        add_counts(&mut report.outcomes, &m.outcomes);
        add_counts(&mut report.confirmations, &m.confirmations);
        let shift = a.ms_since(start_of(log));
        report
            .rotations
            .extend(m.rotations.iter().map(|r| RotationMark {
                t_ms: r.t_ms + shift,
                ..r.clone()
            }));
        report.downtime.lost += m.downtime.lost;
        report.downtime.longest_failure_run = match (
            report.downtime.longest_failure_run,
            m.downtime.longest_failure_run,
        ) {
            (Some(a), Some(b)) => Some(if b.ops > a.ops { b } else { a }),
            (a, b) => a.or(b),
        };
    }
    report.rotations.sort_by_key(|r| r.t_ms);
    // The generators' cost, when every one of them said what it spent.
    let cpu: Option<Vec<(f64, u64)>> = metas
        .iter()
        .map(|m| Some((m.cpu?.total_ms, m.attempted - m.dropped)))
        .collect();
    report.cpu = cpu.and_then(|all| {
        let ms: f64 = all.iter().map(|(ms, _)| ms).sum();
        let issued = all.iter().map(|(_, n)| n).sum();
        LoadCpu::new(Duration::from_secs_f64(ms / 1e3), issued)
    });
}

/// Logs from other writers: every operation reached `request`, the
/// `failed` ones failed; rates come from the span the intervals cover.
fn count_from_histograms(report: &mut LoadReport, a: &Aligned) {
    report.info.mode = "merged".into();
    report.attempted = a.count("request");
    report.failed = a.count("failed");
    report.succeeded = report.attempted.saturating_sub(report.failed);
    report.outcomes.insert("ok".into(), report.succeeded);
    if report.failed > 0 {
        report.outcomes.insert("failed".into(), report.failed);
    }
    report.downtime.lost = report.failed;
    let span = a.by_interval.keys().last().map_or(0, |l| l + a.bucket_ms);
    report.duration_s = span as f64 / 1000.0;
    let per_second = |n: u64| {
        if span == 0 {
            0.0
        } else {
            n as f64 * 1000.0 / span as f64
        }
    };
    report.achieved_rate = per_second(report.attempted);
    report.throughput = per_second(report.succeeded);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::hdrlog::LogInterval;
    use std::time::Duration;

    fn log(start_ms: u64, counts: &[u64]) -> ParsedLog {
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + start_ms);
        ParsedLog {
            start: Some(start),
            base: start,
            intervals: counts
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let mut h = PhaseHist::new();
                    for _ in 0..*n {
                        h.record(Duration::from_millis(2));
                    }
                    LogInterval {
                        start_ms: i as u64 * 1000,
                        length_ms: 1000,
                        hists: vec![("request".into(), h)],
                    }
                })
                .collect(),
            meta: Vec::new(),
        }
    }

    #[test]
    fn logs_that_started_apart_share_the_intervals_of_the_earliest() {
        // Two pods, the second started 37 ms later.
        let (r, points, bucket_ms) = merge(&[log(0, &[10, 20]), log(37, &[1, 2])], vec![]).unwrap();
        assert_eq!(bucket_ms, 1000);
        let t: Vec<(u64, u64)> = r.timeline.iter().map(|b| (b.t_ms, b.ok)).collect();
        assert_eq!(t, [(0, 11), (1000, 22)]);
        assert_eq!(points.len(), 2);
        // Without certshift's metadata, counts come from the histograms.
        assert_eq!((r.attempted, r.succeeded, r.failed), (33, 33, 0));
        assert_eq!(r.latency_us["request"].count, 33);
    }

    #[test]
    fn a_foreign_log_with_more_failures_than_requests_does_not_underflow() {
        let mut l = log(0, &[1]);
        let mut f = PhaseHist::new();
        f.record(Duration::from_millis(1));
        f.record(Duration::from_millis(1));
        l.intervals[0].hists.push(("failed".into(), f));
        let (r, _, _) = merge(&[l], vec![]).unwrap();
        assert_eq!((r.attempted, r.failed, r.succeeded), (1, 2, 0));
    }
}
