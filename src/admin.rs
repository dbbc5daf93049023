//! The proxy's admin HTTP API: `GET /stats`, `GET /metrics` (Prometheus
//! text), `GET /timeline`, `GET /healthz`, `POST /rotate`.
//!
//! It can rotate credentials, so it binds to loopback unless a token is
//! configured (enforced in the proxy's config), and with a token every
//! request must carry `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::proxy::ProxyHandle;

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
            listener: TcpListener::bind(addr).await?,
            proxy,
            token: token.map(Arc::from),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves. Few, short requests: no connection cap
    /// beyond a per-request timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                _ = &mut shutdown => return,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (proxy, token) = (self.proxy.clone(), self.token.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (proxy, token) = (proxy.clone(), token.clone());
                    async move { Ok::<_, Infallible>(route(&proxy, token.as_deref(), req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(16 * 1024)
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    }
}

async fn route(
    proxy: &ProxyHandle,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(want) = token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), want.as_bytes()) {
            return text(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (Authorization: Bearer TOKEN)\n",
            );
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/stats") => match proxy.metrics().snapshot().await {
            Ok(s) => {
                let mut stats = s.to_stats_json();
                let r = proxy.credentials();
                let cfg = proxy.config();
                if let Some(obj) = stats.as_object_mut() {
                    obj.insert("plan".into(), json!(cfg.plan.describe()));
                    obj.insert("seed".into(), json!(cfg.plan.seed()));
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
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
        },
        (&Method::GET, "/metrics") => match proxy.metrics().snapshot().await {
            Ok(s) => {
                let mut resp = Response::new(Full::new(Bytes::from(s.to_prometheus())));
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                );
                resp
            }
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
        },
        (&Method::GET, "/timeline") => match proxy.metrics().snapshot().await {
            Ok(s) => json_response(StatusCode::OK, &s.timeline_json()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
        },
        (&Method::POST, "/rotate") => {
            // Re-reading files touches the disk: keep it off the runtime threads.
            let r = proxy.credentials().clone();
            let mint = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "mint" || p == "mint=1"));
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
            match result {
                Ok((errors, minted)) => {
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
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "rotation task failed\n"),
            }
        }
        (_, "/healthz" | "/stats" | "/metrics" | "/timeline" | "/rotate") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /stats, /metrics, /timeline, /healthz, POST /rotate\n",
        ),
    }
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
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
