//! Metrics: handshake and connection latency histograms, verdict counters and
//! the failure/rotation timeline, with JSON (`json.rs`), Prometheus
//! (`prometheus.rs`) and text (`summary.rs`) views of a snapshot.
//!
//! ```text
//!  connection task ──builds a ConnReport locally──▶ Metrics::record ──try_send──┐
//!  rotation source ──Metrics::rotation / rotation_failure ───────────try_send──┤
//!                                                                              ▼
//!                                      one aggregator task (owns every histogram,
//!                                      counter and the timeline: single owner, no lock)
//!                                                                              │
//!  /stats, /metrics, /timeline, final report ◀── Metrics::snapshot ◀─ oneshot ─┘
//! ```
//!
//! Owns: the metric vocabulary ([`Phase`] names, `certshift_*` families, JSON
//! shapes) and the aggregation. Never does: block or await on the connection
//! path (`record` is a `try_send`), hold a lock, or keep unbounded state (the
//! queue, the timeline and the event lists all have documented caps).
//!
//! Histograms are HdrHistograms in microseconds with 3 significant digits.
//! Times in exports are milliseconds since the `Metrics` start (`t_ms`);
//! `started_unix_ms` in the JSON anchors them to wall-clock time.
//!
//! `serve` keeps no aggregator: its atomics, read at scrape time into a
//! [`ServiceMetrics`] (`service.rs`), are exposed in the same listener and
//! rotation families.

pub mod cpu;
pub mod hdrlog;
mod hist;
mod json;
mod prometheus;
mod service;
mod snapshot;
mod summary;
mod timeline;
mod units;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::accept::ConnStats;
use crate::pki::Expect;
use crate::tls::Outcome;

pub use hist::{Percentiles, PhaseHist, HIGHEST_TRACKABLE_US};
pub use prometheus::PROMETHEUS_CONTENT_TYPE;
pub use service::ServiceMetrics;
pub use snapshot::{add_counts, Snapshot, Totals, VariantStats};
pub use timeline::{BUCKET_MS, MAX_BUCKETS, MAX_ROTATION_EVENTS};
pub use units::{fmt_ms, fmt_us};

/// Reports (and, separately, other events) the aggregator can have queued
/// before `record` starts dropping
/// (and counting) them: at 10,000 connections/s the aggregator would have to
/// stall for 6.5 s to fill it. About 200 bytes per queued report.
pub const QUEUE_CAPACITY: usize = 65_536;

/// A timed phase of a proxied connection. Names are a contract (JSON keys,
/// table rows); never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// TLS handshake with the client, on the listener side.
    DownstreamHandshake,
    /// TCP connect to the service.
    UpstreamConnect,
    /// TLS handshake with the service, presenting the chosen certificate.
    UpstreamHandshake,
    /// From the start of the upstream connection to its first byte received.
    FirstByte,
    /// The whole connection, accept to close.
    Lifetime,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 5] = [
        Phase::DownstreamHandshake,
        Phase::UpstreamConnect,
        Phase::UpstreamHandshake,
        Phase::FirstByte,
        Phase::Lifetime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::DownstreamHandshake => "downstream_handshake",
            Phase::UpstreamConnect => "upstream_connect",
            Phase::UpstreamHandshake => "upstream_handshake",
            Phase::FirstByte => "first_byte",
            Phase::Lifetime => "lifetime",
        }
    }
}

/// How long each phase took; `None` for a phase that never ran (no
/// downstream TLS in load mode, no first byte after a rejected handshake).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases([Option<Duration>; Phase::ALL.len()]);

impl Phases {
    pub fn set(&mut self, phase: Phase, d: Duration) {
        self.0[phase as usize] = Some(d);
    }

    /// Builder form of [`Phases::set`].
    pub fn with(mut self, phase: Phase, d: Duration) -> Self {
        self.set(phase, d);
        self
    }

    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.0[phase as usize]
    }
}

/// Everything one connection contributes, built locally by its task and
/// handed over once, when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnReport {
    /// When the connection started; places it on the timeline.
    pub at: Instant,
    /// The presented credential's name: "valid", "none", "expired", ...
    pub variant: String,
    /// The verdict a correctly configured service must give.
    pub expect: Expect,
    pub outcome: Outcome,
    /// Every HTTP response served to the client, by status: one per
    /// request in `--swap request`, each response of a kept-alive
    /// connection in `connection` mode (kept even when the outcome is a
    /// later failure, a reset mid-body or a cancel).
    pub responses: Statuses,
    pub phases: Phases,
}

/// Responses by status, in the order each status was first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statuses(Vec<(u16, u64)>);

impl Statuses {
    pub fn one(status: u16) -> Self {
        Statuses(vec![(status, 1)])
    }

    pub fn add(&mut self, status: u16) {
        match self.0.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.0.push((status, 1)),
        }
    }

    /// The status of the first response.
    pub fn first(&self) -> Option<u16> {
        self.0.first().map(|&(s, _)| s)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&(_, n)| n).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0.iter().copied()
    }
}

/// The proxy's relay counts what its response framer sees.
impl crate::net::framing::Served for Statuses {
    fn served(&mut self, status: u16) {
        self.add(status);
    }
}

/// A cheap handle to the aggregator: clone it into every task.
///
/// The aggregator stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Connection reports, the hot path: pushed lock-free, drained by the
    /// aggregator on its tick and before every snapshot. A channel would
    /// wake the aggregator's task (often on another thread) per report.
    reports: Arc<Reports>,
    /// Everything else (rotations, plan changes, snapshot requests): rare.
    tx: mpsc::Sender<Event>,
    /// Events refused because the queue was full. An atomic, not a lock, and
    /// touched only when something is already wrong.
    dropped: Arc<AtomicU64>,
    /// The listener whose gauges snapshots carry: its own atomics, read
    /// when a snapshot is taken, never sent through the aggregator.
    listener: Arc<OnceLock<Arc<ConnStats>>>,
}

impl Metrics {
    /// Starts the aggregator; times are measured from now.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn start() -> Metrics {
        Self::start_at(Instant::now())
    }

    /// Starts the aggregator with an explicit time origin, so tests can place
    /// events on the timeline exactly.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn start_at(start: Instant) -> Metrics {
        Self::spawn(start, QUEUE_CAPACITY)
    }

    /// Hands a finished connection's report to the aggregator. Never blocks:
    /// a bounded queue with `try_send`, because DESIGN.md wants every queue
    /// bounded and a stalled aggregator must not grow memory without limit.
    /// A report that does not fit is dropped and counted (`dropped_events` in
    /// `/stats`, `certshift_metrics_dropped_events_total`), so a report with
    /// missing data says so instead of looking clean.
    pub fn record(&self, report: ConnReport) {
        if !self.reports.push(report) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A credential of `kind` ("client", "server", "trust-bundle") was
    /// published; `serial` is the new leaf's serial number, if it has one.
    pub fn rotation(&self, at: Instant, kind: &str, serial: Option<String>) {
        self.send(Event::Rotation {
            at,
            kind: kind.to_string(),
            serial,
        });
    }

    /// A new credential of `kind` was refused; the old one stays in service.
    pub fn rotation_failure(&self, at: Instant, kind: &str, error: String) {
        self.send(Event::RotationFailure {
            at,
            kind: kind.to_string(),
            error,
        });
    }

    /// The proxy's plan changed (`PUT /plan`, a `--plan-schedule` phase);
    /// `plan` is the new plan's description. A timeline event of kind
    /// `plan`, so a report shows which plan was presenting when.
    pub fn plan_change(&self, at: Instant, plan: String) {
        self.send(Event::PlanChange { at, plan });
    }

    /// Everything recorded before this call, from any handle: the request
    /// queues behind those events on the same FIFO channel.
    ///
    /// Request/reply rather than the aggregator publishing an `Arc<Snapshot>`
    /// after each change: snapshots are rare (a scrape every few seconds, one
    /// final report), so copying the histograms per request is cheap while
    /// copying them per event would not be; and a published value could lag
    /// behind events already queued, which would break the guarantee above.
    pub async fn snapshot(&self) -> Result<Snapshot, MetricsError> {
        let (reply, answer) = oneshot::channel();
        // `send`, not `try_send`: a snapshot request may wait for room, it
        // is never on the connection path.
        self.tx
            .send(Event::Snapshot(reply))
            .await
            .map_err(|_| MetricsError::Stopped)?;
        let mut snap = answer.await.map_err(|_| MetricsError::Stopped)?;
        snap.listener = self.listener.get().map(|l| l.counts());
        Ok(snap)
    }

    /// Show `stats` (a listener's gauges and close counters) in every
    /// snapshot: `/stats`' `listener`, the `certshift_listener_*` families.
    /// The first listener attached stays.
    pub fn attach_listener(&self, stats: Arc<ConnStats>) {
        let _ = self.listener.set(stats);
    }

    fn spawn(start: Instant, capacity: usize) -> Metrics {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let reports = Arc::new(Reports::new(capacity));
        let state = Snapshot::new(start, unix_ms_at(start));
        tokio::spawn(aggregate(
            rx,
            Arc::clone(&reports),
            state,
            Arc::clone(&dropped),
        ));
        Metrics {
            reports,
            tx,
            dropped,
            listener: Arc::default(),
        }
    }

    fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            // Full, or the aggregator is gone (runtime shutting down): either
            // way the event is lost, and the count is the honest record of it.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The aggregator is gone, so there is nothing to snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("the metrics aggregator has stopped (runtime shutting down or a bug in certshift); no statistics are available")]
    Stopped,
}

/// The bounded, lock-free queue of connection reports.
#[derive(Debug)]
struct Reports {
    queue: SegQueue<ConnReport>,
    /// Reports queued and not yet drained; bounds the queue.
    len: AtomicUsize,
    capacity: usize,
    /// Set while the aggregator has stopped ticking because a drain found
    /// the queue empty: an idle proxy then sleeps until something happens
    /// instead of waking 50 times a second (about 150 syscalls a second,
    /// 0.5% of a core). The push that finds it set clears it and wakes the
    /// aggregator once; while reports flow it stays clear, so a push only
    /// reads it, a cache line no one writes.
    parked: AtomicBool,
    wake: Notify,
}

impl Reports {
    fn new(capacity: usize) -> Reports {
        Reports {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity,
            parked: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// `false` when the queue is full (the report is dropped).
    fn push(&self, report: ConnReport) -> bool {
        // SeqCst here and in `park`: either this count is seen by `park`'s
        // check, or this push sees `parked` set; no report is left asleep.
        if self.len.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.queue.push(report);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            // A stored permit if the aggregator is not waiting yet.
            self.wake.notify_one();
        }
        true
    }

    /// How many reports it moved into `state`.
    fn drain_into(&self, state: &mut Snapshot) -> usize {
        let mut n = 0;
        while let Some(report) = self.queue.pop() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            state.record_conn(report);
            n += 1;
        }
        n
    }

    /// Marks the aggregator parked unless a report is on its way in; `true`
    /// when parked (wait for `wake`), `false` to keep ticking.
    fn park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.len.load(Ordering::SeqCst) == 0 {
            return true;
        }
        // A push between the drain and the store: keep ticking. If that
        // push already took the flag, its permit costs one spare wake-up.
        self.parked.store(false, Ordering::SeqCst);
        false
    }
}

/// How often the aggregator drains connection reports while they arrive and
/// nothing asks for a snapshot (with none queued it parks until the next):
/// not what a `/stats` scrape can lag by, since a snapshot drains first
/// anyway; only a live view's freshness depends on it.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

enum Event {
    Rotation {
        at: Instant,
        kind: String,
        serial: Option<String>,
    },
    RotationFailure {
        at: Instant,
        kind: String,
        error: String,
    },
    PlanChange {
        at: Instant,
        plan: String,
    },
    Snapshot(oneshot::Sender<Snapshot>),
}

/// The single owner of all metric state. Runs until every handle is dropped.
async fn aggregate(
    mut rx: mpsc::Receiver<Event>,
    reports: Arc<Reports>,
    mut state: Snapshot,
    dropped: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut parked = false;
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            _ = tick.tick(), if !parked => {
                parked = reports.drain_into(&mut state) == 0 && reports.park();
                continue;
            }
            () = reports.wake.notified(), if parked => {
                parked = false;
                // The first drain one interval after the report that woke
                // us, with whatever followed it.
                tick.reset();
                continue;
            }
        };
        // Reports recorded before this event are in the queue: take them
        // first, so a snapshot holds everything recorded before it was asked.
        reports.drain_into(&mut state);
        let Some(event) = event else { break };
        match event {
            Event::Rotation { at, kind, serial } => state.record_rotation(at, &kind, serial),
            Event::RotationFailure { at, kind, error } => {
                state.record_rotation_failure(at, &kind, error)
            }
            Event::PlanChange { at, plan } => state.record_plan_change(at, plan),
            Event::Snapshot(reply) => {
                let mut snap = state.clone();
                snap.set_taken(Instant::now(), dropped.load(Ordering::Relaxed));
                // The requester may have given up (e.g. an HTTP client went
                // away); nothing to do then.
                let _ = reply.send(snap);
            }
        }
    }
}

/// The wall-clock time of `start`, for anchoring relative times in exports.
fn unix_ms_at(start: Instant) -> u64 {
    let now = SystemTime::now() - Instant::now().saturating_duration_since(start);
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(start: Instant, variant: &str, expect: Expect, outcome: Outcome) -> ConnReport {
        ConnReport {
            at: start,
            variant: variant.to_string(),
            expect,
            outcome,
            responses: Statuses::default(),
            phases: Phases::default().with(Phase::UpstreamHandshake, Duration::from_millis(2)),
        }
    }

    #[test]
    fn phase_names_are_the_contract() {
        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "downstream_handshake",
                "upstream_connect",
                "upstream_handshake",
                "first_byte",
                "lifetime"
            ]
        );
        let p = Phases::default().with(Phase::FirstByte, Duration::from_millis(7));
        assert_eq!(p.get(Phase::FirstByte), Some(Duration::from_millis(7)));
        assert_eq!(p.get(Phase::Lifetime), None);
    }

    #[test]
    fn handle_can_be_shared_across_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Metrics>();
    }

    #[tokio::test]
    async fn snapshot_sees_every_report_recorded_before_it() {
        let start = Instant::now();
        let m = Metrics::start_at(start);
        for _ in 0..1000 {
            m.record(report(start, "valid", Expect::Accept, Outcome::Http(200)));
        }
        let s = m.snapshot().await.unwrap();
        assert_eq!(s.totals().connections, 1000);
        assert_eq!(s.phase(Phase::UpstreamHandshake).count(), 1000);
        assert_eq!(s.totals().dropped_events, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_from_many_tasks_are_all_counted() {
        let start = Instant::now();
        let m = Metrics::start_at(start);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move {
                    for _ in 0..250 {
                        m.record(report(start, "expired", Expect::Reject, Outcome::Reset));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = m.snapshot().await.unwrap();
        assert_eq!(s.totals().connections, 2000);
        assert_eq!(s.variant("expired").unwrap().outcomes["reset"], 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_aggregator_parks_and_the_next_report_wakes_it() {
        let start = Instant::now();
        let m = Metrics::start_at(start);
        // Nothing recorded: the first drain finds the queue empty and the
        // aggregator stops ticking.
        tokio::time::sleep(DRAIN_EVERY * 3).await;
        assert!(
            m.reports.parked.load(Ordering::SeqCst),
            "idle aggregator still ticking"
        );
        m.record(report(start, "valid", Expect::Accept, Outcome::Http(200)));
        assert!(
            !m.reports.parked.load(Ordering::SeqCst),
            "the report did not wake it"
        );
        // Drained on the aggregator's own tick, no snapshot asked for.
        tokio::time::sleep(DRAIN_EVERY * 2).await;
        assert_eq!(m.reports.len.load(Ordering::SeqCst), 0);
        tokio::time::sleep(DRAIN_EVERY * 3).await;
        assert!(
            m.reports.parked.load(Ordering::SeqCst),
            "did not park again"
        );
        let s = m.snapshot().await.unwrap();
        assert_eq!(s.totals().connections, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_racing_the_aggregator_parking_are_never_left_queued() {
        let start = Instant::now();
        let m = Metrics::start_at(start);
        let tasks: Vec<_> = (0..2u64)
            .map(|t| {
                let m = m.clone();
                tokio::spawn(async move {
                    for i in 0..60u64 {
                        m.record(report(start, "valid", Expect::Accept, Outcome::Http(200)));
                        // Pauses around the drain interval (20 ms), so
                        // pushes land while the aggregator drains, parks
                        // and wakes.
                        let us = 10_000 + (t * 7919 + i * 104_729) % 30_000;
                        tokio::time::sleep(Duration::from_micros(us)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // No snapshot (it would drain): the aggregator's own drains must
        // empty the queue, or a report sits unseen while the proxy idles.
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.reports.len.load(Ordering::SeqCst) != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            m.reports.len.load(Ordering::SeqCst),
            0,
            "reports left queued"
        );
        assert_eq!(m.snapshot().await.unwrap().totals().connections, 120);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let start = Instant::now();
        // Current-thread runtime: the aggregator cannot run until we await,
        // so exactly `capacity` events fit.
        // Reports and the rarer events each have a queue of `capacity`.
        let m = Metrics::spawn(start, 2);
        for _ in 0..5 {
            m.record(report(start, "valid", Expect::Accept, Outcome::Ok));
        }
        for _ in 0..3 {
            m.rotation(start, "client", None);
        }
        let s = m.snapshot().await.unwrap();
        assert_eq!(s.totals().connections, 2);
        assert_eq!(s.totals().dropped_events, 3 + 1);
        assert_eq!(s.to_stats_json()["dropped_events"], 4);
    }

    #[tokio::test]
    async fn plan_changes_reach_the_timeline_and_the_summary_and_survive_a_merge() {
        let start = Instant::now();
        let m = Metrics::start_at(start);
        m.plan_change(start + Duration::from_millis(300), "always expired".into());
        m.plan_change(start + Duration::from_millis(900), "always valid".into());
        let s = m.snapshot().await.unwrap();
        let tl = s.timeline_json();
        assert_eq!(
            tl["plans"],
            serde_json::json!([
                {"t_ms": 300, "kind": "plan", "plan": "always expired"},
                {"t_ms": 900, "kind": "plan", "plan": "always valid"},
            ])
        );
        // A plan change is not a credential rotation.
        assert_eq!(tl["rotations"], serde_json::json!([]));
        assert!(s
            .summary_table()
            .contains("plan change at +0.300 s: always expired"));
        let mut merged = s.clone();
        merged.merge(&s);
        assert_eq!(
            merged.timeline_json()["plans"].as_array().map(Vec::len),
            Some(4)
        );
    }

    #[tokio::test]
    async fn rotations_reach_stats_and_timeline_through_the_channel() {
        let start = Instant::now();
        let m = Metrics::start_at(start);
        m.rotation(
            start + Duration::from_millis(1_234),
            "server",
            Some("2a".into()),
        );
        m.rotation_failure(
            start + Duration::from_millis(2_000),
            "client",
            "key does not match".into(),
        );
        let s = m.snapshot().await.unwrap();
        let stats = s.to_stats_json();
        assert_eq!(stats["rotations"]["server"], 1);
        assert_eq!(stats["rotation_failures"]["client"], 1);
        assert_eq!(stats["last_rotation"]["serial"], "2a");
        assert_eq!(stats["last_rotation_error"]["error"], "key does not match");
        let tl = s.timeline_json();
        assert_eq!(tl["rotations"][0]["t_ms"], 1_234);
        assert_eq!(tl["rotation_failures"][0]["t_ms"], 2_000);
    }
}
