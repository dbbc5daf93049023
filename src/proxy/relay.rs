//! The byte relay between the downstream client and the upstream service,
//! and the reading of the first upstream bytes that decides the outcome.
//!
//! One task drives both directions with a single idle clock, so a long
//! download with a quiet upload is not mistaken for idleness. The first
//! upstream read is the evidence: data means the service accepted (an HTTP/1
//! status line is recorded as `http:NNN`), an error is classified (a TLS 1.3
//! client-certificate rejection arrives here, after the handshake).

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::tls::{classify_io, Outcome};

const BUF: usize = 16 * 1024;

/// What the relay saw.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub outcome: Outcome,
    /// From the start of the relay to the first upstream byte.
    pub first_byte: Option<Duration>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The first downstream bytes looked like an HTTP/1 request.
    pub downstream_http: bool,
    /// The relay ended because `cancel` fired (rotation policy, shutdown).
    pub cancelled: bool,
}

/// Relay until both sides are done, `idle` passes with no traffic, or `cancel` resolves.
pub async fn relay<D, U>(
    mut down: D,
    mut up: U,
    idle: Duration,
    cancel: impl Future<Output = ()>,
) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut r = Relayed {
        outcome: Outcome::ClosedEarly,
        first_byte: None,
        bytes_up: 0,
        bytes_down: 0,
        downstream_http: false,
        cancelled: false,
    };
    let (mut down_buf, mut up_buf) = (vec![0u8; BUF], vec![0u8; BUF]);
    let (mut down_open, mut up_open) = (true, true);
    let mut deadline = Instant::now() + idle;
    tokio::pin!(cancel);
    while down_open || up_open {
        tokio::select! {
            n = down.read(&mut down_buf), if down_open => match n {
                Ok(0) | Err(_) => {
                    down_open = false;
                    let _ = up.shutdown().await;
                }
                Ok(n) => {
                    if r.bytes_up == 0 {
                        r.downstream_http = looks_like_http_request(&down_buf[..n]);
                    }
                    r.bytes_up += n as u64;
                    deadline = Instant::now() + idle;
                    if up.write_all(&down_buf[..n]).await.is_err() {
                        down_open = false;
                    }
                }
            },
            n = up.read(&mut up_buf), if up_open => match n {
                // Nothing ever came back: the caller may still answer the
                // client (a 502 naming the outcome), so leave downstream open.
                Ok(0) if r.first_byte.is_none() => break,
                Err(e) if r.first_byte.is_none() => {
                    r.outcome = classify_io(&e);
                    break;
                }
                Ok(0) | Err(_) => {
                    up_open = false;
                    let _ = down.shutdown().await;
                }
                Ok(n) => {
                    if r.first_byte.is_none() {
                        r.first_byte = Some(started.elapsed());
                        r.outcome = http_status(&up_buf[..n]).map_or(Outcome::Ok, Outcome::Http);
                    }
                    r.bytes_down += n as u64;
                    deadline = Instant::now() + idle;
                    if down.write_all(&up_buf[..n]).await.is_err() {
                        // The client left; nothing more to deliver.
                        break;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                if r.first_byte.is_none() {
                    r.outcome = Outcome::Timeout;
                }
                break;
            }
            _ = &mut cancel => {
                r.cancelled = true;
                break;
            }
        }
    }
    r
}

/// `HTTP/1.x NNN` at the start of a response.
pub fn http_status(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// An HTTP/1 request line start: a method token then a space.
pub fn looks_like_http_request(bytes: &[u8]) -> bool {
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
    METHODS.iter().any(|m| bytes.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_other_bytes_are_not() {
        assert_eq!(http_status(b"HTTP/1.1 403 Forbidden\r\n"), Some(403));
        assert_eq!(http_status(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(http_status(b"HTTP/2 200"), None);
        assert_eq!(http_status(b"\x16\x03\x03"), None);
        assert_eq!(http_status(b"HTTP/1.1 2"), None);
        assert!(looks_like_http_request(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http_request(b"\x16\x03\x01"));
    }

    #[tokio::test]
    async fn relay_carries_both_ways_and_records_the_status() {
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
        upstream_peer
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        drop(upstream_peer);
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert!(back.starts_with(b"HTTP/1.1 204"));
        drop(client_peer);
        let r = task.await.unwrap();
        assert_eq!(r.outcome, Outcome::Http(204));
        assert!(r.downstream_http && r.first_byte.is_some());
        assert_eq!((r.bytes_up, r.bytes_down), (18, 27));
    }

    #[tokio::test]
    async fn silence_is_a_timeout_not_an_accept() {
        let (client, _c) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        let r = relay(
            client,
            upstream,
            Duration::from_millis(50),
            std::future::pending(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Timeout);
        assert!(!r.outcome.accepted());
    }
}
