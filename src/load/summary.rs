//! A run's report: the measurements of a [`LoadRun`] in the shape users
//! keep ([`LoadReport`], whose keys are a contract owned by `report`).

use std::time::{Duration, UNIX_EPOCH};

use super::analysis::Ops;
use super::LoadRun;
use crate::metrics::PhaseHist;
use crate::report::{
    Downtime, LoadPhase, LoadReport, Resumption, RotationMark, RunInfo, TIMELINE_MS,
};

impl LoadRun {
    /// Views over the run's operation log.
    pub fn ops(&self) -> Ops<'_> {
        Ops::new(&self.recorder, &self.schedule)
    }

    /// The report of this run, headed by `info`.
    pub fn report(&self, info: RunInfo) -> LoadReport {
        let run = self;
        let rec = &run.recorder;
        let ops = Ops::new(rec, &run.schedule);
        let rate = run.schedule.rate();
        let issued = rec.attempted() - rec.dropped;
        let issue_span = rec.last_start.as_secs_f64() + 1.0 / rate;
        let phases = |h: &[PhaseHist; 3]| {
            LoadPhase::ALL
                .iter()
                .map(|p| (p.name().to_string(), h[*p as usize].percentiles()))
                .collect()
        };
        let duration = run.schedule.measured_offset(run.schedule.measured_ops());
        let warmup = run.schedule.offset(run.schedule.warmup_ops());
        LoadReport {
            info,
            rate,
            duration_s: duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            started_unix_ms: run
                .started_wall
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            attempted: rec.attempted(),
            succeeded: rec.succeeded,
            failed: rec.failed,
            dropped: rec.dropped,
            cancelled: rec.cancelled,
            achieved_rate: if issued == 0 {
                0.0
            } else {
                issued as f64 / issue_span
            },
            throughput: per_second(rec.succeeded, rec.last_end),
            outcomes: rec.outcomes(),
            latency_us: phases(&rec.latency),
            service_time_us: phases(&rec.service),
            resumption: (rec.handshakes > 0).then(|| Resumption {
                handshakes: rec.handshakes,
                resumed: rec.resumed,
                share: rec.resumed as f64 / rec.handshakes as f64,
            }),
            confirmations: rec
                .confirmations
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            downtime: Downtime {
                lost: rec.failed + rec.dropped,
                longest_failure_run: ops.longest_failure_run(),
            },
            timeline: ops.timeline(TIMELINE_MS),
            rotations: run
                .marks
                .iter()
                .filter_map(|m| {
                    Some(RotationMark {
                        t_ms: run.t_ms(m.at)?,
                        kind: m.kind.clone(),
                        serial: m.serial.clone(),
                    })
                })
                .collect(),
            interrupted: run.interrupted,
            ops_not_logged: rec.ops_not_logged,
            cpu: run.cpu.and_then(|c| crate::report::LoadCpu::new(c, issued)),
            merged_from: Vec::new(),
        }
    }
}

/// `count / d`, 0 for an empty span.
fn per_second(count: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        count as f64 / d.as_secs_f64()
    }
}
