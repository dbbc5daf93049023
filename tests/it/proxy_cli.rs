//! `certshift proxy` as a user runs it: startup lines, the admin API
//! (stats, Prometheus metrics, timeline, rotate, token), the final summary
//! on SIGTERM, and configuration errors.

use crate::common;

use std::time::Duration;

use certshift::serve::Enforcement;
use common::*;

type Labels = Vec<(String, String)>;
type Sample = (String, Labels, f64);

/// Parses the exposition with a real parser of the Prometheus text format
/// (`openmetrics-parser`: every line must be a valid comment or sample, every
/// sample belong to its declared family) and lists its samples as the text
/// names them: counters by name, histograms as `_bucket{le}`, `_sum` and
/// `_count`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    use openmetrics_parser::PrometheusValue;
    let parsed = openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("not a valid exposition: {e:?}\n{text}"));
    let mut samples = Vec::new();
    for (name, family) in &parsed.families {
        for s in family.iter_samples() {
            let set = s
                .get_labelset()
                .expect("a parsed sample has its family's labels");
            let labels: Labels = set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            match &s.value {
                PrometheusValue::Counter(c) => {
                    samples.push((name.clone(), labels, c.value.as_f64()))
                }
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                    samples.push((name.clone(), labels, n.as_f64()))
                }
                PrometheusValue::Histogram(h) => {
                    for b in &h.buckets {
                        let le = if b.upper_bound == f64::INFINITY {
                            "+Inf".to_string()
                        } else {
                            b.upper_bound.to_string()
                        };
                        let mut with_le = labels.clone();
                        with_le.push(("le".into(), le));
                        samples.push((format!("{name}_bucket"), with_le, b.count.as_f64()));
                    }
                    let sum = h.sum.map_or(f64::NAN, |n| n.as_f64());
                    samples.push((format!("{name}_sum"), labels.clone(), sum));
                    let count = h.count.map_or(f64::NAN, |n| n as f64);
                    samples.push((format!("{name}_count"), labels, count));
                }
                PrometheusValue::Summary(_) => panic!("certshift exposes no summary: {name}"),
            }
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_metrics_stats_timeline_rotate_and_the_summary_on_sigterm() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let json = pki.file("summary.json");
    let dir = pki.path().to_str().unwrap().to_string();
    let args: Vec<String> = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &serve.addr.to_string(),
        "--upstream-name",
        "localhost",
        "--pki",
        &dir,
        "--present",
        "valid=80,expired=20",
        "--seed",
        "42",
        "--json",
        json.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = spawn_certshift(&args, |l| l.starts_with("presenting:"));
    let listen = p.line("listening on ").to_string();
    let admin = p.line("admin on ").to_string();
    assert_eq!(
        p.line("presenting: "),
        "weights valid=80 expired=20, seed 42"
    );

    // Before any traffic every contract family is declared.
    let (metrics, code) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(code, "200");
    for family in [
        "certshift_connections_total",
        "certshift_unexpected_accept_total",
        "certshift_unexpected_reject_total",
        "certshift_rotations_total",
        "certshift_rotation_failures_total",
        "certshift_handshake_duration_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} must be declared before its first sample"
        );
    }
    parse_prometheus(&metrics);

    for _ in 0..20 {
        curl(&[&format!("http://{listen}/api/x")]);
    }
    let (metrics, _) = curl(&[&format!("http://{admin}/metrics")]);
    let samples = parse_prometheus(&metrics);
    let sum = |name: &str, pred: &dyn Fn(&Labels) -> bool| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && pred(l))
            .map(|(_, _, v)| v)
            .sum()
    };
    assert_eq!(sum("certshift_connections_total", &|_| true), 20.0);
    let upstream = |l: &Labels| l.iter().any(|(k, v)| k == "side" && v == "upstream");
    assert_eq!(
        sum("certshift_handshake_duration_seconds_count", &upstream),
        20.0
    );
    let label = |k: &'static str, v: &'static str| {
        move |l: &Labels| l.iter().any(|(a, b)| a == k && b == v)
    };
    let expired = sum("certshift_connections_total", &label("variant", "expired"));
    assert!(
        expired > 0.0 && expired < 10.0,
        "seed 42 picks some expired: {expired}"
    );
    assert_eq!(sum("certshift_unexpected_accept_total", &|_| true), 0.0);

    let (stats, code) = curl(&[&format!("http://{admin}/stats")]);
    assert_eq!(code, "200");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["connections"]["total"], 20);
    assert_eq!(stats["seed"], 42);
    assert_eq!(
        stats["outcomes"]["expired"]["alert:certificate_expired"].as_f64(),
        Some(expired)
    );
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            stats["latency_us"]["upstream_handshake"][k]
                .as_u64()
                .unwrap()
                > 0,
            "{k}"
        );
    }

    // POST /rotate?mint mints a new identity and it lands on the timeline.
    let (rotated, code) = curl(&["-X", "POST", &format!("http://{admin}/rotate?mint")]);
    assert_eq!(code, "200", "{rotated}");
    let serial = serde_json::from_str::<serde_json::Value>(&rotated).unwrap()["minted_serial"]
        .as_str()
        .unwrap()
        .to_string();
    let (timeline, _) = curl(&[&format!("http://{admin}/timeline")]);
    let timeline: serde_json::Value = serde_json::from_str(&timeline).unwrap();
    assert_eq!(timeline["bucket_ms"], 100);
    assert!(timeline["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["serial"] == serial.as_str()));
    let (body, _) = curl(&[&format!("http://{listen}/api/x")]);
    // 80% valid: retry a few times to land on the valid identity.
    let mut seen = body;
    for _ in 0..10 {
        if seen.contains(&serial) {
            break;
        }
        seen = curl(&[&format!("http://{listen}/api/x")]).0;
    }
    assert!(
        seen.contains(&serial),
        "the service must see the minted serial: {seen}"
    );
    let (_, code) = curl(&["-X", "GET", &format!("http://{admin}/rotate")]);
    assert_eq!(code, "405");

    // PUT /plan: from here on every connection presents the identity.
    let (changed, code) = curl(&[
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        "--data",
        r#"{"present_sequence": "valid"}"#,
        &format!("http://{admin}/plan"),
    ]);
    assert_eq!(code, "200", "{changed}");
    let (seen, code) = curl(&[&format!("http://{listen}/api/x")]);
    assert_eq!(code, "200", "the first connection after the change: {seen}");

    // SIGTERM: drain, print the summary, write the JSON, exit 0 (no wrong verdicts).
    let status = p.terminate();
    assert_eq!(status.code(), Some(0));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(summary["stats"]["connections"]["total"].as_u64().unwrap() >= 21);
    assert_eq!(summary["stats"]["rotations"]["client"], 1);
    assert!(summary["timeline"]["buckets"]
        .as_array()
        .is_some_and(|b| !b.is_empty()));
    assert_eq!(summary["plan"]["active"], "always valid");
    assert_eq!(summary["plan"]["changes"], 1);
    assert_eq!(summary["timeline"]["plans"][0]["plan"], "always valid");
    serve.stop().await;
}

#[test]
fn admin_token_is_required_off_loopback_and_checked_when_set() {
    let pki = TestPki::default_flat();
    let dir = pki.path().to_str().unwrap();
    let out = certshift()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
            "--upstream",
            "127.0.0.1:9",
            "--pki",
            dir,
        ])
        .env_remove("CERTSHIFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin") && err.contains("--admin-token"),
        "{err}"
    );

    // With a token (on loopback here), every request must carry it.
    let args: Vec<String> = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        "s3cret-0123456789abcdef",
        "--upstream",
        "127.0.0.1:9",
        "--pki",
        dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = spawn_certshift(&args, |l| l.starts_with("presenting:"));
    let admin = p.line("admin on ");
    let (_, code) = curl(&[&format!("http://{admin}/stats")]);
    assert_eq!(code, "401");
    let (_, code) = curl(&[
        "-H",
        "Authorization: Bearer wrong",
        &format!("http://{admin}/stats"),
    ]);
    assert_eq!(code, "401");
    let (_, code) = curl(&[
        "-H",
        "Authorization: Bearer s3cret-0123456789abcdef",
        &format!("http://{admin}/healthz"),
    ]);
    assert_eq!(code, "200");
}

#[test]
fn configuration_errors_name_the_flag_and_exit_2() {
    let pki = TestPki::default_flat();
    let dir = pki.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let out = certshift()
            .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "off"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--upstream",
                "127.0.0.1:9",
                "--pki",
                dir,
                "--present",
                "valid=90,expird=10",
            ],
            "expird",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:9",
                "--pki",
                dir,
                "--present-sequence",
                "valid,missing-intermediate",
            ],
            "missing-intermediate",
        ),
        (&["--upstream", "127.0.0.1:9"], "--client-cert"),
        (&["--upstream", "no-port", "--pki", dir], "--upstream"),
        (
            &[
                "--upstream",
                "127.0.0.1:9",
                "--pki",
                dir,
                "--on-rotate",
                "later",
            ],
            "drain:",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// An idle kept-alive admin connection does not outlive the admin API's
/// shutdown plus its grace period: it is closed and `run` returns. (Before
/// the admin went through the shared accept loop, it stayed open until its
/// 10 s header timeout, after `run` had returned.)
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_admin_connection_ends_at_shutdown() {
    use certshift::accept::CLOSE_WINDOW;
    use certshift::admin::{Admin, ADMIN_GRACE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let admin = Admin::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        proxy.handle.clone(),
        None,
    )
    .await
    .unwrap();
    let addr = admin.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(admin.run(async { drop(stopped.await) }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The connection is now idle and kept alive.

    stop.send(()).unwrap();
    let limit = ADMIN_GRACE + CLOSE_WINDOW;
    tokio::time::timeout(limit, task)
        .await
        .expect("the admin API stops within its grace period")
        .unwrap();
    let mut rest = Vec::new();
    // EOF (or a reset) well before the 10 s header timeout would close it.
    let closed = tokio::time::timeout(Duration::from_secs(1), conn.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the idle connection must be closed, not left running"
    );
    proxy.stop().await;
    serve.stop().await;
}

/// Clients the proxy closes for its own deadlines are no availability
/// failure: one that connects and never speaks is closed at
/// `--header-timeout` without an answer and without an upstream connection;
/// one that was served and then idles is closed at `--idle-timeout` and
/// counts by the status it was served. Both are in the listener's close
/// counters, and the proxy exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn clients_closed_for_the_proxys_own_deadlines_are_no_availability_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let json = pki.file("idle.json");
    let dir = pki.path().to_str().unwrap().to_string();
    let args: Vec<String> = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &serve.addr.to_string(),
        "--upstream-name",
        "localhost",
        "--pki",
        &dir,
        "--header-timeout",
        "400ms",
        "--idle-timeout",
        "400ms",
        "--json",
        json.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = spawn_certshift(&args, |l| l.starts_with("presenting:"));
    let listen = p.line("listening on ").to_string();
    let (_, code) = curl(&[&format!("http://{listen}/served")]);
    assert_eq!(code, "200");

    let mut silent = tokio::net::TcpStream::connect(&listen).await.unwrap();
    let mut served = tokio::net::TcpStream::connect(&listen).await.unwrap();
    served
        .write_all(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for (name, s) in [("silent", &mut silent), ("served", &mut served)] {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "{name}: closed by the proxy: {read:?}"
        );
        let text = String::from_utf8_lossy(&got);
        match name {
            "silent" => assert!(got.is_empty(), "a silent client gets no answer: {text}"),
            _ => assert!(
                text.starts_with("HTTP/1.1 200"),
                "served, then closed: {text}"
            ),
        }
    }

    let status = p.terminate();
    assert_eq!(status.code(), Some(0), "no wrong verdict: exit 0");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let stats = &summary["stats"];
    assert_eq!(
        stats["outcomes"]["valid"],
        serde_json::json!({"http:200": 2})
    );
    assert_eq!(stats["connections"]["unexpected_reject"], 0);
    assert_eq!(stats["listener"]["closed_header_timeout"], 1);
    assert_eq!(stats["listener"]["closed_idle"], 1);
    serve.stop().await;
}
