//! The accept loop shared by `serve`, `proxy` and the admin API: a connection
//! cap taken *before* accepting (past it, clients wait in the kernel's
//! backlog instead of being accepted and starved), back-off on accept errors
//! (EMFILE must not spin), and shutdown in phases: stop accepting, let
//! connections drain for a grace period, tell the rest to close, and end
//! whatever still runs after that.
//!
//! Owns every connection task it spawns (a `JoinSet`): none outlives
//! [`serve_connections`], even when a handler ignores the phases or the loop
//! itself is dropped. Never reads or writes a connection's bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long connections told to close get before they are aborted: enough
/// to send a TLS close_notify or a last response, not to finish a transfer.
pub const CLOSE_WINDOW: Duration = Duration::from_secs(2);

/// Shutdown phases, as connection tasks see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunState {
    Serving,
    /// No new connections; finish what is in flight.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// Accept on `listener` until `shutdown` resolves, running `handle` for each
/// connection (at most `max` at once), then drain for up to `grace`, tell
/// the rest to close, and abort those still running [`CLOSE_WINDOW`] later.
/// Returns when every connection task has ended.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    max: usize,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<RunState>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max));
    let (phase_tx, phase_rx) = watch::channel(RunState::Serving);
    // Dropping the set aborts its tasks, so a caller that drops or aborts
    // this future does not leave connections running either.
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished tasks so the set holds at most the live ones.
        while tasks.try_join_next().is_some() {}
        let task = handle(stream, peer, phase_rx.clone());
        tasks.spawn(async move {
            task.await;
            drop(permit);
        });
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

/// Runs a hyper HTTP/1 server connection under the shutdown phases: on
/// `Draining` it shuts down gracefully (an idle kept-alive connection closes
/// at once, a request in flight gets its response), on `Closing` it is
/// dropped.
pub async fn serve_http1<I, S, B>(
    conn: http1::Connection<I, S>,
    mut phase: watch::Receiver<RunState>,
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
        let server = tokio::spawn(serve_connections(
            listener,
            4,
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
