//! The HTTP/1.1 client exchange that proves a service's decision: a status
//! line is the evidence of acceptance (or of an authorization refusal), and
//! when the connection dies instead, the cause is found — a TLS 1.3 alert
//! read after the handshake surfaces in hyper's connection task, not in the
//! request's error.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::time::{timeout_at, Instant};

use super::AsyncIo;
use crate::tls::{classify_io, classify_rustls, Outcome};

/// How long a failed request waits for the connection task to say why.
const CAUSE_WAIT: Duration = Duration::from_secs(1);

/// An HTTP/1.1 client connection (closed when the client is dropped). `B`
/// is the request body: empty for the probes and the load generator.
///
/// hyper's connection future is polled inline, by whichever call of this
/// client is waiting (ready, send, drain, collect), not by a task of its
/// own: with a task, every request and every response crossed between two
/// tasks through channels, a wake-up each way per request, which was most
/// of what a keep-alive request cost the load generator.
pub struct HttpClient<B = Empty<Bytes>> {
    sender: SendRequest<B>,
    conn: Conn,
}

type Driver = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// hyper's connection future until it ends, then how it ended.
struct Conn {
    driver: Option<Driver>,
    ended: Option<Result<(), hyper::Error>>,
}

impl Conn {
    /// `f`, with the connection driven while it waits. A connection that
    /// ends first is dropped, which makes whatever `f` waits on for it
    /// (a response, a body) end with hyper's error.
    async fn drive<F: Future>(&mut self, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        poll_fn(|cx| {
            if let Some(d) = self.driver.as_mut() {
                if let Poll::Ready(r) = d.as_mut().poll(cx) {
                    self.ended = Some(r);
                    self.driver = None;
                }
            }
            f.as_mut().poll(cx)
        })
        .await
    }

    /// Why the connection ended, waiting up to [`CAUSE_WAIT`] for it to.
    async fn cause(&mut self) -> Option<hyper::Error> {
        if let Some(d) = self.driver.as_mut() {
            if let Ok(r) = tokio::time::timeout(CAUSE_WAIT, d).await {
                self.ended = Some(r);
                self.driver = None;
            }
        }
        match self.ended.take() {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }
}

impl<B> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Start HTTP/1.1 over `io`.
    pub async fn handshake<S: AsyncIo + 'static>(io: S, until: Instant) -> Result<Self, Outcome> {
        match timeout_at(
            until,
            hyper::client::conn::http1::handshake(TokioIo::new(io)),
        )
        .await
        {
            Ok(Ok((sender, conn))) => Ok(HttpClient {
                sender,
                conn: Conn {
                    driver: Some(Box::pin(conn)),
                    ended: None,
                },
            }),
            Ok(Err(e)) => Err(classify_hyper(&e)),
            Err(_) => Err(Outcome::Timeout),
        }
    }

    /// The connection has closed; no wait.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Wait until the connection can take another request: `Ok(false)` when
    /// it has closed (the service ended a keep-alive connection).
    pub async fn ready(&mut self, until: Instant) -> Result<bool, Outcome> {
        if self.sender.is_closed() {
            return Ok(false);
        }
        match timeout_at(until, self.conn.drive(self.sender.ready())).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Ok(false),
            Err(_) => Err(Outcome::Timeout),
        }
    }

    /// Send `req` and wait for the response head.
    pub async fn send(
        &mut self,
        req: Request<B>,
        until: Instant,
    ) -> Result<Response<Incoming>, Outcome> {
        let sent = async {
            match self.conn.drive(self.sender.send_request(req)).await {
                Ok(resp) => Ok(resp),
                // The request side only learns that the connection closed;
                // the cause is the connection's own error.
                Err(e) => Err(self.conn.cause().await.unwrap_or(e)),
            }
        };
        match timeout_at(until, sent).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(classify_hyper(&e)),
            Err(_) => Err(Outcome::Timeout),
        }
    }
}

/// A bodiless request. `close` asks the service to close after answering.
pub fn request(
    method: &hyper::Method,
    path: &str,
    host: &str,
    close: bool,
) -> Result<Request<Empty<Bytes>>, Outcome> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(hyper::header::HOST, host);
    if close {
        b = b.header(hyper::header::CONNECTION, "close");
    }
    // Method and path come from validated flags or code; still no panic.
    b.body(Empty::new())
        .map_err(|e| Outcome::Io(format!("invalid_request: {e}")))
}

/// Whether the response lets the connection carry another request.
pub fn keeps_alive(resp: &Response<Incoming>) -> bool {
    resp.headers()
        .get(hyper::header::CONNECTION)
        .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"close"))
}

impl<B> HttpClient<B> {
    /// Read the whole body of `resp` (this client's) without keeping it.
    pub async fn drain(&mut self, resp: Response<Incoming>, until: Instant) -> Result<(), Outcome> {
        let mut body = resp.into_body();
        let drained = self.conn.drive(async {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<(), hyper::Error>(())
        });
        match timeout_at(until, drained).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify_hyper(&e)),
            Err(_) => Err(Outcome::Timeout),
        }
    }

    /// Keep up to `limit` bytes of the body of `resp` (this client's);
    /// `None` when it did not arrive whole in time or was larger.
    pub async fn collect(
        &mut self,
        resp: Response<Incoming>,
        limit: usize,
        until: Instant,
    ) -> Option<Bytes> {
        let body = self
            .conn
            .drive(Limited::new(resp.into_body(), limit).collect());
        match timeout_at(until, body).await {
            Ok(Ok(b)) => Some(b.to_bytes()),
            _ => None,
        }
    }
}

/// Find the I/O or TLS error behind a hyper error.
pub fn classify_hyper(e: &hyper::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return classify_rustls(tls);
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        Outcome::ClosedEarly
    } else {
        Outcome::Io(e.to_string())
    }
}
