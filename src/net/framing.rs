//! HTTP/1 message boundaries in a byte stream: the proxy's relayed streams
//! of `connection` mode, so a kept-alive connection counts every response it
//! was served by its status (a connection ended by `--on-rotate reset` after
//! ten responses counts ten, not one and not `cancelled`); and the load
//! generator's keep-alive client ([`super::h1`]), which learns from it where
//! each response ends.
//!
//! Only observes: the relay passes every byte on whatever this makes of
//! it. Requests are framed too, because a response's framing depends on
//! its request (a `HEAD` has no body, a `CONNECT` answered 2xx becomes a
//! tunnel) and a request body may contain anything. The rules are RFC 9112
//! §6.3's. Bytes that do not parse, a head over [`MAX_HEAD`], or a switch
//! of protocols end the counting for the connection, never the relay.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Where a [`Framer`] reports each final response's status (the proxy's
/// `metrics::Statuses`; the load client's last status).
pub trait Served {
    fn served(&mut self, status: u16);
}

/// A head longer than this is not one we can follow.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer line we follow.
pub const MAX_LINE: usize = 4 * 1024;

/// Requests seen but not yet answered, in order: what each response's
/// framing depends on. Shared by the two pumps of one connection, which run
/// in one task, so the lock is never contended.
#[derive(Debug, Default)]
pub struct Pending(Mutex<VecDeque<Method>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Head,
    Connect,
    Other,
}

impl Pending {
    pub fn push(&self, m: Method) {
        if let Ok(mut q) = self.0.lock() {
            // A client pipelining without reading answers is bounded by the
            // service's patience, not ours: past this, stop remembering.
            if q.len() < 1024 {
                q.push_back(m);
            }
        }
    }

    fn pop(&self) -> Method {
        self.0
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
            .unwrap_or(Method::Other)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

#[derive(Debug)]
enum State {
    /// Collecting a message head.
    Head,
    /// `n` body bytes to skip.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// `n` chunk bytes, then the CRLF after them.
    ChunkData(u64),
    ChunkEnd,
    /// Trailer lines until an empty one.
    Trailers,
    /// Everything until EOF is this message's body, or a tunnel: nothing
    /// more to count.
    Done,
    /// Bytes that are not HTTP/1, or a head or line too long to follow:
    /// nothing more to count either, but no message ended well.
    Lost,
}

/// Follows one direction of one connection.
#[derive(Debug)]
pub struct Framer {
    side: Side,
    state: State,
    /// The head or line being collected.
    buf: Vec<u8>,
    /// The last head asked for the connection to close after its message.
    close: bool,
}

impl Framer {
    pub fn requests() -> Self {
        Framer::new(Side::Request)
    }

    pub fn responses() -> Self {
        Framer::new(Side::Response)
    }

    fn new(side: Side) -> Self {
        Framer {
            side,
            state: State::Head,
            buf: Vec::new(),
            close: false,
        }
    }

    /// Every message fed so far is complete (a response's status was
    /// reported once its body ended, or it had none).
    pub fn between_messages(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// The current message's body runs until the connection closes.
    pub fn until_close(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The stream stopped being HTTP/1 we can follow.
    pub fn lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// The last head carried `Connection: close`.
    pub fn close_asked(&self) -> bool {
        self.close
    }

    /// Take the next bytes of the stream: a request's method goes to
    /// `pending`; a final response's status goes to `served`.
    pub fn feed(&mut self, mut bytes: &[u8], pending: &Pending, served: &mut impl Served) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Done | State::Lost => return,
                State::Head => self.head(bytes, pending, served),
                State::Body(n) => {
                    let take = n.min(bytes.len() as u64);
                    self.state = match n - take {
                        0 => State::Head,
                        left => State::Body(left),
                    };
                    &bytes[take as usize..]
                }
                State::ChunkSize => match self.line(bytes) {
                    Some((line, rest)) => {
                        self.state = match chunk_size(&line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Lost,
                        };
                        rest
                    }
                    None => return,
                },
                State::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    self.state = match n - take {
                        0 => State::ChunkEnd,
                        left => State::ChunkData(left),
                    };
                    &bytes[take as usize..]
                }
                State::ChunkEnd => match self.line(bytes) {
                    Some((line, rest)) => {
                        self.state = if line.is_empty() {
                            State::ChunkSize
                        } else {
                            State::Lost
                        };
                        rest
                    }
                    None => return,
                },
                State::Trailers => match self.line(bytes) {
                    Some((line, rest)) => {
                        if line.is_empty() {
                            self.state = State::Head;
                        }
                        rest
                    }
                    None => return,
                },
            };
        }
    }

    /// Collect a line ending in CRLF (or LF); `None` when it has not ended yet.
    fn line<'a>(&mut self, bytes: &'a [u8]) -> Option<(Vec<u8>, &'a [u8])> {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.buf.extend_from_slice(&bytes[..i]);
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some((line, &bytes[i + 1..]))
            }
            None => {
                self.buf.extend_from_slice(bytes);
                if self.buf.len() > MAX_LINE {
                    self.state = State::Lost;
                }
                None
            }
        }
    }

    fn head<'a>(
        &mut self,
        bytes: &'a [u8],
        pending: &Pending,
        served: &mut impl Served,
    ) -> &'a [u8] {
        // The usual case, a head that starts a read, is parsed in place;
        // only a head split across reads is collected.
        let before = self.buf.len();
        let parsed = if before == 0 {
            parse(self.side, bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            parse(self.side, &self.buf)
        };
        match parsed {
            Ok(httparse::Status::Complete((len, message, Body { framing, close }))) => {
                self.buf.clear();
                self.close = close;
                self.state = self.after_head(message, framing, pending, served);
                &bytes[len - before..]
            }
            Ok(httparse::Status::Partial) if before + bytes.len() <= MAX_HEAD => {
                if before == 0 {
                    self.buf.extend_from_slice(bytes);
                }
                &[]
            }
            // Not HTTP/1, or a head we will not follow.
            _ => {
                self.buf = Vec::new();
                self.state = State::Lost;
                &[]
            }
        }
    }

    fn after_head(
        &self,
        message: Message,
        framing: Framing,
        pending: &Pending,
        served: &mut impl Served,
    ) -> State {
        let body = match message {
            Message::Request(method) => {
                pending.push(method);
                // A request without a length has no body (RFC 9112 §6.3 ¶6).
                match framing {
                    Framing::None => return State::Head,
                    f => f,
                }
            }
            // Interim: the final response to the same request follows.
            Message::Response(100 | 102..=199) => return State::Head,
            Message::Response(status) => {
                served.served(status);
                let method = pending.pop();
                match (method, status) {
                    // The connection is something else from here on.
                    (_, 101) | (Method::Connect, 200..=299) => return State::Done,
                    (Method::Head, _) | (_, 204 | 304) => return State::Head,
                    // Without a length, the body runs until the close.
                    (_, _) if framing == Framing::None => return State::Done,
                    _ => framing,
                }
            }
        };
        match body {
            Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize,
            Framing::None | Framing::UntilClose => State::Done,
        }
    }
}

/// Whether `buf` is the start of an HTTP/1 request head that is not
/// complete yet: what the connection mode waits out before it goes upstream.
/// Anything else (a complete head, bytes that are not HTTP/1, a head past
/// [`MAX_HEAD`]) is not worth waiting for.
pub fn request_head_pending(buf: &[u8]) -> bool {
    buf.len() < MAX_HEAD && matches!(parse(Side::Request, buf), Ok(httparse::Status::Partial))
}

/// Where the body of a response ends, for a client that reads the body
/// itself (the proxy's request mode) rather than only observing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    Empty,
    Length(u64),
    Chunked,
    /// At the connection's close, which ends the connection too.
    UntilClose,
}

/// How the final response `status` to a `method` request, with `headers`,
/// ends its body, and whether it asked to close the connection after it:
/// the same rules as [`Framer`]'s.
pub fn response_body(
    method: Method,
    status: u16,
    headers: &[httparse::Header<'_>],
) -> (BodyEnd, bool) {
    let Body { framing, close } = body(headers);
    let end = match (method, status) {
        (_, 101) | (Method::Connect, 200..=299) => BodyEnd::UntilClose,
        (Method::Head, _) | (_, 100..=199 | 204 | 304) => BodyEnd::Empty,
        _ => match framing {
            Framing::None | Framing::UntilClose => BodyEnd::UntilClose,
            Framing::Length(0) => BodyEnd::Empty,
            Framing::Length(n) => BodyEnd::Length(n),
            Framing::Chunked => BodyEnd::Chunked,
        },
    };
    (end, close)
}

type Parsed = httparse::Result<(usize, Message, Body)>;

fn parse(side: Side, buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match side {
        Side::Request => {
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(buf)?;
            let method = match req.method {
                Some("HEAD") => Method::Head,
                Some("CONNECT") => Method::Connect,
                _ => Method::Other,
            };
            Ok(match status {
                httparse::Status::Complete(len) => {
                    httparse::Status::Complete((len, Message::Request(method), body(req.headers)))
                }
                httparse::Status::Partial => httparse::Status::Partial,
            })
        }
        Side::Response => {
            let mut resp = httparse::Response::new(&mut headers);
            let status = resp.parse(buf)?;
            let code = resp.code.unwrap_or(0);
            Ok(match status {
                httparse::Status::Complete(len) => {
                    httparse::Status::Complete((len, Message::Response(code), body(resp.headers)))
                }
                httparse::Status::Partial => httparse::Status::Partial,
            })
        }
    }
}

enum Message {
    Request(Method),
    Response(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// A transfer coding other than chunked last: only the close ends it.
    UntilClose,
}

/// What a head says about its message's end: the body framing, and
/// whether the connection closes after it.
struct Body {
    framing: Framing,
    close: bool,
}

/// The body framing a head announces; Transfer-Encoding wins over
/// Content-Length, and a length we cannot read is followed no further.
fn body(headers: &[httparse::Header<'_>]) -> Body {
    let close = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    Body {
        framing: framing(headers),
        close,
    }
}

fn framing(headers: &[httparse::Header<'_>]) -> Framing {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            return if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            };
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            length = Some(n);
        }
    }
    match length {
        None => Framing::None,
        Some(Some(n)) => Framing::Length(n),
        Some(None) => Framing::UntilClose,
    }
}

/// The hex size at the start of a chunk-size line (extensions ignored).
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if end == 0 || end > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..end]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Statuses;

    /// Feed the requests then the responses in pieces of `step` bytes.
    fn count(requests: &[u8], responses: &[u8], step: usize) -> Statuses {
        let pending = Pending::default();
        let mut served = Statuses::default();
        let mut up = Framer::requests();
        for piece in requests.chunks(step) {
            up.feed(piece, &pending, &mut Statuses::default());
        }
        let mut down = Framer::responses();
        for piece in responses.chunks(step) {
            down.feed(piece, &pending, &mut served);
        }
        served
    }

    fn every_split(requests: &[u8], responses: &[u8]) -> Statuses {
        let whole = count(requests, responses, usize::MAX);
        for step in 1..=17 {
            assert_eq!(
                count(requests, responses, step),
                whole,
                "split into {step}-byte pieces"
            );
        }
        whole
    }

    #[test]
    fn kept_alive_responses_count_by_status_whatever_their_framing() {
        let requests = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 22\r\n\r\nHTTP/1.1 500 in a body\
            HEAD /c HTTP/1.1\r\n\r\n\
            GET /d HTTP/1.1\r\n\r\n\
            GET /e HTTP/1.1\r\n\r\n";
        let responses = b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\nHTTP/1.1 404 nope\r\n\
            HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nHTTP/\r\n10\r\n1.1 418 teapot\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n\
            HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        let s = every_split(requests, responses);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [(200, 2), (201, 1), (304, 1), (403, 1)]
        );
        assert_eq!((s.first(), s.total()), (Some(200), 5));
    }

    #[test]
    fn a_body_until_close_a_tunnel_or_garbage_ends_the_counting() {
        let get = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 500 body\r\n\r\n";
        assert_eq!(every_split(get, until_close), Statuses::one(200));
        let upgrade = b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n\r\nHTTP/1.1 500 x\r\n\r\n";
        assert_eq!(every_split(get, upgrade), Statuses::one(101));
        let connect = b"CONNECT h:443 HTTP/1.1\r\n\r\n";
        let tunnel = b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(every_split(connect, tunnel), Statuses::one(200));
        assert_eq!(
            every_split(get, b"\x16\x03\x03 not http"),
            Statuses::default()
        );
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nHTTP/1.1 500 x\r\n\r\n";
        assert_eq!(every_split(get, gzip), Statuses::one(200));
    }

    #[test]
    fn a_head_too_long_to_follow_stops_counting_without_holding_it() {
        let mut f = Framer::responses();
        let (pending, mut served) = (Pending::default(), Statuses::default());
        f.feed(b"HTTP/1.1 200 OK\r\nX: ", &pending, &mut served);
        let filler = vec![b'a'; 8 * 1024];
        for _ in 0..10 {
            f.feed(&filler, &pending, &mut served);
        }
        assert!(f.lost());
        assert!(f.buf.capacity() == 0 && served.total() == 0);
    }
}
