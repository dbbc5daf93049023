//! The byte relay between the downstream client and the upstream service,
//! and the reading of the first upstream bytes that decides the outcome.
//!
//! Two one-way pumps run concurrently in one task, each blocked only by its
//! own writes (a service that answers before reading the whole request, or a
//! client that stops reading, cannot wedge the other direction), under one
//! idle clock fed by both and a cancel signal. The first upstream bytes are
//! the evidence: data means the service accepted (an HTTP/1 response is
//! recorded as `http:NNN`, even when split across reads, and every later
//! response of a kept-alive connection is counted by its status through
//! [`framing`](crate::net::framing)), an error before
//! them is classified (a TLS 1.3 client-certificate rejection arrives here,
//! after the handshake), and a failure after them is recorded too.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::metrics::Statuses;
use crate::net::framing::{Framer, Pending};
use crate::tls::{classify_io, Outcome};

/// One read's buffer: up to four TLS records' plaintext. A read takes what
/// is ready up to this, so a bulk transfer is written on in 64 KiB pieces:
/// a quarter of the writes (and of the wake-ups of the reader on the other
/// side) of one record per write.
const BUF: usize = 64 * 1024;
/// Spare buffers kept per thread for the next read.
const SPARES: usize = 4;

/// What the relay saw.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub outcome: Outcome,
    /// Every response served, by status, kept even if the connection
    /// failed or was cancelled later.
    pub responses: Statuses,
    /// From the start of the relay to the first upstream byte.
    pub first_byte: Option<Duration>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The first downstream bytes looked like an HTTP/1 request.
    pub downstream_http: bool,
    /// The relay ended because `cancel` fired (rotation policy, shutdown).
    pub cancelled: bool,
    /// The relay ended because nothing moved either way for `idle`.
    pub idle: bool,
}

/// Relay until the upstream is done, `idle` passes with no traffic either
/// way, or `cancel` resolves. Gives `down` back so the caller can still
/// answer the client when nothing came from upstream.
pub async fn relay<D, U>(
    down: D,
    up: U,
    idle: Duration,
    cancel: impl Future<Output = ()>,
) -> (Relayed, D)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let activity = AtomicU64::new(0);
    // What the client side did, readable whichever pump finishes first.
    let upward = Upward {
        bytes: AtomicU64::new(0),
        http: AtomicBool::new(false),
        eof: AtomicBool::new(false),
        pending: Pending::default(),
    };
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = tokio::io::split(up);
    let mut r = Relayed {
        outcome: Outcome::ClientClosed,
        responses: Statuses::default(),
        first_byte: None,
        bytes_up: 0,
        bytes_down: 0,
        downstream_http: false,
        cancelled: false,
        idle: false,
    };
    // What came back; kept outside the pump so that a relay ended by
    // `cancel` still knows what the client was served.
    let mut d = Downward {
        bytes: 0,
        first_byte: None,
        responses: Statuses::default(),
        error: None,
    };
    let mut down_done = false;
    {
        let up_pump = pump_up(&mut dr, &mut uw, &upward, &activity, started, idle);
        let pending = &upward.pending;
        let downward = pump_down(&mut ur, &mut dw, &mut d, pending, &activity, started, idle);
        tokio::pin!(up_pump, downward, cancel);
        let mut up_done = false;
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            tokio::select! {
                () = &mut up_pump, if !up_done => up_done = true,
                () = &mut downward => {
                    down_done = true;
                    break;
                }
                _ = tokio::time::sleep_until(started + last + idle) => {
                    if started.elapsed() >= Duration::from_millis(activity.load(Ordering::Relaxed)) + idle {
                        break;
                    }
                }
                _ = &mut cancel => {
                    r.cancelled = true;
                    break;
                }
            }
        }
    }
    r.bytes_down = d.bytes;
    r.first_byte = d.first_byte;
    r.outcome = if r.cancelled {
        Outcome::Cancelled
    } else if !down_done {
        // Idle for the whole timeout: a client that never spoke asked the
        // service nothing; one that was served counts by what it was served;
        // one whose request went unanswered met a service that timed out.
        r.idle = true;
        match (d.first_byte, upward.bytes.load(Ordering::Relaxed)) {
            (None, 0) => Outcome::ClientClosed,
            (None, _) => Outcome::Timeout,
            (Some(_), _) => d.responses.first().map_or(Outcome::Ok, Outcome::Http),
        }
    } else {
        match (d.first_byte, d.error.take()) {
            (None, Some(e)) => e,
            // Nothing came back and nothing failed: the service closed, or
            // the client left first and it followed.
            (None, None)
                if upward.eof.load(Ordering::Relaxed)
                    && upward.bytes.load(Ordering::Relaxed) == 0 =>
            {
                Outcome::ClientClosed
            }
            (None, None) => Outcome::ClosedEarly,
            (Some(_), Some(e)) => e,
            (Some(_), None) => d.responses.first().map_or(Outcome::Ok, Outcome::Http),
        }
    };
    r.responses = d.responses;
    r.bytes_up = upward.bytes.load(Ordering::Relaxed);
    r.downstream_http = upward.http.load(Ordering::Relaxed);
    (r, dr.unsplit(dw))
}

struct Upward {
    bytes: AtomicU64,
    http: AtomicBool,
    /// The client closed its side.
    eof: AtomicBool,
    /// Requests not answered yet, for the framing of their responses.
    pending: Pending,
}

/// Client → service. Ends on the client's EOF (passed on as a half-close) or an error.
async fn pump_up<D, U>(
    from: &mut ReadHalf<D>,
    to: &mut WriteHalf<U>,
    out: &Upward,
    activity: &AtomicU64,
    started: Instant,
    idle: Duration,
) where
    D: AsyncRead,
    U: AsyncWrite,
{
    let mut requests = Framer::requests();
    let mut deferred = None;
    loop {
        match read_lent(from, &mut deferred).await {
            Ok(None) | Err(_) => {
                out.eof.store(true, Ordering::Relaxed);
                let _ = tokio::time::timeout(idle, to.shutdown()).await;
                return;
            }
            Ok(Some(buf)) => {
                let n = buf.len();
                if out.bytes.load(Ordering::Relaxed) == 0 {
                    out.http
                        .store(looks_like_http_request(&buf), Ordering::Relaxed);
                }
                out.bytes.fetch_add(n as u64, Ordering::Relaxed);
                requests.feed(&buf, &out.pending, &mut Statuses::default());
                touch(activity, started);
                if to.write_all(&buf).await.is_err() {
                    return;
                }
                touch(activity, started);
            }
        }
    }
}

/// Bytes read by [`read_lent`], in a buffer that goes back to this
/// thread's spares when dropped.
#[derive(Debug)]
struct Lent {
    buf: Box<[u8]>,
    len: usize,
}

impl std::ops::Deref for Lent {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

thread_local! {
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// The next bytes from `from` (`None` at EOF): what is ready now, up to a
/// full buffer, read into a buffer that is held only while a read is
/// ready: a pending read hands it back at once. An error met after some
/// bytes is kept in `deferred` and returned by the next call, so the bytes
/// before it are delivered and the error is still seen.
///
/// Why lent: a held connection waits in its two reads nearly all its life,
/// and two buffers per connection owned by the pumps were most of the
/// proxy's memory per held connection. A read only borrows its buffer for
/// the poll (the `AsyncRead` contract), so one buffer per thread serves
/// every connection that is waiting.
async fn read_lent<R: AsyncRead + Unpin>(
    from: &mut R,
    deferred: &mut Option<std::io::Error>,
) -> std::io::Result<Option<Lent>> {
    if let Some(e) = deferred.take() {
        return Err(e);
    }
    std::future::poll_fn(|cx| {
        let mut buf = SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF].into_boxed_slice());
        let (len, last) = {
            let mut rb = ReadBuf::new(&mut buf);
            // A short read leaves tokio's readiness cleared, so the poll
            // that ends this loop costs no system call.
            let last = loop {
                let before = rb.filled().len();
                match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().len() > before && rb.remaining() > 0 => {}
                    other => break other,
                }
            };
            (rb.filled().len(), last)
        };
        match (len, last) {
            (0, last) => {
                give_back(buf);
                last.map_ok(|()| None)
            }
            (len, last) => {
                if let Poll::Ready(Err(e)) = last {
                    *deferred = Some(e);
                }
                Poll::Ready(Ok(Some(Lent { buf, len })))
            }
        }
    })
    .await
}

fn give_back(buf: Box<[u8]>) {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES && buf.len() == BUF {
            s.push(buf);
        }
    });
}

struct Downward {
    bytes: u64,
    first_byte: Option<Duration>,
    responses: Statuses,
    error: Option<Outcome>,
}

/// Service → client, recording into `out`. Ends on the service's EOF or an error.
async fn pump_down<U, D>(
    from: &mut ReadHalf<U>,
    to: &mut WriteHalf<D>,
    out: &mut Downward,
    pending: &Pending,
    activity: &AtomicU64,
    started: Instant,
    idle: Duration,
) where
    U: AsyncRead,
    D: AsyncWrite,
{
    let mut responses = Framer::responses();
    let mut deferred = None;
    loop {
        match read_lent(from, &mut deferred).await {
            Ok(None) => {
                if out.first_byte.is_some() {
                    let _ = tokio::time::timeout(idle, to.shutdown()).await;
                }
                return;
            }
            Err(e) => {
                out.error = Some(match (out.first_byte, classify_io(&e)) {
                    // A TLS peer that closes without close_notify after a
                    // complete response is common and harmless.
                    (Some(_), Outcome::ClosedEarly) => return,
                    (_, o) => o,
                });
                return;
            }
            Ok(Some(buf)) => {
                out.first_byte.get_or_insert_with(|| started.elapsed());
                responses.feed(&buf, pending, &mut out.responses);
                out.bytes += buf.len() as u64;
                touch(activity, started);
                if to.write_all(&buf).await.is_err() {
                    return; // the client left; nothing more to deliver
                }
                touch(activity, started);
            }
        }
    }
}

fn touch(activity: &AtomicU64, started: Instant) {
    activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Read what the client sends until the end of an HTTP/1 request head, at
/// most `wait` and 16 KiB: whether it is one. Used when the service refused
/// before the client spoke, so the `502` answers a request that was read.
pub async fn read_request_head<D: AsyncRead + Unpin + ?Sized>(
    down: &mut D,
    wait: Duration,
) -> bool {
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match down.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            let done = head.windows(4).any(|w| w == b"\r\n\r\n");
            if done || head.len() >= 16 * 1024 || !could_be_http_request(&head) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
    looks_like_http_request(&head)
}

/// After answering and shutting down our side: read and drop what the
/// client still sends (for at most `wait`, 1 MiB), so that unread bytes do
/// not make the kernel reset the connection, losing the answer in flight.
pub async fn linger<D: AsyncRead + Unpin + ?Sized>(down: &mut D, wait: Duration) {
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut left = 1usize << 20;
        while left > 0 {
            match down.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(wait, drain).await;
}

/// A prefix of an HTTP/1 request line so far (a method being typed).
fn could_be_http_request(bytes: &[u8]) -> bool {
    let n = bytes.len().min(8);
    looks_like_http_request(bytes) || METHODS.iter().any(|m| m.starts_with(&bytes[..n]))
}

/// An HTTP/1 request line start: a method token then a space.
pub fn looks_like_http_request(bytes: &[u8]) -> bool {
    METHODS.iter().any(|m| bytes.starts_with(m))
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_from_other_bytes() {
        assert!(looks_like_http_request(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http_request(b"\x16\x03\x01"));
    }

    /// Gives each chunk in one read, then fails with a reset.
    struct ThenReset(std::collections::VecDeque<&'static [u8]>);

    impl AsyncRead for ThenReset {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                Some(c) => {
                    buf.put_slice(c);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into())),
            }
        }
    }

    #[tokio::test]
    async fn a_read_takes_what_is_ready_and_an_error_after_it_comes_next() {
        let mut r = ThenReset([&b"HTTP/1.1 "[..], b"200 OK\r\n"].into());
        let mut deferred = None;
        let got = read_lent(&mut r, &mut deferred).await.unwrap().unwrap();
        assert_eq!(&*got, b"HTTP/1.1 200 OK\r\n");
        let e = read_lent(&mut r, &mut deferred).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn relay_carries_both_ways_and_records_a_split_status_line() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(
            client,
            upstream,
            Duration::from_secs(5),
            std::future::pending(),
        ));
        client_peer
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut got = [0u8; 18];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
        // The status line arrives in two pieces.
        upstream_peer.write_all(b"HTTP/1.1 2").await.unwrap();
        upstream_peer.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        upstream_peer
            .write_all(b"04 No Content\r\n\r\n")
            .await
            .unwrap();
        drop(upstream_peer);
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert!(back.starts_with(b"HTTP/1.1 204"));
        let (r, _) = task.await.unwrap();
        assert_eq!(r.outcome, Outcome::Http(204));
        assert!(r.downstream_http && r.first_byte.is_some());
        assert_eq!((r.bytes_up, r.bytes_down), (18, 27));
    }

    #[tokio::test]
    async fn an_early_answer_reaches_the_client_while_its_upload_is_stuck() {
        // The service answers at once and never reads the upload; the client
        // uploads and reads concurrently. Buffers are tiny: a relay whose two
        // directions wait on each other would never deliver the answer.
        let (client, client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(relay(
            client,
            upstream,
            Duration::from_secs(5),
            std::future::pending(),
        ));
        let (mut cr, mut cw) = tokio::io::split(client_peer);
        let upload = tokio::spawn(async move {
            let _ = cw.write_all(&[b'x'; 64 * 1024]).await;
        });
        let reader = tokio::spawn(async move {
            let mut back = Vec::new();
            let _ = cr.read_to_end(&mut back).await;
            back.len()
        });
        let answer = b"HTTP/1.1 413 Too Large\r\n\r\n".repeat(50);
        let len = answer.len();
        let _ = upstream_peer.write_all(&answer).await;
        drop(upstream_peer);
        let (r, _) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("relay must finish")
            .unwrap();
        assert_eq!(r.responses.first(), Some(413));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .unwrap()
                .unwrap(),
            len
        );
        upload.abort();
    }

    #[tokio::test]
    async fn silence_asks_nothing_an_unanswered_request_is_a_timeout_and_a_cancel_no_refusal() {
        let (client, _c) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        let (r, _) = relay(
            client,
            upstream,
            Duration::from_millis(50),
            std::future::pending(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert!(r.outcome.not_judged() && r.idle);
        let (client, mut c) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (r, _) = relay(
            client,
            upstream,
            Duration::from_millis(50),
            std::future::pending(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Timeout);
        assert!(!r.outcome.not_judged());
        let (client, _c) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        let (r, _) = relay(
            client,
            upstream,
            Duration::from_secs(5),
            std::future::ready(()),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert_ne!(r.outcome.verdict(), crate::tls::Verdict::Refused);
    }
}
