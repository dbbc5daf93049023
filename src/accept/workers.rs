//! Per-core workers, as nginx and Envoy run them: one thread per worker,
//! each with its own single-threaded tokio runtime and its own listening
//! socket on the same address (`SO_REUSEPORT`: the kernel spreads new
//! connections over the sockets), running the shared accept loop. A
//! connection stays on the thread that accepted it for life, so its wakes
//! never cross threads (no work stealing, no futex hand-offs per request).
//!
//! Owns the worker threads and their runtimes: none outlives
//! [`serve_workers`], including when its future is dropped. The caps, the
//! shedding index, the descriptor reserve and the gauges stay process-wide
//! (`super::Shared`, `ConnStats`): each loop sheds whichever connection of
//! any worker has waited longest.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

use super::{accept_loop, ConnStats, Limits, RunState, Shared, Tracked};

/// The most workers a listener runs: far past any core count this tool is
/// run on, and a typo (`--workers 10000`) is not 10,000 threads.
pub const MAX_WORKERS: usize = 256;

/// `--workers` resolved: the number given, or one per two CPUs the process
/// may use (at least one). The error says what to give.
///
/// Why not one per CPU: serve and the proxy share their machine with what
/// they serve and what loads them (a sidecar, a load test on one box), and
/// every worker that sleeps and wakes per event costs a context switch. On
/// the 2-core box of `../shared/perf/compare.sh` (keep-alive, 4
/// connections, the load and the upstream on the same cores), one worker
/// spent 29.7 µs of CPU per relayed request against 37.2 µs for two, with
/// 0.5 context switches per request against 1.25; per new proxied
/// connection 435 µs against 470 µs. Give `--workers` the core count where
/// the cores are the proxy's own.
pub fn resolve_workers(given: Option<usize>) -> Result<usize, String> {
    match given {
        Some(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "{n} is out of range; give 1 to {MAX_WORKERS} (1 runs every connection on one thread)"
        )),
        None => {
            Ok(std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).clamp(1, MAX_WORKERS)))
        }
    }
}

/// The listening sockets of one address, one per worker, bound and
/// listening (connections queue from now on) but not yet accepting.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl Listeners {
    /// The address bound: with port 0 in the request, the port the kernel
    /// gave, which every worker's socket shares.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn workers(&self) -> usize {
        self.sockets.len()
    }
}

/// Binds `workers` listening sockets on `addr` with `backlog` each. One
/// worker gets one plain socket, as [`super::bind`] makes. More get
/// `SO_REUSEPORT` sockets: the first is bound as asked (port 0 included),
/// the rest to the address it got. Call it inside a tokio runtime.
pub fn bind_workers(addr: SocketAddr, backlog: u32, workers: usize) -> io::Result<Listeners> {
    let mut sockets = Vec::with_capacity(workers.max(1));
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let socket = match at {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        if workers > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        let listener = socket.listen(backlog)?;
        at = listener.local_addr()?;
        // Registered with a worker's runtime when it starts.
        sockets.push(listener.into_std()?);
    }
    Ok(Listeners { sockets, addr: at })
}

/// [`super::serve_connections`] over `listeners`: with one socket, on the
/// caller's runtime; with more, one worker thread each. Every worker stops
/// accepting when `shutdown` resolves and drains as `serve_connections`
/// does; this returns when all have ended. Dropping the future ends the
/// workers' connections too (their runtimes are dropped).
pub async fn serve_workers<F, Fut>(
    listeners: Listeners,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handle: F,
) where
    F: Fn(Tracked<TcpStream>, SocketAddr, watch::Receiver<RunState>) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sockets = listeners.sockets;
    if sockets.len() == 1 {
        let Some(std) = sockets.pop() else { return };
        match TcpListener::from_std(std) {
            Ok(l) => super::serve_connections(l, limits, stats, shutdown, grace, handle).await,
            Err(e) => tracing::error!(error = %e, "cannot register the listener; not serving"),
        }
        return;
    }
    let shared = Arc::new(Shared::new(sockets.len()));
    let (stop_tx, stop_rx) = watch::channel(SERVING);
    // Sent (or dropped) once every worker has drained: a worker keeps its
    // runtime until then, because a task of one worker's runtime (a pooled
    // upstream connection) may serve another worker's connection.
    let (release_tx, release_rx) = watch::channel(false);
    let mut done = Vec::with_capacity(sockets.len());
    for (me, std) in sockets.into_iter().enumerate() {
        let (done_tx, done_rx) = oneshot::channel::<()>();
        done.push(done_rx);
        let (shared, stats, handle) = (shared.clone(), stats.clone(), handle.clone());
        let (stop, mut release) = (stop_rx.clone(), release_rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("certshift-worker-{me}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = me, error = %e, "cannot start a worker runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(worker = me, error = %e, "cannot register a worker's listener");
                            return;
                        }
                    };
                    let mut abandon = stop.clone();
                    let mut stop = stop;
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s >= STOP).await;
                    };
                    let served =
                        accept_loop(listener, &shared, me, limits, stats, stopped, grace, handle);
                    // Abandoned (or the caller gone without a word): the
                    // loop is dropped, which aborts its connections.
                    tokio::select! {
                        () = served => {}
                        _ = abandon.wait_for(|s| *s == ABANDON) => return,
                    }
                    let _ = done_tx.send(());
                    let _ = release.wait_for(|r| *r).await;
                });
            });
        if let Err(e) = spawned {
            tracing::error!(worker = me, error = %e, "cannot start a worker thread");
        }
    }
    // Dropped with this future: every worker drops its loop (aborting its
    // connections) and its runtime.
    struct Abandon(watch::Sender<u8>);
    impl Drop for Abandon {
        fn drop(&mut self) {
            let _ = self.0.send(ABANDON);
        }
    }
    let stop_tx = Abandon(stop_tx);
    shutdown.await;
    let _ = stop_tx.0.send(STOP);
    for d in done {
        // An error: that worker never started or ended without draining.
        let _ = d.await;
    }
    let _ = release_tx.send(true);
    // Drained: the guard's abandon finds nothing left to abort.
}

/// What the workers are told: keep serving, stop accepting and drain
/// (`serve_connections`' shutdown), or end now.
const SERVING: u8 = 0;
const STOP: u8 = 1;
const ABANDON: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_default_to_the_cpus_and_zero_is_refused() {
        assert!(resolve_workers(None).unwrap() >= 1);
        assert_eq!(resolve_workers(Some(3)), Ok(3));
        let e = resolve_workers(Some(0)).unwrap_err();
        assert!(e.contains("give 1 to 256"), "{e}");
        assert!(resolve_workers(Some(MAX_WORKERS + 1)).is_err());
    }

    #[tokio::test]
    async fn every_worker_socket_shares_the_port_zero_gave() {
        let l = bind_workers("127.0.0.1:0".parse().unwrap(), 16, 3).unwrap();
        assert_eq!(l.workers(), 3);
        assert_ne!(l.local_addr().port(), 0);
        for s in &l.sockets {
            assert_eq!(s.local_addr().unwrap(), l.local_addr());
        }
    }
}
