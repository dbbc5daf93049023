//! One load operation in each mode, timed by phase from the operation's
//! actual start. The caller owns the schedule (and so the
//! coordinated-omission correction); this file only measures.
//!
//! - handshake: connect, full handshake, then *confirm* acceptance. A TLS 1.2
//!   handshake that completes is the server's acceptance (its Finished comes
//!   after it checked our certificate). A TLS 1.3 server decides after our
//!   handshake is done, so we wait for evidence: a NewSessionTicket (rustls
//!   servers send one only after accepting the client's Finished), data, or
//!   an alert. A quiet window is reported as such, never silently as proof.
//! - request: connect, handshake, one HTTP/1.1 request with
//!   `Connection: close`.
//! - keepalive: requests over a persistent connection, reopened when the
//!   service closes it or an operation fails.
//!
//! Every phase shares one deadline (`--timeout`); running out of it in a
//! phase gives that phase's timeout outcome, never a silent gap.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;

use crate::probe::{classify_hyper, AbortOnDrop};
use crate::tls::{classify_io, Outcome, TlsVersion};

/// Where each operation goes and what it sends.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS client config and the name to verify; `None` for plaintext.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub method: hyper::Method,
    pub path: String,
    /// The `Host` header.
    pub authority: String,
    /// How long a TLS 1.3 handshake-mode operation waits for evidence of
    /// acceptance before calling the silence `quiet`.
    pub confirm_window: Duration,
}

/// How a handshake-mode operation knew the service accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confirmation {
    /// The handshake itself (TLS 1.2, or TCP connect without TLS).
    Handshake,
    /// A TLS 1.3 NewSessionTicket, sent only after the server accepted us.
    Ticket,
    /// Application data from the server.
    Data,
    /// Nothing arrived within the confirmation window: no alert, no proof.
    Quiet,
}

impl Confirmation {
    pub fn name(self) -> &'static str {
        match self {
            Confirmation::Handshake => "handshake",
            Confirmation::Ticket => "ticket",
            Confirmation::Data => "data",
            Confirmation::Quiet => "quiet",
        }
    }
}

/// What one operation measured. Durations run from the operation's actual
/// start; the caller adds the scheduling lag for the corrected latencies.
#[derive(Debug, Clone)]
pub struct OpResult {
    pub outcome: Outcome,
    /// TCP connected, when this operation opened a connection and got there.
    pub connect: Option<Duration>,
    /// Client handshake done (TLS only).
    pub handshake: Option<Duration>,
    /// The verdict: response read, acceptance confirmed, or the failure.
    pub end: Duration,
    /// Whether the handshake resumed a session, when one happened.
    pub resumed: Option<bool>,
    pub confirmation: Option<Confirmation>,
    pub tls_version: Option<TlsVersion>,
}

impl OpResult {
    /// Ended by us (shutdown), after `end`.
    pub fn cancelled(end: Duration) -> Self {
        OpResult {
            outcome: Outcome::Cancelled,
            connect: None,
            handshake: None,
            end,
            resumed: None,
            confirmation: None,
            tls_version: None,
        }
    }

    fn new(outcome: Outcome, start: Instant) -> Self {
        OpResult {
            outcome,
            connect: None,
            handshake: None,
            end: start.elapsed(),
            resumed: None,
            confirmation: None,
            tls_version: None,
        }
    }
}

/// A connection, plaintext or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Conn {
    fn boxed(self) -> Box<dyn Io> {
        match self {
            Conn::Plain(s) => Box::new(s),
            Conn::Tls(s) => s,
        }
    }
}

/// Connect and handshake, filling in `r`'s phases. `Err` carries the
/// failed result.
async fn open(t: &Target, start: Instant, deadline: Instant) -> Result<(Conn, OpResult), OpResult> {
    let tcp = match timeout_at(deadline, TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(OpResult::new(classify_io(&e), start)),
        Err(_) => return Err(OpResult::new(Outcome::ConnectTimeout, start)),
    };
    let _ = tcp.set_nodelay(true);
    let mut r = OpResult::new(Outcome::Ok, start);
    r.connect = Some(start.elapsed());
    let Some((config, name)) = &t.tls else {
        return Ok((Conn::Plain(tcp), r));
    };
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = match timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.outcome = classify_io(&e);
            r.end = start.elapsed();
            return Err(r);
        }
        Err(_) => {
            r.outcome = Outcome::HandshakeTimeout;
            r.end = start.elapsed();
            return Err(r);
        }
    };
    r.handshake = Some(start.elapsed());
    let conn = tls.get_ref().1;
    r.tls_version = conn.protocol_version().and_then(TlsVersion::of);
    r.resumed = conn
        .handshake_kind()
        .map(|k| k == rustls::HandshakeKind::Resumed);
    Ok((Conn::Tls(Box::new(tls)), r))
}

/// `--mode handshake`.
pub async fn handshake(t: &Target, budget: Duration) -> OpResult {
    let start = Instant::now();
    let deadline = start + budget;
    let (conn, mut r) = match open(t, start, deadline).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let confirmed = match conn {
        Conn::Plain(_) => Ok(Confirmation::Handshake),
        Conn::Tls(_) if r.tls_version == Some(TlsVersion::Tls12) => Ok(Confirmation::Handshake),
        Conn::Tls(mut s) => {
            // At least three handshake times: on a long path the alert
            // needs a round trip more than the ticket would.
            let hs = r.handshake.unwrap_or_default();
            let window = (start + hs + t.confirm_window.max(hs * 3)).min(deadline);
            confirm(&mut s, window).await
        }
    };
    r.end = start.elapsed();
    match confirmed {
        Ok(c) => {
            r.outcome = Outcome::Ok;
            r.confirmation = Some(c);
        }
        Err(o) => r.outcome = o,
    }
    r
}

/// Wait for evidence that a TLS 1.3 server accepted us, until `until`.
async fn confirm(s: &mut TlsStream<TcpStream>, until: Instant) -> Result<Confirmation, Outcome> {
    let mut buf = [0u8; 512];
    let evidence = poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(Outcome::ClosedEarly)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Confirmation::Data)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(classify_io(&e))),
            // rustls processes a ticket inside the read without producing
            // plaintext, so the read stays pending: look at the count.
            Poll::Pending if s.get_ref().1.tls13_tickets_received() > 0 => {
                Poll::Ready(Ok(Confirmation::Ticket))
            }
            Poll::Pending => Poll::Pending,
        }
    });
    match timeout_at(until, evidence).await {
        Ok(r) => r,
        Err(_) => Ok(Confirmation::Quiet),
    }
}

/// `--mode request`: a new connection and one request.
pub async fn request(t: &Target, budget: Duration) -> OpResult {
    let start = Instant::now();
    let deadline = start + budget;
    let (conn, mut r) = match open(t, start, deadline).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let outcome = match HttpConn::handshake(conn, deadline).await {
        Ok(mut http) => http.exchange(t, deadline, true).await.0,
        Err(o) => o,
    };
    r.outcome = outcome;
    r.end = start.elapsed();
    r
}

/// `--mode keepalive`: one persistent connection, used by one task.
#[derive(Default)]
pub struct KeepAlive {
    conn: Option<HttpConn>,
}

impl KeepAlive {
    /// One request, opening the connection first when there is none.
    pub async fn request(&mut self, t: &Target, budget: Duration) -> OpResult {
        let start = Instant::now();
        let deadline = start + budget;
        let mut r = OpResult::new(Outcome::Ok, start);
        // A kept connection is used only once its task says it can take
        // another request; one the service closed meanwhile is replaced, as
        // any HTTP client does, and that is not the service's failure.
        let reused = match self.conn.take() {
            Some(mut h) if !h.sender.is_closed() => {
                match timeout_at(deadline, h.sender.ready()).await {
                    Ok(Ok(())) => Some(h),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        r.outcome = Outcome::Timeout;
                        r.end = start.elapsed();
                        return r;
                    }
                }
            }
            _ => None,
        };
        let mut http = match reused {
            Some(h) => h,
            None => {
                let (conn, opened) = match open(t, start, deadline).await {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                r = opened;
                match HttpConn::handshake(conn, deadline).await {
                    Ok(h) => h,
                    Err(o) => {
                        r.outcome = o;
                        r.end = start.elapsed();
                        return r;
                    }
                }
            }
        };
        let (outcome, reusable) = http.exchange(t, deadline, false).await;
        r.outcome = outcome;
        r.end = start.elapsed();
        if reusable {
            self.conn = Some(http);
        }
        r
    }
}

/// An HTTP/1.1 client connection and the task driving it.
struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    driver: AbortOnDrop<Result<(), hyper::Error>>,
}

impl HttpConn {
    async fn handshake(conn: Conn, deadline: Instant) -> Result<HttpConn, Outcome> {
        let io = TokioIo::new(conn.boxed());
        match timeout_at(deadline, hyper::client::conn::http1::handshake(io)).await {
            Ok(Ok((sender, driver))) => Ok(HttpConn {
                sender,
                driver: AbortOnDrop(tokio::spawn(driver)),
            }),
            Ok(Err(e)) => Err(classify_hyper(&e)),
            Err(_) => Err(Outcome::Timeout),
        }
    }

    /// Send one request and read the whole response. Returns the outcome
    /// and whether the connection can carry another request.
    async fn exchange(&mut self, t: &Target, deadline: Instant, close: bool) -> (Outcome, bool) {
        let mut req = hyper::Request::builder()
            .method(t.method.clone())
            .uri(&t.path)
            .header(hyper::header::HOST, &t.authority);
        if close {
            req = req.header(hyper::header::CONNECTION, "close");
        }
        let req = match req.body(Empty::<Bytes>::new()) {
            Ok(r) => r,
            // Method and path were validated with the config; still no panic.
            Err(e) => return (Outcome::Io(format!("invalid_request: {e}")), false),
        };
        let sent = async {
            match self.sender.send_request(req).await {
                Ok(resp) => Ok(resp),
                Err(e) => {
                    // The request side only learns that the connection
                    // closed; the cause (a TLS 1.3 alert) is the driver's.
                    match tokio::time::timeout(Duration::from_secs(1), &mut self.driver.0).await {
                        Ok(Ok(Err(cause))) => Err(cause),
                        _ => Err(e),
                    }
                }
            }
        };
        let resp = match timeout_at(deadline, sent).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return (classify_hyper(&e), false),
            Err(_) => return (Outcome::Timeout, false),
        };
        let status = resp.status().as_u16();
        let keep = !close
            && resp
                .headers()
                .get(hyper::header::CONNECTION)
                .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"close"));
        // Drain the body frame by frame without keeping it: the operation is
        // done when the whole response has arrived.
        let mut body = resp.into_body();
        let drained = timeout_at(deadline, async {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<(), hyper::Error>(())
        })
        .await;
        match drained {
            Ok(Ok(())) => (Outcome::Http(status), keep),
            Ok(Err(e)) => (classify_hyper(&e), false),
            Err(_) => (Outcome::Timeout, false),
        }
    }
}
