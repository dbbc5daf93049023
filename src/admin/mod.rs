//! The admin HTTP API of a running engine ([`Source`]): the proxy's
//! (`proxy.rs`: `GET /stats`, `GET /metrics`, `GET /timeline`,
//! `POST /rotate`, `GET /plan`, `PUT /plan`) and `serve`'s (`serve.rs`:
//! `GET /stats`, `GET /metrics`); both answer `GET /healthz`.
//!
//! One server for both: the accept loop (`crate::accept`: capped, tracked,
//! ended at shutdown like the engines' own connections), HTTP/1 with small
//! buffers and a header deadline, the access guard (`access.rs`: loopback
//! unless a token is configured, `net::check_admin_bind` enforcing it at
//! startup; with a token every request carries `Authorization: Bearer
//! <token>`; without one, foreign `Host` and `Origin` headers are refused),
//! and the response helpers, the `reload` section and the Prometheus
//! content type both `/stats` and `/metrics` use. The `listener` section
//! and the `certshift_listener_*` families come from the same
//! `accept::ConnCounts` for both. Never changes anything itself: each
//! engine's module goes through that engine's own handle.

mod access;
mod proxy;
mod serve;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::accept::{self, serve_connections, serve_http1, Limits, RunState, Tracked};
use crate::creds::ReloadStatus;
use crate::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::proxy::ProxyHandle;
use crate::serve::ServiceHandle;
use access::Access;

/// Whose state an admin API shows (and, for the proxy, changes).
#[derive(Clone)]
pub enum Source {
    Proxy(ProxyHandle),
    Serve(ServiceHandle),
}

impl From<ProxyHandle> for Source {
    fn from(h: ProxyHandle) -> Self {
        Source::Proxy(h)
    }
}

impl From<ServiceHandle> for Source {
    fn from(h: ServiceHandle) -> Self {
        Source::Serve(h)
    }
}

/// Admin clients are a scraper and an operator or two; a handful of slots
/// keeps a misbehaving one from tying up the proxy's file descriptors.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// A few admin clients; the loop sheds the longest-idle one past the cap anyway.
const ADMIN_BACKLOG: u32 = 64;

/// How long an admin client has for a request header, and to send the next one.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request in flight at shutdown (a `POST /rotate` minting an RSA
/// key takes about a second) may take before its connection is closed.
pub const ADMIN_GRACE: Duration = Duration::from_secs(5);

/// A bound admin API.
pub struct Admin {
    listener: TcpListener,
    source: Source,
    token: Option<Arc<str>>,
}

impl Admin {
    /// Bind `addr` for `source` (a `ProxyHandle` or a `ServiceHandle`);
    /// with `token`, every request must carry it.
    pub async fn bind(
        addr: SocketAddr,
        source: impl Into<Source>,
        token: Option<String>,
    ) -> std::io::Result<Admin> {
        Ok(Admin {
            listener: accept::bind(addr, ADMIN_BACKLOG)?,
            source: source.into(),
            token: token.map(Arc::from),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves; then idle connections close at
    /// once, requests in flight get [`ADMIN_GRACE`] to finish, and the rest
    /// are ended.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let access = Arc::new(Access::new(self.token, self.listener.local_addr().ok()));
        let source = self.source;
        let limits = Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_handshakes: ADMIN_MAX_CONNECTIONS,
            // Plaintext: no handshake; the header deadline is what counts.
            handshake_timeout: ADMIN_HEADER_TIMEOUT,
            header_timeout: ADMIN_HEADER_TIMEOUT,
            tls: false,
        };
        serve_connections(
            self.listener,
            limits,
            Arc::default(),
            shutdown,
            ADMIN_GRACE,
            move |stream, _, phase| connection(source.clone(), access.clone(), stream, phase),
        )
        .await;
    }
}

/// One admin connection: HTTP/1 with small buffers and a header timeout,
/// which also bounds how long an idle kept-alive connection is held.
async fn connection(
    source: Source,
    access: Arc<Access>,
    stream: Tracked<TcpStream>,
    phase: watch::Receiver<RunState>,
) {
    let slot = stream.slot().clone();
    slot.handshake_done();
    let svc_slot = slot.clone();
    let svc = hyper::service::service_fn(move |req| {
        svc_slot.request_started();
        let (source, access) = (source.clone(), access.clone());
        async move { Ok::<_, Infallible>(route(&source, &access, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), svc);
    // A backstop for a client that trickles a body: no connection lives
    // longer than a minute even while the proxy keeps running.
    let _ = tokio::time::timeout(Duration::from_secs(60), serve_http1(conn, phase, &slot)).await;
}

async fn route(source: &Source, access: &Access, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Err((status, why)) = access.check(req.headers()) {
        return text(status, why);
    }
    if (req.method(), req.uri().path()) == (&Method::GET, "/healthz") {
        return text(StatusCode::OK, "ok\n");
    }
    match source {
        Source::Proxy(p) => proxy::route(p, req).await,
        Source::Serve(s) => serve::route(s, req),
    }
}

/// `/stats`' `reload`: per rotating value, what reloading has done
/// (publications, refusals and the last refusal's reason); `null` for a
/// value this engine does not have.
fn reload_json<const N: usize>(
    values: [(&'static str, Option<ReloadStatus>); N],
) -> serde_json::Value {
    serde_json::Value::Object(
        values
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect(),
    )
}

/// `GET /metrics`' response: Prometheus text.
fn prometheus_response(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    resp
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}
