//! The accept loop shared by `serve`, `proxy` and the admin API: it never
//! stops accepting. At the connection cap it closes the longest-idle
//! connection to make room; at the (smaller) cap on connections still in
//! their handshake, the oldest handshake. Every connection has a handshake
//! deadline and a deadline for its first request header (or first byte);
//! running out of file descriptors sheds connections instead of spinning
//! (`fd`). `workers` runs one loop per worker (`--workers`), each on its
//! own thread and socket, sharing the caps. Shutdown goes in phases: stop
//! accepting, let connections drain for a grace period, tell the rest to
//! close, and end whatever still runs after that.
//!
//! Owns every connection task it spawns (a `JoinSet`): none outlives
//! [`serve_connections`], even when a handler ignores the phases or the loop
//! itself is dropped. Owns the listener's gauges and close counters
//! ([`ConnStats`]). Never reads or writes a connection's bytes: handlers
//! report their progress on the connection's [`Slot`].

mod fd;
mod slot;
mod workers;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

pub use slot::{Closed, ConnCounts, ConnStats, Slot, Tracked};
pub use workers::{bind_workers, resolve_workers, serve_workers, Listeners, MAX_WORKERS};

use fd::Descriptors;
use slot::Clock;

/// How long connections told to close get before they are aborted: enough
/// to send a TLS close_notify or a last response, not to finish a transfer.
pub const CLOSE_WINDOW: Duration = Duration::from_secs(2);

/// The listen backlog unless configured: connections the kernel holds
/// completed before accept() takes them. Linux caps it at
/// `net.core.somaxconn` (4096 on current kernels).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Shutdown phases, as connection tasks see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunState {
    Serving,
    /// No new connections; finish what is in flight.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; past it the longest-idle one is closed.
    pub max_connections: usize,
    /// Of those, connections still in their handshake; past it the oldest
    /// handshake is closed, so slow ClientHellos cannot fill the listener.
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    /// From the end of the handshake to the first request's header (HTTP)
    /// or first byte (relayed bytes).
    pub header_timeout: Duration,
    /// Connections start with a TLS handshake. Without, they wait for their
    /// first request from accept on and never count toward the handshake cap.
    pub tls: bool,
}

impl Limits {
    /// The handshake cap when none is given: a quarter of the connection
    /// cap (at least one), so a flood of handshakes leaves three quarters
    /// for connections that finished theirs.
    pub fn default_max_handshakes(max_connections: usize) -> usize {
        (max_connections / 4).max(1)
    }
}

/// Binds a listener with an explicit backlog (tokio's and std's `bind`
/// use 128, which a burst of a few hundred connections overflows).
/// Call it inside a tokio runtime.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std's bind does on Unix: a restarted server can rebind its port
    // while the previous run's connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accept on `listener` until `shutdown` resolves, running `handle` for each
/// connection under `limits`, then drain for up to `grace`, tell the rest
/// to close, and abort those still running [`CLOSE_WINDOW`] later.
/// Returns when every connection task has ended.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handle: F,
) where
    F: Fn(Tracked<TcpStream>, SocketAddr, watch::Receiver<RunState>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shared = Shared::new(1);
    accept_loop(listener, &shared, 0, limits, stats, shutdown, grace, handle).await;
}

/// What the accept loops of one listening address share, whichever thread
/// each runs on: the clock slots are stamped with (so idle times compare
/// across loops), the index of live connections the caps shed from, and
/// the descriptor reserve and ceiling. The gauges are the `ConnStats`.
pub(crate) struct Shared {
    clock: Clock,
    /// One shard per accept loop: a loop locks only its own to add and
    /// reap connections (uncontended); shedding, which runs only at a cap,
    /// scans them all.
    live: Box<[Mutex<Live>]>,
    fds: Mutex<Descriptors>,
}

type Live = HashMap<tokio::task::Id, (Arc<Slot>, AbortHandle)>;

impl Shared {
    pub(crate) fn new(loops: usize) -> Shared {
        Shared {
            clock: Clock::new(),
            live: (0..loops.max(1)).map(|_| Mutex::default()).collect(),
            fds: Mutex::new(Descriptors::new()),
        }
    }

    /// A shard or the descriptors: no lock is held across an await or a
    /// panic-prone call, so a poisoned one is still consistent.
    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Live> {
        self.live[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fds(&self) -> std::sync::MutexGuard<'_, Descriptors> {
        self.fds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One accept loop: [`serve_connections`] on shard `me` of `shared`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shared: &Shared,
    me: usize,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handle: F,
) where
    F: Fn(Tracked<TcpStream>, SocketAddr, watch::Receiver<RunState>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (phase_tx, phase_rx) = watch::channel(RunState::Serving);
    let name = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let clock = shared.clock;
    // Dropping the set aborts its tasks, so a caller that drops or aborts
    // this future does not leave connections running either.
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        // Reap finished tasks so the set and the index hold the live ones.
        if let Some(first) = tasks.try_join_next_with_id() {
            let mut live = shared.shard(me);
            let mut done = Some(first);
            while let Some(d) = done {
                let id = match d {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                live.remove(&id);
                done = tasks.try_join_next_with_id();
            }
        }
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) if fd::exhausted(&e) => {
                stats.accept_error(true);
                let ceiling = shared.fds().on_exhausted(&e, stats.open(), &name);
                shed(shared, &stats, ceiling, Closed::ShedFdExhausted);
                // Let the shed tasks drop their sockets before trying again.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(e) => {
                stats.accept_error(false);
                shared.fds().other_error(&e, &name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cap = {
            let mut fds = shared.fds();
            fds.restore();
            fds.cap(limits.max_connections as u64)
        };
        let slot = Slot::open(clock, stats.clone(), limits.tls);
        // Room for the newcomer: it is never refused; whoever has waited
        // longest goes instead.
        shed(shared, &stats, cap, Closed::ShedAtCap);
        shed(
            shared,
            &stats,
            limits.max_handshakes as u64,
            Closed::ShedAtHandshakeCap,
        );
        // Boxed: a future moved into an `async move` block and then into
        // `select!` is stored twice in the task (the captured value is never
        // reused for locals), which was half of the memory of every held
        // connection.
        let task = Box::pin(handle(slot.track(stream), peer, phase_rx.clone()));
        let (hs, header) = (limits.handshake_timeout, limits.header_timeout);
        let watched = slot.clone();
        let abort = tasks.spawn(async move {
            // Out of the gauges however the task ends, aborts included.
            struct Leave(Arc<Slot>);
            impl Drop for Leave {
                fn drop(&mut self) {
                    self.0.close(None);
                }
            }
            let _leave = Leave(watched.clone());
            // Counted inside the branch: select! drops the handler (and
            // closes its socket) before running the arm's body, and whoever
            // sees the close must see the count.
            let deadline = async {
                let why = watched.deadline(hs, header).await;
                (why, watched.close(Some(why)))
            };
            tokio::select! {
                () = task => {}
                (why, counted) = deadline => {
                    if counted {
                        tracing::debug!(%peer, reason = why.name(), "connection closed at its deadline");
                    }
                }
            }
        });
        shared.shard(me).insert(abort.id(), (slot, abort));
    }
    drop(listener);
    let _ = phase_tx.send(RunState::Draining);
    if !drained_within(&mut tasks, grace).await {
        tracing::warn!(
            open = tasks.len(),
            "connections still open after the {grace:?} grace period; closing them"
        );
        let _ = phase_tx.send(RunState::Closing);
        if !drained_within(&mut tasks, CLOSE_WINDOW).await {
            tracing::warn!(
                open = tasks.len(),
                "connections ignored the close; ending them"
            );
            tasks.shutdown().await;
        }
    }
}

/// Close connections until the gauge `why` is about is at most `limit`:
/// the longest-idle ones for the connection cap and descriptors, the
/// oldest handshakes for the handshake cap, whichever loop accepted them.
/// A scan of the live index per connection closed; it runs only at a cap.
fn shed(shared: &Shared, stats: &ConnStats, limit: u64, why: Closed) {
    let handshakes = why == Closed::ShedAtHandshakeCap;
    let over = || match handshakes {
        true => stats.in_handshake() > limit,
        false => stats.open() > limit,
    };
    let age = |s: &Slot| match handshakes {
        true => s.phase_since(),
        false => s.last_active(),
    };
    while over() {
        let mut victim: Option<(u64, Arc<Slot>, AbortHandle)> = None;
        for i in 0..shared.live.len() {
            let live = shared.shard(i);
            let best = live
                .values()
                .filter(|(s, _)| !s.is_done() && (!handshakes || s.in_handshake()))
                .min_by_key(|(s, _)| age(s));
            if let Some((s, a)) = best {
                if victim.as_ref().is_none_or(|(t, _, _)| age(s) < *t) {
                    victim = Some((age(s), s.clone(), a.clone()));
                }
            }
        }
        let Some((_, slot, abort)) = victim else {
            break;
        };
        if slot.close(Some(why)) {
            abort.abort();
            tracing::debug!(reason = why.name(), "connection shed");
        }
    }
}

/// Runs a hyper HTTP/1 server connection under the shutdown phases: on
/// `Draining` it shuts down gracefully (an idle kept-alive connection closes
/// at once, a request in flight gets its response), on `Closing` it is
/// dropped. hyper's header-read timeout ending the connection is counted on
/// `slot` (idle after a request, else the header deadline). The service
/// must call [`Slot::request_started`] for each request.
pub async fn serve_http1<I, S, B>(
    conn: http1::Connection<I, S>,
    mut phase: watch::Receiver<RunState>,
    slot: &Slot,
) where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                if e.is_timeout() {
                    slot.timed_out();
                }
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = async { drop(phase.wait_for(|p| *p >= RunState::Draining).await) } => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { drop(phase.wait_for(|p| *p >= RunState::Closing).await) } => {}
            }
        }
    }
}

/// Whether every task ended within `limit`.
async fn drained_within(tasks: &mut JoinSet<()>, limit: Duration) -> bool {
    let all = async { while tasks.join_next().await.is_some() {} };
    tokio::time::timeout(limit, all).await.is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use tokio::io::AsyncReadExt;
    use tokio::sync::oneshot;

    use super::*;

    /// A handler that ignores every phase and never ends on its own: the
    /// loop must still end it, within grace + CLOSE_WINDOW.
    #[tokio::test]
    async fn a_connection_that_ignores_shutdown_is_ended_after_the_grace_period() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let ended = Arc::new(AtomicUsize::new(0));
        let seen = ended.clone();
        let grace = Duration::from_millis(200);
        let limits = Limits {
            max_connections: 4,
            max_handshakes: 4,
            handshake_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(60),
            tls: false,
        };
        let server = tokio::spawn(serve_connections(
            listener,
            limits,
            Arc::default(),
            async move {
                let _ = stop_rx.await;
            },
            grace,
            move |stream, _, _| {
                let ended = seen.clone();
                async move {
                    // Counts the drop, however the task ends.
                    struct OnDrop(Arc<AtomicUsize>);
                    impl Drop for OnDrop {
                        fn drop(&mut self) {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let _guard = OnDrop(ended);
                    let _held_open = stream;
                    std::future::pending::<()>().await;
                }
            },
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        stop_tx.send(()).unwrap();
        tokio::time::timeout(grace + CLOSE_WINDOW + Duration::from_secs(2), server)
            .await
            .expect("serve_connections must return after grace + close window")
            .unwrap();
        assert!(t0.elapsed() >= grace, "the grace period is honoured");
        assert_eq!(ended.load(Ordering::SeqCst), 1, "the task was ended");
        // The server side of the socket is gone: the client reads EOF.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
            .await
            .expect("the connection is closed, not left open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
