//! What a load worker records: latency histograms (corrected and not),
//! outcome counts, and a compact log of every measured operation for the
//! timeline, the rotation windows, the failure runs and the HdrHistogram
//! interval log.
//!
//! Each worker owns one [`Recorder`]; they are merged once, when the run is
//! over. Nothing here is shared or locked.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::op::OpResult;
use crate::metrics::PhaseHist;
use crate::report::LoadPhase;
use crate::tls::Outcome;

/// Most operations whose details a run keeps (24 bytes each, so at most
/// 192 MiB): 2.2 hours at 1,000/s. Beyond it, totals and histograms stay
/// exact and the report says the per-operation views are truncated.
pub const MAX_OP_LOG: usize = 8 << 20;

/// One measured operation. `u32` microseconds hold 71 minutes, far past any
/// `--timeout`; `NONE` marks a phase the operation did not reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRecord {
    /// Measured sequence number: due at `seq / rate` after the warm-up.
    pub seq: u64,
    /// Actual start minus intended start.
    pub lag_us: u32,
    pub connect_us: u32,
    pub handshake_us: u32,
    /// The verdict, from the actual start (the service time).
    pub end_us: u32,
    /// Index into the merged recorder's outcome names.
    pub outcome: u16,
    pub flags: u8,
}

impl OpRecord {
    pub const NONE: u32 = u32::MAX;
    pub const OK: u8 = 1;
    pub const DROPPED: u8 = 2;
    pub const CANCELLED: u8 = 4;

    pub fn ok(&self) -> bool {
        self.flags & Self::OK != 0
    }

    pub fn dropped(&self) -> bool {
        self.flags & Self::DROPPED != 0
    }

    /// Lost: failed or never sent. Cancelled operations were ended by us and
    /// say nothing about the service.
    pub fn lost(&self) -> bool {
        self.flags & (Self::OK | Self::CANCELLED) == 0
    }

    /// Corrected latency to the end of `phase` (from the intended start).
    pub fn latency_us(&self, phase: LoadPhase) -> Option<u64> {
        self.service_us(phase).map(|s| s + u64::from(self.lag_us))
    }

    /// Service time to the end of `phase` (from the actual start).
    pub fn service_us(&self, phase: LoadPhase) -> Option<u64> {
        let v = match phase {
            LoadPhase::Connect => self.connect_us,
            LoadPhase::Handshake => self.handshake_us,
            LoadPhase::Request => self.end_us,
        };
        (v != Self::NONE && !self.dropped()).then_some(u64::from(v))
    }
}

/// One worker's measurements; [`Recorder::merge`] folds them together.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// From the intended start, per phase.
    pub latency: [PhaseHist; 3],
    /// From the actual start, per phase.
    pub service: [PhaseHist; 3],
    pub succeeded: u64,
    pub failed: u64,
    pub dropped: u64,
    pub cancelled: u64,
    outcome_names: Vec<String>,
    outcome_index: HashMap<String, u16>,
    outcome_counts: Vec<u64>,
    /// The last outcome recorded and its index: nearly every operation of
    /// a run ends as the one before, and is then counted without a lookup
    /// or an allocation.
    last_outcome: Option<(Outcome, u16)>,
    /// Handshakes done, and how many of them resumed a session.
    pub handshakes: u64,
    pub resumed: u64,
    /// Handshake mode: how acceptance was known.
    pub confirmations: BTreeMap<&'static str, u64>,
    pub ops: Vec<OpRecord>,
    /// Operations measured but not kept in `ops` (over [`MAX_OP_LOG`]).
    pub ops_not_logged: u64,
    op_cap: usize,
    /// Latest actual start and latest end, from the measurement start.
    pub last_start: Duration,
    pub last_end: Duration,
}

impl Recorder {
    /// A recorder keeping at most `op_cap` operation records.
    pub fn new(op_cap: usize) -> Self {
        Recorder {
            latency: std::array::from_fn(|_| PhaseHist::new()),
            service: std::array::from_fn(|_| PhaseHist::new()),
            succeeded: 0,
            failed: 0,
            dropped: 0,
            cancelled: 0,
            outcome_names: Vec::new(),
            outcome_index: HashMap::new(),
            outcome_counts: Vec::new(),
            last_outcome: None,
            handshakes: 0,
            resumed: 0,
            confirmations: BTreeMap::new(),
            ops: Vec::new(),
            ops_not_logged: 0,
            op_cap,
            last_start: Duration::ZERO,
            last_end: Duration::ZERO,
        }
    }

    pub fn attempted(&self) -> u64 {
        self.succeeded + self.failed + self.dropped + self.cancelled
    }

    /// Outcome counts by name; `dropped` is listed as its own outcome.
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = self
            .outcome_names
            .iter()
            .cloned()
            .zip(self.outcome_counts.iter().copied())
            .collect();
        if self.dropped > 0 {
            m.insert("dropped".into(), self.dropped);
        }
        m
    }

    pub fn outcome_name(&self, index: u16) -> &str {
        self.outcome_names
            .get(usize::from(index))
            .map_or("dropped", |s| s.as_str())
    }

    /// Record a finished operation. `lag` is how late it started; `start`
    /// is its actual start from the measurement start.
    pub fn record(&mut self, seq: u64, lag: Duration, start: Duration, r: &OpResult) {
        let succeeded = r.succeeded();
        let cancelled = r.outcome.not_judged();
        match (succeeded, cancelled) {
            (true, _) => self.succeeded += 1,
            (false, true) => self.cancelled += 1,
            (false, false) => self.failed += 1,
        }
        let outcome = self.intern(&r.outcome);
        self.outcome_counts[usize::from(outcome)] += 1;
        let phases = [Some(r.connect), Some(r.handshake), Some(Some(r.end))];
        for (i, p) in phases.iter().enumerate() {
            // Operations we ended at shutdown measured our patience, not
            // the service.
            if cancelled {
                break;
            }
            if let Some(Some(d)) = p {
                self.service[i].record(*d);
                self.latency[i].record(*d + lag);
            }
        }
        if r.handshake.is_some() {
            self.handshakes += 1;
            if r.resumed == Some(true) {
                self.resumed += 1;
            }
        }
        if let Some(c) = r.confirmation {
            *self.confirmations.entry(c.name()).or_default() += 1;
        }
        self.last_start = self.last_start.max(start);
        self.last_end = self.last_end.max(start + r.end);
        let flags = if succeeded {
            OpRecord::OK
        } else if cancelled {
            OpRecord::CANCELLED
        } else {
            0
        };
        self.log(OpRecord {
            seq,
            lag_us: us32(lag),
            connect_us: r.connect.map_or(OpRecord::NONE, us32),
            handshake_us: r.handshake.map_or(OpRecord::NONE, us32),
            end_us: us32(r.end),
            outcome,
            flags,
        });
    }

    /// An operation over `--max-in-flight`: counted, never sent.
    pub fn record_dropped(&mut self, seq: u64) {
        self.record_dropped_run(seq, 1);
    }

    /// Operations `seq..seq + n`, all over `--max-in-flight`. The count is
    /// exact whatever `n`; the log keeps them while it has room (its cap
    /// bounds the memory, as for every other operation).
    pub fn record_dropped_run(&mut self, seq: u64, n: u64) {
        self.dropped += n;
        let room = self.op_cap.saturating_sub(self.ops.len()) as u64;
        let logged = n.min(room);
        self.ops.extend((seq..seq + logged).map(|seq| OpRecord {
            seq,
            lag_us: 0,
            connect_us: OpRecord::NONE,
            handshake_us: OpRecord::NONE,
            end_us: OpRecord::NONE,
            outcome: u16::MAX,
            flags: OpRecord::DROPPED,
        }));
        self.ops_not_logged += n - logged;
    }

    /// Fold `other` in; call [`Recorder::sort_ops`] after the last merge.
    pub fn merge(&mut self, other: Recorder) {
        for i in 0..3 {
            self.latency[i].merge(&other.latency[i]);
            self.service[i].merge(&other.service[i]);
        }
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.dropped += other.dropped;
        self.cancelled += other.cancelled;
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        crate::metrics::add_counts(&mut self.confirmations, &other.confirmations);
        let remap: Vec<u16> = other
            .outcome_names
            .iter()
            .map(|name| self.intern_name(name))
            .collect();
        for (i, n) in other.outcome_counts.iter().enumerate() {
            self.outcome_counts[usize::from(remap[i])] += n;
        }
        self.ops.extend(other.ops.into_iter().map(|mut r| {
            if let Some(&to) = remap.get(usize::from(r.outcome)) {
                r.outcome = to;
            }
            r
        }));
        self.ops_not_logged += other.ops_not_logged;
        self.op_cap = self.op_cap.max(other.op_cap);
        self.last_start = self.last_start.max(other.last_start);
        self.last_end = self.last_end.max(other.last_end);
    }

    /// Order the operation log by `seq`, once every recorder is merged in.
    pub fn sort_ops(&mut self) {
        self.ops.sort_unstable_by_key(|r| r.seq);
    }

    fn log(&mut self, r: OpRecord) {
        if self.ops.len() < self.op_cap {
            self.ops.push(r);
        } else {
            self.ops_not_logged += 1;
        }
    }

    fn intern(&mut self, o: &Outcome) -> u16 {
        match &self.last_outcome {
            Some((last, i)) if last == o => *i,
            _ => {
                let i = self.intern_name(&o.to_string());
                self.last_outcome = Some((o.clone(), i));
                i
            }
        }
    }

    fn intern_name(&mut self, name: &str) -> u16 {
        if let Some(&i) = self.outcome_index.get(name) {
            return i;
        }
        // Outcome names are a small vocabulary (alerts, statuses, error
        // kinds); u16::MAX is reserved for "dropped".
        let i = u16::try_from(self.outcome_names.len())
            .unwrap_or(u16::MAX - 1)
            .min(u16::MAX - 1);
        if usize::from(i) == self.outcome_names.len() {
            self.outcome_names.push(name.to_string());
            self.outcome_counts.push(0);
            self.outcome_index.insert(name.to_string(), i);
        }
        i
    }
}

fn us32(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(OpRecord::NONE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, end_ms: u64) -> OpResult {
        OpResult {
            outcome,
            connect: Some(Duration::from_millis(1)),
            handshake: Some(Duration::from_millis(2)),
            end: Duration::from_millis(end_ms),
            resumed: Some(false),
            confirmation: None,
            tls_version: None,
        }
    }

    #[test]
    fn corrected_latency_adds_the_lag_and_service_time_does_not() {
        let mut r = Recorder::new(10);
        let lag = Duration::from_millis(500);
        r.record(0, lag, lag, &result(Outcome::Http(200), 3));
        let req = LoadPhase::Request as usize;
        assert_eq!(r.latency[req].percentiles().max / 1000, 503);
        assert_eq!(r.service[req].percentiles().max / 1000, 3);
        assert_eq!(r.ops[0].latency_us(LoadPhase::Connect), Some(501_000));
        assert_eq!(r.ops[0].service_us(LoadPhase::Handshake), Some(2_000));
    }

    #[test]
    fn merge_sums_counts_remaps_outcomes_and_sorts_the_log() {
        let mut a = Recorder::new(10);
        let mut b = Recorder::new(10);
        a.record(
            1,
            Duration::ZERO,
            Duration::ZERO,
            &result(Outcome::Http(200), 1),
        );
        b.record(
            0,
            Duration::ZERO,
            Duration::ZERO,
            &result(Outcome::Reset, 1),
        );
        b.record(
            2,
            Duration::ZERO,
            Duration::ZERO,
            &result(Outcome::Http(200), 1),
        );
        b.record_dropped(3);
        a.merge(b);
        a.sort_ops();
        assert_eq!(
            (a.succeeded, a.failed, a.dropped, a.attempted()),
            (2, 1, 1, 4)
        );
        let want: BTreeMap<String, u64> = [("dropped", 1), ("http:200", 2), ("reset", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(a.outcomes(), want);
        let seqs: Vec<u64> = a.ops.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert_eq!(a.outcome_name(a.ops[0].outcome), "reset");
        assert_eq!(a.outcome_name(a.ops[2].outcome), "http:200");
        assert!(a.ops[3].dropped() && a.ops[3].lost());
    }

    #[test]
    fn the_op_log_is_capped_but_totals_are_not() {
        let mut r = Recorder::new(2);
        for seq in 0..5 {
            r.record(seq, Duration::ZERO, Duration::ZERO, &result(Outcome::Ok, 1));
        }
        assert_eq!((r.ops.len(), r.ops_not_logged, r.succeeded), (2, 3, 5));
    }

    #[test]
    fn http_errors_fail_and_cancellations_are_not_judged() {
        let mut r = Recorder::new(10);
        for o in [Outcome::Http(502), Outcome::Http(302), Outcome::Cancelled] {
            r.record(0, Duration::ZERO, Duration::ZERO, &result(o, 1));
        }
        assert_eq!((r.succeeded, r.failed, r.cancelled), (1, 1, 1));
    }
}
