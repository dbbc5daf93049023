//! `--swap request`: every request is its own experiment. One keep-alive
//! client connection sees the planned credentials cycle request by
//! request, over HTTP/1.1 and HTTP/2; rotations take effect at the next
//! request; every refusal is a `502` with the `x-certshift-*` headers, in
//! both swap modes. Real serve, real proxy, curl and wrk as the clients.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use certshift::metrics::Phase;
use certshift::proxy::TlsMode;
use certshift::serve::Enforcement;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response as curl saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    status: u16,
    version: String,
    connects: u32,
    variant: String,
    serial: String,
    outcome: String,
    body: String,
}

const MARK: &str = "@@certshift-test";

/// `curl ARGS URL...` on one curl process (it keeps the connection alive
/// across the URLs); one [`Seen`] per URL.
fn curl(args: &[&str], urls: &[String]) -> Vec<Seen> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "20", "-w"])
        .arg(format!(
            "\n{MARK} %{{http_code}} %{{num_connects}} %{{http_version}}\n"
        ))
        .args(args)
        .args(urls)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut seen = Vec::new();
    let mut current = Seen::default();
    let mut in_body = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            current.status = f[0].parse().unwrap();
            current.connects = f[1].parse().unwrap();
            current.version = f[2].to_string();
            seen.push(std::mem::take(&mut current));
            in_body = false;
            continue;
        }
        let line = line.trim_end_matches('\r');
        if in_body {
            current.body.push_str(line);
            continue;
        }
        if line.is_empty() {
            in_body = true;
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            match name.to_ascii_lowercase().as_str() {
                "x-certshift-variant" => current.variant = value,
                "x-certshift-serial" => current.serial = value,
                "x-certshift-outcome" => current.outcome = value,
                _ => {}
            }
        }
    }
    assert_eq!(seen.len(), urls.len(), "curl output:\n{text}");
    seen
}

fn urls(base: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{base}/r{i}")).collect()
}

/// The serial of a PKI credential's certificate, as the headers show it.
fn serial(pki: &TestPki, name: &str) -> String {
    let e = pki.entry(name);
    let ck = certshift::creds::load_certified_key(&pki.file(&e.cert), &pki.file(&e.key)).unwrap();
    certshift::creds::serial_of(&ck.cert[0])
}

fn request_mode(pki: &TestPki, upstream: SocketAddr) -> certshift::proxy::ProxyArgs {
    let mut a = proxy_args(pki, upstream);
    a.swap = Some("request".into());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_connection_sees_each_planned_credential_in_turn() {
    assert!(have("curl"), "curl is required (.ci/run installs it)");
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = request_mode(&pki, serve.addr);
    args.present_sequence = Some("valid,expired,valid,revoked".into());
    let proxy = start_proxy(args).await;
    let base = format!("http://{}", proxy.addr);
    let got = tokio::task::spawn_blocking(move || curl(&[], &urls(&base, 10)))
        .await
        .unwrap();

    let plan = ["valid", "expired", "valid", "revoked"];
    let serials = [
        serial(&pki, "order-service"),
        serial(&pki, "expired"),
        serial(&pki, "order-service"),
        serial(&pki, "revoked"),
    ];
    let outcomes = [
        "http:200",
        "alert:certificate_expired",
        "http:200",
        "alert:certificate_revoked",
    ];
    for (i, s) in got.iter().enumerate() {
        let k = i % 4;
        assert_eq!(s.variant, plan[k], "request {i}: {s:?}");
        assert_eq!(s.serial, serials[k], "request {i}: {s:?}");
        assert_eq!(s.outcome, outcomes[k], "request {i}: {s:?}");
        if plan[k] == "valid" {
            assert_eq!(s.status, 200, "request {i}: {s:?}");
            // The service saw exactly the serial the header names.
            let echo: serde_json::Value = serde_json::from_str(&s.body).unwrap();
            assert_eq!(echo["serial"], serials[k].as_str());
            assert_eq!(echo["path"], format!("/r{i}"));
        } else {
            assert_eq!(s.status, 502, "request {i}: {s:?}");
            assert!(
                s.body
                    .contains(&format!("presented credential: {}", plan[k])),
                "{s:?}"
            );
        }
    }
    // One downstream connection carried all ten.
    let connects: u32 = got.iter().map(|s| s.connects).sum();
    assert_eq!(connects, 1, "{got:?}");

    let snap = proxy.stop().await;
    assert_eq!(snap.variant("valid").unwrap().connections, 5);
    assert_eq!(snap.variant("expired").unwrap().connections, 3);
    assert_eq!(snap.variant("revoked").unwrap().connections, 2);
    assert_eq!(snap.totals().unexpected_accept, 0);
    assert_eq!(snap.totals().unexpected_reject, 0);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_prior_knowledge_and_by_alpn() {
    assert!(have("curl"), "curl is required (.ci/run installs it)");
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;

    // Plaintext, HTTP/2 with prior knowledge.
    let mut args = request_mode(&pki, serve.addr);
    args.present_sequence = Some("valid,expired".into());
    let plain = start_proxy(args).await;
    let base = format!("http://{}", plain.addr);
    let got =
        tokio::task::spawn_blocking(move || curl(&["--http2-prior-knowledge"], &urls(&base, 1)))
            .await
            .unwrap();
    assert_eq!(
        (got[0].version.as_str(), got[0].status),
        ("2", 200),
        "{got:?}"
    );
    assert_eq!(got[0].variant, "valid");
    assert_eq!(got[0].serial, serial(&pki, "order-service"));

    // TLS downstream: ALPN offers h2 in request mode; four requests on one
    // connection alternate as planned.
    let mut args = request_mode(&pki, serve.addr);
    args.present_sequence = Some("valid,expired".into());
    args.listen_tls = TlsMode::Tls;
    let tls = start_proxy(args).await;
    let base = format!("https://localhost:{}", tls.addr.port());
    let ca = pki.file("ca/ca.crt");
    let got = tokio::task::spawn_blocking(move || {
        curl(
            &["--http2", "--cacert", ca.to_str().unwrap()],
            &urls(&base, 4),
        )
    })
    .await
    .unwrap();
    let variants: Vec<&str> = got.iter().map(|s| s.variant.as_str()).collect();
    assert_eq!(
        variants,
        ["valid", "expired", "valid", "expired"],
        "{got:?}"
    );
    let statuses: Vec<u16> = got.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200, 502, 200, 502]);
    assert!(got.iter().all(|s| s.version == "2"), "{got:?}");
    assert_eq!(got.iter().map(|s| s.connects).sum::<u32>(), 1);
    plain.stop().await;
    tls.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_every_holds_a_pick_for_n_requests_of_a_connection() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    // --swap-every alone implies --swap request.
    args.swap_every = Some(2);
    args.present_sequence = Some("valid,expired".into());
    let proxy = start_proxy(args).await;
    let base = format!("http://{}", proxy.addr);
    let got = tokio::task::spawn_blocking(move || curl(&[], &urls(&base, 6)))
        .await
        .unwrap();
    let variants: Vec<&str> = got.iter().map(|s| s.variant.as_str()).collect();
    assert_eq!(
        variants,
        ["valid", "valid", "expired", "expired", "valid", "valid"]
    );
    proxy.stop().await;
    serve.stop().await;
}

/// Six valid requests on one downstream connection: how many upstream
/// handshakes they cost.
async fn upstream_handshakes(reuse: &str) -> u64 {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = request_mode(&pki, serve.addr);
    args.upstream_reuse = reuse.parse().unwrap();
    let proxy = start_proxy(args).await;
    let base = format!("http://{}", proxy.addr);
    let got = tokio::task::spawn_blocking(move || curl(&[], &urls(&base, 6)))
        .await
        .unwrap();
    assert!(got.iter().all(|s| s.status == 200), "{got:?}");
    let snap = proxy.stop().await;
    serve.stop().await;
    assert_eq!(snap.totals().connections, 6, "one report per request");
    snap.phase(Phase::UpstreamHandshake).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reuse_pools_per_credential_and_off_handshakes_per_request() {
    assert_eq!(upstream_handshakes("on").await, 1);
    assert_eq!(upstream_handshakes("off").await, 6);
}

/// One HTTP/1.1 request on a kept-alive connection; (status, headers+body).
async fn exchange(s: &mut TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    // Every response here has a content-length; read until it is complete.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "connection closed mid-exchange");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, text.into_owned());
            }
        }
    }
}

fn header<'a>(resp: &'a str, name: &str) -> &'a str {
    resp.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_takes_effect_at_the_next_request_of_an_open_connection() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(request_mode(&pki, serve.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let (status, first) = exchange(&mut s, "/a").await;
    assert_eq!(status, 200, "{first}");
    let before = header(&first, "x-certshift-serial").to_string();
    assert_eq!(before, serial(&pki, "order-service"));
    proxy.handle.credentials().mint().expect("mint a new leaf");
    let (status, second) = exchange(&mut s, "/b").await;
    assert_eq!(status, 200, "{second}");
    let after = header(&second, "x-certshift-serial");
    assert_ne!(
        after, before,
        "the same connection's next request presents the new leaf"
    );
    assert!(
        second.contains(&format!("\"serial\":\"{after}\"")),
        "{second}"
    );
    proxy.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_keep_alive_sees_no_failure_while_the_identity_rotates_every_100ms() {
    assert!(have("wrk"), "wrk is required (.ci/run installs it)");
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = request_mode(&pki, serve.addr);
    args.rotate_every = Some(Duration::from_millis(100));
    let proxy = start_proxy(args).await;
    // Distinct serials from the service's own echo, collected per wrk
    // thread and joined at the end.
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        r#"
local seen = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local s = string.match(body or "", '"serial":"(%x+)"')
  if s then seen[s] = true end
  local list = {}
  for k in pairs(seen) do table.insert(list, k) end
  serials = table.concat(list, ",")
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    local s = t:get("serials")
    if s then for k in string.gmatch(s, "[^,]+") do all[k] = true end end
  end
  local n = 0
  for _ in pairs(all) do n = n + 1 end
  io.write(string.format("serials-seen %d\n", n))
end
"#,
    )
    .unwrap();
    let url = format!("http://{}/load", proxy.addr);
    let script_path = script.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("wrk")
            .args(["-t2", "-c8", "-d5s", "--timeout", "5s", "-s"])
            .arg(&script_path)
            .arg(&url)
            .output()
            .expect("wrk runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let snap = proxy.stop().await;
    serve.stop().await;
    assert!(out.status.success(), "{text}");
    let requests: u64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(requests > 0, "{text}");
    assert!(
        !text.contains("Non-2xx"),
        "every response must be 2xx:\n{text}"
    );
    assert!(!text.contains("Socket errors"), "{text}");
    let serials: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("serials-seen ")
                .map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        serials > 1,
        "the service must have seen rotated serials:\n{text}"
    );
    let rotations = snap.to_stats_json()["rotations"]["client"]
        .as_u64()
        .unwrap_or(0);
    assert!(rotations >= 40, "{rotations} rotations in 5 s");
    assert_eq!(snap.totals().failed, 0, "{:?}", snap.totals());
    // One report per request: wrk counts those it completed, the proxy
    // also those cut by the end of the run (at most one per connection).
    let reports = snap.totals().connections;
    assert!(
        (requests..=requests + 8).contains(&reports),
        "{reports} reports for {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_mode_answers_every_refusal_with_a_502_never_a_bare_close() {
    assert!(have("curl"), "curl is required (.ci/run installs it)");
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.present_sequence = Some("expired,revoked,none".into());
    let proxy = start_proxy(args).await;
    let url = format!("http://{}/c", proxy.addr);
    // One connection per request (connection mode); the service's alert
    // often arrives before the client's request does.
    let got = tokio::task::spawn_blocking(move || {
        (0..30)
            .map(|_| curl(&[], std::slice::from_ref(&url)).remove(0))
            .collect::<Vec<Seen>>()
    })
    .await
    .unwrap();
    for (i, s) in got.iter().enumerate() {
        let want = ["expired", "revoked", "none"][i % 3];
        assert_eq!(s.status, 502, "request {i}: {s:?}");
        assert_eq!(s.variant, want, "request {i}: {s:?}");
        assert!(s.outcome.starts_with("alert:"), "request {i}: {s:?}");
        assert!(!s.serial.is_empty(), "{s:?}");
    }
    proxy.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_answers_the_handshake_is_a_504_naming_the_timeout() {
    assert!(have("curl"), "curl is required (.ci/run installs it)");
    let pki = TestPki::default_flat();
    // Accepts TCP, reads, never answers: the upstream handshake times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut args = request_mode(&pki, upstream);
    args.handshake_timeout = Duration::from_millis(300);
    let proxy = start_proxy(args).await;
    let base = format!("http://{}", proxy.addr);
    let got = tokio::task::spawn_blocking(move || curl(&[], &urls(&base, 2)))
        .await
        .unwrap();
    for s in &got {
        assert_eq!(s.status, 504, "{s:?}");
        assert_eq!(s.outcome, "handshake_timeout", "{s:?}");
        assert_eq!(s.variant, "valid", "{s:?}");
        assert_eq!(s.serial, serial(&pki, "order-service"), "{s:?}");
    }
    // The client's connection outlived both refusals.
    assert_eq!(got.iter().map(|s| s.connects).sum::<u32>(), 1, "{got:?}");
    proxy.stop().await;
    hold.abort();
}
