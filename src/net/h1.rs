//! A minimal HTTP/1.1 client for bodiless requests over one kept-alive
//! connection: the load generator's keep-alive path, where what the client
//! itself costs per request is part of what the run reports.
//!
//! The request is prebuilt bytes, written as they are; the response is read
//! into one buffer the connection keeps, and [`framing`](super::framing) (the
//! proxy's HTTP/1 framer, one copy of the rules) says where it ends: its
//! status, its body by Content-Length, chunked or until the close, and
//! whether the service asked to close. Nothing is allocated per request and
//! no task is woken but the caller's. Anything else HTTP/1 offers (bodies to
//! send, headers to read, pipelining) is [`super::HttpClient`]'s (hyper's).
//!
//! Never: reuses a connection whose response asked to close, whose server
//! closed it meanwhile, or that sent anything unasked.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::{timeout_at, Instant};

use super::framing::{Framer, Method, Pending, Served};
use super::AsyncIo;
use crate::tls::{classify_io, Outcome};

/// Read buffer per connection: a small response arrives in one read.
const BUF: usize = 16 * 1024;

/// One kept-alive HTTP/1.1 connection.
pub struct H1<S> {
    io: S,
    buf: Box<[u8]>,
    responses: Framer,
    /// The request sent, for its response's framing (a `HEAD` has no body).
    pending: Pending,
}

/// A whole response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The connection can carry another request.
    pub reusable: bool,
}

/// The last final status the framer reported.
struct Last(Option<u16>);

impl Served for Last {
    fn served(&mut self, status: u16) {
        self.0 = Some(status);
    }
}

impl<S: AsyncIo> H1<S> {
    pub fn new(io: S) -> Self {
        H1 {
            io,
            buf: vec![0; BUF].into_boxed_slice(),
            responses: Framer::responses(),
            pending: Pending::default(),
        }
    }

    /// Whether the connection can take another request now, without
    /// waiting: `false` when the service closed it (or sent something
    /// unasked) since the last response. Usually no system call: the
    /// runtime already knows the socket has nothing to read.
    pub fn idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }

    /// Write `request` (a whole bodiless head; `method` says how its
    /// response is framed) and read the whole response, by `until`.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        method: Method,
        until: Instant,
    ) -> Result<Response, Outcome> {
        match timeout_at(until, self.round_trip(request, method)).await {
            Ok(r) => r,
            Err(_) => Err(Outcome::Timeout),
        }
    }

    async fn round_trip(&mut self, request: &[u8], method: Method) -> Result<Response, Outcome> {
        self.pending.push(method);
        let io = |e: std::io::Error| classify_io(&e);
        self.io.write_all(request).await.map_err(io)?;
        // TLS: the record leaves only on flush; TCP: nothing to do.
        self.io.flush().await.map_err(io)?;
        let mut last = Last(None);
        loop {
            let n = self.io.read(&mut self.buf).await.map_err(io)?;
            if n == 0 {
                // A body that runs until the close ends here; anything
                // else ended early.
                return match last.0 {
                    Some(status) if self.responses.until_close() => Ok(Response {
                        status,
                        reusable: false,
                    }),
                    _ => Err(Outcome::ClosedEarly),
                };
            }
            self.responses
                .feed(&self.buf[..n], &self.pending, &mut last);
            if self.responses.lost() {
                return Err(Outcome::Io("malformed_response".into()));
            }
            if let Some(status) = last.0 {
                if self.responses.between_messages() {
                    return Ok(Response {
                        status,
                        reusable: !self.responses.close_asked(),
                    });
                }
            }
        }
    }
}

/// A bodiless request head, built once per connection.
pub fn request_head(method: &str, path: &str, host: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// How a response to `method` is framed.
pub fn framing_of(method: &hyper::Method) -> Method {
    match *method {
        hyper::Method::HEAD => Method::Head,
        hyper::Method::CONNECT => Method::Connect,
        _ => Method::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A server that answers each request head with the next of `answers`,
    /// then closes when they run out.
    async fn server(answers: Vec<&'static [u8]>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for a in answers {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                // In two pieces, so the framer sees a response split.
                let (x, y) = a.split_at(a.len() / 2);
                s.write_all(x).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                s.write_all(y).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn responses_end_by_length_chunks_or_close_and_say_if_reusable() {
        let addr = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        ])
        .await;
        let mut c = H1::new(TcpStream::connect(addr).await.unwrap());
        let req = request_head("GET", "/", "x");
        let until = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        for _ in 0..4 {
            assert!(c.idle_and_open());
            got.push(c.exchange(&req, Method::Other, until).await.unwrap());
        }
        let statuses: Vec<_> = got.iter().map(|r| (r.status, r.reusable)).collect();
        assert_eq!(
            statuses,
            [(200, true), (404, true), (204, true), (503, false)]
        );
    }

    #[tokio::test]
    async fn a_body_until_close_ends_at_the_close_and_a_silent_close_is_closed_early() {
        let addr = server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the close"]).await;
        let mut c = H1::new(TcpStream::connect(addr).await.unwrap());
        let req = request_head("GET", "/", "x");
        let until = Instant::now() + Duration::from_secs(5);
        let r = c.exchange(&req, Method::Other, until).await.unwrap();
        assert_eq!((r.status, r.reusable), (200, false));
        // The server has closed: a new exchange on it finds nothing.
        assert_eq!(
            c.exchange(&req, Method::Other, until).await,
            Err(Outcome::ClosedEarly)
        );
        let addr = server(vec![]).await;
        let mut c = H1::new(TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !c.idle_and_open(),
            "the server's close is seen before reuse"
        );
    }

    #[tokio::test]
    async fn garbage_is_malformed_and_silence_is_a_timeout() {
        let addr = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
        let mut c = H1::new(TcpStream::connect(addr).await.unwrap());
        let req = request_head("GET", "/", "x");
        let until = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            c.exchange(&req, Method::Other, until).await,
            Err(Outcome::Io("malformed_response".into()))
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = H1::new(TcpStream::connect(l.local_addr().unwrap()).await.unwrap());
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            c.exchange(&req, Method::Other, soon).await,
            Err(Outcome::Timeout)
        );
    }
}
