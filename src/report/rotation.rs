//! The `rotation_test` section of a report: each rotation's window, the
//! downtime, the verdict, and its table (printed by `rotation-test` and
//! again by `report show`).

use std::fmt::Write as _;

use super::{FailureRun, Window};
use crate::metrics::{fmt_ms, fmt_us};

/// One rotation, as the report shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowReport {
    pub index: usize,
    pub kind: String,
    pub t_ms: u64,
    /// Up to the rotation, from halfway since the previous one (or from
    /// the start of the run).
    pub before: Window,
    /// From the rotation to halfway to the next one (or the end of the
    /// run). The windows of all rotations tile the run: each operation is
    /// in exactly one, so their attempted counts sum to the run's.
    pub after: Window,
    /// Lost in the two windows together.
    pub lost: u64,
}

/// The `rotation_test` section of the JSON report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub rotate: String,
    pub topology: String,
    pub rotations: usize,
    pub interval_ms: u64,
    pub no_overlap: bool,
    pub windows: Vec<WindowReport>,
    pub longest_failure_run: Option<FailureRun>,
    pub lost: u64,
    pub passed: bool,
    /// Behind the proxy: what the service answered each upstream connection.
    #[serde(default)]
    pub upstream_outcomes: std::collections::BTreeMap<String, u64>,
}

/// The per-rotation table and the verdict.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nrotation-test: {} × {} every {} ({}){}",
        s.rotations,
        s.rotate,
        fmt_ms(s.interval_ms),
        s.topology,
        if s.no_overlap { ", no overlap" } else { "" }
    );
    let _ = writeln!(
        out,
        "  {:>3} {:<10} {:>8} {:>9} {:>9} {:>11} {:>11}  lost outcomes",
        "#", "kind", "at", "attempted", "lost", "p99 before", "p99 after"
    );
    for w in &s.windows {
        let mut outcomes: std::collections::BTreeMap<&str, u64> = Default::default();
        for (k, v) in w.before.outcomes.iter().chain(&w.after.outcomes) {
            *outcomes.entry(k).or_default() += v;
        }
        let list: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "  {:>3} {:<10} {:>8} {:>9} {:>9} {:>11} {:>11}  {}",
            w.index,
            w.kind,
            fmt_ms(w.t_ms),
            w.before.attempted + w.after.attempted,
            w.lost,
            fmt_us(w.before.p99_us),
            fmt_us(w.after.p99_us),
            if list.is_empty() {
                "-".into()
            } else {
                list.join(", ")
            }
        );
    }
    let downtime = match &s.longest_failure_run {
        Some(r) => format!(
            "{} ({} ops in a row from {})",
            fmt_ms(r.duration_ms),
            r.ops,
            fmt_ms(r.from_ms)
        ),
        None => "none".into(),
    };
    if !s.upstream_outcomes.is_empty() {
        let list: Vec<String> = s
            .upstream_outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "behind the proxy, the service answered: {}",
            list.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "downtime (longest failure run): {downtime}; total lost: {}",
        s.lost
    );
    let _ = writeln!(
        out,
        "{}",
        if s.passed {
            "PASS: no operation was lost across the rotations"
        } else {
            "FAIL: operations were lost across the rotations"
        }
    );
    out
}

/// `report show` of a rotation-test JSON's `rotation_test` section.
pub fn render_value(v: &serde_json::Value) -> String {
    match serde_json::from_value::<Summary>(v.clone()) {
        Ok(s) => render(&s),
        Err(e) => format!("(rotation_test section unreadable: {e})\n"),
    }
}
