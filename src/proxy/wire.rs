//! HTTP/1.1 on one pooled upstream connection of `--swap request`: the
//! request head written from the downstream request's parts, its body
//! streamed, the response head parsed and its body decoded, all directly on
//! the connection's stream, in the downstream connection's task.
//!
//! Why not hyper's client: its connection hands every request and response
//! through channels (dispatch, body), each a wake and a poll of the whole
//! downstream connection, and it builds a request URI and headers per
//! request. Per relayed request on a kept-alive connection that cost more
//! user CPU than everything `--swap connection` spends relaying the same
//! bytes. The downstream side stays hyper's (HTTP/1.1 and HTTP/2).
//!
//! The message rules (body length, chunked, until the close, `HEAD`,
//! `204`/`304`, `Connection: close`) are [`net::framing`]'s, one copy for
//! the relay, the load client and this.
//!
//! Never: reuses a connection whose response asked to close, whose body
//! ran until the close or was not read to its end, or that sent anything
//! unasked; sends hop-by-hop headers (the caller strips them first).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::net::framing::{self, BodyEnd};
use crate::net::Stream;
use crate::tls::{classify_io, Outcome};

/// Read buffer per connection: a small response arrives in one read.
const BUF: usize = 16 * 1024;

/// One upstream HTTP/1.1 connection's stream and buffers.
pub(super) struct Wire {
    io: Stream,
    /// Bytes read and not yet used are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The request head being written; kept so it is allocated once.
    out: Vec<u8>,
    /// The connection can carry another request once the current
    /// response's body has been read to its end.
    reusable: bool,
}

/// A response head, as the downstream response is built from it.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Decode,
}

/// Where the response body is in its decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decode {
    /// This many body bytes left.
    Length(u64),
    Chunk(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines until an empty one; dropped, as HTTP/2 and most
    /// HTTP/1.1 clients downstream would not get them either.
    Trailers,
}

impl Wire {
    pub(super) fn new(io: Stream) -> Self {
        Wire {
            io,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
            reusable: true,
        }
    }

    /// Whether the connection can take another request now, without
    /// waiting: `false` once it may not be reused, when the service closed
    /// it (or sent something unasked) since the last response.
    pub(super) fn idle_and_open(&mut self) -> bool {
        if !self.reusable || self.start != self.end {
            return false;
        }
        crate::net::h1::nothing_to_read(&mut self.io)
    }

    /// Whether the connection may carry another request (its last response
    /// is read to the end and allowed it).
    pub(super) fn reusable(&self) -> bool {
        self.reusable && self.start == self.end
    }

    /// Send the request (`parts` already without hop-by-hop headers; its
    /// `Host` is `host` when it has none) and read the response head. No
    /// deadline of its own: the caller bounds it.
    pub(super) async fn send(
        &mut self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        host: &str,
    ) -> Result<Head, Outcome> {
        self.reusable = false;
        let sent = body.size_hint().exact();
        let chunked = !body.is_end_stream() && sent.is_none();
        self.write_head(parts, &body, host);
        let io = |e: io::Error| classify_io(&e);
        let written = async {
            self.io.write_all(&self.out).await.map_err(io)?;
            if !body.is_end_stream() {
                self.write_body(body, chunked).await?;
            }
            // TLS: the record leaves only on flush; TCP: nothing to do.
            self.io.flush().await.map_err(io)
        };
        if let Err(failed) = written.await {
            // A service that refused the certificate after the handshake
            // (TLS 1.3) closed with an alert: the write may fail first,
            // the alert is what a read finds.
            return Err(self.alert_behind(failed).await);
        }
        let head = self.read_head(framing_of(&parts.method)).await?;
        Ok(head)
    }

    /// The request line and headers, with the body's framing.
    fn write_head(&mut self, parts: &hyper::http::request::Parts, body: &Incoming, host: &str) {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2's `:authority`, else the upstream's name.
            let host = parts.uri.authority().map_or(host, |a| a.as_str());
            put(out, b"host", host.as_bytes());
        }
        for (name, value) in &parts.headers {
            if name != header::CONTENT_LENGTH {
                put(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        match body.size_hint().exact() {
            // No body: a length only where the method expects a body.
            Some(0) if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) => {}
            Some(n) => put(out, b"content-length", n.to_string().as_bytes()),
            None => put(out, b"transfer-encoding", b"chunked"),
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The downstream request's body, as it arrives.
    async fn write_body(&mut self, mut body: Incoming, chunked: bool) -> Result<(), Outcome> {
        let io = |e: io::Error| classify_io(&e);
        while let Some(frame) = body.frame().await {
            // The client went away mid-body: nothing complete to send.
            let frame = frame.map_err(|_| Outcome::Io("downstream_body".into()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: dropped, see `Chunk::Trailers`
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                self.io.write_all(size.as_bytes()).await.map_err(io)?;
            }
            self.io.write_all(&data).await.map_err(io)?;
            if chunked {
                self.io.write_all(b"\r\n").await.map_err(io)?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await.map_err(io)?;
        }
        Ok(())
    }

    /// What a failed write means: the alert or close a read finds behind
    /// it, else the write's own error.
    async fn alert_behind(&mut self, failed: Outcome) -> Outcome {
        match poll_fn(|cx| self.poll_fill(cx)).await {
            Err(e) => classify_io(&e),
            Ok(_) => failed,
        }
    }

    /// Read until a final response head has come; interim (1xx) heads are
    /// skipped.
    async fn read_head(&mut self, method: framing::Method) -> Result<Head, Outcome> {
        let malformed = || Outcome::Io("malformed_response".into());
        loop {
            if self.start < self.end {
                let mut headers = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(len)) => {
                        let code = resp.code.unwrap_or(0);
                        // `Upgrade` is never sent upstream, so a 101 is as
                        // wrong as garbage.
                        if (100..200).contains(&code) && code != 101 {
                            self.start += len;
                            continue;
                        }
                        let status = StatusCode::from_u16(code).map_err(|_| malformed())?;
                        if code == 101 {
                            return Err(malformed());
                        }
                        let (end, close) = framing::response_body(method, code, resp.headers);
                        let mut map = HeaderMap::with_capacity(resp.headers.len() + 3);
                        for h in resp.headers.iter() {
                            let name = HeaderName::from_bytes(h.name.as_bytes());
                            let value = HeaderValue::from_bytes(h.value);
                            if let (Ok(name), Ok(value)) = (name, value) {
                                map.append(name, value);
                            } else {
                                return Err(malformed());
                            }
                        }
                        self.reusable =
                            !close && resp.version == Some(1) && end != BodyEnd::UntilClose;
                        self.start += len;
                        let body = match end {
                            BodyEnd::Empty => Decode::Done,
                            BodyEnd::Length(n) => Decode::Length(n),
                            BodyEnd::Chunked => Decode::Chunk(Chunk::Size),
                            BodyEnd::UntilClose => Decode::UntilClose,
                        };
                        return Ok(Head {
                            status,
                            headers: map,
                            body,
                        });
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(malformed()),
                }
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) => return Err(Outcome::ClosedEarly),
                Ok(_) => {}
                Err(e) => return Err(classify_io(&e)),
            }
        }
    }

    /// The whole body when it has already arrived with the head (the usual
    /// small response): no streaming body, and the connection is free
    /// before the response goes downstream.
    pub(super) fn buffered_body(&mut self, decode: &mut Decode) -> Option<Bytes> {
        match *decode {
            Decode::Done => Some(Bytes::new()),
            Decode::Length(n) if (self.end - self.start) as u64 >= n => {
                let n = n as usize;
                let body = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                *decode = Decode::Done;
                Some(body)
            }
            _ => None,
        }
    }

    /// The next piece of the response body: `None` at its end.
    pub(super) fn poll_body(
        &mut self,
        decode: &mut Decode,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let avail = (self.end - self.start) as u64;
            match *decode {
                Decode::Done => return Poll::Ready(None),
                Decode::Length(0) => {
                    *decode = Decode::Done;
                    return Poll::Ready(None);
                }
                Decode::Length(n) if avail > 0 => {
                    let take = n.min(avail);
                    // Done with the last bytes, not a poll later: a reader
                    // that has its length's worth may never poll again.
                    *decode = match n - take {
                        0 => Decode::Done,
                        left => Decode::Length(left),
                    };
                    return Poll::Ready(Some(Ok(self.take(take as usize))));
                }
                Decode::UntilClose if avail > 0 => {
                    return Poll::Ready(Some(Ok(self.take(avail as usize))));
                }
                Decode::Chunk(Chunk::Data(0)) => {
                    *decode = Decode::Chunk(Chunk::DataEnd);
                    continue;
                }
                Decode::Chunk(Chunk::Data(n)) if avail > 0 => {
                    let take = n.min(avail);
                    *decode = Decode::Chunk(Chunk::Data(n - take));
                    return Poll::Ready(Some(Ok(self.take(take as usize))));
                }
                Decode::Chunk(state @ (Chunk::Size | Chunk::DataEnd | Chunk::Trailers)) => {
                    match self.line() {
                        Some(Ok((from, to))) => {
                            let line = &self.buf[from..to];
                            *decode = match state {
                                Chunk::Size => match framing::chunk_size(line) {
                                    Some(0) => Decode::Chunk(Chunk::Trailers),
                                    Some(n) => Decode::Chunk(Chunk::Data(n)),
                                    None => return Poll::Ready(Some(Err(bad("chunk size")))),
                                },
                                Chunk::DataEnd if line.is_empty() => Decode::Chunk(Chunk::Size),
                                Chunk::DataEnd => {
                                    return Poll::Ready(Some(Err(bad("chunk end"))));
                                }
                                _ if line.is_empty() => Decode::Done,
                                _ => Decode::Chunk(Chunk::Trailers),
                            };
                            continue;
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        None => {}
                    }
                }
                _ => {}
            }
            // Nothing usable buffered: read more.
            match self.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(0)) if *decode == Decode::UntilClose => {
                    *decode = Decode::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    self.reusable = false;
                    let e =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed mid-body");
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        let b = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        b
    }

    /// The next whole line buffered, CRLF (or LF) excluded, as a range of
    /// `buf`; `None` until it has ended.
    fn line(&mut self) -> Option<io::Result<(usize, usize)>> {
        let pending = &self.buf[self.start..self.end];
        match pending.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let from = self.start;
                let mut to = from + i;
                self.start = to + 1;
                if to > from && self.buf[to - 1] == b'\r' {
                    to -= 1;
                }
                Some(Ok((from, to)))
            }
            None if pending.len() > framing::MAX_LINE => Some(Err(bad("line too long"))),
            None => None,
        }
    }

    /// Read more into the buffer: the number of bytes read, 0 at the close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else if self.buf.len() < framing::MAX_HEAD {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Poll::Ready(Err(bad("response head too long")));
            }
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed response: {what}"),
    )
}

/// How the response to `method` is framed.
fn framing_of(method: &Method) -> framing::Method {
    crate::net::h1::framing_of(method)
}
