//! `serve`'s endpoints: `GET /stats` (JSON) and `GET /metrics` (Prometheus
//! text), both from one read of the service's counters. No rotate or plan
//! endpoints: a service reloads from its files (watch, poll, SIGHUP).
//! Never changes the service.

use std::sync::atomic::Ordering;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{json_response, prometheus_response, reload_json, text};
use crate::creds::ReloadStatus;
use crate::metrics::ServiceMetrics;
use crate::serve::ServiceHandle;

/// Every request but `GET /healthz`, already through the access guard.
pub(super) fn route(service: &ServiceHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => stats(service),
        (&Method::GET, "/metrics") => {
            prometheus_response(Read::of(service).metrics.to_prometheus())
        }
        (_, "/healthz" | "/stats" | "/metrics") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: serve's admin API has /stats, /metrics, /healthz\n",
        ),
    }
}

/// One read of the service: its counters and its reload statuses.
struct Read {
    metrics: ServiceMetrics,
    server: ReloadStatus,
    /// `None` when the policy is not read from a file (none, or given in code).
    policy: Option<ReloadStatus>,
}

impl Read {
    fn of(service: &ServiceHandle) -> Read {
        let c = service.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        // Read in the reverse of the order a request bumps them (requests,
        // denied, expired), so each is at least the next and none of the
        // differences goes below zero.
        let expired = load(&c.expired_certificates);
        let denied = load(&c.denied);
        let requests = load(&c.requests);
        let server = service.reload_status();
        let policy = service
            .policy_file()
            .map(|_| service.policy_reload_status());
        let mut reloads = vec![("server", server.reloads, server.failures)];
        if let Some(p) = &policy {
            reloads.push(("policy", p.reloads, p.failures));
        }
        Read {
            metrics: ServiceMetrics {
                listener: service.connections(),
                reloads,
                connections: load(&c.connections),
                handshake_failures: load(&c.handshake_failures),
                plaintext_connections: load(&c.plaintext_connections),
                requests_by_status: vec![
                    (200, requests.saturating_sub(denied)),
                    (403, denied.saturating_sub(expired)),
                    (495, expired),
                ],
            },
            server,
            policy,
        }
    }
}

/// `GET /stats`: `listener` (the proxy's keys), `reload` (`server`: its
/// certificate, client CAs and CRLs, one publication; `policy`), `rotations`
/// and `rotation_failures` by kind (the proxy's keys), `revocation`, and
/// what the service served.
fn stats(service: &ServiceHandle) -> Response<Full<Bytes>> {
    let Read {
        metrics: m,
        server,
        policy,
    } = Read::of(service);
    let by_kind = |f: fn(&(&'static str, u64, u64)) -> u64| -> serde_json::Map<_, _> {
        m.reloads
            .iter()
            .map(|r| (r.0.to_string(), json!(f(r))))
            .collect()
    };
    let by_status: serde_json::Map<_, _> = m
        .requests_by_status
        .iter()
        .map(|(s, n)| (s.to_string(), json!(n)))
        .collect();
    let body = json!({
        "listener": m.listener,
        "reload": reload_json([("server", Some(server)), ("policy", policy)]),
        "rotations": by_kind(|r| r.1),
        "rotation_failures": by_kind(|r| r.2),
        "revocation": service.revocation(),
        "connections": {
            "total": m.connections,
            "handshake_failures": m.handshake_failures,
            "plaintext": m.plaintext_connections,
        },
        "requests": {
            "total": m.requests_by_status.iter().map(|(_, n)| n).sum::<u64>(),
            "by_status": by_status,
        },
    });
    json_response(StatusCode::OK, &body)
}
