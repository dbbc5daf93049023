//! The accept loop shared by `serve` and `proxy`: a connection cap taken
//! *before* accepting (past it, clients wait in the kernel's backlog instead
//! of being accepted and starved), back-off on accept errors (EMFILE must not
//! spin), and shutdown in phases: stop accepting, let connections drain for
//! a grace period, then tell the rest to close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

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
/// connection (at most `max` at once), then drain for up to `grace`.
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
        let task = handle(stream, peer, phase_rx.clone());
        tokio::spawn(async move {
            task.await;
            drop(permit);
        });
    }
    drop(listener);
    // Every slot back means every connection task has ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = phase_tx.send(RunState::Draining);
    if tokio::time::timeout(grace, limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the {grace:?} grace period; closing them");
        let _ = phase_tx.send(RunState::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(2), limit.acquire_many(all)).await;
    }
}
