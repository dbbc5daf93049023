//! The service's HTTP/1.1 side (hyper): the client certificate's validity
//! at request time, health, the authorization policy, and an echo of who
//! the peer is so tests and users can see what the service saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::{RunState, ServiceState};
use crate::accept::Slot;
use crate::spiffe::SpiffeId;
use crate::tls::TlsVersion;
use crate::x509::{rfc3339, CertFacts};

/// What the service knows about the peer of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    addr: SocketAddr,
    spiffe_id: Option<SpiffeId>,
    serial: Option<String>,
    /// The client certificate's notBefore and notAfter.
    validity: Option<(OffsetDateTime, OffsetDateTime)>,
    /// The TLS session was resumed: its certificate was verified by an
    /// earlier handshake, possibly long ago.
    resumed: bool,
    tls_version: Option<TlsVersion>,
}

impl Peer {
    pub(crate) fn plaintext(addr: SocketAddr) -> Self {
        Peer {
            addr,
            spiffe_id: None,
            serial: None,
            validity: None,
            resumed: false,
            tls_version: None,
        }
    }

    pub(crate) fn tls(addr: SocketAddr, conn: &rustls::ServerConnection) -> Self {
        // Parsed once per connection; every request on it reuses the facts.
        // On a resumed session rustls hands back the chain stored with it.
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| CertFacts::from_der(der).ok());
        let (spiffe_id, serial, validity) = match leaf {
            Some(f) => (
                f.spiffe_id,
                Some(f.serial),
                Some((f.not_before, f.not_after)),
            ),
            None => (None, None, None),
        };
        Peer {
            addr,
            spiffe_id,
            serial,
            validity,
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            tls_version: conn.protocol_version().and_then(TlsVersion::of),
        }
    }

    /// Why the peer's certificate does not hold at `now`, if it does not.
    ///
    /// rustls verifies a client certificate in a full handshake only: a
    /// session resumed from a TLS 1.3 ticket or a TLS 1.2 session id carries
    /// the chain it was verified with, and a kept-alive connection outlives
    /// any check. Resumption stays on (it is what real services do, and what
    /// an audit must see refusing), so the window is checked here, per request.
    fn outside_validity(&self, now: OffsetDateTime) -> Option<String> {
        let (not_before, not_after) = self.validity?;
        let how = match self.resumed {
            true => "session resumed",
            false => "on a connection opened while it was valid",
        };
        if now > not_after {
            Some(format!(
                "client certificate expired at {} ({how})",
                rfc3339(not_after)
            ))
        } else if now < not_before {
            Some(format!(
                "client certificate not valid before {} ({how})",
                rfc3339(not_before)
            ))
        } else {
            None
        }
    }
}

#[derive(serde::Serialize)]
struct Echo<'a> {
    peer: Option<&'a str>,
    path: &'a str,
    tls_version: Option<TlsVersion>,
    method: &'a str,
    /// Serial of the client certificate, uppercase hex: shows rotations.
    serial: Option<&'a str>,
}

pub(crate) async fn serve<S>(
    shared: Arc<ServiceState>,
    io: S,
    peer: Peer,
    phase: watch::Receiver<RunState>,
    slot: Arc<Slot>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let svc_shared = shared.clone();
    let svc_slot = slot.clone();
    let service = hyper::service::service_fn(move |req| {
        svc_slot.request_started();
        let (shared, peer) = (svc_shared.clone(), peer.clone());
        async move { Ok::<_, Infallible>(respond(&shared, &peer, &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Bounds the wait for each next request on a kept-alive connection
        // (the idle timeout); the first request's header has its own,
        // usually shorter, deadline in the accept loop.
        .header_read_timeout(shared.cfg.idle_timeout)
        // Bounded per connection: a peer cannot make us buffer megabytes of headers.
        .max_buf_size(64 * 1024)
        .max_headers(100)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    crate::accept::serve_http1(conn, phase, &slot).await;
}

fn respond(shared: &ServiceState, peer: &Peer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    // Policy decisions are made on the normalised path, as Istio does, so
    // `/api/payment/../admin` cannot borrow `/api/payment/*`'s permission.
    let Some(path) = normalize_path(req.uri().path()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "path has an encoded slash or backslash",
        );
    };
    let path = path.as_str();
    // Before health: no request of an identity that no longer holds is served.
    if let Some(why) = peer.outside_validity(OffsetDateTime::now_utc()) {
        let c = &shared.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.denied.fetch_add(1, Ordering::Relaxed);
        c.expired_certificates.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %peer.addr, serial = ?peer.serial, %path, %why, "client certificate refused at request time");
        return text(CERT_ERROR, why);
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    // In any-ca mode no trusted CA vouches for the identity: the policy then
    // judges whatever SPIFFE ID the client minted, which is exactly the hole
    // that mode shows.
    let principal = peer.spiffe_id.as_ref().map(SpiffeId::principal);
    if let Some(policy) = shared.policy.current().as_ref() {
        if !policy.allows(req.method().as_str(), path, principal) {
            shared.counters.denied.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %peer.addr, ?principal, %path, "RBAC: access denied");
            return text(StatusCode::FORBIDDEN, "RBAC: access denied");
        }
    }
    let echo = Echo {
        peer: peer.spiffe_id.as_ref().map(SpiffeId::as_str),
        path,
        tls_version: peer.tls_version,
        method: req.method().as_str(),
        serial: peer.serial.as_deref(),
    };
    let body = serde_json::to_vec(&echo).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// nginx's "495 SSL Certificate Error": the client certificate is not
/// acceptable, said over a connection that is already up. (495 is a valid
/// code; the `Err` arm exists only because `from_u16` is fallible.)
const CERT_ERROR: StatusCode = match StatusCode::from_u16(495) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Merge repeated slashes and resolve `.` and `..` (never above the root);
/// `None` for an encoded `/` or `\\`, which would let a path mean two things.
fn normalize_path(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || raw.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let trailing =
        raw.len() > 1 && (raw.ends_with('/') || raw.ends_with("/.") || raw.ends_with("/.."));
    let mut out = format!("/{}", parts.join("/"));
    if trailing && out != "/" {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn paths_are_normalised_before_the_policy_sees_them() {
        assert_eq!(
            normalize_path("/api/payment/../admin").as_deref(),
            Some("/api/admin")
        );
        assert_eq!(
            normalize_path("//api///payment/./x").as_deref(),
            Some("/api/payment/x")
        );
        assert_eq!(normalize_path("/../../etc").as_deref(), Some("/etc"));
        assert_eq!(
            normalize_path("/api/payment/").as_deref(),
            Some("/api/payment/")
        );
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/api%2Fpayment"), None);
        assert_eq!(normalize_path("/api%5cpayment"), None);
    }
}
