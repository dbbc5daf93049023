//! The proxy's endpoints: `GET /stats`, `GET /metrics`, `GET /timeline`,
//! `POST /rotate`, `GET /plan` and `PUT /plan` (change the plan while
//! traffic flows). Never touches a credential except through the proxy's
//! `Rotating` (`POST /rotate`), nor the plan except through
//! `LivePlan::change` (`PUT /plan`).

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{json_response, prometheus_response, reload_json, text};
use crate::plan::PlanSpec;
use crate::proxy::{ActivePlan, ProxyHandle};

/// A plan is a line or two of JSON; anything bigger is not one.
const PLAN_BODY_LIMIT: usize = 16 * 1024;
const PLAN_BODY_EXAMPLE: &str = r#"send JSON such as {"present": "valid=80,expired=20", "seed": 7} or {"present_sequence": "valid,expired"}"#;

/// Every request but `GET /healthz`, already through the access guard.
pub(super) async fn route(proxy: &ProxyHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
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
            reload_json([
                ("client", r.client.as_ref().map(|p| p.status())),
                ("server", r.server.as_ref().map(|p| p.status())),
                ("trust_bundle", Some(r.trust.status())),
            ]),
        );
    }
    json_response(StatusCode::OK, &stats)
}

/// `GET /metrics`: the Prometheus exposition of a fresh snapshot.
async fn metrics(proxy: &ProxyHandle) -> Response<Full<Bytes>> {
    match proxy.metrics().snapshot().await {
        Ok(s) => prometheus_response(s.to_prometheus()),
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
