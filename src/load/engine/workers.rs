//! The engine's workers: what happens to an operation once the clock says
//! it is due. In handshake and request modes it starts as its own task
//! (unless `--max-in-flight` are running: then it is dropped, and counted)
//! and a recorder records its result; in keepalive mode it queues on its
//! connection, whose worker runs it in order and records it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pace::Pacer;
use super::RunState;
use crate::load::op::{OpResult, Operation, Started};
use crate::load::record::Recorder;
use crate::metrics::PhaseHist;

/// A finished operation, or a run of consecutive operations dropped over
/// `--max-in-flight` (`Dropped(k, n)`: operations `k..k + n`).
pub(super) enum Msg {
    Done(u64, Instant, Instant, OpResult),
    Dropped(u64, u64),
}

/// `handshake` and `request` modes: each operation is its own task, started
/// by the clock at its due time; a recorder only records.
pub(super) async fn recorder<O: Operation>(
    sh: Arc<RunState<O>>,
    w: usize,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> Recorder {
    let mut rec = Tally::new(&sh, w);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Done(k, intended, actual, r) => rec.done(&sh, k, intended, actual, &r),
            Msg::Dropped(k, n) => rec.dropped(&sh, k, n),
        }
    }
    rec.rec
}

/// Hands due operations to [`launch`], and counts the ones dropped over
/// `--max-in-flight` as runs: when the service stalls at a rate the cap
/// cannot hold, nearly every operation is dropped, and a message (or a
/// queued task) per dropped operation is what filled gigabytes. A run is
/// sent when the next operation starts, and the last one when the clock
/// is done with the dispatcher.
pub(super) struct Dispatcher<O: Operation> {
    pub(super) sh: Arc<RunState<O>>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) results: Vec<mpsc::UnboundedSender<Msg>>,
    /// Consecutive dropped operations not sent yet: `(first, count)`.
    pub(super) dropped: Option<(u64, u64)>,
}

impl<O: Operation> Dispatcher<O> {
    /// Operation `k` is due.
    pub(super) fn due(&mut self, k: u64) {
        if self.sh.in_flight.fetch_add(1, Ordering::Relaxed) >= self.sh.pacing.max_in_flight {
            self.sh.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.dropped = match self.dropped {
                Some((first, n)) if first + n == k => Some((first, n + 1)),
                other => {
                    self.flush(other);
                    Some((k, 1))
                }
            };
            return;
        }
        let run = self.dropped.take();
        self.flush(run);
        let tx = &self.results[(k % self.results.len() as u64) as usize];
        launch(&self.sh, &self.runtime, tx, k);
    }

    fn flush(&self, run: Option<(u64, u64)>) {
        if let Some((first, n)) = run {
            let tx = &self.results[(first % self.results.len() as u64) as usize];
            let _ = tx.send(Msg::Dropped(first, n));
        }
    }
}

impl<O: Operation> Drop for Dispatcher<O> {
    fn drop(&mut self) {
        let run = self.dropped.take();
        self.flush(run);
    }
}

/// Handshake and request modes on the real clock: this thread's share of
/// the operations (`k` with `k mod threads == t`), each started at its due
/// time by the thread's own [`Pacer`] as a task of the thread's runtime,
/// and recorded by a recorder on the same thread. The wait, the operation
/// and the record are one thread's work: no clock thread to wake, no
/// operation handed to another thread's runtime, no result sent across.
pub(super) async fn paced<O: Operation>(
    sh: Arc<RunState<O>>,
    t: usize,
    threads: usize,
) -> Recorder {
    let (tx, rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(recorder(sh.clone(), t, rx));
    match Pacer::new(super::Clock::Thread) {
        Ok(mut pacer) => {
            let mut dispatcher = Dispatcher {
                sh: sh.clone(),
                runtime: tokio::runtime::Handle::current(),
                results: vec![tx],
                dropped: None,
            };
            let mut stop = sh.stop.subscribe();
            let total = sh.pacing.schedule.total_ops();
            let mut k = t as u64;
            while k < total && !*stop.borrow() {
                let due = sh.due(k);
                if sh.wake_at(due) > Instant::now() {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => break,
                        r = pacer.until(sh.wake_at(due)) => if let Err(e) = r {
                            // No timer, no schedule: say so rather than run it badly.
                            tracing::error!(error = %e, "load thread {t}: timer failed");
                            break;
                        }
                    }
                }
                dispatcher.due(k);
                k += threads as u64;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "load thread {t}: no timer");
            drop(tx);
        }
    }
    // The recorder ends when the dispatcher and every operation it
    // started have dropped their senders.
    recorder.await.unwrap_or_else(|_| Recorder::new(0))
}

/// Start operation `k` now (it is due); its slot under `--max-in-flight`
/// is taken already.
fn launch<O: Operation>(
    sh: &Arc<RunState<O>>,
    runtime: &tokio::runtime::Handle,
    tx: &mpsc::UnboundedSender<Msg>,
    k: u64,
) {
    let intended = sh.due(k);
    let (sh, tx) = (sh.clone(), tx.clone());
    runtime.spawn(async move {
        let actual = Instant::now();
        let r = sh.op_or_abort(None).await;
        sh.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = tx.send(Msg::Done(k, intended, actual, r));
    });
}

/// How long after a stop request a keep-alive connection may still be
/// waiting for its next due time before it sees the stop.
const STOP_LATENESS: Duration = Duration::from_millis(50);

/// `keepalive` mode: one persistent connection, its operations (`k` with
/// `k mod connections == c`) in order, each started at its due time by the
/// connection's own [`Pacer`]. A response that comes late delays the next
/// send; the next operation's latency still runs from its own intended
/// start. When more of its operations are due than its share of
/// `--max-in-flight`, the oldest are dropped, and counted. After a stop,
/// operations due before it still run (and are cancelled after the grace);
/// later ones never start.
pub(super) async fn keepalive<O: Operation>(
    sh: Arc<RunState<O>>,
    c: usize,
    mut pacer: Pacer,
) -> Recorder {
    let mut rec = Tally::new(&sh, c);
    let mut conn = O::Connection::default();
    let n = sh.pacing.connections.max(1) as u64;
    // Operations this connection may owe at once: its share of the cap.
    let cap = (sh.pacing.max_in_flight as u64 / n).max(1);
    let total = sh.pacing.schedule.total_ops();
    let mut stop = sh.stop.subscribe();
    // The operation whose response is still to be read: `(k, intended, actual)`.
    let mut sent = None;
    let mut k = c as u64;
    while k < total {
        let intended = sh.due(k);
        let wake = sh.wake_at(intended);
        let now = Instant::now();
        if wake > now {
            // A short wait is not worth a place among the stop's waiters
            // (a lock shared by every connection, taken twice per
            // operation): the stop is seen just after it instead.
            let waited = if wake - now <= STOP_LATENESS {
                pacer.until(wake).await
            } else {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => Ok(()),
                    r = pacer.until(wake) => r,
                }
            };
            if let Err(e) = waited {
                // No timer, no schedule: say so rather than run it badly.
                tracing::error!(error = %e, "load connection {c}: timer failed");
                break;
            }
        }
        if sh.stopped_at.get().is_some_and(|at| intended > *at) {
            break;
        }
        // The previous operation's response, read now rather than woken
        // for (`Operation::start`): its time is when it arrived.
        if let Some((pk, pi, pa)) = sent.take() {
            let (Ok(r) | Err(r)) = sh.or_abort(sh.op.finish(&mut conn)).await;
            rec.done(&sh, pk, pi, pa, &r);
        }
        // Behind: if the operation `cap` places later is due too, this
        // connection owes more than `cap`; drop the oldest.
        let now = Instant::now();
        while k + cap * n < total && sh.due(k + cap * n) <= now {
            rec.dropped(&sh, k, 1);
            k += n;
        }
        let intended = sh.due(k);
        let actual = Instant::now();
        let started = sh.or_abort(async {
            match sh.op.start(&mut conn).await {
                Started::Done(r) => Some(r),
                Started::Sent => None,
            }
        });
        match started.await {
            Ok(Some(r)) | Err(r) => rec.done(&sh, k, intended, actual, &r),
            Ok(None) => sent = Some((k, intended, actual)),
        }
        k += n;
    }
    if let Some((pk, pi, pa)) = sent.take() {
        let (Ok(r) | Err(r)) = sh.or_abort(sh.op.finish(&mut conn)).await;
        rec.done(&sh, pk, pi, pa, &r);
    }
    rec.rec
}

/// One worker's recording: its recorder, plus the last-second p99 it shows
/// on the progress line.
struct Tally {
    rec: Recorder,
    recent: PhaseHist,
    recent_since: Instant,
    w: usize,
}

impl Tally {
    fn new<O>(sh: &RunState<O>, w: usize) -> Self {
        Tally {
            rec: Recorder::new(sh.op_cap),
            recent: PhaseHist::new(),
            recent_since: Instant::now(),
            w,
        }
    }

    fn done<O>(
        &mut self,
        sh: &RunState<O>,
        k: u64,
        intended: Instant,
        actual: Instant,
        r: &OpResult,
    ) {
        let Some(seq) = sh.pacing.schedule.measured(k) else {
            return;
        };
        let lag = actual.saturating_duration_since(intended);
        let start = actual.saturating_duration_since(sh.measured_from);
        self.rec.record(seq, lag, start, r);
        let counter = if r.succeeded() {
            &sh.counters.ok
        } else {
            &sh.counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if sh.pacing.progress {
            self.recent.record(lag + r.end);
            if self.recent_since.elapsed() >= Duration::from_secs(1) {
                sh.counters.p99_us[self.w].store(self.recent.percentiles().p99, Ordering::Relaxed);
                self.recent.clear();
                self.recent_since = Instant::now();
            }
        }
    }

    /// Operations `k..k + n` were dropped; the warm-up's are not counted.
    fn dropped<O>(&mut self, sh: &RunState<O>, k: u64, n: u64) {
        let schedule = &sh.pacing.schedule;
        let first = k.max(schedule.warmup_ops());
        let Some(seq) = schedule.measured(first) else {
            return;
        };
        let n = (k + n).saturating_sub(first);
        if n > 0 {
            self.rec.record_dropped_run(seq, n);
            sh.counters.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}
