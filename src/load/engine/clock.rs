//! The clock that times each operation. It is a parameter of the engine:
//! real runs need a precise one (each load thread's own timerfd, pace.rs),
//! and tests run the same schedule on the runtime's paused (virtual) time,
//! where a task of the runtime hands out each operation when it is due.
//!
//! Never: waits for an operation, or hands one out early.

use tokio::sync::watch;
use tokio::time::Instant;

use crate::load::schedule::Schedule;

/// How the engine waits for each operation's due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Real time to the microsecond: the load threads wait on timerfds
    /// ([`pace`](super::pace)). The runtime's timer ticks in whole
    /// milliseconds, which would start most operations up to a millisecond
    /// late and put that lateness into every corrected latency. It does not
    /// see `tokio::time::pause()`.
    Thread,
    /// The runtime's timer. Under `tokio::time::pause()` this is virtual
    /// time: a schedule of seconds runs in milliseconds, each operation on
    /// its due tick, the same way every run.
    Runtime,
}

/// A running clock task; [`Ticking::finish`] waits for it after the run.
pub(super) struct Ticking(tokio::task::JoinHandle<()>);

impl Clock {
    /// On the runtime's clock, call `dispatch(k)` when operation `k` of
    /// `schedule` is due (`t0` is operation 0's), until the schedule is
    /// done or `stop` turns true. (The real clock has no task of its own:
    /// each load thread paces its share.)
    pub(super) fn start(
        self,
        schedule: Schedule,
        t0: Instant,
        stop: watch::Receiver<bool>,
        dispatch: impl FnMut(u64) + Send + 'static,
    ) -> Ticking {
        Ticking(tokio::spawn(timer(schedule, t0, stop, dispatch)))
    }
}

impl Ticking {
    pub(super) async fn finish(self) {
        let _ = self.0.await;
    }
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
