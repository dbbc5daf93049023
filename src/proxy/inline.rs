//! Polls a future again at once when it wakes itself while being polled,
//! instead of handing it back to the scheduler.
//!
//! Why: in `--swap request` one task drives both the downstream hyper server
//! connection and the upstream connection, and hyper passes requests and
//! bodies through channels whose wake-ups land on that same task while it
//! runs (the upstream side was a hyper client connection when this was
//! measured; it is `wire` now, which has no channels, but the downstream
//! server's body channels remain). tokio treats a task woken during its own
//! poll as a yield: it goes to the back of the run queue and an idle worker
//! is unparked to steal it. Measured with `strace -c -f` under `wrk -c1`,
//! that moved every request to the other worker thread: 3.4 futex calls
//! and 0.4 eventfd writes per request, against 0.07 in `connection` mode
//! (and 0.01 with one worker thread). Absorbing those self-wakes keeps the
//! connection on the thread whose I/O woke it.
//!
//! Fairness is kept: after [`MAX_INLINE`] polls in a row the future is
//! yielded to the scheduler as it asked. A wake from anywhere else (the I/O
//! driver, another task) reaches the scheduler's waker as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Polls in a row before a self-waking future is yielded after all.
const MAX_INLINE: usize = 8;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// `fut`, polled again at once when it wakes itself during a poll.
pub(super) fn inline_wakes<F: Future>(fut: F) -> Inline<F> {
    let shared = Arc::new(Shared {
        state: AtomicU8::new(0),
        outer: Mutex::new(None),
    });
    Inline {
        inner: Box::pin(fut),
        waker: Waker::from(shared.clone()),
        shared,
    }
}

pub(super) struct Inline<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    /// The waker the inner future sees: `shared`'s.
    waker: Waker,
}

impl<F> Inline<F> {
    /// The wrapped future (to call its methods, e.g. a graceful shutdown).
    pub(super) fn inner(&mut self) -> Pin<&mut F> {
        self.inner.as_mut()
    }
}

struct Shared {
    state: AtomicU8,
    /// The scheduler's waker from the latest poll.
    outer: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut s = self.state.load(Ordering::Acquire);
        while s & POLLING != 0 {
            // Being polled: the poll loop sees WOKEN and polls again.
            match self.state.compare_exchange_weak(
                s,
                s | WOKEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
        if let Some(w) = self.outer.lock().ok().and_then(|w| w.clone()) {
            w.wake();
        }
    }
}

impl<F: Future> Future for Inline<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin: the inner future is boxed.
        let this = self.get_mut();
        if let Ok(mut outer) = this.shared.outer.lock() {
            if !outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *outer = Some(cx.waker().clone());
            }
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..MAX_INLINE {
            this.shared.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(v) = this.inner.as_mut().poll(&mut inner_cx) {
                this.shared.state.store(0, Ordering::Release);
                return Poll::Ready(v);
            }
            // A wake after this swap goes to the scheduler's waker.
            if this.shared.state.swap(0, Ordering::AcqRel) & WOKEN == 0 {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Wakes itself during its first `n` polls, then finishes.
    struct SelfWaking {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wakes the scheduler would get.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn self_wakes_are_polled_inline_up_to_the_bound_then_yielded() {
        let polls = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(inline_wakes(SelfWaking {
            left: 3,
            polls: polls.clone(),
        }));
        assert!(
            f.as_mut().poll(&mut cx).is_ready(),
            "three self-wakes, one outer poll"
        );
        assert_eq!(polls.load(Ordering::Relaxed), 4);
        assert_eq!(count.0.load(Ordering::Relaxed), 0);

        let mut f = std::pin::pin!(inline_wakes(SelfWaking {
            left: MAX_INLINE + 2,
            polls: polls.clone(),
        }));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "past the bound the scheduler is asked to poll again"
        );
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_wake_from_elsewhere_reaches_the_scheduler() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiter = tokio::spawn(inline_wakes(rx));
        tokio::task::yield_now().await;
        std::thread::spawn(move || tx.send(7))
            .join()
            .unwrap()
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken from another thread");
        assert_eq!(got.unwrap().unwrap(), 7);
    }
}
