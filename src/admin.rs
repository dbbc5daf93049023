//! The proxy's admin HTTP API: `GET /stats`, `GET /metrics` (Prometheus
//! text), `GET /timeline`, `GET /healthz`, `POST /rotate`, `GET /plan` and
//! `PUT /plan` (change the plan while traffic flows).
//!
//! It can rotate credentials, so it binds to loopback unless a token is
//! configured (enforced in the proxy's config), and with a token every
//! request must carry `Authorization: Bearer <token>`. Without a token,
//! loopback alone does not keep a web page out: a page can send a
//! cross-site `POST /rotate` (its `Origin` names the page's site) or rebind
//! its own DNS name to 127.0.0.1 (its `Host` is that name), so such
//! requests are refused ([`Access`]). Connections go
//! through the shared accept loop (`crate::accept`): capped, tracked, and
//! ended at shutdown like the proxy's own. Never touches a credential except
//! through the proxy's `Rotating` (`POST /rotate`), nor the plan except
//! through `LivePlan::change` (`PUT /plan`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::accept::{self, serve_connections, serve_http1, Limits, RunState, Tracked};
use crate::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::plan::PlanSpec;
use crate::proxy::{ActivePlan, ProxyHandle};

/// A plan is a line or two of JSON; anything bigger is not one.
const PLAN_BODY_LIMIT: usize = 16 * 1024;
const PLAN_BODY_EXAMPLE: &str = r#"send JSON such as {"present": "valid=80,expired=20", "seed": 7} or {"present_sequence": "valid,expired"}"#;

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
    proxy: ProxyHandle,
    token: Option<Arc<str>>,
}

impl Admin {
    pub async fn bind(
        addr: SocketAddr,
        proxy: ProxyHandle,
        token: Option<String>,
    ) -> std::io::Result<Admin> {
        Ok(Admin {
            listener: accept::bind(addr, ADMIN_BACKLOG)?,
            proxy,
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
        let proxy = self.proxy;
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
            move |stream, _, phase| connection(proxy.clone(), access.clone(), stream, phase),
        )
        .await;
    }
}

/// One admin connection: HTTP/1 with small buffers and a header timeout,
/// which also bounds how long an idle kept-alive connection is held.
async fn connection(
    proxy: ProxyHandle,
    access: Arc<Access>,
    stream: Tracked<TcpStream>,
    phase: watch::Receiver<RunState>,
) {
    let slot = stream.slot().clone();
    slot.handshake_done();
    let svc_slot = slot.clone();
    let svc = hyper::service::service_fn(move |req| {
        svc_slot.request_started();
        let (proxy, access) = (proxy.clone(), access.clone());
        async move { Ok::<_, Infallible>(route(&proxy, &access, req).await) }
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

async fn route(
    proxy: &ProxyHandle,
    access: &Access,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Err((status, why)) = access.check(req.headers()) {
        return text(status, why);
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/stats") => stats(proxy).await,
        (&Method::GET, "/metrics") => metrics(proxy).await,
        (&Method::GET, "/timeline") => timeline(proxy).await,
        (&Method::GET, "/plan") => get_plan(proxy),
        (&Method::PUT, "/plan") => put_plan(proxy, req).await,
        (&Method::POST, "/rotate") => {
            let mint = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "mint" || p == "mint=1"));
            rotate(proxy, mint).await
        }
        (_, "/healthz" | "/stats" | "/metrics" | "/timeline" | "/rotate" | "/plan") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /stats, /metrics, /timeline, /healthz, /plan, POST /rotate, PUT /plan\n",
        ),
    }
}

/// Who may use the API: with a token, whoever presents it; without one,
/// requests addressed to this loopback listener by a loopback name and not
/// sent on behalf of a foreign web origin.
struct Access {
    token: Option<Arc<str>>,
    /// The bound IP as a `Host` gives it (`127.0.0.2`, `[::1]`), besides
    /// the loopback names every loopback listener answers to.
    bound_host: Option<String>,
}

/// Hosts that name this machine's loopback interface and nothing else, so a
/// page cannot rebind one of them to reach us.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl Access {
    fn new(token: Option<Arc<str>>, bound: Option<SocketAddr>) -> Self {
        Access {
            token,
            bound_host: bound.map(|a| match a {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }),
        }
    }

    /// `Err((status, why))` when the request must be refused.
    fn check(&self, headers: &hyper::HeaderMap) -> Result<(), (StatusCode, &'static str)> {
        if let Some(want) = &self.token {
            // A token is the proof: whatever page sends the request, it
            // cannot know it.
            return match authorized(headers, want) {
                true => Ok(()),
                false => Err((
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong admin token (Authorization: Bearer TOKEN)\n",
                )),
            };
        }
        let host = headers
            .get(hyper::header::HOST)
            .map(|h| h.to_str().unwrap_or(""));
        if host.is_some_and(|h| !self.is_local_host(h)) {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                "refused: the Host header is not a loopback name (localhost, 127.0.0.1, [::1]) or this listener's address; without --admin-token the admin API answers only requests addressed to loopback (DNS rebinding guard)\n",
            ));
        }
        let origin = headers
            .get(hyper::header::ORIGIN)
            .map(|o| o.to_str().unwrap_or(""));
        if origin.is_some_and(|o| !self.is_local_origin(o)) {
            return Err((
                StatusCode::FORBIDDEN,
                "refused: the request comes from a web page of another origin; without --admin-token the admin API answers only loopback origins (cross-site request guard)\n",
            ));
        }
        Ok(())
    }

    /// `localhost`, `127.0.0.1`, `[::1]` or the bound address, any port.
    fn is_local_host(&self, host: &str) -> bool {
        // `[::1]:15000` keeps its brackets; `localhost:15000` loses its port.
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (!name.starts_with('[') || name.ends_with(']')) =>
            {
                name
            }
            _ => host,
        };
        LOOPBACK_HOSTS.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self
                .bound_host
                .as_deref()
                .is_some_and(|b| name.eq_ignore_ascii_case(b))
    }

    /// `http(s)://` a local host; `null` (a sandboxed or file page) is not.
    fn is_local_origin(&self, origin: &str) -> bool {
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        rest.is_some_and(|host| !host.contains('/') && self.is_local_host(host))
    }
}

/// `Authorization: Bearer <want>`, compared in constant time.
fn authorized(headers: &hyper::HeaderMap, want: &str) -> bool {
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), want.as_bytes())
}

/// `GET /stats`: the snapshot's JSON plus what only the proxy knows (plan,
/// seed, downstream failures, reload status).
async fn stats(proxy: &ProxyHandle) -> Response<Full<Bytes>> {
    let s = match proxy.metrics().snapshot().await {
        Ok(s) => s,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
    };
    let mut stats = s.to_stats_json();
    let r = proxy.credentials();
    if let Some(obj) = stats.as_object_mut() {
        let active = proxy.plan().current();
        obj.insert("plan".into(), plan_json(&active));
        obj.insert("seed".into(), json!(active.plan.seed()));
        obj.insert(
            "downstream_handshake_failures".into(),
            json!(proxy.downstream_failures()),
        );
        obj.insert(
            "reload".into(),
            json!({
                "client": r.client.as_ref().map(|p| p.status()),
                "server": r.server.as_ref().map(|p| p.status()),
                "trust_bundle": r.trust.status(),
            }),
        );
    }
    json_response(StatusCode::OK, &stats)
}

/// `GET /metrics`: the Prometheus exposition of a fresh snapshot.
async fn metrics(proxy: &ProxyHandle) -> Response<Full<Bytes>> {
    match proxy.metrics().snapshot().await {
        Ok(s) => {
            let mut resp = Response::new(Full::new(Bytes::from(s.to_prometheus())));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            );
            resp
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
    }
}

/// `GET /timeline`.
async fn timeline(proxy: &ProxyHandle) -> Response<Full<Bytes>> {
    match proxy.metrics().snapshot().await {
        Ok(s) => json_response(StatusCode::OK, &s.timeline_json()),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
    }
}

/// `POST /rotate[?mint]`: re-read every credential file, and with `mint`
/// mint and publish a new client identity. 422 when anything was refused.
async fn rotate(proxy: &ProxyHandle, mint: bool) -> Response<Full<Bytes>> {
    // Re-reading files touches the disk: keep it off the runtime threads.
    let r = proxy.credentials().clone();
    let result = tokio::task::spawn_blocking(move || {
        let errors: Vec<String> = r
            .reload_files()
            .into_iter()
            .map(|(k, e)| format!("{k}: {e}"))
            .collect();
        let minted = if mint {
            Some(r.mint().map_err(|e| e.to_string()))
        } else {
            None
        };
        (errors, minted)
    })
    .await;
    let Ok((errors, minted)) = result else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "rotation task failed\n");
    };
    let minted_err = matches!(minted, Some(Err(_)));
    let body = json!({
        "errors": errors,
        "minted_serial": minted.as_ref().and_then(|m| m.as_ref().ok()),
        "mint_error": minted.as_ref().and_then(|m| m.as_ref().err()),
    });
    let status = if errors.is_empty() && !minted_err {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    json_response(status, &body)
}

/// `GET /plan` and `/stats`' `plan`: `{active, seed, changes, since_unix_ms}`.
fn plan_json(active: &ActivePlan) -> serde_json::Value {
    json!({
        "active": active.plan.describe(),
        "seed": active.plan.seed(),
        "swap": active.swap.name(),
        "swap_every": active.swap.every(),
        "changes": active.changes,
        "since_unix_ms": active.since_unix_ms,
    })
}

/// `GET /plan`: the plan in force.
fn get_plan(proxy: &ProxyHandle) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &plan_json(&proxy.plan().current()))
}

/// `PUT /plan` with a JSON body, the flags' strings as values:
/// `{"present": "valid=80,expired=20", "seed": 7}` or
/// `{"present_sequence": "valid,expired"}`, optionally `"swap": "connection"`
/// or `"request"` and `"swap_every": N` (absent: the swap mode stays).
/// 200 with the new plan as `GET /plan` shows it; 400 (the running plan
/// untouched) when the body or the plan is refused.
async fn put_plan(proxy: &ProxyHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), PLAN_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return refused(&format!(
                "cannot read the body (at most {PLAN_BODY_LIMIT} bytes): {e}"
            ))
        }
    };
    let spec: PlanSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return refused(&format!("the body is not a plan: {e}; {PLAN_BODY_EXAMPLE}")),
    };
    match proxy.plan().change(&spec) {
        Ok(active) => json_response(StatusCode::OK, &plan_json(&active)),
        Err(e) => refused(&e.to_string()),
    }
}

/// 400 with `{"error": ...}`: the running plan is unchanged.
fn refused(error: &str) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": error }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    hyper::header::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn without_a_token_only_loopback_hosts_and_origins_pass() {
        let a = Access::new(None, Some("127.0.0.2:15000".parse().unwrap()));
        for host in [
            "localhost",
            "LOCALHOST:15000",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:15000",
            "127.0.0.2:15000",
        ] {
            assert!(a.check(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:15000",
            "localhost.evil.example",
            "127.0.0.3",
            "[::1",
        ] {
            let e = a.check(&headers(&[("host", host)])).unwrap_err();
            assert_eq!(e.0, StatusCode::MISDIRECTED_REQUEST, "{host}");
        }
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
        ] {
            let h = headers(&[("host", "127.0.0.1"), ("origin", origin)]);
            assert!(a.check(&h).is_ok(), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost.evil.example",
            "file://",
            "http://127.0.0.1/x",
        ] {
            let h = headers(&[("host", "127.0.0.1"), ("origin", origin)]);
            assert_eq!(
                a.check(&h).unwrap_err().0,
                StatusCode::FORBIDDEN,
                "{origin}"
            );
        }
        assert!(
            a.check(&headers(&[])).is_ok(),
            "no Host (HTTP/1.0): no page sent it"
        );
    }

    #[test]
    fn with_a_token_the_token_decides() {
        let a = Access::new(Some(Arc::from("0123456789abcdef")), None);
        let h = headers(&[
            ("host", "evil.example"),
            ("authorization", "Bearer 0123456789abcdef"),
        ]);
        assert!(a.check(&h).is_ok());
        let h = headers(&[("host", "127.0.0.1")]);
        assert_eq!(a.check(&h).unwrap_err().0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
