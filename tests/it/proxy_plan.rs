//! Chaos at runtime: the plan changes while traffic flows, through
//! `PUT /plan` on the admin API and `--plan-schedule`; every change is a
//! `plan` event on the timeline; a refused change leaves the plan alone.
//! Real serve, real proxy, real handshakes over loopback; nothing is
//! asserted about how long anything took.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use certshift::probe::ProbeResult;
use certshift::serve::Enforcement;
use certshift::tls::Outcome;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy presented for this request, as the client sees it: the
/// strict service answers 200 only to the identity's valid credential; for
/// anything else the proxy answers 502 naming the credential it presented
/// (even when the service's alert beat the client's request to the proxy:
/// never a bare close, which shows here as "rejected").
fn presented(r: &ProbeResult) -> String {
    match &r.outcome {
        Outcome::Http(200) => "valid".into(),
        _ => r
            .body_text()
            .rsplit_once("presented credential: ")
            .map(|(_, rest)| rest.split(',').next().unwrap_or("").trim().to_string())
            .unwrap_or_else(|| "rejected".into()),
    }
}

/// `seen` is `want` as a client sees it.
fn looks_like(seen: &str, want: &str) -> bool {
    seen == want
}

/// Where the switches stand, as seen by the clients: each request notes the
/// state when it started and when it ended.
const BEFORE: u8 = 0;
const PUT_EXPIRED: u8 = 1;
const EXPIRED: u8 = 2;
const PUT_VALID: u8 = 3;
const VALID_AGAIN: u8 = 4;

/// (state at start, state at end, presented)
type Seen = Arc<Mutex<Vec<(u8, u8, String)>>>;

async fn request(proxy: SocketAddr, state: &AtomicU8, seen: &Seen) -> String {
    let start = state.load(Ordering::SeqCst);
    let r = probe_plain(proxy, "/api/orders").await;
    let end = state.load(Ordering::SeqCst);
    let p = presented(&r);
    seen.lock().unwrap().push((start, end, p.clone()));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_plan_under_load_switches_to_expired_and_back_within_one_request() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let admin_addr = start_admin(&proxy, None).await;
    let state = Arc::new(AtomicU8::new(BEFORE));
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    // Background load: one request per new downstream connection, bounded.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (state, seen, stop, addr) = (state.clone(), seen.clone(), stop.clone(), proxy.addr);
        workers.push(tokio::spawn(async move {
            for _ in 0..3000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                request(addr, &state, &seen).await;
            }
        }));
    }
    for _ in 0..10 {
        assert_eq!(request(proxy.addr, &state, &seen).await, "valid");
    }

    state.store(PUT_EXPIRED, Ordering::SeqCst);
    let (code, body) = admin(
        admin_addr,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence": "expired"}"#),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["active"], "always expired");
    assert_eq!(body["changes"], 1);
    state.store(EXPIRED, Ordering::SeqCst);
    // Within one request: the first one after the 200 presents the new plan.
    let p = request(proxy.addr, &state, &seen).await;
    assert!(looks_like(&p, "expired"), "{p}");
    for _ in 0..10 {
        let p = request(proxy.addr, &state, &seen).await;
        assert!(looks_like(&p, "expired"), "{p}");
    }

    state.store(PUT_VALID, Ordering::SeqCst);
    let (code, body) = admin(
        admin_addr,
        "PUT",
        "/plan",
        Some(r#"{"present": "valid=1", "seed": 7, "swap": "connection"}"#),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["active"], "weights valid=1, seed 7");
    assert_eq!(body["changes"], 2);
    state.store(VALID_AGAIN, Ordering::SeqCst);
    assert_eq!(request(proxy.addr, &state, &seen).await, "valid");
    for _ in 0..10 {
        assert_eq!(request(proxy.addr, &state, &seen).await, "valid");
    }

    let (code, stats) = admin(admin_addr, "GET", "/stats", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(stats["plan"]["active"], "weights valid=1, seed 7");
    assert_eq!(stats["plan"]["changes"], 2);
    let (_, timeline) = admin(admin_addr, "GET", "/timeline", None, None).await;
    let plans = timeline["plans"].as_array().cloned().unwrap_or_default();
    assert_eq!(plans.len(), 2, "{timeline}");
    assert_eq!(plans[0]["kind"], "plan");
    assert_eq!(plans[0]["plan"], "always expired");
    assert_eq!(plans[1]["plan"], "weights valid=1, seed 7");
    assert!(plans[0]["t_ms"].as_u64() <= plans[1]["t_ms"].as_u64());

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let snap = proxy.stop().await;
    let seen = seen.lock().unwrap().clone();
    // Requests wholly inside one plan's span presented that plan; only those
    // overlapping a PUT may have gone either way.
    for (start, end, p) in &seen {
        let want = match (*start, *end) {
            (BEFORE, BEFORE) | (VALID_AGAIN, VALID_AGAIN) => "valid",
            (EXPIRED, EXPIRED) => "expired",
            _ => continue,
        };
        assert!(
            looks_like(p, want),
            "a request from state {start} to {end} presented {p}, not {want}"
        );
    }
    let count = |name: &str| seen.iter().filter(|(_, _, p)| p == name).count() as u64;
    let rejected = count("expired") + count("rejected");
    assert_eq!(count("valid") + rejected, seen.len() as u64, "{seen:?}");
    // The proxy's verdict counters agree with what the clients saw: expired
    // presentations exist and every one was an expected rejection.
    let stats = snap.to_stats_json();
    let variants = &stats["variants"];
    assert_eq!(variants["expired"]["connections"], rejected, "{stats}");
    assert_eq!(variants["valid"]["connections"], count("valid"), "{stats}");
    assert!(rejected >= 11);
    assert_eq!(stats["connections"]["unexpected_accept"], 0);
    assert_eq!(stats["connections"]["unexpected_reject"], 0);
    assert_eq!(
        snap.timeline_json()["plans"].as_array().map(Vec::len),
        Some(2)
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_plan_changes_answer_400_or_401_and_leave_the_plan_alone() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let token = Some("s3cret");
    let a = start_admin(&proxy, token).await;

    let (code, _) = admin(
        a,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence": "expired"}"#),
        None,
    )
    .await;
    assert_eq!(code, 401, "no token");
    let (code, _) = admin(
        a,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence": "expired"}"#),
        Some("wrong"),
    )
    .await;
    assert_eq!(code, 401, "wrong token");
    let refused: [(&str, &str); 9] = [
        (r#"{"present": "valid=90,"#, "not a plan"),
        (r#"{"present_sequence": "valid,bogus"}"#, "bogus"),
        (r#"{"present": "valid=0,expired=0"}"#, "every weight is 0"),
        (
            r#"{"present": "valid=1", "present_sequence": "valid"}"#,
            "not both",
        ),
        (r#"{}"#, "no plan given"),
        (r#"{"presnt": "valid=1"}"#, "presnt"),
        (
            r#"{"present": "valid=1", "swap": "bytes"}"#,
            "use \"connection\"",
        ),
        (
            r#"{"present": "valid=1", "swap": "connection", "swap_every": 3}"#,
            "needs swap mode \"request\"",
        ),
        // The default PKI has no intermediate, so this was never loaded.
        (
            r#"{"present_sequence": "valid,missing-intermediate"}"#,
            "did not load missing-intermediate",
        ),
    ];
    for (body, needle) in refused {
        let (code, answer) = admin(a, "PUT", "/plan", Some(body), token).await;
        assert_eq!(code, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{body}: {error}");
        let (code, plan) = admin(a, "GET", "/plan", None, token).await;
        assert_eq!(code, 200);
        assert_eq!(plan["active"], "always valid", "{body} changed the plan");
        assert_eq!(plan["changes"], 0, "{body} counted as a change");
    }
    // Traffic still presents the startup plan.
    assert_eq!(
        presented(&probe_plain(proxy.addr, "/api/orders").await),
        "valid"
    );
    // Every variant of the PKI was loaded at startup, though the startup
    // plan presents only `valid`: a change to any of them is accepted.
    let (code, plan) = admin(
        a,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence": "untrusted-ca,none"}"#),
        token,
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["changes"], 1);
    // A sequence starts at its first entry after a change.
    for want in ["untrusted-ca", "none"] {
        let p = presented(&probe_plain(proxy.addr, "/api/orders").await);
        assert!(looks_like(&p, want), "{p}, not {want}");
    }
    // The swap mode changes with the plan: from the next connection on,
    // every request is its own experiment and carries the headers.
    let (code, plan) = admin(
        a,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence": "valid", "swap": "request"}"#),
        token,
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        (plan["swap"].as_str(), plan["swap_every"].as_u64()),
        (Some("request"), Some(1))
    );
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET /api/orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // Only request mode tags a served response.
    assert!(raw.contains("x-certshift-variant: valid\r\n"), "{raw}");
    assert!(raw.contains("x-certshift-outcome: http:200\r\n"), "{raw}");
    // A change without "swap" keeps the mode in force.
    let (code, plan) = admin(
        a,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence": "valid,expired"}"#),
        token,
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["swap"], "request");
    let snap = proxy.stop().await;
    let stats = snap.to_stats_json();
    assert_eq!(
        stats["variants"]["untrusted-ca"]["connections"], 1,
        "{stats}"
    );
    assert_eq!(stats["variants"]["none"]["connections"], 1, "{stats}");
    let tl = snap.timeline_json();
    let plans: Vec<&str> = tl["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plan"].as_str().unwrap())
        .collect();
    assert_eq!(
        plans,
        [
            "sequence untrusted-ca,none (cycled)",
            "always valid; swap per request",
            "sequence valid,expired (cycled); swap per request"
        ]
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_schedule_applies_its_phases_like_put_plan() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let schedule = pki.file("schedule.toml");
    std::fs::write(
        &schedule,
        "[[phase]]\nafter = \"0s\"\npresent_sequence = \"valid\"\n\n[[phase]]\nafter = \"500ms\"\npresent = \"expired=1\"\nseed = 5\n",
    )
    .unwrap();
    let mut args = proxy_args(&pki, serve.addr);
    args.plan_schedule = Some(schedule);
    let proxy = start_proxy(args).await;
    let mut seen = Vec::new();
    // Requests until both phases have been applied, then a few more: the
    // loop is bounded by count, and asserts nothing about time.
    let mut after_last = 0;
    for _ in 0..5000 {
        let done = proxy.handle.plan().current().changes == 2;
        seen.push(presented(&probe_plain(proxy.addr, "/api/orders").await));
        if done {
            after_last += 1;
            if after_last == 5 {
                break;
            }
        }
    }
    assert_eq!(after_last, 5, "the schedule's last phase never came");
    for p in &seen[seen.len() - 5..] {
        assert!(looks_like(p, "expired"), "{seen:?}");
    }
    let snap = proxy.stop().await;
    let stats = snap.to_stats_json();
    assert!(
        stats["variants"]["valid"]["connections"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(
        stats["variants"]["expired"]["connections"].as_u64() >= Some(5),
        "{stats}"
    );
    let plans = snap.timeline_json()["plans"].clone();
    assert_eq!(plans[0]["plan"], "always valid", "{plans}");
    assert_eq!(plans[1]["plan"], "weights expired=1, seed 5", "{plans}");
    assert_eq!(plans.as_array().map(Vec::len), Some(2));
    // The summary printed at exit places each change in time.
    let table = snap.summary_table();
    let changes: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("plan change at "))
        .collect();
    assert_eq!(changes.len(), 2, "{table}");
    assert!(
        changes[1].ends_with(": weights expired=1, seed 5"),
        "{table}"
    );
    serve.stop().await;
}

#[test]
fn a_malformed_plan_schedule_is_a_config_error_naming_phase_and_field() {
    let pki = TestPki::default_flat();
    let cases = [
        (
            "[[phase]]\nafter = \"1s\"\npresent = \"valid=1\"\n[[phase]]\nafter = \"1s\"\npresent = \"valid=1,expird=2\"\n",
            "phase 2: present: unknown credential \"expird\"",
        ),
        (
            "[[phase]]\nafter = \"a while\"\npresent_sequence = \"valid\"\n",
            "phase 1: after:",
        ),
        (
            "[[phase]]\nafter = \"1s\"\npresent_sequence = \"missing-intermediate\"\n",
            "phase 1: the PKI in",
        ),
    ];
    for (text, needle) in cases {
        let path = pki.file("bad-schedule.toml");
        std::fs::write(&path, text).unwrap();
        let out = certshift()
            .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "off"])
            .args(["--upstream", "127.0.0.1:9", "--pki"])
            .arg(pki.path())
            .arg("--plan-schedule")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains("--plan-schedule"), "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
