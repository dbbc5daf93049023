//! How a keep-alive connection waits for its next operation's due time,
//! on the thread that runs the connection.
//!
//! Keep-alive connections pace themselves: operation `k` belongs to
//! connection `k mod N`, so each connection knows its own due times and
//! needs no clock to hand them out. What it needs is a timer as precise as
//! the clock thread's sleep: the runtime's timer ticks in whole
//! milliseconds, which would start operations up to a millisecond late and
//! put that lateness into every corrected latency. A timerfd is a kernel
//! high-resolution timer the runtime's epoll waits on, so the wait, the
//! send and the response are all one thread's work: no hand-over from a
//! clock thread (a futex wake per operation, and a sleeping worker woken
//! for each) is left on the path, which is what the generator's CPU per
//! operation was mostly made of.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::Clock;

/// One connection's timer.
pub(super) enum Pacer {
    /// The runtime's timer: virtual time under `tokio::time::pause()`.
    Runtime,
    /// A timerfd on the runtime's reactor: real time, to the microsecond.
    Timer(AsyncFd<OwnedFd>),
}

impl Pacer {
    /// A timer for `clock`; must be called inside the runtime that waits on it.
    // `AsyncFd::new` is deprecated for types whose descriptor can close or
    // change while registered; an `OwnedFd` it owns cannot, and its safe
    // replacement (`register`) is `unsafe`, which this crate forbids.
    #[allow(deprecated)]
    pub(super) fn new(clock: Clock) -> io::Result<Pacer> {
        Ok(match clock {
            Clock::Runtime => Pacer::Runtime,
            Clock::Thread => Pacer::Timer(AsyncFd::new(timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?)?),
        })
    }

    /// Returns at `at` (at once if it has passed).
    pub(super) async fn until(&mut self, at: Instant) -> io::Result<()> {
        let Pacer::Timer(fd) = self else {
            tokio::time::sleep_until(at).await;
            return Ok(());
        };
        // Relative to now: `Instant` is CLOCK_MONOTONIC, but opaque.
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &once_after(wait))?;
        loop {
            let mut ready = fd.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(fd.get_ref(), &mut expirations) {
                // The timer is one-shot and re-armed only by the next call:
                // nothing can make it readable before then, so the reactor
                // forgets this readiness now rather than send that call
                // through a read that finds nothing.
                Ok(_) => {
                    ready.clear_ready();
                    return Ok(());
                }
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn once_after(d: Duration) -> Itimerspec {
    Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_timer_returns_at_its_time_not_at_the_next_millisecond() {
        let mut p = Pacer::new(Clock::Thread).unwrap();
        for i in 0..20u64 {
            let at = Instant::now() + Duration::from_micros(300 + 37 * i);
            p.until(at).await.unwrap();
            assert!(Instant::now() >= at, "never early");
        }
        // A time already past returns at once.
        p.until(Instant::now() - Duration::from_millis(1))
            .await
            .unwrap();
    }
}
