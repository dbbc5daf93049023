//! The clock that hands out each operation at its due time. It is a
//! parameter of the engine: real runs need a precise one, and tests run the
//! same schedule on the runtime's paused (virtual) time.
//!
//! Never: waits for an operation, or hands one out early.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::load::schedule::Schedule;

/// How the engine waits for each operation's due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// A thread of its own that sleeps until each due time. The runtime's
    /// timer ticks in whole milliseconds, which would start most operations
    /// up to a millisecond late and put that lateness into every corrected
    /// latency; a thread sleep is accurate to tens of microseconds. Real
    /// time only: it does not see `tokio::time::pause()`.
    Thread,
    /// The runtime's timer. Under `tokio::time::pause()` this is virtual
    /// time: a schedule of seconds runs in milliseconds, each operation on
    /// its due tick, the same way every run.
    Runtime,
}

/// A running clock; [`Ticking::finish`] waits for it after the run.
pub(super) enum Ticking {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Clock {
    /// Call `dispatch(k)` when operation `k` of `schedule` is due (`t0` is
    /// operation 0's), until the schedule is done or `stop` turns true.
    pub(super) fn start(
        self,
        schedule: Schedule,
        t0: Instant,
        stop: watch::Receiver<bool>,
        dispatch: impl FnMut(u64) + Send + 'static,
    ) -> Ticking {
        match self {
            Clock::Thread => Ticking::Thread(thread(schedule, t0, stop, dispatch)),
            Clock::Runtime => Ticking::Task(tokio::spawn(timer(schedule, t0, stop, dispatch))),
        }
    }
}

impl Ticking {
    pub(super) async fn finish(self) {
        match self {
            // The thread has handed out its last operation (or seen the
            // stop) before the workers it feeds could finish: this returns
            // at once.
            Ticking::Thread(t) => {
                let _ = t.join();
            }
            Ticking::Task(t) => {
                let _ = t.await;
            }
        }
    }
}

fn thread(
    schedule: Schedule,
    t0: Instant,
    stop: watch::Receiver<bool>,
    mut dispatch: impl FnMut(u64) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let t0 = t0.into_std();
    std::thread::Builder::new()
        .name("certshift-clock".into())
        .spawn(move || {
            for k in 0..schedule.total_ops() {
                let due = t0 + schedule.offset(k);
                loop {
                    if *stop.borrow() {
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

async fn timer(
    schedule: Schedule,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
    mut dispatch: impl FnMut(u64) + Send + 'static,
) {
    for k in 0..schedule.total_ops() {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep_until(t0 + schedule.offset(k)) => dispatch(k),
        }
    }
}
