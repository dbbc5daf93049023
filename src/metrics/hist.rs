//! One phase's latency distribution: an HdrHistogram in microseconds with 3
//! significant digits, plus the exact sum Prometheus wants for `_sum`.
//!
//! Owns the unit and the precision, so every exporter reads the same numbers.
//! Never shared between tasks: the aggregator owns one per phase and clones it
//! into snapshots.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Values above this are clamped to it: a connection living longer than a day
/// is recorded as one day.
pub const HIGHEST_TRACKABLE_US: u64 = 24 * 3600 * 1_000_000;

/// The range a histogram starts with; it grows (HdrHistogram's auto-resize)
/// to the largest value recorded or merged in, never past
/// [`HIGHEST_TRACKABLE_US`]. Made for the whole day up front, each one was
/// 229 KiB (28,672 counts) written with zeros; latencies of a few
/// milliseconds need about 40 KiB. Merging cannot fail: a resizable
/// histogram grows to take the other's values.
const INITIAL_HIGHEST_US: u64 = 2;

/// 3 significant digits: 0.1% relative error, the HdrHistogram default.
const SIGFIG: u8 = 3;

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct PhaseHist {
    /// Made at the first value: most slots stay empty (an idle proxy's five
    /// phases, a listener without TLS, a variant that never reached a
    /// phase), and even the smallest histogram is a 16 KiB array.
    hist: Option<Histogram<u64>>,
    /// Exact, not derived from the buckets: `_sum / _count` must be the true
    /// mean even when values sit in wide high-magnitude buckets.
    sum_us: u64,
}

/// The percentiles every report shows, in microseconds. Each is the highest
/// value equivalent to the true percentile within 3 significant digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl PhaseHist {
    pub fn new() -> Self {
        PhaseHist {
            hist: None,
            sum_us: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .min(HIGHEST_TRACKABLE_US);
        record_clamped(self.made(), us, 1);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn merge(&mut self, other: &PhaseHist) {
        if let Some(theirs) = other.hist.as_ref().filter(|h| !h.is_empty()) {
            let ours = self.made();
            if ours.add(theirs).is_err() {
                // Unreachable while `ours` resizes (see INITIAL_HIGHEST_US);
                // clamp rather than lose counts if that ever changes.
                for v in theirs.iter_recorded() {
                    record_clamped(ours, v.value_iterated_to(), v.count_at_value());
                }
            }
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// A copy of a histogram read from a log. The exact sum is not in the
    /// log; the histogram's mean stands in for it.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let mut p = PhaseHist::new();
        for v in h.iter_recorded() {
            record_clamped(
                p.made(),
                v.value_iterated_to().min(HIGHEST_TRACKABLE_US),
                v.count_at_value(),
            );
        }
        p.sum_us = (h.mean() * h.len() as f64).round() as u64;
        p
    }

    /// Empty it, keeping the allocation.
    pub fn clear(&mut self) {
        if let Some(h) = &mut self.hist {
            h.reset();
        }
        self.sum_us = 0;
    }

    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, Histogram::len)
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// All zero when nothing was recorded (HdrHistogram would answer 0 for
    /// quantiles anyway; this makes `max` agree).
    pub fn percentiles(&self) -> Percentiles {
        let Some(h) = self.histogram() else {
            return Percentiles::default();
        };
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// How many values are at most `le_us`, within the histogram's precision:
    /// a value in the same 0.1%-wide bucket as the bound counts as below it.
    /// Cumulative by construction, so Prometheus `_bucket` series built from
    /// increasing bounds are monotonic.
    pub fn count_le(&self, le_us: u64) -> u64 {
        self.histogram().map_or(0, |h| h.count_between(0, le_us))
    }

    /// The raw histogram, for exporters that write HdrHistogram logs; `None`
    /// when nothing was recorded.
    pub fn histogram(&self) -> Option<&Histogram<u64>> {
        self.hist.as_ref().filter(|h| !h.is_empty())
    }

    fn made(&mut self) -> &mut Histogram<u64> {
        self.hist.get_or_insert_with(|| {
            // Invariant: 1 <= INITIAL_HIGHEST_US / 2 and SIGFIG <= 5 are the
            // only ways creation can fail, and both are constants that
            // satisfy them.
            let mut h = Histogram::new_with_bounds(1, INITIAL_HIGHEST_US, SIGFIG)
                .expect("constant histogram bounds are valid");
            h.auto(true);
            h
        })
    }
}

/// Records into a histogram that grows: `saturating_record*` would clamp to
/// its current range instead of growing it.
fn record_clamped(h: &mut Histogram<u64>, v: u64, n: u64) {
    if h.record_n(v, n).is_err() {
        // Only when it cannot grow: keep the count, at the top.
        h.saturating_record_n(v, n);
    }
}

impl Default for PhaseHist {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_precision(got: u64, want: u64) -> bool {
        // 3 significant digits: relative error at most 1/1000, plus one unit.
        got.abs_diff(want) <= want / 1000 + 1
    }

    #[test]
    fn percentiles_of_1_to_1000_ms_are_where_a_user_expects_them() {
        let mut h = PhaseHist::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert!(within_precision(p.p50, 500_000), "p50 {}", p.p50);
        assert!(within_precision(p.p90, 900_000), "p90 {}", p.p90);
        assert!(within_precision(p.p99, 990_000), "p99 {}", p.p99);
        assert!(within_precision(p.p999, 999_000), "p999 {}", p.p999);
        assert!(within_precision(p.max, 1_000_000), "max {}", p.max);
        assert_eq!(h.sum_us(), 500_500_000, "sum is exact: 1000*1001/2 ms");
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = PhaseHist::new();
        assert_eq!(h.percentiles(), Percentiles::default());
        assert_eq!(h.count_le(1_000_000), 0);
        assert!(h.histogram().is_none());
    }

    #[test]
    fn a_slot_holds_no_histogram_until_its_first_value() {
        let mut a = PhaseHist::new();
        a.merge(&PhaseHist::new());
        assert!(a.hist.is_none(), "merging an empty one allocated");
        let mut b = PhaseHist::new();
        b.record(Duration::from_micros(250));
        a.merge(&b);
        assert_eq!(a.count(), 1);
        assert!(within_precision(a.percentiles().p50, 250));
        // Cleared: empty again to every reader, the allocation kept.
        a.clear();
        assert!(a.hist.is_some());
        assert_eq!((a.count(), a.sum_us()), (0, 0));
        assert_eq!(a.percentiles(), Percentiles::default());
        assert!(a.histogram().is_none());
    }

    #[test]
    fn overlong_values_are_clamped_not_lost() {
        let mut h = PhaseHist::new();
        h.record(Duration::from_secs(3 * 24 * 3600));
        assert_eq!(h.count(), 1);
        assert!(within_precision(h.percentiles().max, HIGHEST_TRACKABLE_US));
    }

    #[test]
    fn a_histogram_grows_to_its_values_and_merges_any_range() {
        let mut small = PhaseHist::new();
        for us in [80, 950, 4_000, 9_999] {
            small.record(Duration::from_micros(us));
        }
        // Up to 10 ms: 5 buckets of 1,024 counts (40 KiB), not the day's
        // 28 buckets (229 KiB).
        let counts = |p: &PhaseHist| p.hist.as_ref().map_or(0, |h| h.distinct_values());
        assert!(counts(&small) <= 5 * 1024, "{} counts", counts(&small));
        // A bound past the range grown so far (Prometheus' 60 s bucket)
        // counts every value, as it did when every histogram spanned a day.
        assert_eq!(small.count_le(60_000_000), 4);
        assert_eq!(small.count_le(1_000), 2);
        let mut long = PhaseHist::new();
        long.record(Duration::from_secs(3600));
        small.merge(&long);
        assert_eq!(small.count(), 5);
        assert!(within_precision(small.percentiles().max, 3_600_000_000));
        assert!(within_precision(small.percentiles().p50, 4_000));
        // And the other way: the long one takes the short values.
        long.merge(&small);
        assert_eq!(long.count(), 6);
        assert_eq!(long.count_le(10_000), 4);
    }

    #[test]
    fn count_le_is_cumulative() {
        let mut h = PhaseHist::new();
        for us in [100, 400, 900, 5_000, 2_000_000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count_le(99), 0);
        assert_eq!(h.count_le(500), 2);
        assert_eq!(h.count_le(1_000), 3);
        assert_eq!(h.count_le(10_000), 4);
        assert_eq!(h.count_le(HIGHEST_TRACKABLE_US), 5);
    }

    #[test]
    fn merge_adds_counts_and_sums() {
        let mut a = PhaseHist::new();
        let mut b = PhaseHist::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.record(Duration::from_millis(5));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.sum_us(), 9_000);
        assert!(within_precision(a.percentiles().max, 5_000));
    }
}
