//! `serve --admin` (issue 11): what the service does under hostile load is
//! visible where the proxy's is. Slow ClientHellos closed at the handshake
//! deadline show in `/stats.listener` and `/metrics`; the revocation source
//! (CRLs, or none) shows in `/stats`; a refused reload is counted there with
//! its reason while the old certificate serves; the admin API binds off
//! loopback only with a token, and a configured token is required. Real
//! sockets on 127.0.0.1, a PKI made per test.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use certshift::serve::ServeArgs;
use certshift::tls::{Outcome, TlsVersion};
use common::*;

async fn stats(admin_addr: SocketAddr) -> serde_json::Value {
    let (status, v) = admin(admin_addr, "GET", "/stats", None, None).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn metrics(admin_addr: SocketAddr) -> String {
    let (status, text) = admin_text(admin_addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    text
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_client_hellos_closed_at_the_deadline_show_in_stats_and_metrics() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        handshake_timeout: Duration::from_millis(600),
        ..serve_args()
    })
    .await;
    let admin_addr = start_serve_admin(&serve, None).await;
    let before = stats(admin_addr).await;
    assert_eq!(
        before["listener"]["closed_handshake_timeout"], 0,
        "{before}"
    );
    assert_eq!(
        slow_hellos(serve.addr, 2).await,
        [true; 2],
        "closed at the handshake deadline"
    );
    // A legitimate client is served meanwhile and counted by status.
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("order-service"),
        TlsVersion::Tls13,
        "/",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Http(200));
    let v = stats(admin_addr).await;
    let l = &v["listener"];
    assert_eq!(l["closed_handshake_timeout"], 2, "{v}");
    assert_eq!(l["closed_header_timeout"], 0, "{v}");
    // The proxy's listener keys, all of them.
    for key in ["open", "in_handshake", "accepted", "shed_at_handshake_cap"] {
        assert!(l[key].is_u64(), "listener.{key} in {v}");
    }
    assert_eq!(v["requests"]["by_status"]["200"], 1, "{v}");
    let text = metrics(admin_addr).await;
    let closed = "certshift_listener_closed_total";
    assert_eq!(
        metric(&text, closed, Some(("reason", "handshake_timeout"))),
        2.0
    );
    assert_eq!(
        metric(&text, closed, Some(("reason", "header_timeout"))),
        0.0
    );
    assert!(metric(&text, "certshift_listener_open_connections", None) >= 0.0);
    assert_eq!(
        metric(
            &text,
            "certshift_serve_requests_total",
            Some(("status", "200"))
        ),
        1.0
    );
    let (status, body) = admin_get(admin_addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // The proxy's guard: a DNS-rebound name or a foreign page is refused.
    let url = format!("http://{admin_addr}/stats");
    let guard = tokio::task::spawn_blocking(move || {
        (
            curl(&["-H", "Host: evil.example", &url]).1,
            curl(&["-H", "Origin: http://evil.example", &url]).1,
        )
    });
    assert_eq!(guard.await.unwrap(), ("421".into(), "403".into()));
    let (status, _) = admin_text(admin_addr, "POST", "/rotate", None, None).await;
    assert_eq!(status, 404, "serve has no rotate endpoint");
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_revocation_source_shows_in_stats_crls_or_none() {
    let pki = TestPki::default_flat();
    let with_crl = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let v = stats(start_serve_admin(&with_crl, None).await).await;
    let r = &v["revocation"];
    assert_eq!(r["source"], "crl", "{v}");
    assert_eq!(r["files"][0], s(&pki.file("ca/crl.pem")), "{v}");
    // The PKI revokes its `revoked` variant; the list carries its next update.
    assert!(r["crls"][0]["revoked"].as_u64() >= Some(1), "{v}");
    assert!(r["crls"][0]["next_update"].is_string(), "{v}");
    assert!(r.get("warning").is_none(), "{v}");
    assert_eq!(v["reload"]["server"]["revocation"][0], r["files"][0], "{v}");
    with_crl.stop().await;

    // The server credential and client CA by hand, no CRL: nothing revokes.
    let without = start_serve_with(ServeArgs {
        cert: Some(pki.file("server/tls.crt")),
        key: Some(pki.file("server/tls.key")),
        client_ca: vec![pki.file("ca/ca.crt")],
        ..serve_args()
    })
    .await;
    let v = stats(start_serve_admin(&without, None).await).await;
    let r = &v["revocation"];
    assert_eq!(r["source"], "none", "{v}");
    assert_eq!(r["crls"].as_array().map(Vec::len), Some(0), "{v}");
    let warning = r["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("revoked") && warning.contains("--crl"),
        "{v}"
    );
    assert_eq!(v["reload"]["server"]["revocation"], "none", "{v}");
    without.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_reloads_are_counted_in_stats_with_their_reason_and_the_old_values_serve() {
    let pki = TestPki::default_flat();
    let policy = pki.file("policy.toml");
    std::fs::write(&policy, "[[rules]]\npaths = [\"/\"]\n").unwrap();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        policy: Some(policy.clone()),
        no_watch: true, // one reload each, triggered here
        ..serve_args()
    })
    .await;
    let admin_addr = start_serve_admin(&serve, None).await;
    let served_cert = || async {
        let r = probe_tls(
            &pki,
            serve.addr,
            pki.cert("order-service"),
            TlsVersion::Tls13,
            "/",
        )
        .await;
        assert_eq!(r.outcome, Outcome::Http(200), "the old certificate serves");
        sha256(r.server_cert.as_deref().unwrap())
    };
    let before = served_cert().await;
    let (cert, key) = expired_server(&pki);
    std::fs::write(pki.file("server/tls.crt"), cert).unwrap();
    std::fs::write(pki.file("server/tls.key"), key).unwrap();
    let handle = serve.handle.clone();
    let refused = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .unwrap();
    assert!(refused.is_err(), "an expired server certificate is refused");
    let v = stats(admin_addr).await;
    let server = &v["reload"]["server"];
    assert_eq!(server["failures"], 1, "{v}");
    assert_eq!(server["reloads"], 0, "{v}");
    let why = server["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("server/tls.crt") && why.contains("expired"),
        "{v}"
    );
    assert_eq!(v["rotation_failures"]["server"], 1, "{v}");
    let text = metrics(admin_addr).await;
    assert_eq!(
        metric(
            &text,
            "certshift_rotation_failures_total",
            Some(("kind", "server"))
        ),
        1.0
    );
    assert_eq!(served_cert().await, before);

    // An emptied policy (it would deny everything): refused, and shown.
    std::fs::write(&policy, "# all rules removed\n").unwrap();
    let handle = serve.handle.clone();
    let refused = tokio::task::spawn_blocking(move || handle.reload_policy())
        .await
        .unwrap();
    assert!(refused.is_err(), "a policy with no rules is refused");
    let v = stats(admin_addr).await;
    let p = &v["reload"]["policy"];
    assert_eq!(p["failures"], 1, "{v}");
    let why = p["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("policy.toml") && why.contains("rules"), "{v}");
    assert_eq!(v["rotation_failures"]["policy"], 1, "{v}");
    assert_eq!(v["rotation_failures"]["server"], 1, "{v}");
    // The old certificate and the old policy serve: still a 200.
    assert_eq!(served_cert().await, before);
    serve.stop().await;
}

/// `certshift serve ARGS` that must refuse to start: its stderr.
fn refused(pki: &TestPki, args: &[&str]) -> String {
    let out = certshift()
        .args(["serve", "--listen", "127.0.0.1:0", "--pki", s(pki.path())])
        .args(args)
        .env_remove("CERTSHIFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

#[test]
fn an_admin_api_off_loopback_needs_a_token_of_16_characters() {
    let pki = TestPki::default_flat();
    let err = refused(&pki, &["--admin", "0.0.0.0:0"]);
    assert!(
        err.contains("--admin-token") && err.contains("0.0.0.0"),
        "{err}"
    );
    let err = refused(
        &pki,
        &["--admin", "127.0.0.1:0", "--admin-token", "short-tok3n"],
    );
    assert!(err.contains("--admin-token") && err.contains("16"), "{err}");
    assert!(!err.contains("short-tok3n"), "the token is echoed: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_token_is_required_and_admin_on_follows_listening_on() {
    let pki = TestPki::default_flat();
    let token = "Zq8vT3kLm9pR2xW7-serve";
    let args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--pki",
        s(pki.path()),
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        token,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let p =
        tokio::task::spawn_blocking(move || spawn_certshift(&args, |l| l.starts_with("admin on ")))
            .await
            .unwrap();
    assert!(p.lines[0].starts_with("listening on "), "{:?}", p.lines);
    let admin_addr: SocketAddr = p.line("admin on ").parse().unwrap();
    for path in ["/stats", "/metrics", "/healthz"] {
        let (status, _) = admin_text(admin_addr, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) = admin_text(admin_addr, "GET", path, None, Some("wrong")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, v) = admin(admin_addr, "GET", "/stats", None, Some(token)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["listener"]["accepted"], 0, "{v}");
    drop(p);
}
