//! The engine on virtual time: `Clock::Runtime` under `start_paused`, and a
//! simulated service instead of sockets. Every run is the same run, so the
//! counts are exact and a 3 s schedule takes milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{drive, keepalive_threads, lazy_reads, Clock, LoadRun, Pacing, LEAD};
use crate::creds::RotationKind;
use crate::load::op::{Confirmation, OpResult, Operation};
use crate::load::record::OpRecord;
use crate::load::schedule::Schedule;
use crate::load::{Marks, Mode};
use crate::report::{FailureRun, LoadPhase, LoadReport, RunInfo};
use crate::tls::Outcome;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A service on virtual time. Times are from `zero`, when the first
/// measured operation is due.
struct Service {
    zero: Instant,
    /// How long an answer takes while the service runs.
    answer: Duration,
    /// Stopped (SIGSTOP) from `.0` to `.1`: work in progress or arriving
    /// then is answered `answer` after the stall ends.
    stopped: Option<(Duration, Duration)>,
    /// Operations starting in `[.0, .1)` are refused with a reset.
    refusing: Option<(Duration, Duration)>,
    /// Operations starting during the warm-up are refused (a cold service).
    cold: bool,
    /// Operations starting at or after this are never answered.
    hangs_from: Option<Duration>,
    /// Operations started, warm-up included.
    calls: Arc<AtomicU64>,
}

impl Service {
    /// A service that answers in 1 ms, for a run paced by `p` that starts now.
    fn new(p: &Pacing) -> Self {
        Service {
            zero: Instant::now() + LEAD + p.schedule.offset(p.schedule.warmup_ops()),
            answer: MS(1),
            stopped: None,
            refusing: None,
            cold: false,
            hangs_from: None,
            calls: Arc::default(),
        }
    }

    fn at(&self, d: Duration) -> Instant {
        self.zero + d
    }
}

impl Operation for Service {
    type Connection = ();

    async fn run(&self, _: Option<&mut ()>) -> OpResult {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let t = start.checked_duration_since(self.zero);
        if self.hangs_from.is_some_and(|h| t.is_some_and(|t| t >= h)) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut done = start + self.answer;
        if let Some((from, to)) = self.stopped {
            if done > self.at(from) && start < self.at(to) {
                done = self.at(to) + self.answer;
            }
        }
        tokio::time::sleep_until(done).await;
        let refused = match t {
            None => self.cold,
            Some(t) => self.refusing.is_some_and(|(a, b)| (a..b).contains(&t)),
        };
        let mut r = OpResult::cancelled(done - start);
        r.outcome = if refused {
            Outcome::Reset
        } else {
            Outcome::Http(200)
        };
        r.confirmation = Some(Confirmation::Ticket);
        r
    }
}

fn pacing(mode: Mode, rate: f64, duration: Duration) -> Pacing {
    Pacing {
        mode,
        connections: 4,
        schedule: Schedule::new(rate, Duration::ZERO, duration),
        max_in_flight: 1000,
        coalesce: Duration::ZERO,
        progress: false,
    }
}

/// Drive `svc` to the end of the schedule.
async fn run(p: &Pacing, svc: Service) -> LoadRun {
    let zero = svc.zero;
    let run = drive(
        p,
        Clock::Runtime,
        svc,
        &Marks::default(),
        std::future::pending(),
    )
    .await;
    assert_eq!(run.started, zero.into_std(), "the test's t=0 is the run's");
    run
}

fn report(run: &LoadRun) -> LoadReport {
    run.report(RunInfo::default())
}

fn lags_us(run: &LoadRun) -> Vec<u32> {
    run.recorder.ops.iter().map(|r| r.lag_us).collect()
}

#[tokio::test(start_paused = true)]
async fn every_scheduled_operation_is_attempted_on_time_in_every_mode() {
    for mode in [Mode::Handshake, Mode::Request, Mode::Keepalive] {
        let p = pacing(mode, 200.0, Duration::from_secs(3));
        let run = run(&p, Service::new(&p)).await;
        let r = report(&run);
        assert_eq!((r.attempted, r.succeeded), (600, 600), "{mode:?}");
        let seqs: Vec<u64> = run.recorder.ops.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (0..600).collect::<Vec<_>>(), "{mode:?}");
        assert!(lags_us(&run).iter().all(|&l| l == 0), "{mode:?}");
        assert_eq!(r.latency_us["request"].count, 600);
        assert_eq!(r.latency_us["request"].max / 1000, 1, "{mode:?}");
        assert!((r.achieved_rate - 200.0).abs() < 0.5, "{}", r.achieved_rate);
    }
}

/// 3 s at 200/s; the service is stopped from 1.5 s to 2 s. Nothing is
/// lost: every operation is answered once the service runs again.
async fn stalled(mode: Mode) -> (LoadRun, LoadReport) {
    let p = pacing(mode, 200.0, Duration::from_secs(3));
    let mut svc = Service::new(&p);
    svc.stopped = Some((MS(1500), MS(2000)));
    let run = run(&p, svc).await;
    let r = report(&run);
    assert_eq!(r.failed + r.dropped, 0, "{:?}", r.outcomes);
    assert_eq!(r.attempted, 600);
    (run, r)
}

#[tokio::test(start_paused = true)]
async fn a_stall_shows_in_the_corrected_tail_but_not_in_service_time_keepalive() {
    let (run, r) = stalled(Mode::Keepalive).await;
    let corrected = r.latency_us["request"].p99;
    let service = r.service_time_us["request"].p99;
    // wrk2's point: the ~100 requests due during the stall waited for it.
    assert!(corrected >= 400_000, "corrected p99 {corrected}µs");
    // Only the 4 requests in flight when the service stopped took long to serve.
    assert!(service < 100_000, "service-time p99 {service}µs");
    assert!(r.service_time_us["request"].max >= 400_000);
    let slow = run
        .recorder
        .ops
        .iter()
        .filter(|o| o.service_us(LoadPhase::Request) >= Some(400_000))
        .count();
    assert_eq!(slow, 4, "one per connection");
    // The queued requests were sent late, and their lag is in the tail.
    assert!(lags_us(&run).iter().any(|&l| l >= 400_000));
}

#[tokio::test(start_paused = true)]
async fn a_stall_shows_in_the_corrected_tail_handshake_mode() {
    let (run, r) = stalled(Mode::Handshake).await;
    let corrected = r.latency_us["request"].p99;
    assert!(corrected >= 400_000, "corrected p99 {corrected}µs");
    // Open loop: every handshake started when due, the stall did not hold
    // one back; the ones due during it waited in the service.
    assert!(lags_us(&run).iter().all(|&l| l == 0));
    let w = run.ops().window(1500, 2000);
    assert_eq!((w.attempted, w.failed), (100, 0));
    assert!(w.p99_us >= 400_000, "{}", w.p99_us);
}

#[tokio::test(start_paused = true)]
async fn operations_over_max_in_flight_are_dropped_and_counted() {
    // 100/s of 95 ms operations want 10 in flight; 5 may be: of every 10,
    // the first 5 start and the next 5 find the cap full.
    let mut p = pacing(Mode::Handshake, 100.0, Duration::from_secs(1));
    p.max_in_flight = 5;
    let mut svc = Service::new(&p);
    svc.answer = MS(95);
    let run = run(&p, svc).await;
    let r = report(&run);
    assert_eq!(
        (r.attempted, r.succeeded, r.dropped, r.failed),
        (100, 50, 50, 0)
    );
    assert_eq!(r.outcomes.get("dropped"), Some(&50));
    let dropped: Vec<u64> = run
        .recorder
        .ops
        .iter()
        .filter(|o| o.dropped())
        .map(|o| o.seq)
        .collect();
    let want: Vec<u64> = (0..100).filter(|k| k % 10 >= 5).collect();
    assert_eq!(dropped, want);
    // Dropped operations are lost: each group of 5 is a failure run.
    let f = run.ops().longest_failure_run().expect("drops are losses");
    assert_eq!(f.ops, 5);
    assert_eq!(r.timeline.iter().map(|b| b.dropped).sum::<u64>(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_keepalive_connection_that_falls_behind_drops_its_oldest_operations() {
    // One connection may owe 2 operations; it needs 25 ms for each 10 ms.
    let mut p = pacing(Mode::Keepalive, 100.0, Duration::from_secs(1));
    (p.connections, p.max_in_flight) = (1, 2);
    let mut svc = Service::new(&p);
    svc.answer = MS(25);
    let run = run(&p, svc).await;
    let r = report(&run);
    assert_eq!(r.attempted, 100);
    assert_eq!(r.failed, 0);
    assert!(r.dropped > 0 && r.succeeded > 0, "{:?}", r.outcomes);
    assert_eq!(r.succeeded + r.dropped, 100);
    // Never more than the cap waits: a sent operation started at most
    // 2 periods plus one answer after it was due.
    assert!(
        lags_us(&run).iter().all(|&l| l <= 45_000),
        "{:?}",
        lags_us(&run)
    );
}

#[tokio::test(start_paused = true)]
async fn warmup_operations_run_but_are_not_counted() {
    let mut p = pacing(Mode::Request, 100.0, Duration::from_secs(1));
    p.schedule = Schedule::new(100.0, MS(500), Duration::from_secs(1));
    let mut svc = Service::new(&p);
    svc.cold = true;
    let calls = svc.calls.clone();
    let run = run(&p, svc).await;
    let r = report(&run);
    assert_eq!(calls.load(Ordering::Relaxed), 150, "warm-up ran");
    assert_eq!((r.attempted, r.succeeded, r.failed), (100, 100, 0));
    assert_eq!(run.recorder.ops.first().map(|o| o.seq), Some(0));
    assert_eq!(r.warmup_s, 0.5);
    assert!(lags_us(&run).iter().all(|&l| l == 0));
}

#[tokio::test(start_paused = true)]
async fn a_stop_cancels_what_still_runs_after_the_grace_and_fails_nothing() {
    for mode in [Mode::Request, Mode::Keepalive] {
        // 100/s; the service stops answering at 800 ms; stop at 1005 ms.
        let p = pacing(mode, 100.0, Duration::from_secs(3));
        let mut svc = Service::new(&p);
        svc.hangs_from = Some(MS(800));
        let zero = svc.zero;
        let stop = tokio::time::sleep_until(zero + MS(1005));
        let run = drive(&p, Clock::Runtime, svc, &Marks::default(), stop).await;
        // Ended by the grace after the stop, not by the hung service.
        assert_eq!(Instant::now() - zero, MS(1005) + super::STOP_GRACE);
        let r = report(&run);
        assert!(r.interrupted);
        // Ops 0..=100 were due by the stop; 80..=100 never got an answer.
        assert_eq!(
            (r.attempted, r.succeeded, r.cancelled, r.failed, r.dropped),
            (101, 80, 21, 0, 0),
            "{mode:?}"
        );
        assert_eq!(r.lost(), 0);
        assert_eq!(r.outcomes.get("cancelled"), Some(&21), "{:?}", r.outcomes);
        assert!(run.ops().longest_failure_run().is_none());
        assert!(run.recorder.ops[80..].iter().all(|o| !o.lost() && !o.ok()));
        // Cancelled operations measured our patience, not the service.
        assert_eq!(r.latency_us["request"].count, 80);
    }
}

#[tokio::test(start_paused = true)]
async fn a_rotation_window_counts_the_operations_due_in_it() {
    // A rotation at 1 s that the service takes 200 ms to get right.
    let p = pacing(Mode::Request, 100.0, Duration::from_secs(3));
    let mut svc = Service::new(&p);
    svc.refusing = Some((MS(1000), MS(1200)));
    let marks = Marks::default();
    marks.mark_at(
        (svc.zero + MS(1000)).into_std(),
        RotationKind::Client,
        Some("02".into()),
    );
    let run = drive(&p, Clock::Runtime, svc, &marks, std::future::pending()).await;
    let ops = run.ops();
    assert_eq!(
        ops.longest_failure_run(),
        Some(FailureRun {
            ops: 20,
            from_ms: 1000,
            to_ms: 1190,
            duration_ms: 200
        })
    );
    let w = ops.window(900, 1400);
    assert_eq!((w.attempted, w.failed, w.dropped), (50, 20, 0));
    assert_eq!(w.outcomes.get("reset"), Some(&20));
    assert_eq!(w.outcomes.len(), 1, "{:?}", w.outcomes);
    assert_eq!(w.p99_us / 1000, 1);
    let before = ops.window(0, 1000);
    assert_eq!((before.attempted, before.failed), (100, 0));
    let r = report(&run);
    assert_eq!(r.rotations.len(), 1);
    assert_eq!(r.rotations[0].t_ms, 1000);
    assert_eq!(r.downtime.lost, 20);
    let failed: Vec<(u64, u64)> = r
        .timeline
        .iter()
        .filter(|b| b.failed > 0)
        .map(|b| (b.t_ms, b.failed))
        .collect();
    assert_eq!(failed, [(1000, 10), (1100, 10)]);
    assert!(run.recorder.ops.iter().all(|o: &OpRecord| o.lag_us == 0));
}

#[test]
fn keepalive_threads_follow_the_rate_up_to_the_cores_and_connections() {
    assert_eq!(keepalive_threads(5_000.0, 2, 4), 1);
    assert_eq!(keepalive_threads(60_000.0, 2, 4), 1);
    assert_eq!(keepalive_threads(50_000.0, 2, 4), 1);
    assert_eq!(keepalive_threads(70_000.0, 2, 4), 2);
    assert_eq!(keepalive_threads(500_000.0, 8, 4), 4);
    assert_eq!(keepalive_threads(500_000.0, 2, 32), 2);
    assert_eq!(keepalive_threads(0.5, 2, 1), 1);
}

#[test]
fn a_coalesced_wake_is_the_end_of_its_window_never_before_the_due_time() {
    let t0 = Instant::now();
    let us = Duration::from_micros;
    // No window: each at its own time.
    assert_eq!(
        super::coalesced(t0 + us(123), t0, Duration::ZERO),
        t0 + us(123)
    );
    for (due, end) in [
        (0, 0),
        (1, 500),
        (499, 500),
        (500, 500),
        (501, 1000),
        (1234, 1500),
    ] {
        assert_eq!(
            super::coalesced(t0 + us(due), t0, us(500)),
            t0 + us(end),
            "due {due} µs"
        );
    }
    // Before the run's start (never in a run): at once.
    assert_eq!(super::coalesced(t0, t0 + us(10), us(500)), t0);
}

#[tokio::test(start_paused = true)]
async fn coalesced_keepalive_operations_start_together_late_and_that_lateness_is_in_their_latency()
{
    // 200/s on 4 connections: one due every 5 ms; windows of 20 ms.
    let mut p = pacing(Mode::Keepalive, 200.0, Duration::from_secs(2));
    p.coalesce = MS(20);
    let run = run(&p, Service::new(&p)).await;
    let r = report(&run);
    assert_eq!((r.attempted, r.succeeded, r.dropped), (400, 400, 0));
    let lags = lags_us(&run);
    // Each starts at the end of its window: 15, 10, 5 and 0 ms late.
    assert!(lags.iter().all(|&l| l <= 20_000), "{lags:?}");
    let mut seen: Vec<u32> = lags.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0, 5_000, 10_000, 15_000]);
    // And the lag is in the corrected latency, not only in the record.
    let corrected = r.latency_us["request"].p99;
    assert!(corrected >= 16_000, "corrected p99 {corrected}µs");
    // The service itself took its 1 ms each.
    assert!(r.service_time_us["request"].max < 2_000);
}

#[test]
fn responses_are_read_lazily_only_when_a_connection_waits_long_between_requests() {
    assert!(lazy_reads(5_000.0, 4), "800 µs apart");
    assert!(lazy_reads(10_000.0, 4), "400 µs apart");
    assert!(!lazy_reads(20_000.0, 4), "200 µs apart");
    assert!(!lazy_reads(50_000.0, 4), "80 µs apart");
    assert!(lazy_reads(50_000.0, 64), "1.28 ms apart");
    assert!(lazy_reads(0.5, 1));
}
