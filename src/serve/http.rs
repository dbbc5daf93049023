//! The service's HTTP/1.1 side (hyper): health, the authorization policy,
//! and an echo of who the peer is so tests and users can see what the
//! service saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::{RunState, ServiceState};
use crate::spiffe::SpiffeId;
use crate::tls::TlsVersion;
use crate::x509::CertFacts;

/// What the service knows about the peer of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    addr: SocketAddr,
    spiffe_id: Option<SpiffeId>,
    serial: Option<String>,
    tls_version: Option<TlsVersion>,
}

impl Peer {
    pub(crate) fn plaintext(addr: SocketAddr) -> Self {
        Peer {
            addr,
            spiffe_id: None,
            serial: None,
            tls_version: None,
        }
    }

    pub(crate) fn tls(addr: SocketAddr, conn: &rustls::ServerConnection) -> Self {
        // Parsed once per connection; every request on it reuses the facts.
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| CertFacts::from_der(der).ok());
        let (spiffe_id, serial) = match leaf {
            Some(f) => (f.spiffe_id, Some(f.serial)),
            None => (None, None),
        };
        Peer {
            addr,
            spiffe_id,
            serial,
            tls_version: conn.protocol_version().and_then(TlsVersion::of),
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
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let (shared, peer) = (svc_shared.clone(), peer.clone());
        async move { Ok::<_, Infallible>(respond(&shared, &peer, &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Also bounds the wait for the next request on a kept-alive connection.
        .header_read_timeout(shared.cfg.idle_timeout)
        // Bounded per connection: a peer cannot make us buffer megabytes of headers.
        .max_buf_size(64 * 1024)
        .max_headers(100)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    crate::accept::serve_http1(conn, phase).await;
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
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    // In any-ca mode the identity is unverified: the policy then judges
    // whatever the client claims, which is exactly the hole that mode shows.
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
