//! The open-loop schedule: operation `k` is due at `k / rate` seconds after
//! the run starts, whatever happened to operation `k - 1`. Pure arithmetic,
//! so the rate and the warm-up split are tested without a clock.

use std::time::Duration;

/// When each operation is due, and which ones are measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    /// Operations due before the warm-up ends: run, never counted.
    warmup_ops: u64,
    /// Every operation due before warm-up plus duration ends.
    total_ops: u64,
}

impl Schedule {
    /// `rate` must be positive and finite (the config checks it).
    pub fn new(rate: f64, warmup: Duration, duration: Duration) -> Self {
        Schedule {
            rate,
            warmup_ops: ops_before(rate, warmup),
            total_ops: ops_before(rate, warmup.saturating_add(duration)),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn total_ops(&self) -> u64 {
        self.total_ops
    }

    pub fn warmup_ops(&self) -> u64 {
        self.warmup_ops
    }

    /// How many operations are measured: the ones due after the warm-up.
    pub fn measured_ops(&self) -> u64 {
        self.total_ops - self.warmup_ops
    }

    /// When operation `k` is due, from the start of the run (warm-up
    /// included). Computed from `k` directly, so errors never accumulate.
    pub fn offset(&self, k: u64) -> Duration {
        Duration::from_nanos((k as f64 * 1e9 / self.rate) as u64)
    }

    /// The measured sequence number of operation `k`, or `None` during the
    /// warm-up.
    pub fn measured(&self, k: u64) -> Option<u64> {
        k.checked_sub(self.warmup_ops)
    }

    /// When measured operation `seq` is due, from the end of the warm-up.
    pub fn measured_offset(&self, seq: u64) -> Duration {
        self.offset(seq + self.warmup_ops)
            .saturating_sub(self.offset(self.warmup_ops))
    }
}

/// Operations due strictly before `d`: `k / rate < d`. The small tolerance
/// keeps 0.3 s × 10/s at 3 operations, not 4.
fn ops_before(rate: f64, d: Duration) -> u64 {
    let exact = d.as_secs_f64() * rate;
    (exact - 1e-9).ceil().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_two_second_run_at_200_per_second_is_400_operations() {
        let s = Schedule::new(200.0, Duration::ZERO, Duration::from_secs(2));
        assert_eq!((s.total_ops(), s.measured_ops()), (400, 400));
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), MS(5));
        assert_eq!(s.offset(399), MS(1995));
    }

    #[test]
    fn warmup_operations_run_but_are_not_measured() {
        let s = Schedule::new(10.0, MS(300), Duration::from_secs(1));
        assert_eq!(
            (s.warmup_ops(), s.total_ops(), s.measured_ops()),
            (3, 13, 10)
        );
        assert_eq!(s.measured(2), None);
        assert_eq!(s.measured(3), Some(0));
        assert_eq!(s.measured_offset(0), Duration::ZERO);
        assert_eq!(s.measured_offset(4), MS(400));
    }

    #[test]
    fn fractional_rates_and_durations() {
        let s = Schedule::new(0.5, Duration::ZERO, Duration::from_secs(5));
        assert_eq!(s.total_ops(), 3); // at 0 s, 2 s, 4 s
        assert_eq!(s.offset(2), Duration::from_secs(4));
        let s = Schedule::new(1000.0, Duration::ZERO, MS(1));
        assert_eq!(s.total_ops(), 1);
        let s = Schedule::new(3.0, Duration::ZERO, Duration::ZERO);
        assert_eq!(s.total_ops(), 0);
    }
}
