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
//!
//! The engine calls an [`Operation`]: [`Sockets`] is the real one; tests
//! give it a simulated service instead, so the schedule and the corrections
//! are tested on virtual time without a socket.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;

use super::Mode;
use crate::net::h1::{self, Lazy, H1};
use crate::net::{self, http, HttpClient, Opened, Stream, Timeouts};
use crate::tls::{classify_io, Outcome, TlsVersion};

/// What the engine starts at each due time. It measures from its own
/// actual start (the engine adds the scheduling lag) and never waits for
/// anything but the service.
pub trait Operation: Send + Sync + 'static {
    /// What one keep-alive connection keeps between its operations.
    type Connection: Default + Send + 'static;

    /// One operation: on `conn`, the connection's state, in keepalive mode;
    /// `None` in the modes that open a connection per operation.
    fn run(&self, conn: Option<&mut Self::Connection>) -> impl Future<Output = OpResult> + Send;

    /// Keep-alive: start an operation on `conn`; its result may come
    /// later, from [`finish`](Operation::finish). The default runs it whole.
    fn start(&self, conn: &mut Self::Connection) -> impl Future<Output = Started> + Send {
        async move { Started::Done(self.run(Some(conn)).await) }
    }

    /// The result of the operation [`start`](Operation::start) left
    /// [`Started::Sent`] on `conn`, waiting for it if it is not there yet.
    /// Called once after each `Sent`, before `conn`'s next operation.
    fn finish(&self, conn: &mut Self::Connection) -> impl Future<Output = OpResult> + Send {
        let _ = conn;
        // The default `start` never leaves one: nothing to finish.
        async { OpResult::cancelled(Duration::ZERO) }
    }
}

/// What starting a keep-alive operation left to do.
pub enum Started {
    /// It is over: its result.
    Done(OpResult),
    /// Its request is out; [`Operation::finish`] gives its result.
    Sent,
}

/// The real operation: `mode` against `target` over TCP and TLS, each
/// bounded by `timeout`.
pub struct Sockets {
    pub target: Target,
    pub mode: Mode,
    pub timeout: Duration,
    /// Plaintext keep-alive: read each response at the connection's next
    /// request instead of when it arrives ([`Lazy`]).
    pub lazy: bool,
}

impl Operation for Sockets {
    type Connection = KeepAlive;

    async fn run(&self, conn: Option<&mut KeepAlive>) -> OpResult {
        let (t, budget) = (&self.target, self.timeout);
        match (self.mode, conn) {
            (Mode::Handshake, _) => handshake(t, budget).await,
            (Mode::Keepalive, Some(ka)) => ka.request(t, budget).await,
            _ => request(t, budget).await,
        }
    }

    /// Plaintext keep-alive requests, when `lazy`, are sent now and their
    /// responses read at the connection's next operation ([`Lazy`]): one
    /// wake per request instead of two. Otherwise, and over TLS, the whole
    /// exchange runs now.
    async fn start(&self, conn: &mut KeepAlive) -> Started {
        if self.lazy && self.mode == Mode::Keepalive && self.target.tls.is_none() {
            conn.send_lazily(&self.target, self.timeout).await
        } else {
            Started::Done(self.run(Some(conn)).await)
        }
    }

    async fn finish(&self, conn: &mut KeepAlive) -> OpResult {
        conn.finish().await
    }
}

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

    /// The load's one success rule: the service answered with data or a
    /// 2xx/3xx status. A refusal (4xx, an alert) is a lost operation here,
    /// even when it is the service's right answer.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Ok | Outcome::Http(200..=399))
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

/// Connect and handshake under the operation's deadline, filling in the
/// phases from `start`. `Err` carries the failed result.
async fn open(
    t: &Target,
    start: Instant,
    deadline: Instant,
) -> Result<(Stream, OpResult), OpResult> {
    let since = |at: Instant| at.saturating_duration_since(start);
    match net::open(t.addr, t.tls.as_ref(), Timeouts::until(deadline)).await {
        Ok(Opened {
            stream,
            connected,
            handshaken,
            tls,
            ..
        }) => {
            let mut r = OpResult::new(Outcome::Ok, start);
            r.connect = Some(since(connected));
            r.handshake = handshaken.map(since);
            if let Some(tls) = tls {
                r.tls_version = tls.version;
                r.resumed = tls.resumed;
            }
            Ok((stream, r))
        }
        Err(f) => {
            let mut r = OpResult::new(f.outcome, start);
            r.connect = f.connected.map(since);
            Err(r)
        }
    }
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
        Stream::Plain(_) => Ok(Confirmation::Handshake),
        Stream::Tls(_) if r.tls_version == Some(TlsVersion::Tls12) => Ok(Confirmation::Handshake),
        Stream::Tls(mut s) => {
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
    let outcome = match HttpClient::handshake(conn, deadline).await {
        Ok(mut client) => exchange(&mut client, t, deadline).await,
        Err(o) => o,
    };
    r.outcome = outcome;
    r.end = start.elapsed();
    r
}

/// `--mode keepalive`: one persistent connection, used by one task, over
/// the minimal HTTP/1.1 client ([`H1`]): its request head is built once,
/// and a request costs a write, a read and the framing of the response.
#[derive(Default)]
pub struct KeepAlive {
    conn: Option<H1<Stream>>,
    /// Plaintext: the connection whose responses are read lazily.
    lazy: Option<Lazy>,
    /// The request on its way over `lazy`: when its operation started,
    /// what it measured so far, its deadline.
    sent: Option<(Instant, OpResult, Instant)>,
    /// The request head, built on the first request.
    head: Vec<u8>,
}

impl KeepAlive {
    /// One request, opening the connection first when there is none.
    pub async fn request(&mut self, t: &Target, budget: Duration) -> OpResult {
        let start = Instant::now();
        let deadline = start + budget;
        let mut r = OpResult::new(Outcome::Ok, start);
        if self.head.is_empty() {
            self.head = h1::request_head(t.method.as_str(), &t.path, &t.authority);
        }
        // A kept connection the service closed meanwhile is replaced, as
        // any HTTP client does, and that is not the service's failure.
        let kept = self
            .conn
            .take()
            .and_then(|mut c| c.idle_and_open().then_some(c));
        let mut client = match kept {
            Some(c) => c,
            None => match open(t, start, deadline).await {
                Ok((conn, opened)) => {
                    r = opened;
                    H1::new(conn)
                }
                Err(r) => return r,
            },
        };
        match client
            .exchange(&self.head, h1::framing_of(&t.method), deadline)
            .await
        {
            Ok(resp) => {
                r.outcome = Outcome::Http(resp.status);
                if resp.reusable {
                    self.conn = Some(client);
                }
            }
            Err(o) => r.outcome = o,
        }
        r.end = start.elapsed();
        r
    }
}

impl KeepAlive {
    /// Plaintext: send one request, opening the connection first when there
    /// is none; its response is read by [`KeepAlive::finish`].
    pub async fn send_lazily(&mut self, t: &Target, budget: Duration) -> Started {
        let start = Instant::now();
        let deadline = start + budget;
        let mut r = OpResult::new(Outcome::Ok, start);
        if self.head.is_empty() {
            self.head = h1::request_head(t.method.as_str(), &t.path, &t.authority);
        }
        // A kept connection the service closed meanwhile is replaced, as
        // any HTTP client does, and that is not the service's failure.
        let kept = self.lazy.take().filter(Lazy::idle_and_open);
        let mut conn = match kept {
            Some(c) => c,
            None => match open(t, start, deadline).await {
                Ok((Stream::Plain(tcp), opened)) => {
                    r = opened;
                    match tcp.into_std().and_then(Lazy::new) {
                        Ok(c) => c,
                        Err(e) => {
                            r.outcome = classify_io(&e);
                            r.end = start.elapsed();
                            return Started::Done(r);
                        }
                    }
                }
                // A target without TLS opens plain TCP; should that ever
                // change, the whole exchange still runs, eagerly.
                Ok((tls, opened)) => {
                    self.conn = Some(H1::new(tls));
                    let _ = opened;
                    return Started::Done(self.request(t, budget).await);
                }
                Err(r) => return Started::Done(r),
            },
        };
        match conn
            .send(&self.head, h1::framing_of(&t.method), deadline)
            .await
        {
            Ok(()) => {
                let stamped = conn.stamped();
                self.lazy = Some(conn);
                self.sent = Some((start, r, deadline));
                if stamped {
                    Started::Sent
                } else {
                    // Until the kernel times responses, read this one now:
                    // read later, it would look as late as it was read.
                    Started::Done(self.finish().await)
                }
            }
            Err(o) => {
                r.outcome = o;
                r.end = start.elapsed();
                Started::Done(r)
            }
        }
    }

    /// The result of the request [`KeepAlive::send_lazily`] sent: its
    /// response's time is when its last byte arrived, however much later
    /// it is read.
    pub async fn finish(&mut self) -> OpResult {
        let Some((start, mut r, deadline)) = self.sent.take() else {
            // Nothing was sent: nothing to finish (never asked so).
            return OpResult::cancelled(Duration::ZERO);
        };
        let got = match self.lazy.as_mut() {
            Some(conn) => conn.response(deadline).await,
            None => Err(Outcome::ClosedEarly),
        };
        match got {
            Ok((resp, at)) => {
                r.outcome = Outcome::Http(resp.status);
                r.end = at.saturating_duration_since(start);
                if !resp.reusable {
                    self.lazy = None;
                }
            }
            Err(o) => {
                r.outcome = o;
                r.end = start.elapsed();
                self.lazy = None;
            }
        }
        r
    }
}

/// Send one request asking the service to close, and read the whole
/// response.
async fn exchange(client: &mut HttpClient, t: &Target, deadline: Instant) -> Outcome {
    let req = match http::request(&t.method, &t.path, &t.authority, true) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let resp = match client.send(req, deadline).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    let status = resp.status().as_u16();
    // Drain the body without keeping it: the operation is done when the
    // whole response has arrived.
    match client.drain(resp, deadline).await {
        Ok(()) => Outcome::Http(status),
        Err(o) => o,
    }
}
