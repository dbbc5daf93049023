//! `certshift bench`: every axis value takes effect (read back from the
//! connections' own rustls state, reported under `observed`), efficiency
//! stays in [0, 1], the JSON contract, `report show`, `--plot`, `--target`,
//! and bad `--filter` words. Cells are short (tens of ms): these tests
//! check what was negotiated and reported, never how fast.

use crate::common;

use std::path::Path;

use serde_json::Value;

use common::{certshift, certshift_output, start_serve, TestPki};

/// Run `certshift bench ARGS --json FILE`; the exit status and the report.
fn bench(dir: &Path, args: &[&str]) -> (std::process::Output, Value) {
    let json = dir.join("bench.json");
    let out = certshift()
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run certshift bench");
    assert!(
        out.status.success(),
        "bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let report = serde_json::from_slice(&std::fs::read(&json).expect("bench --json written"))
        .expect("bench JSON parses");
    (out, report)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v}"))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// The default subset covers every value of every axis (each varied once
/// around ecdsa-p256 / 1.3 / full / x25519 / auth on / chain 2): run it
/// with tiny cells and check each cell negotiated what its axes say.
#[test]
fn every_axis_value_takes_effect_and_the_json_contract_holds() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("bench.svg");
    let (out, r) = bench(
        dir.path(),
        &[
            "--duration",
            "40ms",
            "--connections",
            "1",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("default subset") && stdout.contains("--all"),
        "the default run says what it chose and how to get the full matrix:\n{stdout}"
    );

    assert_eq!(s(&r, &["schema"]), "certshift-bench/1");
    assert!(r["target"].is_null());
    assert!(r["skipped"].as_array().unwrap().is_empty());
    let cells = r["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 14);
    let mut seen: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        Default::default();
    for c in cells {
        let axes = &c["axes"];
        for axis in ["key", "tls", "resume", "kx", "auth", "chain"] {
            seen.entry(axis)
                .or_default()
                .insert(s(axes, &[axis]).to_string());
        }
        let label = format!("{axes}");
        assert!(c["handshakes"].as_u64().unwrap() > 0, "{label}");
        assert_eq!(
            c["errors"].as_u64(),
            Some(0),
            "{label}: {}",
            c["first_error"]
        );
        // What the connections negotiated is what the cell asked for.
        let obs = &c["observed"];
        assert_eq!(
            obs["tls"],
            serde_json::json!([s(axes, &["tls"])]),
            "{label}"
        );
        let resumed = s(axes, &["resume"]) == "resumed";
        if resumed && s(axes, &["tls"]) == "1.2" {
            // TLS 1.2 resumption reuses the master secret: no key exchange.
            assert_eq!(obs["kx"], serde_json::json!([]), "{label}");
        } else {
            assert_eq!(obs["kx"], serde_json::json!([s(axes, &["kx"])]), "{label}");
        }
        if resumed {
            // After the warm-up, every handshake has a session to resume.
            assert!(f(obs, &["resumed_share"]) >= 0.9, "{label}");
        } else {
            assert_eq!(f(obs, &["resumed_share"]), 0.0, "{label}");
            assert_eq!(s(obs, &["key"]), s(axes, &["key"]), "{label}");
            let sent = obs["server_chain_len"].as_u64().unwrap();
            let chain: u64 = s(axes, &["chain"]).parse().unwrap();
            assert_eq!(sent + 1, chain, "{label}: certificates sent plus the root");
        }
        assert_eq!(f(c, &["resumed_share"]), f(obs, &["resumed_share"]));
        // auth=on: every full handshake carried a CertificateRequest;
        // auth=off never, nor does a resumed session (no certificates).
        let asked = f(obs, &["cert_requested_share"]);
        match (s(axes, &["auth"]), resumed) {
            ("on", false) => assert_eq!(asked, 1.0, "{label}"),
            _ => assert_eq!(asked, 0.0, "{label}"),
        }
        // Every figure of the contract, with its type.
        for side in ["client", "server"] {
            assert!(f(c, &["cpu_us", side]) > 0.0, "{label}");
            assert!(f(c, &["limit_us", side]) >= 0.0, "{label}");
            let e = f(c, &["efficiency", side]);
            assert!((0.0..=1.0).contains(&e), "{label}: efficiency {e}");
        }
        assert!(c["clamped"].is_boolean());
        assert!(f(c, &["hs_per_s"]) > 0.0);
        assert!(f(c, &["latency_ms", "p99"]) >= f(c, &["latency_ms", "p50"]));
        assert!(f(c, &["bytes", "c2s"]) > 0.0 && f(c, &["bytes", "s2c"]) > 0.0);
        if resumed && s(axes, &["tls"]) == "1.2" {
            assert_eq!(
                f(c, &["limit_us", "client"]),
                0.0,
                "no public-key operation"
            );
        } else {
            assert!(f(c, &["limit_us", "client"]) > 0.0, "{label}");
        }
    }
    let all = |axis: &str, values: &[&str]| {
        let want: std::collections::BTreeSet<String> =
            values.iter().map(|v| v.to_string()).collect();
        assert_eq!(seen[axis], want, "axis {axis}");
    };
    all(
        "key",
        &[
            "ecdsa-p256",
            "ecdsa-p384",
            "ed25519",
            "rsa-2048",
            "rsa-3072",
            "rsa-4096",
        ],
    );
    all("tls", &["1.2", "1.3"]);
    all("resume", &["full", "resumed"]);
    all(
        "kx",
        &["x25519", "secp256r1", "secp384r1", "x25519mlkem768"],
    );
    all("auth", &["on", "off"]);
    all("chain", &["2", "3"]);

    // auth=on: the client's certificate and CertificateVerify cross the
    // wire; auth=off: the server never asks. The same cell otherwise.
    let base = |auth: &str| {
        cells
            .iter()
            .find(|c| {
                c["axes"]
                    == serde_json::json!({"key": "ecdsa-p256", "tls": "1.3", "resume": "full",
                        "kx": "x25519", "auth": auth, "chain": "2"})
            })
            .unwrap_or_else(|| panic!("no base cell with auth={auth}"))
    };
    let (on, off) = (
        f(base("on"), &["bytes", "c2s"]),
        f(base("off"), &["bytes", "c2s"]),
    );
    assert!(
        on > off + 300.0,
        "auth=on sends the client chain: {on} vs {off} bytes"
    );
    // The post-quantum share is over a kilobyte each way.
    let mlkem = cells
        .iter()
        .find(|c| c["axes"]["kx"] == "x25519mlkem768")
        .unwrap();
    assert!(f(mlkem, &["bytes", "c2s"]) > on + 1000.0);

    let svg = std::fs::read_to_string(&plot).expect("--plot written");
    assert!(svg.starts_with("<svg"));
    assert!(
        svg.to_ascii_uppercase().contains("#C81E1E"),
        "the limit is marked"
    );

    // `report show` prints the same table again.
    let shown = certshift()
        .args(["report", "show"])
        .arg(dir.path().join("bench.json"))
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("certshift bench: default subset"), "{shown}");
    assert!(
        shown.contains("x25519mlkem768") && shown.contains("rsa-4096"),
        "{shown}"
    );
}

/// `--request`: each connection also carries a `GET /` that `serve` must
/// answer 2xx (anything else is counted as a failed connection).
#[test]
fn request_cells_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = bench(
        dir.path(),
        &[
            "--request",
            "--filter",
            "key=ecdsa-p256",
            "tls=1.3",
            "resume=full",
            "kx=x25519",
            "chain=2",
            "--duration",
            "40ms",
            "--connections",
            "1",
        ],
    );
    assert_eq!(r["request"], true);
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2, "auth on and off");
    for c in cells {
        assert!(c["handshakes"].as_u64().unwrap() > 0);
        assert_eq!(c["errors"].as_u64(), Some(0), "{}", c["first_error"]);
    }
}

#[test]
fn combinations_rustls_refuses_are_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = bench(
        dir.path(),
        &["--filter", "key=ecdsa-p256", "tls=1.2", "kx=x25519mlkem768"],
    );
    assert!(r["cells"].as_array().unwrap().is_empty());
    let skipped = r["skipped"].as_array().unwrap();
    // resume × auth × chain.
    assert_eq!(skipped.len(), 8);
    for sk in skipped {
        assert_eq!(s(sk, &["axes", "kx"]), "x25519mlkem768");
        assert!(s(sk, &["reason"]).contains("TLS 1.3"), "{sk}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipped ecdsa-p256 1.2"));
}

#[test]
fn a_bad_filter_exits_2_naming_the_axis_and_the_accepted_values() {
    for (words, want) in [
        (
            vec!["kx=x448"],
            vec!["kx", "x448", "x25519mlkem768", "secp384r1"],
        ),
        (
            vec!["key=rsa-1024"],
            vec!["key", "rsa-1024", "ed25519", "rsa-4096"],
        ),
        (
            vec!["tls=1.3", "cipher=aes"],
            vec!["cipher", "key, tls, resume, kx, auth, chain"],
        ),
        (vec!["chain=4"], vec!["chain", "leaf+intermediate+root"]),
    ] {
        let out = certshift()
            .args(["bench", "--filter"])
            .args(&words)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{words:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in want {
            assert!(err.contains(w), "{words:?}: {err:?} should name {w:?}");
        }
    }
}

/// `--target`: the client side against a service it did not start; the
/// server's columns are empty, the key and chain are what it showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_runs_the_client_side_only() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("t.json");
    let e = pki.entry("order-service");
    let (addr, ca, cert, key, json_s) = (
        serve.addr.to_string(),
        pki.file("ca/ca.crt"),
        pki.file(&e.cert),
        pki.file(&e.key),
        json.display().to_string(),
    );
    let out = certshift_output(&[
        "bench",
        "--target",
        &addr,
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--filter",
        "tls=1.3",
        "resume=full,resumed",
        "kx=x25519",
        "--duration",
        "50ms",
        "--connections",
        "1",
        "--json",
        &json_s,
    ])
    .await;
    serve.stop().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(s(&r, &["target"]), addr);
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2, "one cell per (tls, resume, kx)");
    let c = &cells[0];
    // Resumed: the key and chain as the warm-up's full handshakes showed them.
    let resumed = &cells[1];
    assert_eq!(s(resumed, &["axes", "resume"]), "resumed");
    assert_eq!(s(resumed, &["axes", "key"]), "ecdsa-p256");
    assert!(f(resumed, &["observed", "resumed_share"]) >= 0.9);
    assert!(
        f(resumed, &["limit_us", "client"]) > 0.0,
        "the key exchange"
    );
    assert_eq!(c["errors"].as_u64(), Some(0), "{}", c["first_error"]);
    assert!(c["cpu_us"]["server"].is_null() && c["efficiency"]["server"].is_null());
    assert!(f(c, &["cpu_us", "client"]) > 0.0);
    let e = f(c, &["efficiency", "client"]);
    assert!((0.0..=1.0).contains(&e));
    assert_eq!(s(c, &["axes", "key"]), "ecdsa-p256");
    assert_eq!(s(c, &["axes", "auth"]), "on");
    assert_eq!(c["observed"]["tls"], serde_json::json!(["1.3"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("(client side only)"), "{table}");
}
