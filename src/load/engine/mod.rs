//! The open-loop engine: start each operation at its intended time,
//! whatever the service is doing, and record its latency from that time
//! (coordinated omission corrected, as wrk2 does).
//!
//! ```text
//!  Schedule (op k due at k/rate)
//!     handshake/request: load thread k mod T paces its share (pace.rs) and
//!                starts op k when due as a task of its own runtime
//!                ─▶ result ─▶ the thread's recorder
//!     keepalive: connection k mod N paces itself (pace.rs) and runs its ops
//!                in order, so a late response delays the next send, and
//!                that delay is in the next operation's corrected latency;
//!                plaintext connections far enough apart read a response
//!                at their next send, timed when it arrived (op::Started)
//!     --coalesce: every worker wakes at the end of its op's window, so
//!                one wake starts several ops (their lateness is counted)
//!  recorders ──at the end──▶ Recorder::merge ──▶ LoadRun
//!  workers ──atomics──▶ progress line (counts, last-second p99)
//! ```
//!
//! The clock ([`Clock`]) and the operation ([`Operation`]) are parameters:
//! [`run`] uses the precise clock (timerfds on the load threads, each a
//! single-threaded runtime) and real sockets; the tests at the
//! bottom ([`drive`] with [`Clock::Runtime`] under paused time and a
//! simulated service) check the schedule, drops, corrections, warm-up and
//! stop on virtual time.
//!
//! Never: skips an operation silently (over `--max-in-flight` it is counted
//! as dropped), waits for a response before scheduling the next operation,
//! or shares a histogram between workers.

mod clock;
mod pace;
mod workers;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use clock::Clock;

use super::marks::{Mark, Marks};
use super::op::{OpResult, Operation, Sockets, Target};
use super::record::{Recorder, MAX_OP_LOG};
use super::schedule::Schedule;
use super::Mode;

/// After a stop request, how long in-flight operations get to finish before
/// they are cancelled.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A short lead before operation 0 is due, so every worker is waiting.
const LEAD: Duration = Duration::from_millis(20);

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
    /// `--coalesce`: operations due within one window start together at
    /// its end ([`coalesced`]).
    pub coalesce: Duration,
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
            coalesce: Duration::ZERO,
            timeout: Duration::from_secs(10),
            progress: false,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule::new(self.rate, self.warmup, self.duration)
    }

    /// How the engine paces this run's operations.
    pub fn pacing(&self) -> Pacing {
        Pacing {
            mode: self.mode,
            connections: self.connections,
            schedule: self.schedule(),
            max_in_flight: self.max_in_flight,
            coalesce: self.coalesce,
            progress: self.progress,
        }
    }

    /// What each operation of this run is.
    pub fn operation(&self) -> Sockets {
        Sockets {
            target: self.target.clone(),
            mode: self.mode,
            timeout: self.timeout,
            lazy: lazy_reads(self.rate, self.connections),
        }
    }
}

/// Everything the engine needs but the operation itself.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Keepalive runs operations in order on `connections` workers; the
    /// other modes start each operation as its own task.
    pub mode: Mode,
    pub connections: usize,
    pub schedule: Schedule,
    pub max_in_flight: usize,
    /// Wake once per window of this length for every operation due in it
    /// ([`coalesced`]); zero: each operation at its own time.
    pub coalesce: Duration,
    pub progress: bool,
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
    /// CPU time the whole process used while the load ran (the clock
    /// thread, every worker, TLS): what the generator itself cost. `None`
    /// when the operations were simulated.
    pub cpu: Option<Duration>,
}

impl LoadRun {
    /// Milliseconds from the measurement start; `None` before it.
    pub fn t_ms(&self, at: std::time::Instant) -> Option<u64> {
        at.checked_duration_since(self.started)
            .map(|d| d.as_millis() as u64)
    }
}

/// Run the load until the schedule is done or `shutdown` resolves: real
/// sockets, on the precise clock.
pub async fn run(cfg: &LoadConfig, marks: &Marks, shutdown: impl Future<Output = ()>) -> LoadRun {
    let cpu = crate::metrics::cpu::process();
    let mut run = drive(
        &cfg.pacing(),
        Clock::Thread,
        cfg.operation(),
        marks,
        shutdown,
    )
    .await;
    run.cpu = Some(crate::metrics::cpu::process().saturating_sub(cpu));
    run
}

/// Run `op` as `pacing` says, timed by `clock`, until the schedule is done
/// or `shutdown` resolves; then in-flight operations get [`STOP_GRACE`] to
/// finish and are cancelled after it.
pub async fn drive<O: Operation>(
    pacing: &Pacing,
    clock: Clock,
    op: O,
    marks: &Marks,
    shutdown: impl Future<Output = ()>,
) -> LoadRun {
    let schedule = pacing.schedule;
    let workers = match pacing.mode {
        Mode::Keepalive => pacing.connections.max(1),
        // One recorder per core: operations finish on every core, and no
        // recorder becomes the bottleneck.
        _ => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let t0 = Instant::now() + LEAD;
    let measured_from = t0 + schedule.offset(schedule.warmup_ops());
    let started = measured_from.into_std();
    let started_wall = SystemTime::now() + measured_from.saturating_duration_since(Instant::now());
    let state = Arc::new(RunState {
        pacing: pacing.clone(),
        op,
        t0,
        measured_from,
        in_flight: AtomicUsize::new(0),
        counters: ProgressCounters {
            p99_us: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ..ProgressCounters::default()
        },
        op_cap: MAX_OP_LOG / workers,
        stop: watch::channel(false).0,
        stopped_at: OnceLock::new(),
        abort: watch::channel(false).0,
    });
    let mut tasks = JoinSet::new();
    let stop = state.stop.subscribe();
    let ticking = match (pacing.mode, clock) {
        (Mode::Keepalive, _) => {
            keepalive(&state, clock, workers, &mut tasks);
            None
        }
        (_, Clock::Thread) => {
            let sh = state.clone();
            on_threads(workers, &mut tasks, move |t| {
                vec![workers::paced(sh.clone(), t, workers)]
            });
            None
        }
        (_, Clock::Runtime) => {
            let mut results = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = mpsc::unbounded_channel();
                results.push(tx);
                tasks.spawn(workers::recorder(state.clone(), w, rx));
            }
            let mut dispatcher = workers::Dispatcher {
                sh: state.clone(),
                runtime: tokio::runtime::Handle::current(),
                results,
                dropped: None,
            };
            Some(clock.start(schedule, t0, stop, move |k| dispatcher.due(k)))
        }
    };
    let progress = pacing
        .progress
        .then(|| super::progress::spawn(state.progress_source()));
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
                let _ = state.stopped_at.set(Instant::now());
                state.stop.send_replace(true);
                grace.as_mut().reset(Instant::now() + STOP_GRACE);
            }
            () = &mut grace, if interrupted => {
                // Whatever still runs is ours to end, not the service's failure.
                state.abort.send_replace(true);
                grace.as_mut().reset(Instant::now() + Duration::from_secs(3600));
            }
        }
    }
    merged.sort_ops();
    if let Some(t) = ticking {
        t.finish().await;
    }
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
        cpu: None,
    }
}

/// Start the keep-alive connections, each pacing itself ([`pace`]). On the
/// real clock they run on threads of their own, each with a single-threaded
/// runtime and an equal share of the connections: an operation's wait, send,
/// response and record then happen on one thread, never handed between
/// threads (the multi-threaded runtime would move a woken connection to an
/// idle worker, waking it, for every operation). On the runtime's clock
/// (virtual time in tests) they are tasks of the caller's runtime.
fn keepalive<O: Operation>(
    state: &Arc<RunState<O>>,
    clock: Clock,
    connections: usize,
    tasks: &mut JoinSet<Recorder>,
) {
    let connection = |c: usize| {
        let sh = state.clone();
        async move {
            match pace::Pacer::new(clock) {
                Ok(p) => workers::keepalive(sh, c, p).await,
                Err(e) => {
                    tracing::error!(error = %e, "load connection {c}: no timer");
                    Recorder::new(0)
                }
            }
        }
    };
    if clock == Clock::Runtime {
        for c in 0..connections {
            tasks.spawn(connection(c));
        }
        return;
    }
    let threads = keepalive_threads(
        state.pacing.schedule.rate(),
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        connections,
    );
    on_threads(threads, tasks, move |t| {
        (t..connections).step_by(threads).map(connection).collect()
    });
}

/// Run the futures `work(t)` gives for each `t` in `0..threads` on a thread
/// of its own, each with a single-threaded runtime; each thread's
/// recorders are merged into one that `tasks` yields.
fn on_threads<F, W>(threads: usize, tasks: &mut JoinSet<Recorder>, work: W)
where
    F: Future<Output = Recorder> + Send + 'static,
    W: Fn(usize) -> Vec<F>,
{
    for t in 0..threads {
        let mine = work(t);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("certshift-load-{t}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let mut merged = Recorder::new(MAX_OP_LOG);
                match rt {
                    // A task per future, so a wake polls the one
                    // connection it is for, not every connection of the thread.
                    Ok(rt) => rt.block_on(async {
                        let spawned: Vec<_> = mine.into_iter().map(tokio::spawn).collect();
                        for s in spawned {
                            match s.await {
                                Ok(r) => merged.merge(r),
                                Err(e) => tracing::error!(error = %e, "load worker failed"),
                            }
                        }
                    }),
                    Err(e) => tracing::error!(error = %e, "load thread {t}: no runtime"),
                }
                let _ = tx.send(merged);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start load thread {t}");
            continue;
        }
        tasks.spawn(async move { rx.await.unwrap_or_else(|_| Recorder::new(0)) });
    }
}

/// Keep-alive operations one runtime thread is given per second before
/// the load is spread over another. Measured against nginx on a 2-core
/// machine: one thread spends about 17 µs per request at 50,000/s (0.85
/// of a core) and holds the rate, where two threads contending with the
/// service for the cores fell behind.
const OPS_PER_THREAD: f64 = 60_000.0;

/// How many runtime threads carry `connections` keep-alive connections at
/// `rate`: as few as the rate needs, at most one per core. Spreading a
/// lower rate over more threads adds no capacity but multiplies the times a
/// thread falls asleep and is woken (each costs about 20 µs of CPU on a
/// virtual machine, more than a request), and on the service's own machine
/// takes cores the service needs.
fn keepalive_threads(rate: f64, cores: usize, connections: usize) -> usize {
    let needed = (rate / OPS_PER_THREAD).ceil() as usize;
    needed.clamp(1, cores.min(connections).max(1))
}

/// When to wake for an operation due at `due`: the end of the `window`
/// (counted from `t0`) it falls in, so every worker of a thread whose
/// operations are due in one window wakes at the same instant, and their
/// timers expire in one interrupt and one return from the runtime's wait.
/// A wake costs about 20 µs of CPU on a virtual machine, more than the
/// request it sends; grouping trades that for lateness, which the
/// operation's latency (from `due`) keeps. Never earlier than `due`.
fn coalesced(due: Instant, t0: Instant, window: Duration) -> Instant {
    let w = window.as_nanos();
    if w == 0 || due <= t0 {
        return due;
    }
    let since = (due - t0).as_nanos();
    let end = since.div_ceil(w) * w;
    t0 + Duration::from_nanos(end.min(u64::MAX as u128) as u64)
}

/// How long a keep-alive connection must wait between its requests for
/// its responses to be read lazily, at its next request. Measured against
/// nginx on a 2-core machine (4 connections, CPU per request before and
/// after lazy reads): 800 µs apart (5,000/s) 41.5 -> 36.7 µs, 400 µs apart
/// (10,000/s) 39.0 -> 32.6, 200 µs apart (20,000/s) 36.3 -> 36.4, 80 µs
/// apart (50,000/s) 17.2 -> 20.3 and the rate no longer held (0.97): the
/// response is often not there yet, and waiting for it then costs a
/// registration on the reactor and a wake anyway.
const LAZY_SPACING: Duration = Duration::from_micros(300);

/// Whether `connections` keep-alive connections sharing `rate` read their
/// responses lazily ([`LAZY_SPACING`]).
fn lazy_reads(rate: f64, connections: usize) -> bool {
    connections.max(1) as f64 / rate >= LAZY_SPACING.as_secs_f64()
}

/// Counters the workers bump and the progress line reads.
#[derive(Default)]
struct ProgressCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Each worker's p99 over its last second, in µs.
    p99_us: Vec<AtomicU64>,
}

/// What the clock and every worker of one run share: the pacing, the
/// operation, the run's start times, the in-flight count, the progress
/// counters and the stop and abort switches.
struct RunState<O> {
    pacing: Pacing,
    op: O,
    /// When operation 0 is due (the warm-up's start).
    t0: Instant,
    /// When the first measured operation is due.
    measured_from: Instant,
    in_flight: AtomicUsize,
    counters: ProgressCounters,
    /// Operation records each worker keeps.
    op_cap: usize,
    /// Set on shutdown: the clock hands out no more operations.
    stop: watch::Sender<bool>,
    /// When the stop was asked for: operations due after it never start.
    stopped_at: OnceLock<Instant>,
    /// Set after the stop grace: operations still running are cancelled.
    abort: watch::Sender<bool>,
}

impl<O: Operation> RunState<O> {
    fn progress_source(self: &Arc<Self>) -> super::progress::Source {
        let sh = self.clone();
        super::progress::Source {
            total: self.pacing.schedule.measured_ops(),
            measured_from: self.measured_from,
            read: Box::new(move || {
                let c = &sh.counters;
                super::progress::Reading {
                    ok: c.ok.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    p99_us: c
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
        self.t0 + self.pacing.schedule.offset(k)
    }

    /// When a worker wakes for an operation due at `due`.
    fn wake_at(&self, due: Instant) -> Instant {
        coalesced(due, self.t0, self.pacing.coalesce)
    }

    /// The operation, unless the run is aborted first.
    async fn op_or_abort(&self, conn: Option<&mut O::Connection>) -> OpResult {
        match self.or_abort(self.op.run(conn)).await {
            Ok(r) | Err(r) => r,
        }
    }

    /// `work`'s output, or (`Err`) a cancelled result if the run is aborted
    /// first.
    async fn or_abort<T>(&self, work: impl Future<Output = T>) -> Result<T, OpResult> {
        let start = Instant::now();
        let mut abort = self.abort.subscribe();
        tokio::select! {
            r = work => Ok(r),
            _ = abort.wait_for(|a| *a) => Err(OpResult::cancelled(start.elapsed())),
        }
    }
}

#[cfg(test)]
mod tests;
