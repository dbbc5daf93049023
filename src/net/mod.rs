//! Connections: the client side's connect and TLS handshake under per-phase
//! deadlines with every failure classified into a [`tls::Outcome`], the
//! HTTP/1.1 exchange that proves a service's decision (hyper's, and a
//! minimal keep-alive client for the load generator, [`h1`]), HTTP/1 message
//! boundaries in a byte stream ([`framing`]), the accept loop's helpers,
//! addresses as users write them, and the shutdown signal.
//!
//! Everything that opens a connection to a service (`probe`, `load`, the
//! proxy's upstream side, and next the audit and the bench) goes through
//! [`dial`] and [`http`], so a failure is named the same way everywhere.
//! Never: picks a credential (that is `plan` and `creds`) or judges an
//! outcome against an expectation.
//!
//! [`tls::Outcome`]: crate::tls::Outcome

mod addr;
pub mod dial;
pub mod framing;
pub mod h1;
pub mod http;
mod prefixed;
mod signal;

use tokio::io::{AsyncRead, AsyncWrite};

pub use addr::{
    check_admin_bind, parse_host_port, split_host_port, AdminBindError, HostPortError,
    MIN_ADMIN_TOKEN,
};
pub use dial::{
    connect, handshake, open, OpenFailed, Opened, Stream, Timeouts, TlsInfo, TlsTarget,
};
pub use http::{classify_hyper, HttpClient};
pub use prefixed::Prefixed;
pub use signal::shutdown_signal;

/// A byte stream a connection can run over: TCP, TLS over TCP, a boxed mix.
pub trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIo for T {}

/// Aborts the task when dropped, however its owner's work ends (a
/// connection's driver, a rotation schedule).
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    pub fn spawn<F>(f: F) -> Self
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        AbortOnDrop(tokio::spawn(f))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
