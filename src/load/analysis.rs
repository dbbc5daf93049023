//! Views over a run's operation log, by intended start time: the 100 ms
//! timeline, plot points, the longest run of failures (the downtime), the
//! window around a rotation, and the HdrHistogram intervals.
//!
//! Placing operations by their intended start makes every view agree with
//! the schedule: an operation due just after a rotation is counted after
//! it, however late the stalled service answered.

use std::time::Duration;

use super::record::{OpRecord, Recorder};
use super::schedule::Schedule;
use crate::metrics::hdrlog::LogInterval;
use crate::metrics::PhaseHist;
use crate::report::plot::Point;
use crate::report::{interval_tags, Bucket, FailureRun, LoadPhase, RunViews, Window};

/// The run's operations and the schedule that placed them.
#[derive(Clone, Copy)]
pub struct Ops<'a> {
    pub rec: &'a Recorder,
    pub schedule: &'a Schedule,
}

impl RunViews for Ops<'_> {
    fn intervals(&self, interval_ms: u64) -> Vec<LogInterval> {
        Ops::intervals(self, interval_ms)
    }

    fn points(&self, bucket_ms: u64) -> Vec<Point> {
        Ops::points(self, bucket_ms)
    }
}

impl<'a> Ops<'a> {
    pub fn new(rec: &'a Recorder, schedule: &'a Schedule) -> Self {
        Ops { rec, schedule }
    }

    /// When operation `seq` was due, in ms from the measurement start.
    pub fn t_ms(&self, seq: u64) -> u64 {
        self.schedule.measured_offset(seq).as_millis() as u64
    }

    fn bucket_count(&self, bucket_ms: u64) -> usize {
        let last = self.rec.ops.last().map_or(0, |r| self.t_ms(r.seq));
        let span = self
            .schedule
            .measured_offset(self.schedule.measured_ops())
            .as_millis() as u64;
        (last.max(span.saturating_sub(1)) / bucket_ms.max(1) + 1) as usize
    }

    /// Counts per `bucket_ms`, from 0 to the end of the schedule.
    pub fn timeline(&self, bucket_ms: u64) -> Vec<Bucket> {
        let bucket_ms = bucket_ms.max(1);
        let mut out: Vec<Bucket> = (0..self.bucket_count(bucket_ms))
            .map(|i| Bucket {
                t_ms: i as u64 * bucket_ms,
                ..Bucket::default()
            })
            .collect();
        for r in &self.rec.ops {
            let i = (self.t_ms(r.seq) / bucket_ms) as usize;
            let Some(b) = out.get_mut(i) else { continue };
            if r.ok() {
                b.ok += 1;
            } else if r.dropped() {
                b.dropped += 1;
            } else if r.lost() {
                b.failed += 1;
            }
        }
        out
    }

    /// Plot points per `bucket_ms`: corrected end-to-end percentiles.
    pub fn points(&self, bucket_ms: u64) -> Vec<Point> {
        let bucket_ms = bucket_ms.max(1);
        let mut out: Vec<Point> = (0..self.bucket_count(bucket_ms))
            .map(|i| Point {
                t_ms: i as u64 * bucket_ms,
                ..Point::default()
            })
            .collect();
        let fill = |p: &mut Point, h: &PhaseHist| {
            let q = h.percentiles();
            (p.p50_us, p.p90_us, p.p99_us, p.max_us) = (q.p50, q.p90, q.p99, q.max);
        };
        // The log is sorted, so buckets arrive in order: one histogram.
        let mut hist = PhaseHist::new();
        let mut current: Option<usize> = None;
        for r in &self.rec.ops {
            let i = (self.t_ms(r.seq) / bucket_ms) as usize;
            if i >= out.len() {
                break;
            }
            if current != Some(i) {
                if let Some(c) = current {
                    fill(&mut out[c], &hist);
                    hist.clear();
                }
                current = Some(i);
            }
            if r.ok() {
                out[i].ok += 1;
            } else if r.lost() {
                out[i].failed += 1;
            }
            if let Some(us) = r.latency_us(LoadPhase::Request) {
                hist.record(Duration::from_micros(us));
            }
        }
        if let Some(c) = current {
            fill(&mut out[c], &hist);
        }
        out
    }

    /// The longest run of consecutive lost operations, if any was lost.
    /// Operations the log did not keep break no run and join none.
    pub fn longest_failure_run(&self) -> Option<FailureRun> {
        let mut best: Option<(u64, u64)> = None;
        let mut run: Option<(u64, u64)> = None;
        for r in &self.rec.ops {
            if r.lost() {
                run = match run {
                    Some((first, last)) if last + 1 == r.seq => Some((first, r.seq)),
                    _ => Some((r.seq, r.seq)),
                };
                let (f, l) = run.unwrap_or((r.seq, r.seq));
                if best.is_none_or(|(bf, bl)| l - f > bl - bf) {
                    best = Some((f, l));
                }
            } else {
                run = None;
            }
        }
        best.map(|(first, last)| {
            let ops = last - first + 1;
            FailureRun {
                ops,
                from_ms: self.t_ms(first),
                to_ms: self.t_ms(last),
                duration_ms: (ops as f64 * 1000.0 / self.schedule.rate()).round() as u64,
            }
        })
    }

    /// The operations due in `[from_ms, to_ms)`.
    pub fn window(&self, from_ms: u64, to_ms: u64) -> Window {
        let mut w = Window {
            from_ms,
            to_ms,
            ..Window::default()
        };
        let mut hist = PhaseHist::new();
        for r in self.in_range(from_ms, to_ms) {
            w.attempted += 1;
            if r.dropped() {
                w.dropped += 1;
            } else if r.lost() {
                w.failed += 1;
            }
            if r.lost() {
                *w.outcomes
                    .entry(self.rec.outcome_name(r.outcome).to_string())
                    .or_default() += 1;
            }
            if let Some(us) = r.latency_us(LoadPhase::Request) {
                hist.record(Duration::from_micros(us));
            }
        }
        w.p99_us = hist.percentiles().p99;
        w
    }

    fn in_range(&self, from_ms: u64, to_ms: u64) -> impl Iterator<Item = &OpRecord> + '_ {
        // The log is sorted by seq, and due time grows with seq.
        let ops = &self.rec.ops;
        let start = ops.partition_point(|r| self.t_ms(r.seq) < from_ms);
        ops[start..]
            .iter()
            .take_while(move |r| self.t_ms(r.seq) < to_ms)
    }

    /// Histograms per `interval_ms`, tagged as [`interval_tags`] lists.
    /// Empty intervals are left out.
    pub fn intervals(&self, interval_ms: u64) -> Vec<LogInterval> {
        let interval_ms = interval_ms.max(1);
        let tags = interval_tags();
        let mut out: Vec<LogInterval> = Vec::new();
        for r in &self.rec.ops {
            if r.dropped() {
                continue;
            }
            let start_ms = self.t_ms(r.seq) / interval_ms * interval_ms;
            if out.last().is_none_or(|i| i.start_ms != start_ms) {
                out.push(LogInterval {
                    start_ms,
                    length_ms: interval_ms,
                    hists: tags.iter().map(|t| (t.clone(), PhaseHist::new())).collect(),
                });
            }
            let Some(iv) = out.last_mut() else { continue };
            for (i, p) in LoadPhase::ALL.iter().enumerate() {
                if let Some(us) = r.latency_us(*p) {
                    iv.hists[i].1.record(Duration::from_micros(us));
                }
                if let Some(us) = r.service_us(*p) {
                    iv.hists[3 + i].1.record(Duration::from_micros(us));
                }
            }
            if r.lost() {
                if let Some(us) = r.latency_us(LoadPhase::Request) {
                    iv.hists[6].1.record(Duration::from_micros(us));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::op::OpResult;
    use crate::tls::Outcome;

    /// 20 ops at 10/s; ops 5..=8 reset, op 12 dropped.
    fn run() -> (Recorder, Schedule) {
        let s = Schedule::new(10.0, Duration::ZERO, Duration::from_secs(2));
        let mut rec = Recorder::new(100);
        for seq in 0..20 {
            if seq == 12 {
                rec.record_dropped(seq);
                continue;
            }
            let outcome = if (5..=8).contains(&seq) {
                Outcome::Reset
            } else {
                Outcome::Http(200)
            };
            let r = OpResult {
                outcome,
                connect: Some(Duration::from_millis(1)),
                handshake: None,
                end: Duration::from_millis(10 + seq),
                resumed: None,
                confirmation: None,
                tls_version: None,
            };
            rec.record(seq, Duration::ZERO, Duration::ZERO, &r);
        }
        (rec, s)
    }

    #[test]
    fn timeline_places_operations_by_intended_start() {
        let (rec, s) = run();
        let t = Ops::new(&rec, &s).timeline(500);
        let got: Vec<(u64, u64, u64, u64)> = t
            .iter()
            .map(|b| (b.t_ms, b.ok, b.failed, b.dropped))
            .collect();
        assert_eq!(
            got,
            [
                (0, 5, 0, 0),
                (500, 1, 4, 0),
                (1000, 4, 0, 1),
                (1500, 5, 0, 0)
            ]
        );
    }

    #[test]
    fn the_longest_failure_run_is_the_downtime() {
        let (rec, s) = run();
        let r = Ops::new(&rec, &s).longest_failure_run().unwrap();
        assert_eq!(
            r,
            FailureRun {
                ops: 4,
                from_ms: 500,
                to_ms: 800,
                duration_ms: 400
            }
        );
    }

    #[test]
    fn a_window_counts_losses_and_their_outcomes() {
        let (rec, s) = run();
        let w = Ops::new(&rec, &s).window(700, 1300);
        assert_eq!((w.attempted, w.failed, w.dropped), (6, 2, 1));
        assert_eq!(w.outcomes.get("reset"), Some(&2));
        assert_eq!(w.outcomes.get("dropped"), Some(&1));
        // Ops 7..=11 answered in 17..=21 ms; the dropped op has no latency.
        assert!(w.p99_us >= 21_000 && w.p99_us < 21_100, "{}", w.p99_us);
    }

    #[test]
    fn intervals_hold_every_sent_operation_once() {
        let (rec, s) = run();
        let iv = Ops::new(&rec, &s).intervals(1000);
        assert_eq!(iv.len(), 2);
        let request: u64 = iv.iter().map(|i| i.hists[2].1.count()).sum();
        let failed: u64 = iv.iter().map(|i| i.hists[6].1.count()).sum();
        let handshake: u64 = iv.iter().map(|i| i.hists[1].1.count()).sum();
        assert_eq!((request, failed, handshake), (19, 4, 0));
        assert_eq!(interval_tags()[6], "failed");
    }

    #[test]
    fn points_cover_every_bucket() {
        let (rec, s) = run();
        let p = Ops::new(&rec, &s).points(1000);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].ok, p[0].failed), (6, 4));
        assert!(p[1].max_us >= 19_000);
    }
}
