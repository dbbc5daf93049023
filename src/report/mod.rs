//! Reports of load runs: the JSON document (its keys are a contract), the
//! human table, the files a run writes (JSON, HdrHistogram log, SVG), and
//! `certshift report merge|show`; the `bench` report's contract and table
//! ([`bench`]).
//!
//! Owns the shape of what users keep; never measures anything itself. Every
//! report, whether from a live run or from merged logs, is a [`LoadReport`],
//! so `report show` prints them all the same way.

pub mod bench;
pub mod cmd;
mod output;
pub mod plot;
pub mod rotation;

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use cmd::{ReportArgs, ReportCommand};
pub use output::{write_json as write_json_file, write_outputs, OutputError, Outputs, RunViews};

use crate::metrics::{fmt_ms, fmt_us, Percentiles};

/// Width of the JSON timeline's buckets (a contract: `timeline` is per 100 ms).
pub const TIMELINE_MS: u64 = 100;

/// What was run, for the report's header.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub target: String,
    pub mode: String,
    pub tls: String,
}

/// A rotation on the timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotationMark {
    pub t_ms: u64,
    pub kind: String,
    pub serial: Option<String>,
}

/// Session resumption over the run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resumption {
    pub handshakes: u64,
    pub resumed: u64,
    /// `resumed / handshakes`, 0 when there were none.
    pub share: f64,
}

/// What the load generator itself cost: CPU time of its whole process while
/// the load ran, per operation it issued (dropped ones excluded). A
/// generator that spends more than the service per operation measures
/// itself; compare `per_op_us` with the service's own figure.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadCpu {
    pub total_ms: f64,
    pub per_op_us: f64,
}

impl LoadCpu {
    pub fn new(cpu: std::time::Duration, issued: u64) -> Option<Self> {
        Some(LoadCpu {
            total_ms: cpu.as_secs_f64() * 1e3,
            per_op_us: crate::metrics::cpu::per_op_us(cpu, issued)?,
        })
    }
}

/// Losses and the longest outage.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Downtime {
    /// Failed plus dropped operations.
    pub lost: u64,
    pub longest_failure_run: Option<FailureRun>,
}

/// The phases of an operation, each timed from its start. Names are a
/// contract (JSON keys, table rows, HdrHistogram log tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPhase {
    /// TCP connected.
    Connect,
    /// TLS handshake done.
    Handshake,
    /// The verdict: response read, acceptance confirmed, or the failure.
    Request,
}

impl LoadPhase {
    pub const ALL: [LoadPhase; 3] = [LoadPhase::Connect, LoadPhase::Handshake, LoadPhase::Request];

    pub fn name(self) -> &'static str {
        match self {
            LoadPhase::Connect => "connect",
            LoadPhase::Handshake => "handshake",
            LoadPhase::Request => "request",
        }
    }
}

/// Operations due in one timeline bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    pub t_ms: u64,
    pub ok: u64,
    pub failed: u64,
    #[serde(default)]
    pub dropped: u64,
}

/// The longest stretch of consecutive lost operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FailureRun {
    /// Operations lost in a row (failed or dropped).
    pub ops: u64,
    /// Intended start of the first and of the last, from the measurement start.
    pub from_ms: u64,
    pub to_ms: u64,
    /// The schedule time the run covers: `ops / rate`.
    pub duration_ms: u64,
}

/// What happened to operations due in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
    pub attempted: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Outcomes of the lost operations.
    pub outcomes: BTreeMap<String, u64>,
    /// Corrected p99 of the operations that completed, in µs.
    pub p99_us: u64,
}

/// Tags of [`RunViews::intervals`]' histograms (load's `Ops`), in order: the three phases
/// corrected, the three as service time (`service-` prefix), and `failed`
/// (corrected end-to-end latency of the lost operations, so its count is
/// the failures). A contract with `report merge`.
pub fn interval_tags() -> Vec<String> {
    let mut t: Vec<String> = LoadPhase::ALL
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    t.extend(
        LoadPhase::ALL
            .iter()
            .map(|p| format!("service-{}", p.name())),
    );
    t.push("failed".into());
    t
}

/// The report of one load run (or of merged runs). Field names are the JSON
/// contract; new fields get `#[serde(default)]` so older files still load.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    #[serde(flatten)]
    pub info: RunInfo,
    /// Asked rate, operations per second.
    pub rate: f64,
    pub duration_s: f64,
    #[serde(default)]
    pub warmup_s: f64,
    pub started_unix_ms: u64,
    /// Every measured operation: succeeded + failed + dropped + cancelled.
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Ended by us at shutdown; not a verdict on the service.
    #[serde(default)]
    pub cancelled: u64,
    /// Operations started per second of the schedule they covered: the rate
    /// the generator held.
    pub achieved_rate: f64,
    /// Successful operations per second, to the last response.
    #[serde(default)]
    pub throughput: f64,
    pub outcomes: BTreeMap<String, u64>,
    /// From each operation's intended start: coordinated omission corrected.
    pub latency_us: BTreeMap<String, Percentiles>,
    /// From each operation's actual start: what the service alone took.
    pub service_time_us: BTreeMap<String, Percentiles>,
    #[serde(default)]
    pub resumption: Option<Resumption>,
    /// Handshake mode: how acceptance was known (`ticket`, `handshake`, `data`, `quiet`).
    #[serde(default)]
    pub confirmations: BTreeMap<String, u64>,
    #[serde(default)]
    pub downtime: Downtime,
    pub timeline: Vec<Bucket>,
    pub rotations: Vec<RotationMark>,
    #[serde(default)]
    pub interrupted: bool,
    /// Operations past the per-operation log's cap: in the totals, not in the
    /// timeline, the downtime or the HdrHistogram log.
    #[serde(default)]
    pub ops_not_logged: u64,
    /// The generator's own CPU (absent in reports merged from logs of
    /// other writers, and in reports from before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<LoadCpu>,
    /// The logs a merged report was made from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

impl LoadReport {
    /// Failed plus dropped.
    pub fn lost(&self) -> u64 {
        self.failed + self.dropped
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "load {} ({}, tls {}): {:.0}/s asked for {:.1}s{}",
            self.info.target,
            self.info.mode,
            self.info.tls,
            self.rate,
            self.duration_s,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        if !self.merged_from.is_empty() {
            let _ = writeln!(
                s,
                "merged from {} logs: {}",
                self.merged_from.len(),
                self.merged_from.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "attempted {}  succeeded {}  failed {}  dropped {}{}  achieved {:.1}/s  throughput {:.1}/s",
            self.attempted,
            self.succeeded,
            self.failed,
            self.dropped,
            if self.cancelled > 0 { format!("  cancelled {}", self.cancelled) } else { String::new() },
            self.achieved_rate,
            self.throughput,
        );
        if let Some(c) = &self.cpu {
            let _ = writeln!(
                s,
                "load generator cost: {:.1} µs CPU per operation ({:.0} ms CPU in all)",
                c.per_op_us, c.total_ms
            );
        }
        self.latency_tables(&mut s);
        let _ = writeln!(s, "\noutcomes");
        for (o, n) in &self.outcomes {
            let _ = writeln!(s, "  {o:<28} {n:>8}");
        }
        if let Some(r) = &self.resumption {
            let _ = writeln!(
                s,
                "resumed {} of {} handshakes ({:.1}%)",
                r.resumed,
                r.handshakes,
                r.share * 100.0
            );
        }
        if !self.confirmations.is_empty() {
            let list: Vec<String> = self
                .confirmations
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "acceptance confirmed by: {}", list.join(", "));
        }
        let _ = writeln!(s, "{}", self.downtime_line());
        if !self.rotations.is_empty() {
            let list: Vec<String> = self
                .rotations
                .iter()
                .map(|r| format!("{} at {}", r.kind, fmt_ms(r.t_ms)))
                .collect();
            let _ = writeln!(s, "rotations: {}", list.join(", "));
        }
        if self.ops_not_logged > 0 {
            let _ = writeln!(
                s,
                "note: {} operations past the per-operation log's cap are in the totals only",
                self.ops_not_logged
            );
        }
        s
    }

    /// The corrected latency and the service time, per phase.
    fn latency_tables(&self, s: &mut String) {
        let rows = [
            (
                "latency (from intended start, coordinated omission corrected)",
                &self.latency_us,
            ),
            (
                "service time (from actual start, uncorrected)",
                &self.service_time_us,
            ),
        ];
        for (title, m) in rows {
            let _ = writeln!(s, "\n{title}");
            let _ = writeln!(
                s,
                "  {:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "to end of", "count", "p50", "p90", "p99", "p99.9", "max"
            );
            for p in LoadPhase::ALL {
                // A phase no operation went through (no TLS, or keep-alive
                // reuse only) has no row rather than a row of zeros.
                let Some(q) = m.get(p.name()).filter(|q| q.count > 0) else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "  {:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    p.name(),
                    q.count,
                    fmt_us(q.p50),
                    fmt_us(q.p90),
                    fmt_us(q.p99),
                    fmt_us(q.p999),
                    fmt_us(q.max)
                );
            }
        }
    }

    /// One line on losses and the longest outage.
    pub fn downtime_line(&self) -> String {
        match &self.downtime.longest_failure_run {
            None if self.downtime.lost == 0 => "downtime: none (nothing lost)".into(),
            None => format!("downtime: {} lost", self.downtime.lost),
            Some(r) => format!(
                "downtime: longest failure run {} ops ({}) from {} to {}; {} lost in all",
                r.ops,
                fmt_ms(r.duration_ms),
                fmt_ms(r.from_ms),
                fmt_ms(r.to_ms),
                self.downtime.lost
            ),
        }
    }
}
