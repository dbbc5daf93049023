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

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
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
    /// unasked) since the last response.
    pub fn idle_and_open(&mut self) -> bool {
        nothing_to_read(&mut self.io)
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

/// One kept-alive plaintext HTTP/1.1 connection whose responses are read
/// when the caller next needs the connection, not when they arrive.
///
/// Why: an open-loop generator wakes once to send each request; waking a
/// second time for its response costs as much again (a wake is ~20 µs of
/// CPU on a virtual machine, more than the request). So the socket is not
/// on the runtime's reactor at all while a response is on its way; the
/// response is read, without waiting, before the connection's next request,
/// and the time it arrived comes from the kernel's receive timestamp
/// (`SO_TIMESTAMPNS`), so its latency is exact however late it is read.
/// Only a response that is not complete by then is waited for, on the
/// reactor, for that one wait.
///
/// Never: reports a response earlier than the kernel received its last
/// byte, or later than it was read; reuses a connection whose response asked
/// to close, that the service closed, or that sent anything unasked.
pub struct Lazy {
    /// `None` once a wait on the reactor was abandoned (the connection is
    /// not reusable then).
    sock: Option<std::net::TcpStream>,
    buf: Box<[u8]>,
    responses: Framer,
    pending: Pending,
    /// The status of the response being read, once its head was seen.
    last: Last,
    /// Whether a response came with the kernel's receive timestamp yet.
    /// Turning timestamps on is finished by the kernel asynchronously when
    /// no socket had them on, so the first responses may come without.
    stamped: bool,
}

impl Lazy {
    /// Take over a connected socket (non-blocking, off the reactor).
    pub fn new(sock: std::net::TcpStream) -> std::io::Result<Self> {
        sock.set_nonblocking(true)?;
        use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
        // Without timestamps a response's time is when it is read: later
        // than it came, never earlier (and the caller reads at once until
        // `stamped`).
        setsockopt(&sock, ReceiveTimestampns, &true).map_err(std::io::Error::from)?;
        Ok(Lazy {
            sock: Some(sock),
            buf: vec![0; BUF].into_boxed_slice(),
            responses: Framer::responses(),
            pending: Pending::default(),
            last: Last(None),
            stamped: false,
        })
    }

    /// Whether responses are timed by the kernel's receive timestamp yet:
    /// until then, reading one late would make it look late.
    pub fn stamped(&self) -> bool {
        self.stamped
    }

    /// Whether the connection can take another request now: no response
    /// outstanding, the service has not closed it and sent nothing unasked.
    /// One non-blocking peek.
    pub fn idle_and_open(&self) -> bool {
        let Some(sock) = &self.sock else {
            return false;
        };
        let mut probe = [0u8; 1];
        matches!(sock.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Write `request` (a whole bodiless head; `method` says how its
    /// response is framed), waiting on the reactor only if the socket's
    /// buffer is full.
    pub async fn send(
        &mut self,
        request: &[u8],
        method: Method,
        until: Instant,
    ) -> Result<(), Outcome> {
        use std::io::Write;
        self.pending.push(method);
        self.last = Last(None);
        let sock = self.sock.as_mut().ok_or(Outcome::ClosedEarly)?;
        let io = |e: std::io::Error| classify_io(&e);
        match sock.write(request) {
            Ok(n) if n == request.len() => Ok(()),
            Ok(n) => self.write_on_reactor(&request[n..], until).await,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.write_on_reactor(request, until).await
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The socket's buffer was full: finish the write on the reactor.
    async fn write_on_reactor(&mut self, bytes: &[u8], until: Instant) -> Result<(), Outcome> {
        let io = |e: std::io::Error| classify_io(&e);
        let sock = self.sock.take().ok_or(Outcome::ClosedEarly)?;
        let mut s = tokio::net::TcpStream::from_std(sock).map_err(io)?;
        let written = timeout_at(until, s.write_all(bytes)).await;
        self.sock = Some(s.into_std().map_err(io)?);
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io(e)),
            Err(_) => Err(Outcome::Timeout),
        }
    }

    /// The response to the request sent, and when its last byte arrived:
    /// read at once if it is all there, else waited for by `until`.
    pub async fn response(&mut self, until: Instant) -> Result<(Response, Instant), Outcome> {
        loop {
            if let Some(done) = self.read_ready()? {
                return Ok(done);
            }
            let sock = self.sock.take().ok_or(Outcome::ClosedEarly)?;
            let s = tokio::net::TcpStream::from_std(sock).map_err(|e| classify_io(&e))?;
            let ready = timeout_at(until, s.readable()).await;
            // Off the reactor again whatever happened: the next wait
            // registers anew, and nothing wakes this thread meanwhile.
            self.sock = Some(s.into_std().map_err(|e| classify_io(&e))?);
            match ready {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return Err(classify_io(&e)),
                Err(_) => return Err(Outcome::Timeout),
            }
        }
    }

    /// Read what has arrived without waiting; the response once whole.
    fn read_ready(&mut self) -> Result<Option<(Response, Instant)>, Outcome> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let fd = self.sock.as_ref().ok_or(Outcome::ClosedEarly)?.as_raw_fd();
        loop {
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let (n, stamp) = {
                let mut iov = [std::io::IoSliceMut::new(&mut self.buf)];
                match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT) {
                    Ok(m) => {
                        let stamp = m.cmsgs().ok().and_then(|mut c| {
                            c.find_map(|c| match c {
                                ControlMessageOwned::ScmTimestampns(t) => Some(t),
                                _ => None,
                            })
                        });
                        (m.bytes, stamp)
                    }
                    Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(classify_io(&std::io::Error::from(e))),
                }
            };
            // The two clocks read back to back: `arrived` maps the wall
            // clock's stamp onto the monotonic one by their difference now,
            // and anything between the two reads (the parse below, a
            // preemption on a busy machine) would date the arrival that
            // much too early, before the request was even sent.
            let read_at = Instant::now();
            let wall_at = stamp.map(|_| std::time::SystemTime::now());
            if n == 0 {
                self.sock = None;
                return match self.last.0 {
                    Some(status) if self.responses.until_close() => Ok(Some((
                        Response {
                            status,
                            reusable: false,
                        },
                        read_at,
                    ))),
                    _ => Err(Outcome::ClosedEarly),
                };
            }
            self.responses
                .feed(&self.buf[..n], &self.pending, &mut self.last);
            if self.responses.lost() {
                return Err(Outcome::Io("malformed_response".into()));
            }
            if let Some(status) = self.last.0 {
                if self.responses.between_messages() {
                    let at = match (stamp, wall_at) {
                        (Some(t), Some(wall_at)) => {
                            self.stamped = true;
                            arrived(t, read_at, wall_at)
                        }
                        _ => read_at,
                    };
                    let reusable = !self.responses.close_asked();
                    return Ok(Some((Response { status, reusable }, at)));
                }
            }
        }
    }
}

/// The `Instant` the kernel's receive timestamp `t` (wall clock) stands for,
/// given that the bytes were read at `read_at`, when the wall clock said
/// `wall_at`: never after the read.
fn arrived(
    t: nix::sys::time::TimeSpec,
    read_at: Instant,
    wall_at: std::time::SystemTime,
) -> Instant {
    let stamp = std::time::UNIX_EPOCH
        + std::time::Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u32);
    let ago = wall_at.duration_since(stamp).unwrap_or_default();
    read_at.checked_sub(ago).unwrap_or(read_at)
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

/// Whether `io` has nothing to read right now (no bytes, no close): a kept
/// connection that may take another request. Polled once with a no-op
/// waker, so usually no system call: the runtime already knows the socket
/// has nothing to read. A byte that was there is consumed: only for a
/// connection that is dropped when this says `false`. Shared by this client
/// and the proxy's upstream.
pub fn nothing_to_read<R: AsyncRead + Unpin>(io: &mut R) -> bool {
    let mut probe = [0u8; 1];
    let mut rb = ReadBuf::new(&mut probe);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(io).poll_read(&mut cx, &mut rb), Poll::Pending)
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

    /// A connection for [`Lazy`]: connected by tokio, then off its reactor.
    async fn lazy(addr: std::net::SocketAddr) -> Lazy {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Lazy::new(tcp.into_std().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_lazy_response_read_late_is_timed_when_it_arrived() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                let _ = tx.send(());
            }
        });
        let mut c = lazy(addr).await;
        let req = request_head("GET", "/", "x");
        let until = Instant::now() + Duration::from_secs(5);
        // The kernel turns timestamps on asynchronously when no socket had
        // them: the first responses may come without one.
        for _ in 0..100 {
            if c.stamped() {
                break;
            }
            c.send(&req, Method::Other, until).await.unwrap();
            c.response(until).await.unwrap();
            rx.recv().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(c.stamped(), "responses come with receive timestamps");
        let sent = Instant::now();
        c.send(&req, Method::Other, until).await.unwrap();
        rx.recv().await.unwrap();
        // When the response is in the socket (a busy machine may deliver
        // it after the server's write returned): bounded polling.
        let mut seen = None;
        for _ in 0..5000 {
            if !c.idle_and_open() {
                seen = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = seen.expect("the response arrives");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (r, at) = c.response(until).await.unwrap();
        assert_eq!((r.status, r.reusable), (200, true));
        // Read 50 ms after it was there, timed by the kernel's receive
        // timestamp (the margin: the wall and monotonic clocks are read one
        // after the other).
        assert!(
            at <= seen + Duration::from_millis(1),
            "timed {:?} after it was seen in the socket",
            at.saturating_duration_since(seen)
        );
        assert!(at >= sent, "never before the request was sent");
        assert!(c.idle_and_open());
    }

    #[tokio::test]
    async fn lazy_responses_end_by_length_chunks_or_close_like_the_eager_ones() {
        let addr = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        ])
        .await;
        let mut c = lazy(addr).await;
        let req = request_head("GET", "/", "x");
        let until = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        for _ in 0..4 {
            assert!(c.idle_and_open());
            c.send(&req, Method::Other, until).await.unwrap();
            // Each arrives in two pieces 2 ms apart: the second is waited
            // for on the reactor.
            got.push(c.response(until).await.unwrap().0);
        }
        let statuses: Vec<_> = got.iter().map(|r| (r.status, r.reusable)).collect();
        assert_eq!(
            statuses,
            [(200, true), (404, true), (204, true), (503, false)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !c.idle_and_open(),
            "the server's close is seen before reuse"
        );

        let addr = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
        let mut c = lazy(addr).await;
        c.send(&req, Method::Other, until).await.unwrap();
        assert_eq!(
            c.response(until).await.map(|r| r.0),
            Err(Outcome::Io("malformed_response".into()))
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = lazy(l.local_addr().unwrap()).await;
        let soon = Instant::now() + Duration::from_millis(50);
        c.send(&req, Method::Other, soon).await.unwrap();
        assert_eq!(c.response(soon).await.map(|r| r.0), Err(Outcome::Timeout));
    }
}
