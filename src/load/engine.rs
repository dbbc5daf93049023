//! The open-loop engine: workers that start each operation at its intended
//! time, whatever the service is doing, and record its latency from that
//! time (coordinated omission corrected, as wrk2 does).
//!
//! ```text
//!  Schedule (op k due at k/rate) ──▶ clock thread (precise sleeps) hands out op k when due:
//!     handshake/request: op k runs as its own task ─▶ result ─▶ recorder k mod W
//!     keepalive: op k queues on connection k mod N; ops run in order, so a
//!                late response delays the next send, and that delay is in
//!                the next operation's corrected latency
//!  recorders ──at the end──▶ Recorder::merge ──▶ LoadRun
//!  workers ──atomics──▶ progress line (counts, last-second p99)
//! ```
//!
//! Never: skips an operation silently (over `--max-in-flight` it is counted
//! as dropped), waits for a response before scheduling the next operation,
//! or shares a histogram between workers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::op::{self, KeepAlive, OpResult, Target};
use super::record::{Recorder, MAX_OP_LOG};
use super::schedule::Schedule;
use super::Mode;
use crate::creds::{RotationKind, RotationLog};
use crate::metrics::PhaseHist;

/// After a stop request, how long in-flight operations get to finish before
/// they are cancelled.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a run does, validated.
#[derive(Clone)]
pub struct LoadConfig {
    pub target: Target,
    pub mode: Mode,
    /// Keep-alive connections (`--mode keepalive`).
    pub connections: usize,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub max_in_flight: usize,
    /// Bound on each operation, all phases together.
    pub timeout: Duration,
    /// Draw the live progress line (on a terminal only).
    pub progress: bool,
}

impl LoadConfig {
    /// Defaults as the command line has them, for in-process runs.
    pub fn new(target: Target, mode: Mode, rate: f64, duration: Duration) -> Self {
        LoadConfig {
            target,
            mode,
            connections: 4,
            rate,
            duration,
            warmup: Duration::ZERO,
            max_in_flight: 1000,
            timeout: Duration::from_secs(10),
            progress: false,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule::new(self.rate, self.warmup, self.duration)
    }
}

/// A rotation (or any event) to mark on the run's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at: std::time::Instant,
    pub kind: String,
    pub serial: Option<String>,
}

/// Where rotation sources post their events during a run. Rare events, so
/// a plain mutex is fine here; it is never touched per operation.
#[derive(Debug, Clone, Default)]
pub struct Marks(Arc<Mutex<Vec<Mark>>>);

impl Marks {
    pub fn mark(&self, kind: RotationKind, serial: Option<String>) {
        self.mark_at(std::time::Instant::now(), kind, serial);
    }

    pub fn mark_at(&self, at: std::time::Instant, kind: RotationKind, serial: Option<String>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(Mark {
                at,
                kind: kind.name().to_string(),
                serial,
            });
        }
    }

    pub fn all(&self) -> Vec<Mark> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A run's timeline: every publication of the rotating credential. A
/// refused reload is logged and counted by the publisher; the run's
/// timeline shows what the service was presented.
impl RotationLog for Marks {
    fn published(&self, kind: RotationKind, serial: Option<&str>) {
        self.mark(kind, serial.map(str::to_string));
    }

    fn refused(&self, _: RotationKind, _: &str) {}
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub recorder: Recorder,
    pub schedule: Schedule,
    /// End of the warm-up: `t_ms` 0 of every timeline.
    pub started: std::time::Instant,
    pub started_wall: SystemTime,
    pub marks: Vec<Mark>,
    /// Stopped early by the shutdown future.
    pub interrupted: bool,
}

impl LoadRun {
    /// Milliseconds from the measurement start; `None` before it.
    pub fn t_ms(&self, at: std::time::Instant) -> Option<u64> {
        at.checked_duration_since(self.started)
            .map(|d| d.as_millis() as u64)
    }
}

/// Counters the workers bump and the progress line reads.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Each worker's p99 over its last second, in µs.
    p99_us: Vec<AtomicU64>,
}

struct Shared {
    cfg: LoadConfig,
    target: Arc<Target>,
    schedule: Schedule,
    /// When operation 0 is due (the warm-up's start).
    t0: Instant,
    /// When the first measured operation is due.
    measured_from: Instant,
    in_flight: AtomicUsize,
    live: Live,
    op_cap: usize,
    /// Set on shutdown: the clock hands out no more operations.
    stop: AtomicBool,
    /// Set after the stop grace: operations still running are cancelled.
    abort: watch::Sender<bool>,
}

/// Run the load until the schedule is done or `shutdown` resolves.
pub async fn run(cfg: &LoadConfig, marks: &Marks, shutdown: impl Future<Output = ()>) -> LoadRun {
    let schedule = cfg.schedule();
    let workers = match cfg.mode {
        Mode::Keepalive => cfg.connections.max(1),
        // One recorder per core: operations finish on every core, and no
        // recorder becomes the bottleneck.
        _ => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    // A short lead so every worker is waiting before operation 0 is due.
    let t0 = Instant::now() + Duration::from_millis(20);
    let measured_from = t0 + schedule.offset(schedule.warmup_ops());
    let started = measured_from.into_std();
    let started_wall = SystemTime::now() + measured_from.saturating_duration_since(Instant::now());
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        target: Arc::new(cfg.target.clone()),
        schedule,
        t0,
        measured_from,
        in_flight: AtomicUsize::new(0),
        live: Live {
            p99_us: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ..Live::default()
        },
        op_cap: MAX_OP_LOG / workers,
        stop: AtomicBool::new(false),
        abort: watch::channel(false).0,
    });
    let mut tasks = JoinSet::new();
    let runtime = tokio::runtime::Handle::current();
    let clock = match cfg.mode {
        Mode::Keepalive => {
            let mut queues = Vec::with_capacity(workers);
            for c in 0..workers {
                let (tx, rx) = mpsc::unbounded_channel();
                queues.push(tx);
                tasks.spawn(keepalive_worker(shared.clone(), c, rx));
            }
            let sh = shared.clone();
            spawn_clock(shared.clone(), move |k| {
                let _ = queues[(k % sh.cfg.connections.max(1) as u64) as usize].send(k);
            })
        }
        _ => {
            let mut results = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = mpsc::unbounded_channel();
                results.push(tx);
                tasks.spawn(recorder_worker(shared.clone(), w, rx));
            }
            let sh = shared.clone();
            spawn_clock(shared.clone(), move |k| {
                let tx = &results[(k % results.len() as u64) as usize];
                launch(&sh, &runtime, tx, k);
            })
        }
    };
    let progress = cfg
        .progress
        .then(|| super::progress::spawn(shared.clone_progress()));
    let mut interrupted = false;
    let mut merged = Recorder::new(MAX_OP_LOG);
    tokio::pin!(shutdown);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(r)) => merged.merge(r),
                Some(Err(e)) => tracing::error!(error = %e, "load worker failed"),
                None => break,
            },
            () = &mut shutdown, if !interrupted => {
                interrupted = true;
                shared.stop.store(true, Ordering::Relaxed);
                grace.as_mut().reset(Instant::now() + STOP_GRACE);
            }
            () = &mut grace, if interrupted => {
                // Whatever still runs is ours to end, not the service's failure.
                let _ = shared.abort.send(true);
                grace.as_mut().reset(Instant::now() + Duration::from_secs(3600));
            }
        }
    }
    merged.sort_ops();
    let _ = clock.join();
    if let Some(p) = progress {
        p.finish().await;
    }
    LoadRun {
        recorder: merged,
        schedule,
        started,
        started_wall,
        marks: marks.all(),
        interrupted,
    }
}

/// The clock: a thread of its own that hands out each operation at its due
/// time. The runtime's timer ticks in whole milliseconds, which would start
/// most operations up to a millisecond late and put that lateness into every
/// corrected latency; a thread sleep is accurate to tens of microseconds.
fn spawn_clock(
    sh: Arc<Shared>,
    mut dispatch: impl FnMut(u64) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("certshift-clock".into())
        .spawn(move || {
            let t0 = sh.t0.into_std();
            for k in 0..sh.schedule.total_ops() {
                let due = t0 + sh.schedule.offset(k);
                loop {
                    if sh.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now = std::time::Instant::now();
                    if now >= due {
                        break;
                    }
                    // Short naps, so a stop request is seen promptly.
                    std::thread::sleep((due - now).min(Duration::from_millis(50)));
                }
                dispatch(k);
            }
        })
        .unwrap_or_else(|e| {
            // Without a thread of our own, the load cannot be timed; say so
            // and run nothing rather than run it badly.
            tracing::error!(error = %e, "cannot start the load clock thread");
            std::thread::spawn(|| {})
        })
}

impl Shared {
    fn clone_progress(self: &Arc<Self>) -> super::progress::Source {
        let sh = self.clone();
        let total = self.schedule.measured_ops();
        super::progress::Source {
            total,
            measured_from: self.measured_from,
            read: Box::new(move || {
                let l = &sh.live;
                super::progress::Reading {
                    ok: l.ok.load(Ordering::Relaxed),
                    failed: l.failed.load(Ordering::Relaxed),
                    dropped: l.dropped.load(Ordering::Relaxed),
                    p99_us: l
                        .p99_us
                        .iter()
                        .map(|a| a.load(Ordering::Relaxed))
                        .max()
                        .unwrap_or(0),
                }
            }),
        }
    }

    fn due(&self, k: u64) -> Instant {
        self.t0 + self.schedule.offset(k)
    }

    /// The operation, unless the run is aborted first.
    async fn op_or_abort(&self, ka: Option<&mut KeepAlive>) -> OpResult {
        let start = Instant::now();
        let mut abort = self.abort.subscribe();
        tokio::select! {
            r = self.op(ka) => r,
            _ = abort.wait_for(|a| *a) => OpResult::cancelled(start.elapsed()),
        }
    }

    async fn op(&self, ka: Option<&mut KeepAlive>) -> OpResult {
        let (t, budget) = (&*self.target, self.cfg.timeout);
        match (self.cfg.mode, ka) {
            (Mode::Handshake, _) => op::handshake(t, budget).await,
            (Mode::Keepalive, Some(ka)) => ka.request(t, budget).await,
            _ => op::request(t, budget).await,
        }
    }
}

/// Per-worker recording: the recorder plus the live last-second p99.
struct WorkerRec {
    rec: Recorder,
    recent: PhaseHist,
    recent_since: Instant,
    w: usize,
}

impl WorkerRec {
    fn new(sh: &Shared, w: usize) -> Self {
        WorkerRec {
            rec: Recorder::new(sh.op_cap),
            recent: PhaseHist::new(),
            recent_since: Instant::now(),
            w,
        }
    }

    fn done(&mut self, sh: &Shared, k: u64, intended: Instant, actual: Instant, r: &OpResult) {
        let Some(seq) = sh.schedule.measured(k) else {
            return;
        };
        let lag = actual.saturating_duration_since(intended);
        let start = actual.saturating_duration_since(sh.measured_from);
        self.rec.record(seq, lag, start, r);
        let counter = if r.succeeded() {
            &sh.live.ok
        } else {
            &sh.live.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if sh.cfg.progress {
            self.recent.record(lag + r.end);
            if self.recent_since.elapsed() >= Duration::from_secs(1) {
                sh.live.p99_us[self.w].store(self.recent.percentiles().p99, Ordering::Relaxed);
                self.recent.clear();
                self.recent_since = Instant::now();
            }
        }
    }

    fn dropped(&mut self, sh: &Shared, k: u64) {
        if let Some(seq) = sh.schedule.measured(k) {
            self.rec.record_dropped(seq);
            sh.live.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A finished operation, or one dropped over `--max-in-flight`.
enum Msg {
    Done(u64, Instant, Instant, OpResult),
    Dropped(u64),
}

/// `handshake` and `request` modes: each operation is its own task, started
/// by the clock at its due time; a recorder only records.
async fn recorder_worker(
    sh: Arc<Shared>,
    w: usize,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> Recorder {
    let mut rec = WorkerRec::new(&sh, w);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Done(k, intended, actual, r) => rec.done(&sh, k, intended, actual, &r),
            Msg::Dropped(k) => rec.dropped(&sh, k),
        }
    }
    rec.rec
}

/// Start operation `k` now (it is due), unless too many are in flight.
fn launch(
    sh: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    tx: &mpsc::UnboundedSender<Msg>,
    k: u64,
) {
    if sh.in_flight.fetch_add(1, Ordering::Relaxed) >= sh.cfg.max_in_flight {
        sh.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = tx.send(Msg::Dropped(k));
        return;
    }
    let intended = sh.due(k);
    let (sh, tx) = (sh.clone(), tx.clone());
    runtime.spawn(async move {
        let actual = Instant::now();
        let r = sh.op_or_abort(None).await;
        sh.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = tx.send(Msg::Done(k, intended, actual, r));
    });
}

/// `keepalive` mode: one persistent connection, its operations in order. A
/// response that comes late delays the next send; the next operation's
/// latency still runs from its own intended start.
async fn keepalive_worker(
    sh: Arc<Shared>,
    c: usize,
    mut due: mpsc::UnboundedReceiver<u64>,
) -> Recorder {
    let mut rec = WorkerRec::new(&sh, c);
    let mut ka = KeepAlive::default();
    // Operations this connection may owe at once: its share of the cap.
    let cap = (sh.cfg.max_in_flight / sh.cfg.connections.max(1)).max(1);
    while let Some(mut k) = due.recv().await {
        // After a stall more operations are due than the connection may
        // owe: the oldest are dropped, and counted.
        while due.len() >= cap {
            rec.dropped(&sh, k);
            match due.try_recv() {
                Ok(next) => k = next,
                Err(_) => break,
            }
        }
        let intended = sh.due(k);
        let actual = Instant::now();
        let r = sh.op_or_abort(Some(&mut ka)).await;
        rec.done(&sh, k, intended, actual, &r);
    }
    rec.rec
}
