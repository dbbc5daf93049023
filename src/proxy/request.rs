//! `--swap request`: the proxy speaks HTTP downstream (HTTP/1.1 keep-alive,
//! and HTTP/2 by ALPN or prior knowledge) and every request is its own
//! experiment: the plan picks a credential for it, it goes upstream over a
//! connection that presented exactly that credential (`pool`), and its
//! outcome is judged and recorded on its own.
//!
//! Owns: the downstream HTTP server of one connection, the per-request pick
//! (`--swap-every`), the request and response rewriting (hop-by-hop headers,
//! the `x-certshift-*` headers), and the answer to a refusal: a `502` (`504`
//! on a timeout) naming the outcome, never a bare close. A rotation or a plan
//! change takes effect at the next request of every open connection.
//! Never: opens upstream connections itself (that is `pool`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::sync::watch;

use super::inline::inline_wakes;
use super::pool::{Opening, Upstream};
use super::wire::{Decode, Head};
use super::ProxyState;
use crate::accept::{RunState, Slot};
use crate::metrics::{ConnReport, Phase, Phases, Statuses};
use crate::net::AsyncIo;
use crate::plan::Presented;
use crate::tls::Outcome;

pub(super) const VARIANT: HeaderName = HeaderName::from_static("x-certshift-variant");
pub(super) const SERIAL: HeaderName = HeaderName::from_static("x-certshift-serial");
pub(super) const OUTCOME: HeaderName = HeaderName::from_static("x-certshift-outcome");

/// What the downstream client receives: the service's body as it streams,
/// or the proxy's own short answer.
type ProxyBody = Either<Relayed, Full<Bytes>>;

/// One downstream connection in request mode.
struct Downstream {
    shared: Arc<ProxyState>,
    /// Requests seen on this connection so far.
    requests: AtomicU64,
    /// `--swap-every N`: the pick held for the current block of N requests
    /// (block number, pick). Per connection, so never contended across
    /// connections; HTTP/2 streams of one connection take turns.
    held: Mutex<Option<(u64, Presented)>>,
    /// The downstream handshake, reported with the connection's first request.
    handshake: Mutex<Option<Duration>>,
}

/// Serve HTTP on `down` until the client leaves or the proxy closes.
pub(super) async fn serve(
    shared: Arc<ProxyState>,
    down: Box<dyn AsyncIo>,
    handshake: Option<Duration>,
    mut closing: watch::Receiver<RunState>,
    slot: Arc<Slot>,
) {
    let idle = shared.cfg.idle_timeout;
    let conn = Arc::new(Downstream {
        shared,
        requests: AtomicU64::new(0),
        held: Mutex::new(None),
        handshake: Mutex::new(handshake),
    });
    let svc_slot = slot.clone();
    let service = hyper::service::service_fn(move |req| {
        // The first request's header ends the accept loop's header deadline.
        svc_slot.request_started();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.exchange(req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None);
    // Both hyper connections run in this task; their hand-offs wake it
    // while it runs, which must not send it to another worker thread.
    let mut served = inline_wakes(builder.serve_connection(TokioIo::new(down), service));
    tokio::select! {
        r = &mut served => {
            // hyper's wait for a request header (HTTP/1) ran out: idle after
            // a request, else the header deadline; counted by the listener.
            if r.is_err_and(|e| e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)) {
                slot.timed_out();
            }
            return;
        }
        _ = closing.wait_for(|s| *s >= RunState::Draining) => {}
    }
    // Draining: finish the request in flight, take no other; Closing cuts.
    served.inner().graceful_shutdown();
    tokio::select! {
        _ = &mut served => {}
        _ = closing.wait_for(|s| *s >= RunState::Closing) => {}
    }
}

impl Downstream {
    /// The credential for this connection's next request.
    fn pick(&self) -> Presented {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // The plan is loaded per request: a change applies from the next one.
        let active = self.shared.plan.current();
        let every = u64::from(active.swap.every().max(1));
        if every == 1 {
            return active.pick_next();
        }
        let block = n / every;
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *held {
            Some((b, p)) if b == block => p,
            _ => {
                let p = active.pick_next();
                *held = Some((block, p));
                p
            }
        }
    }

    /// One request: pick, send upstream over a matching connection, judge.
    async fn exchange(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let at = Instant::now();
        let shared = &self.shared;
        let mut phases = Phases::default();
        if let Some(hs) = self
            .handshake
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            phases.set(Phase::DownstreamHandshake, hs);
        }
        let presented = self.pick();
        let key = shared.upstream_key(presented);
        let (mut up, opening) = match shared.upstreams.checkout(key).await {
            Ok(u) => u,
            Err((outcome, credential, opening)) => {
                opened(&mut phases, opening);
                let serial = credential.map_or_else(|| Arc::from("none"), |c| c.serial.clone());
                return self.refused(at, phases, presented, &serial, outcome);
            }
        };
        opened(&mut phases, opening);
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let until = tokio::time::Instant::now() + shared.cfg.idle_timeout;
        let head = match up
            .send(&parts, body, &shared.cfg.upstream_name, until)
            .await
        {
            Ok(h) => h,
            Err(outcome) => {
                let serial = up.credential.serial.clone();
                return self.refused(at, phases, presented, &serial, outcome);
            }
        };
        phases.set(Phase::FirstByte, at.elapsed());
        phases.set(Phase::Lifetime, at.elapsed());
        let Head {
            status,
            mut headers,
            body: mut decode,
        } = head;
        let outcome = Outcome::Http(status.as_u16());
        strip_hop_by_hop(&mut headers);
        let serial = up.credential.serial_value.clone();
        tag_with(&mut headers, presented, serial, &outcome);
        shared.metrics.record(ConnReport {
            at,
            variant: presented.name().to_string(),
            expect: presented.expected(),
            outcome,
            responses: Statuses::one(status.as_u16()),
            phases,
        });
        let body = match up.wire.buffered_body(&mut decode) {
            Some(whole) => {
                shared.upstreams.checkin(key, up);
                Either::Right(Full::new(whole))
            }
            None => Either::Left(Relayed {
                upstream: Some(up),
                decode,
                back: Some((shared.clone(), key)),
            }),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// The proxy's own answer when the request got no response: `502`, or
    /// `504` when a phase timed out, with the `x-certshift-*` headers.
    fn refused(
        &self,
        at: Instant,
        mut phases: Phases,
        presented: Presented,
        serial: &str,
        outcome: Outcome,
    ) -> Response<ProxyBody> {
        phases.set(Phase::Lifetime, at.elapsed());
        tracing::debug!(variant = presented.name(), %outcome, "request refused upstream");
        let status = refusal_status(&outcome);
        let body = refusal_body(&outcome, presented, serial);
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        tag(headers, presented, serial, &outcome);
        self.shared.metrics.record(ConnReport {
            at,
            variant: presented.name().to_string(),
            expect: presented.expected(),
            outcome,
            responses: Statuses::default(),
            phases,
        });
        resp
    }
}

/// The short body of a refusal, the same in both swap modes.
fn refusal_body(outcome: &Outcome, presented: Presented, serial: &str) -> String {
    format!(
        "certshift: no response from the upstream ({outcome}); presented credential: {presented}, serial {serial}\n"
    )
}

/// The refusal as raw HTTP/1.1 for `--swap connection`, where no HTTP
/// server runs downstream: the same status, headers and body, then close.
pub(super) fn refusal_http1(outcome: &Outcome, presented: Presented, serial: &str) -> Vec<u8> {
    let status = refusal_status(outcome);
    let body = refusal_body(outcome, presented, serial);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    let mut headers = HeaderMap::new();
    tag(&mut headers, presented, serial, outcome);
    for (name, value) in &headers {
        head.push_str(name.as_str());
        head.push_str(": ");
        head.push_str(value.to_str().unwrap_or(""));
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    head.into_bytes()
}

/// The downstream server config for request mode: the same credential,
/// offering HTTP/2 by ALPN before HTTP/1.1. Connection mode relays bytes
/// to an HTTP/1.1 upstream, so it never offers h2.
pub(super) fn offering_h2(base: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::clone(base);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `504` for a phase that timed out, `502` for every other refusal.
pub(super) fn refusal_status(outcome: &Outcome) -> StatusCode {
    match outcome {
        Outcome::ConnectTimeout | Outcome::HandshakeTimeout | Outcome::Timeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The `x-certshift-*` headers every response carries.
fn tag(headers: &mut HeaderMap, presented: Presented, serial: &str, outcome: &Outcome) {
    tag_with(
        headers,
        presented,
        HeaderValue::from_str(serial).ok(),
        outcome,
    );
}

/// [`tag`] with the serial's header value built already (once per
/// credential, for the relayed responses).
fn tag_with(
    headers: &mut HeaderMap,
    presented: Presented,
    serial: Option<HeaderValue>,
    outcome: &Outcome,
) {
    headers.insert(VARIANT, HeaderValue::from_static(presented.name()));
    if let Some(v) = serial {
        headers.insert(SERIAL, v);
    }
    headers.insert(OUTCOME, outcome_value(outcome));
}

/// An outcome as a header value; the `http:NNN` of every relayed response
/// is built once per status, not per response.
fn outcome_value(outcome: &Outcome) -> HeaderValue {
    static HTTP: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    if let Outcome::Http(status @ 100..=999) = outcome {
        let table = HTTP.get_or_init(|| {
            (100..=999u16)
                .map(|s| {
                    HeaderValue::from_str(&Outcome::Http(s).to_string())
                        .unwrap_or_else(|_| HeaderValue::from_static("http"))
                })
                .collect()
        });
        return table[usize::from(*status - 100)].clone();
    }
    // Outcomes are ASCII names; an I/O error's text might not be a valid
    // header value, and then its class is enough.
    HeaderValue::from_str(&outcome.to_string()).unwrap_or_else(|_| HeaderValue::from_static("io"))
}

/// RFC 9110 §7.6.1: headers that describe one hop, plus those `Connection`
/// names. HTTP/2 forbids them, and hyper frames each side's body itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// The service's response body on its way to the client, when it did not
/// come whole with the head; when it has been read to the end, the upstream
/// connection goes back to its pool.
pub(super) struct Relayed {
    upstream: Option<Upstream>,
    decode: Decode,
    /// Where to give the connection back; `None` when it must close.
    back: Option<(Arc<ProxyState>, Presented)>,
}

impl Relayed {
    fn release(&mut self) {
        if let (Some(up), Some((shared, key))) = (self.upstream.take(), self.back.take()) {
            shared.upstreams.checkin(key, up);
        }
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let Some(up) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        // Read here, in the downstream connection's task.
        let polled = up.wire.poll_body(&mut this.decode, cx);
        match &polled {
            // A connection that failed mid-body is not given back.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ if this.decode == Decode::Done => this.release(),
            _ => {}
        }
        polled.map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // A body the client did not read to the end leaves the connection
        // mid-response: it closes with this value instead.
        if self.decode == Decode::Done {
            self.release();
        }
    }
}

/// What opening the upstream connection cost, when one was opened.
fn opened(phases: &mut Phases, opening: Opening) {
    if let Some(d) = opening.connect {
        phases.set(Phase::UpstreamConnect, d);
    }
    if let Some(d) = opening.handshake {
        phases.set(Phase::UpstreamHandshake, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Variant;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-keep", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-keep"]);
    }

    #[test]
    fn a_refusal_is_a_502_or_on_a_timeout_a_504_with_the_headers() {
        let expired = Presented::Variant(Variant::Expired);
        let raw = refusal_http1(
            &Outcome::Alert("certificate_expired".into()),
            expired,
            "0A1B",
        );
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{head}");
        for line in [
            "x-certshift-variant: expired",
            "x-certshift-serial: 0A1B",
            "x-certshift-outcome: alert:certificate_expired",
            "connection: close",
        ] {
            assert!(head.lines().any(|l| l == line), "{line} in {head}");
        }
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("presented credential: expired, serial 0A1B"));
        for timeout in [
            Outcome::ConnectTimeout,
            Outcome::HandshakeTimeout,
            Outcome::Timeout,
        ] {
            assert_eq!(refusal_status(&timeout), StatusCode::GATEWAY_TIMEOUT);
        }
        assert_eq!(refusal_status(&Outcome::Reset), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn the_tag_never_fails_on_an_outcome_that_is_not_a_header_value() {
        let mut h = HeaderMap::new();
        tag(
            &mut h,
            Presented::None,
            "none",
            &Outcome::Io("bad\nline".into()),
        );
        assert_eq!(h[OUTCOME], "io");
        assert_eq!(h[VARIANT], "none");
    }
}
