//! `certshift load` and `report` against a real `serve`, in real time:
//! coordinated omission over a real SIGSTOP, the rate, the JSON contract, the
//! HdrHistogram log (read back with the `hdrhistogram` crate's own reader),
//! `report merge`, timeouts and resumption.
//!
//! The engine's exact behaviour (counts, drops, stall, warm-up, stop, rotation
//! windows) is tested on virtual time in `src/load/engine/tests.rs`. These
//! tests run side by side, so none asserts an absolute service time: a
//! neighbour's burst of handshakes on a 2-core machine is not this service's
//! slowness.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certshift::load::{self, LoadConfig, Marks, Mode, Target};
use certshift::report::{LoadReport, RunInfo};
use certshift::tls::{client_config, TlsVersions};
use common::{certshift, spawn_certshift, Running, TestPki};
use rustls_pki_types::ServerName;

/// `certshift serve --mode strict` as its own process, so it can be stopped
/// with SIGSTOP the way a GC pause or a CPU-starved pod stops.
fn serve_process(pki: &TestPki) -> Running {
    let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--pki"]
        .iter()
        .map(|s| s.to_string())
        .chain([pki.path().display().to_string()])
        .collect();
    spawn_certshift(&args, |l| l.starts_with("listening on "))
}

fn target(pki: &TestPki, addr: SocketAddr) -> Target {
    let roots = certshift::creds::load_roots(&[pki.file("ca/ca.crt")]).unwrap();
    let mut config = client_config(roots, pki.cert("order-service"), &TlsVersions::all()).unwrap();
    config.resumption = rustls::client::Resumption::disabled();
    Target {
        addr,
        tls: Some((Arc::new(config), ServerName::try_from("localhost").unwrap())),
        method: hyper::Method::GET,
        path: "/".into(),
        authority: addr.to_string(),
        // Generous: after a stall, a hundred queued handshakes finish at
        // once on two busy cores, and a late ticket must not read as quiet.
        confirm_window: Duration::from_secs(2),
    }
}

/// Stop the process for `stall`, starting `after` from now.
fn stall(pid: u32, after: Duration, stall: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let kill = |sig: &str| {
            let ok = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill {sig} {pid}");
        };
        std::thread::sleep(after);
        kill("-STOP");
        std::thread::sleep(stall);
        kill("-CONT");
    })
}

async fn stalled_run(mode: Mode) -> LoadReport {
    let pki = TestPki::default_flat();
    let serve = serve_process(&pki);
    let mut cfg = LoadConfig::new(
        target(&pki, serve.addr()),
        mode,
        200.0,
        Duration::from_secs(3),
    );
    cfg.connections = 4;
    let stopper = stall(
        serve.child.id(),
        Duration::from_millis(1500),
        Duration::from_millis(500),
    );
    let run = load::run(&cfg, &Marks::default(), std::future::pending()).await;
    stopper.join().unwrap();
    run.report(RunInfo::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_corrected_tail_but_not_in_service_time_keepalive() {
    let r = stalled_run(Mode::Keepalive).await;
    assert_eq!(r.failed + r.dropped, 0, "{:?}", r.outcomes);
    assert!((598..=602).contains(&r.attempted), "{}", r.attempted);
    let corrected = r.latency_us["request"].p99;
    let service = r.service_time_us["request"].p99;
    // wrk2's point: the ~100 requests due during the stall waited for it.
    assert!(corrected >= 400_000, "corrected p99 {corrected}µs");
    // Only the 4 requests in flight when the service stopped took long to
    // serve. Relative, not absolute (a neighbouring test may slow service
    // times by tens of ms): measured from the actual start, as a closed-loop
    // tool does, the tail would be the same as the corrected one. The
    // virtual-time test asserts the absolute figure.
    assert!(
        service * 4 < corrected,
        "service-time p99 {service}µs, corrected {corrected}µs"
    );
    assert!(r.service_time_us["request"].max >= 400_000);
}

/// The stall in handshake mode, exactly, is on virtual time; what only a
/// real TLS 1.3 service shows is how acceptance was known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_mode_confirms_tls13_acceptance_by_evidence() {
    let pki = TestPki::default_flat();
    let serve = serve_process(&pki);
    let cfg = LoadConfig::new(
        target(&pki, serve.addr()),
        Mode::Handshake,
        100.0,
        Duration::from_secs(1),
    );
    let r = load::run(&cfg, &Marks::default(), std::future::pending())
        .await
        .report(RunInfo::default());
    assert_eq!(r.failed + r.dropped, 0, "{:?}", r.outcomes);
    assert_eq!(r.attempted, 100);
    // TLS 1.3 acceptance was confirmed by evidence, never assumed.
    assert_eq!(
        r.confirmations.get("ticket"),
        Some(&r.succeeded),
        "{:?}",
        r.confirmations
    );
}

fn load_cmd(
    pki: &TestPki,
    addr: SocketAddr,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> std::process::Output {
    let p = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    let mut args: Vec<String> = vec![
        "load".into(),
        "--target".into(),
        addr.to_string(),
        "--pki".into(),
        pki.path().display().to_string(),
        "--json".into(),
        p("json"),
        "--hdr-log".into(),
        p("hdr"),
        "--plot".into(),
        p("svg"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    certshift()
        .args(&args)
        .output()
        .expect("run certshift load")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("valid json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_run_attempts_what_was_asked_and_writes_every_file() {
    let pki = TestPki::default_flat();
    let serve = common::start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let out = load_cmd(
        &pki,
        serve.addr,
        dir.path(),
        "run",
        &["--rate", "200", "--duration", "2s"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("coordinated omission corrected") && stdout.contains("http:200"),
        "{stdout}"
    );

    let j = json(&dir.path().join("run.json"));
    for key in [
        "attempted",
        "succeeded",
        "failed",
        "dropped",
        "achieved_rate",
        "outcomes",
        "latency_us",
        "service_time_us",
        "timeline",
        "rotations",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    let attempted = j["attempted"].as_u64().unwrap();
    assert!((398..=402).contains(&attempted), "attempted {attempted}");
    assert_eq!(j["succeeded"].as_u64(), Some(attempted));
    assert_eq!(j["outcomes"]["http:200"].as_u64(), Some(attempted));
    for phase in ["connect", "handshake", "request"] {
        for map in ["latency_us", "service_time_us"] {
            let p = &j[map][phase];
            for k in ["count", "p50", "p90", "p99", "p999", "max"] {
                assert!(p[k].is_u64(), "{map}.{phase}.{k} in {p}");
            }
            assert_eq!(p["count"].as_u64(), Some(attempted), "{map}.{phase}");
        }
    }
    let timeline = j["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 20, "2 s in 100 ms buckets");
    let ok: u64 = timeline.iter().map(|b| b["ok"].as_u64().unwrap()).sum();
    assert_eq!(ok, attempted);
    assert_eq!(timeline[3]["t_ms"].as_u64(), Some(300));
    // What the generator itself cost: 400 handshakes and requests cannot be
    // free, and the total is the per-operation figure times the operations.
    let (total_ms, per_op) = (
        j["cpu"]["total_ms"].as_f64().unwrap(),
        j["cpu"]["per_op_us"].as_f64().unwrap(),
    );
    assert!(per_op > 0.0, "{}", j["cpu"]);
    assert!(
        (per_op * attempted as f64 / 1e3 - total_ms).abs() < 0.01 * total_ms,
        "{}",
        j["cpu"]
    );
    assert!(stdout.contains("µs CPU per operation"), "{stdout}");

    // The SVG is a well-formed document.
    let svg = std::fs::read_to_string(dir.path().join("run.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the plot is valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");

    // The HdrHistogram log, read with the hdrhistogram crate's own reader.
    let (request, failed) = read_log_counts(&dir.path().join("run.hdr"));
    assert_eq!((request, failed), (attempted, 0));
    serve.stop().await;
}

/// Counts of the `request` and `failed` tags, through the crate's API.
fn read_log_counts(path: &Path) -> (u64, u64) {
    use base64::Engine;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let bytes = std::fs::read(path).unwrap();
    let mut d = Deserializer::new();
    let (mut request, mut failed, mut intervals) = (0, 0, 0);
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(iv) = entry.expect("a valid log entry") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(iv.encoded_histogram())
                .unwrap();
            let h: hdrhistogram::Histogram<u64> =
                d.deserialize(&mut std::io::Cursor::new(raw)).unwrap();
            intervals += 1;
            match iv.tag().map(|t| t.as_str()) {
                Some("request") => request += h.len(),
                Some("failed") => failed += h.len(),
                _ => {}
            }
        }
    }
    assert!(intervals >= 2, "one interval per second and tag");
    (request, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_merge_of_two_logs_is_the_sum_and_show_prints_it_again() {
    let pki = TestPki::default_flat();
    let serve = common::start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let a = load_cmd(
        &pki,
        serve.addr,
        dir.path(),
        "a",
        &["--rate", "100", "--duration", "1s"],
    );
    // The second instance presents a certificate the service refuses.
    let b = load_cmd(
        &pki,
        serve.addr,
        dir.path(),
        "b",
        &[
            "--rate",
            "50",
            "--duration",
            "1s",
            "--mode",
            "handshake",
            "--confirm-window",
            "2s",
            "--cert",
            &pki.file("variants/untrusted-ca/tls.crt")
                .display()
                .to_string(),
            "--key",
            &pki.file("variants/untrusted-ca/tls.key")
                .display()
                .to_string(),
        ],
    );
    assert!(a.status.success());
    assert_eq!(b.status.code(), Some(1), "lost operations exit 1");
    let (ja, jb) = (
        json(&dir.path().join("a.json")),
        json(&dir.path().join("b.json")),
    );
    assert_eq!(jb["failed"].as_u64(), jb["attempted"].as_u64());
    assert!(
        jb["outcomes"]["alert:unknown_ca"].as_u64().unwrap_or(0) > 0,
        "{}",
        jb["outcomes"]
    );

    let merged = dir.path().join("merged.json");
    let out = certshift()
        .args(["report", "merge"])
        .arg(dir.path().join("a.hdr"))
        .arg(dir.path().join("b.hdr"))
        .arg("--json")
        .arg(&merged)
        .arg("--plot")
        .arg(dir.path().join("merged.svg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the merged run lost operations");
    let m = json(&merged);
    let sum = |k: &str| ja[k].as_u64().unwrap() + jb[k].as_u64().unwrap();
    for k in ["attempted", "succeeded", "failed", "dropped"] {
        assert_eq!(m[k].as_u64(), Some(sum(k)), "{k}");
    }
    let count = |j: &serde_json::Value| j["latency_us"]["request"]["count"].as_u64().unwrap();
    assert_eq!(count(&m), count(&ja) + count(&jb));
    // The generators' CPU adds up; per operation over all of them.
    let ms = |j: &serde_json::Value| j["cpu"]["total_ms"].as_f64().unwrap();
    assert!(
        (ms(&m) - (ms(&ja) + ms(&jb))).abs() < 0.01,
        "{} {} {}",
        m["cpu"],
        ja["cpu"],
        jb["cpu"]
    );
    let per_op = ms(&m) * 1e3 / sum("attempted") as f64;
    assert!((m["cpu"]["per_op_us"].as_f64().unwrap() - per_op).abs() < 0.01 * per_op);
    assert_eq!(
        m["outcomes"]["alert:unknown_ca"],
        jb["outcomes"]["alert:unknown_ca"]
    );
    roxmltree::Document::parse(&std::fs::read_to_string(dir.path().join("merged.svg")).unwrap())
        .unwrap();

    let show = certshift()
        .args(["report", "show"])
        .arg(dir.path().join("a.json"))
        .output()
        .unwrap();
    assert!(show.status.success());
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(&format!("attempted {}", ja["attempted"])),
        "{text}"
    );
    serve.stop().await;
}

/// `--coalesce`: operations due in one window start together at its end,
/// and what that made them late is in the corrected latency, never hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_keepalive_requests_all_run_and_their_lateness_is_counted() {
    let pki = TestPki::default_flat();
    let serve = common::start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    // 400/s: due every 2.5 ms; 10 ms windows hold four, started 7.5, 5,
    // 2.5 and 0 ms late.
    let out = load_cmd(
        &pki,
        serve.addr,
        dir.path(),
        "coalesced",
        &[
            "--mode",
            "keepalive",
            "--rate",
            "400",
            "--duration",
            "1s",
            "--coalesce",
            "10ms",
            "--no-progress",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let j = json(&dir.path().join("coalesced.json"));
    let attempted = j["attempted"].as_u64().unwrap();
    assert!((398..=402).contains(&attempted), "attempted {attempted}");
    assert_eq!(j["succeeded"].as_u64(), Some(attempted), "{stdout}");
    assert_eq!(j["dropped"].as_u64(), Some(0));
    // Lower bounds set by the windows alone, whatever the service's speed:
    // half the requests started at least 5 ms late, three in four 2.5 ms.
    let request = &j["latency_us"]["request"];
    assert!(request["p50"].as_u64().unwrap() >= 2_400, "{request}");
    assert!(request["p90"].as_u64().unwrap() >= 4_900, "{request}");
    serve.stop().await;
}

/// A plaintext HTTP/1.1 keep-alive service: answers each request head after
/// `delay`, and asks to close every `close_every`th response.
async fn plain_http(delay: Duration, close_every: usize) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                for n in 1.. {
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    got.drain(..end);
                    tokio::time::sleep(delay).await;
                    let close = n % close_every == 0;
                    let head = if close { "Connection: close\r\n" } else { "" };
                    let resp = format!("HTTP/1.1 200 OK\r\n{head}Content-Length: 2\r\n\r\nok");
                    if s.write_all(resp.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Plaintext keep-alive reads each response at the connection's next
/// request (timed by the kernel when it arrived): every request still gets
/// its response, a service that closes is reconnected to without a loss,
/// and a service's delay is in the service time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_keepalive_reads_every_response_and_survives_closes() {
    let addr = plain_http(Duration::from_millis(3), 25).await;
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("plain.json");
    let out = certshift()
        .args(["load", "--target", &addr.to_string(), "--tls", "off"])
        .args(["--mode", "keepalive", "--rate", "400", "--duration", "1s"])
        .args(["--no-progress", "--json", &json_path.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let j = json(&json_path);
    let attempted = j["attempted"].as_u64().unwrap();
    assert!((398..=402).contains(&attempted), "attempted {attempted}");
    assert_eq!(j["succeeded"].as_u64(), Some(attempted), "{stdout}");
    assert_eq!(j["outcomes"]["http:200"].as_u64(), Some(attempted));
    // Reconnections after each close: one connect per 25 requests.
    let connects = j["service_time_us"]["connect"]["count"].as_u64().unwrap();
    assert!(connects >= attempted / 25, "{connects} connects");
    // The service's 3 ms is a lower bound on every request's service time.
    let request = &j["service_time_us"]["request"];
    assert!(request["p50"].as_u64().unwrap() >= 3_000, "{request}");
}

#[test]
fn bad_flags_name_the_flag_and_exit_2() {
    for (args, needle) in [
        (&["--rate", "0"][..], "--rate"),
        (&["--duration", "0s"], "--duration"),
        (&["--path", "nope"], "--path"),
        (&["--tls", "tls"], "--ca"),
        (&["--coalesce", "1s"], "--coalesce"),
    ] {
        let out = certshift()
            .args(["load", "--target", "127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_gives_timeouts_and_drops_never_gaps() {
    let pki = TestPki::default_flat();
    let serve = serve_process(&pki);
    let pid = serve.child.id().to_string();
    let kill = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    kill("-STOP");
    let mut cfg = LoadConfig::new(
        target(&pki, serve.addr()),
        Mode::Handshake,
        100.0,
        Duration::from_secs(1),
    );
    cfg.timeout = Duration::from_millis(300);
    cfg.max_in_flight = 10;
    let run = load::run(&cfg, &Marks::default(), std::future::pending()).await;
    kill("-CONT");
    let r = run.report(RunInfo::default());
    // Every scheduled operation is accounted for: timed out or dropped.
    assert_eq!(r.attempted, 100);
    assert_eq!(r.succeeded, 0);
    assert_eq!(r.failed + r.dropped, 100, "{:?}", r.outcomes);
    assert!(r.dropped > 0, "{:?}", r.outcomes);
    assert!(
        r.outcomes.get("handshake_timeout").copied().unwrap_or(0) > 0,
        "{:?}",
        r.outcomes
    );
    let run = r.downtime.longest_failure_run.expect("a failure run");
    assert_eq!(run.ops, 100);
    // Timed-out operations recorded their latency (about the timeout).
    assert!(r.latency_us["request"].max >= 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reports_the_resumed_share() {
    let pki = TestPki::default_flat();
    let serve = common::start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    for (flag, resumed) in [(None, false), (Some("--resume"), true)] {
        let mut extra = vec!["--rate", "50", "--duration", "1s"];
        extra.extend(flag);
        let out = load_cmd(&pki, serve.addr, dir.path(), "r", &extra);
        assert!(out.status.success());
        let j = json(&dir.path().join("r.json"));
        let share = j["resumption"]["share"].as_f64().unwrap();
        assert_eq!(j["resumption"]["handshakes"].as_u64(), Some(50));
        if resumed {
            // The first handshake is full; later ones resume once a ticket came.
            assert!(share > 0.5, "{}", j["resumption"]);
        } else {
            assert_eq!(share, 0.0);
        }
    }
    serve.stop().await;
}
