//! Connect and TLS handshake, each phase under a deadline, each failure
//! named as an [`Outcome`].
//!
//! A finished client handshake is not the service's acceptance: a TLS 1.3
//! server refuses a client certificate after the client's side is done, so
//! callers look for evidence afterwards (`http`, or load's confirmation).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;

use crate::tls::{classify_io, Outcome, TlsVersion};

/// The client config to handshake with and the name to verify the server
/// against.
pub type TlsTarget = (Arc<ClientConfig>, ServerName<'static>);

/// How long each phase may take. A phase ends at the earlier of its own
/// timeout (counted from the phase's start) and `deadline`, the bound on a
/// whole operation when there is one.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    pub deadline: Option<Instant>,
}

impl Timeouts {
    /// Each phase on its own clock (the probe's and the proxy's way).
    pub fn per_phase(connect: Duration, handshake: Duration) -> Self {
        Timeouts {
            connect,
            handshake,
            deadline: None,
        }
    }

    /// Every phase shares one deadline (the load generator's way: running
    /// out in a phase gives that phase's timeout outcome).
    pub fn until(deadline: Instant) -> Self {
        Timeouts {
            connect: Duration::MAX,
            handshake: Duration::MAX,
            deadline: Some(deadline),
        }
    }

    fn phase_end(&self, phase: Duration) -> Instant {
        // Far enough to never fire, and free of Instant overflow.
        const FAR: Duration = Duration::from_secs(86_400 * 365);
        let own = Instant::now() + phase.min(FAR);
        self.deadline.map_or(own, |d| d.min(own))
    }
}

/// What the client saw of a finished handshake.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub version: Option<TlsVersion>,
    /// Whether the handshake resumed a session.
    pub resumed: Option<bool>,
    /// The negotiated key-exchange group (e.g. `X25519MLKEM768`), which
    /// dominates handshake cost.
    pub key_exchange: Option<String>,
    /// The server's leaf certificate.
    pub server_cert: Option<CertificateDer<'static>>,
}

impl TlsInfo {
    fn of(conn: &rustls::ClientConnection) -> Self {
        TlsInfo {
            version: conn.protocol_version().and_then(TlsVersion::of),
            resumed: conn
                .handshake_kind()
                .map(|k| k == rustls::HandshakeKind::Resumed),
            key_exchange: conn
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name())),
            server_cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned()),
        }
    }
}

/// A client connection, plaintext or TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An open connection and when each phase finished.
#[derive(Debug)]
pub struct Opened {
    pub stream: Stream,
    pub started: Instant,
    pub connected: Instant,
    /// TLS only.
    pub handshaken: Option<Instant>,
    /// TLS only.
    pub tls: Option<TlsInfo>,
}

impl Opened {
    /// Time in the TLS handshake alone.
    pub fn handshake_time(&self) -> Option<Duration> {
        self.handshaken.map(|h| h - self.connected)
    }
}

/// Why a connection could not be opened, and how far it got.
#[derive(Debug, Clone)]
pub struct OpenFailed {
    pub outcome: Outcome,
    pub started: Instant,
    /// When TCP connected, if it did (the handshake failed).
    pub connected: Option<Instant>,
}

/// TCP connect (with `TCP_NODELAY`: every exchange here is latency-bound).
pub async fn connect<A: ToSocketAddrs>(addr: A, until: Instant) -> Result<TcpStream, Outcome> {
    match timeout_at(until, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(classify_io(&e)),
        Err(_) => Err(Outcome::ConnectTimeout),
    }
}

/// The client side of a TLS handshake over `tcp`.
pub async fn handshake(
    tcp: TcpStream,
    (config, name): &TlsTarget,
    until: Instant,
) -> Result<TlsStream<TcpStream>, Outcome> {
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    match timeout_at(until, connector.connect(name.clone(), tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(classify_io(&e)),
        Err(_) => Err(Outcome::HandshakeTimeout),
    }
}

/// Connect to `addr` and, with `tls`, handshake.
pub async fn open<A: ToSocketAddrs>(
    addr: A,
    tls: Option<&TlsTarget>,
    t: Timeouts,
) -> Result<Opened, OpenFailed> {
    let started = Instant::now();
    let tcp = connect(addr, t.phase_end(t.connect))
        .await
        .map_err(|outcome| OpenFailed {
            outcome,
            started,
            connected: None,
        })?;
    let connected = Instant::now();
    let Some(target) = tls else {
        return Ok(Opened {
            stream: Stream::Plain(tcp),
            started,
            connected,
            handshaken: None,
            tls: None,
        });
    };
    let s = handshake(tcp, target, t.phase_end(t.handshake))
        .await
        .map_err(|outcome| OpenFailed {
            outcome,
            started,
            connected: Some(connected),
        })?;
    let info = TlsInfo::of(s.get_ref().1);
    Ok(Opened {
        stream: Stream::Tls(Box::new(s)),
        started,
        connected,
        handshaken: Some(Instant::now()),
        tls: Some(info),
    })
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
