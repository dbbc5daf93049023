//! One accepted connection's slot: which phase it is in (handshake,
//! waiting for its first request or byte, serving), when it was last
//! active, and the listener's counters it is accounted in.
//!
//! Owns the per-connection deadlines (handshake, header / first byte) and
//! the accounting of the gauges: a slot leaves the gauges exactly once,
//! whether its handler ended, a deadline closed it or the loop shed it.
//! Never reads a connection's bytes: [`Tracked`] only notes that some moved.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Counters of one listener: atomics, touched once or twice per connection
/// and read by `/stats` and `/metrics` without stopping anything.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicU64,
    in_handshake: AtomicU64,
    accepted: AtomicU64,
    handshake_timeouts: AtomicU64,
    header_timeouts: AtomicU64,
    idle_closed: AtomicU64,
    shed_at_cap: AtomicU64,
    shed_at_handshake_cap: AtomicU64,
    shed_fd_exhausted: AtomicU64,
    accept_errors: AtomicU64,
    fd_exhausted: AtomicU64,
}

/// A listener's counters at one moment. The keys are a contract (the
/// `listener` object of `/stats`, the `certshift_listener_*` families).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnCounts {
    /// Connections open now (gauge).
    pub open: u64,
    /// Of those, still in their TLS handshake (gauge).
    pub in_handshake: u64,
    pub accepted: u64,
    /// Closed because the handshake did not finish within its deadline.
    pub closed_handshake_timeout: u64,
    /// Closed because the request header (or, relaying bytes, the first
    /// byte) did not arrive within its deadline.
    pub closed_header_timeout: u64,
    /// Closed after serving, idle for the idle timeout.
    pub closed_idle: u64,
    /// The longest-idle connection, closed to make room at the connection cap.
    pub shed_at_cap: u64,
    /// The oldest handshake, closed to make room at the handshake cap.
    pub shed_at_handshake_cap: u64,
    /// Closed to free descriptors when the process ran out of them.
    pub shed_fd_exhausted: u64,
    /// accept() failures, of any kind.
    pub accept_errors: u64,
    /// Of those, the process or system out of file descriptors (EMFILE, ENFILE).
    pub fd_exhausted: u64,
}

/// Why the accept loop closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    HandshakeTimeout,
    HeaderTimeout,
    Idle,
    ShedAtCap,
    ShedAtHandshakeCap,
    ShedFdExhausted,
}

impl Closed {
    pub fn name(self) -> &'static str {
        match self {
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle_timeout",
            Closed::ShedAtCap => "shed_at_cap",
            Closed::ShedAtHandshakeCap => "shed_at_handshake_cap",
            Closed::ShedFdExhausted => "shed_fd_exhausted",
        }
    }
}

impl ConnStats {
    pub fn counts(&self) -> ConnCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnCounts {
            open: l(&self.open),
            in_handshake: l(&self.in_handshake),
            accepted: l(&self.accepted),
            closed_handshake_timeout: l(&self.handshake_timeouts),
            closed_header_timeout: l(&self.header_timeouts),
            closed_idle: l(&self.idle_closed),
            shed_at_cap: l(&self.shed_at_cap),
            shed_at_handshake_cap: l(&self.shed_at_handshake_cap),
            shed_fd_exhausted: l(&self.shed_fd_exhausted),
            accept_errors: l(&self.accept_errors),
            fd_exhausted: l(&self.fd_exhausted),
        }
    }

    pub(super) fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub(super) fn in_handshake(&self) -> u64 {
        self.in_handshake.load(Ordering::Relaxed)
    }

    pub(super) fn accept_error(&self, fd_exhausted: bool) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
        if fd_exhausted {
            self.fd_exhausted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, why: Closed) {
        let c = match why {
            Closed::HandshakeTimeout => &self.handshake_timeouts,
            Closed::HeaderTimeout => &self.header_timeouts,
            Closed::Idle => &self.idle_closed,
            Closed::ShedAtCap => &self.shed_at_cap,
            Closed::ShedAtHandshakeCap => &self.shed_at_handshake_cap,
            Closed::ShedFdExhausted => &self.shed_fd_exhausted,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The phases of a slot; only ever move forward.
const HANDSHAKE: u8 = 0;
/// Handshake done, no request (or first byte) yet.
const HEADER: u8 = 1;
const SERVING: u8 = 2;
/// Out of the gauges: ended, timed out or shed.
const DONE: u8 = 3;

/// Times as microseconds since the listener's start: one atomic word each,
/// fine enough that connections accepted back to back still have an order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock(Instant);

impl Clock {
    pub(super) fn new() -> Self {
        Clock(Instant::now())
    }

    fn now_us(self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn at(self, us: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0 + Duration::from_micros(us))
    }
}

/// One connection's place in its listener.
#[derive(Debug)]
pub struct Slot {
    clock: Clock,
    stats: Arc<ConnStats>,
    phase: AtomicU8,
    /// When the current phase began (µs on `clock`).
    phase_since: AtomicU64,
    /// When bytes last moved either way (µs on `clock`).
    last_active: AtomicU64,
    /// Wakes the deadline watcher when the phase moves on, so a new
    /// phase's (shorter) deadline is not slept past.
    moved: Notify,
}

impl Slot {
    /// A new connection: in its handshake (counted in both gauges) on a
    /// TLS listener, else waiting for its first request from the start.
    pub(super) fn open(clock: Clock, stats: Arc<ConnStats>, tls: bool) -> Arc<Slot> {
        stats.open.fetch_add(1, Ordering::Relaxed);
        if tls {
            stats.in_handshake.fetch_add(1, Ordering::Relaxed);
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let now = clock.now_us();
        Arc::new(Slot {
            clock,
            stats,
            phase: AtomicU8::new(if tls { HANDSHAKE } else { HEADER }),
            phase_since: AtomicU64::new(now),
            last_active: AtomicU64::new(now),
            moved: Notify::new(),
        })
    }

    /// The TLS handshake finished (or there is none: call it at once on a
    /// plaintext listener); the header deadline starts now.
    pub fn handshake_done(&self) {
        self.advance(HEADER);
    }

    /// A request's header arrived (or, relaying bytes, the first byte): no
    /// more header deadline. Cheap when already serving: one load.
    pub fn request_started(&self) {
        if self.phase.load(Ordering::Relaxed) < SERVING {
            self.advance(SERVING);
        }
    }

    /// A timeout fired inside the handler (hyper's wait for a request
    /// header): idle when the connection had served, else the header deadline.
    pub fn timed_out(&self) {
        let why = match self.phase.load(Ordering::Acquire) {
            SERVING => Closed::Idle,
            HANDSHAKE => Closed::HandshakeTimeout,
            _ => Closed::HeaderTimeout,
        };
        self.close(Some(why));
    }

    /// Wraps the connection's socket so that moving bytes marks it active.
    pub fn track<S>(self: &Arc<Self>, io: S) -> Tracked<S> {
        Tracked {
            inner: io,
            slot: self.clone(),
        }
    }

    fn advance(&self, to: u8) {
        let mut from = self.phase.load(Ordering::Acquire);
        if from >= to {
            return;
        }
        // The stamp first: a watchdog that sees the new phase sees its start.
        self.phase_since
            .store(self.clock.now_us(), Ordering::Release);
        while from < to {
            match self
                .phase
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if from == HANDSHAKE {
                        self.stats.in_handshake.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.moved.notify_one();
                    return;
                }
                Err(now) => from = now,
            }
        }
    }

    /// Leaves the gauges (once: later calls do nothing) and counts why, if
    /// the loop closed it. `true` if this call was the one.
    pub(super) fn close(&self, why: Option<Closed>) -> bool {
        let was = self.phase.swap(DONE, Ordering::AcqRel);
        if was == DONE {
            return false;
        }
        if was == HANDSHAKE {
            self.stats.in_handshake.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(why) = why {
            self.stats.count(why);
        }
        true
    }

    pub(super) fn is_done(&self) -> bool {
        self.phase.load(Ordering::Acquire) == DONE
    }

    pub(super) fn in_handshake(&self) -> bool {
        self.phase.load(Ordering::Acquire) == HANDSHAKE
    }

    pub(super) fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    pub(super) fn phase_since(&self) -> u64 {
        self.phase_since.load(Ordering::Acquire)
    }

    /// Resolves when the current phase has outlived its deadline: the
    /// handshake by `handshake`, the wait for a request by `header`. Never
    /// while serving (idle is the handler's business, it knows when a
    /// request is in flight).
    pub(super) async fn deadline(&self, handshake: Duration, header: Duration) -> Closed {
        loop {
            let phase = self.phase.load(Ordering::Acquire);
            let (limit, why) = match phase {
                HANDSHAKE => (handshake, Closed::HandshakeTimeout),
                HEADER => (header, Closed::HeaderTimeout),
                _ => std::future::pending().await,
            };
            let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
            let due = self.phase_since().saturating_add(limit_us);
            if self.clock.now_us() >= due && self.phase.load(Ordering::Acquire) == phase {
                return why;
            }
            // A permit stored by a move before this wait wakes it at once.
            tokio::select! {
                () = tokio::time::sleep_until(self.clock.at(due)) => {}
                () = self.moved.notified() => {}
            }
        }
    }
}

/// A connection's stream that stamps its slot's last activity whenever
/// bytes move, so that the loop can tell which connection is the
/// longest idle. Costs a clock read per read or write.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    slot: Arc<Slot>,
}

impl<S> Tracked<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    fn touch(&self) {
        self.slot
            .last_active
            .store(self.slot.clock.now_us(), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_leaves_the_gauges_once_whatever_closes_it() {
        let stats = Arc::new(ConnStats::default());
        let a = Slot::open(Clock::new(), stats.clone(), true);
        let b = Slot::open(Clock::new(), stats.clone(), true);
        assert_eq!((stats.open(), stats.in_handshake()), (2, 2));
        a.handshake_done();
        a.request_started();
        assert_eq!((stats.open(), stats.in_handshake()), (2, 1));
        assert!(b.close(Some(Closed::ShedAtHandshakeCap)));
        assert!(!b.close(None), "a second close does nothing");
        b.handshake_done();
        assert_eq!((stats.open(), stats.in_handshake()), (1, 0));
        a.timed_out();
        let c = stats.counts();
        assert_eq!((c.open, c.in_handshake), (0, 0));
        assert_eq!((c.shed_at_handshake_cap, c.closed_idle), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase() {
        let stats = Arc::new(ConnStats::default());
        let s = Slot::open(Clock::new(), stats, true);
        let hs = Duration::from_secs(1);
        let hdr = Duration::from_secs(1);
        // Paused time: the clock is std's, so only the phase logic is under
        // test here; the real deadlines are exercised in tests/it/hostile_slots.rs.
        s.handshake_done();
        s.request_started();
        let never = tokio::time::timeout(Duration::from_secs(5), s.deadline(hs, hdr)).await;
        assert!(never.is_err(), "no deadline while serving");
    }
}
