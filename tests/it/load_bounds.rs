//! `load` at absurd rates: a rate no process can send is refused with the
//! limit and why; the highest allowed rate against a real service ends on
//! time with bounded memory, its operations counted, not queued.

use crate::common;

use std::time::{Duration, Instant};

use certshift::serve::Enforcement;
use common::{certshift, start_serve, TestPki};

#[test]
fn a_rate_no_process_can_send_is_refused() {
    let out = certshift()
        .args([
            "load",
            "--target",
            "127.0.0.1:9",
            "--rate",
            "1000000000",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--rate") && err.contains("1000000") && err.contains("report merge"),
        "{err}"
    );
    let out = certshift()
        .args(["rotation-test", "--rate", "1e9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

/// Peak resident memory of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_rate_ends_on_time_with_bounded_memory() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let json = pki.path().join("load.json");
    let mut child = certshift()
        .args([
            "load",
            "--target",
            &serve.addr.to_string(),
            "--server-name",
            "localhost",
        ])
        .arg("--pki")
        .arg(pki.path())
        .args([
            "--mode",
            "handshake",
            "--rate",
            "1000000",
            "--duration",
            "1s",
        ])
        .args(["--max-in-flight", "200", "--timeout", "2s", "--no-progress"])
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // A generous bound: 1 s of load, a 2 s per-operation timeout to drain,
    // and a slow shared CI machine. Before the fix this ran past 40 s.
    let limit = Duration::from_secs(20);
    let started = Instant::now();
    let mut peak_kib = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
        if started.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("load at 1,000,000/s for 1 s was still running after {limit:?}");
    };
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    eprintln!(
        "1,000,000/s for 1 s: attempted {} succeeded {} dropped {} failed {}; peak RSS {} MiB; exit {:?}",
        n("attempted"),
        n("succeeded"),
        n("dropped"),
        n("failed"),
        peak_kib / 1024,
        status.code()
    );
    // Every scheduled operation is accounted for, sent or dropped.
    assert_eq!(n("attempted"), 1_000_000);
    assert!(n("succeeded") > 0, "{v}");
    assert_eq!(
        n("succeeded") + n("failed") + n("dropped") + v["cancelled"].as_u64().unwrap_or(0),
        n("attempted")
    );
    // Drops are lost operations: exit 1, not a crash.
    assert_eq!(status.code(), Some(1));
    // The operation log at 32 bytes per operation is 32 MiB for a million;
    // before the fix this run held 4.4 GB.
    assert!(peak_kib < 512 * 1024, "peak RSS {peak_kib} KiB");
    serve.stop().await;
}
