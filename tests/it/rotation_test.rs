//! `certshift rotation-test` on the embedded default: correct rotations lose
//! nothing; a CA rotation without overlap shows its outage and exits 1.

use crate::common;

use common::certshift;

fn rotation_test(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rt.json");
    let out = certshift()
        .args([
            "rotation-test",
            "--rotations",
            "2",
            "--interval",
            "600ms",
            "--rate",
            "100",
        ])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run rotation-test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}"));
    (out.status.code(), v, stdout)
}

fn assert_nothing_lost(args: &[&str], kinds: &[&str]) {
    let (code, v, out) = rotation_test(args);
    assert_eq!(code, Some(0), "{out}");
    let rt = &v["rotation_test"];
    assert_eq!(rt["lost"].as_u64(), Some(0), "{out}");
    assert_eq!(rt["passed"].as_bool(), Some(true));
    assert!(rt["longest_failure_run"].is_null());
    let windows = rt["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{out}");
    // 1.8 s at 100/s, every one answered.
    let attempted = v["attempted"].as_u64().unwrap();
    assert!((178..=182).contains(&attempted), "{attempted}");
    assert_eq!(v["succeeded"].as_u64(), Some(attempted));
    let marked: Vec<&str> = v["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    for k in kinds {
        assert!(marked.contains(k), "{k} not in {marked:?}");
    }
    assert!(out.contains("PASS"), "{out}");
    assert_windows_tile_the_run(&v);
}

/// Every operation is in exactly one rotation's window: the windows'
/// attempted (and lost) counts sum to the run's, and each window starts
/// where the previous one ended.
fn assert_windows_tile_the_run(v: &serde_json::Value) {
    let windows = v["rotation_test"]["windows"].as_array().unwrap();
    let sum = |key: &str| -> u64 {
        windows
            .iter()
            .map(|w| match key {
                "lost" => w["lost"].as_u64().unwrap(),
                k => w["before"][k].as_u64().unwrap() + w["after"][k].as_u64().unwrap(),
            })
            .sum()
    };
    assert_eq!(sum("attempted"), v["attempted"].as_u64().unwrap(), "{v:#}");
    assert_eq!(sum("lost"), v["rotation_test"]["lost"].as_u64().unwrap());
    assert_eq!(windows[0]["before"]["from_ms"].as_u64(), Some(0));
    for pair in windows.windows(2) {
        assert_eq!(pair[0]["after"]["to_ms"], pair[1]["before"]["from_ms"]);
    }
}

#[test]
fn client_rotations_lose_nothing() {
    assert_nothing_lost(&["--rotate", "client"], &["client"]);
}

#[test]
fn server_rotations_lose_nothing() {
    assert_nothing_lost(&["--rotate", "server"], &["server"]);
}

#[test]
fn ca_bundle_rotations_in_the_safe_order_lose_nothing() {
    assert_nothing_lost(
        &["--rotate", "ca-bundle"],
        &[
            "ca-bundle:add-root",
            "ca-bundle:issue",
            "ca-bundle:drop-root",
        ],
    );
}

#[test]
fn ca_bundle_rotations_lose_nothing_in_handshake_mode_too() {
    assert_nothing_lost(
        &["--rotate", "ca-bundle", "--mode", "handshake"],
        &["ca-bundle:issue"],
    );
}

#[test]
fn a_ca_rotation_without_overlap_shows_the_outage_and_exits_1() {
    let (code, v, out) = rotation_test(&["--rotate", "ca-bundle", "--no-overlap"]);
    assert_eq!(code, Some(1), "{out}");
    let rt = &v["rotation_test"];
    let run = &rt["longest_failure_run"];
    // New leaves from a root nobody trusts until the bundles switch, 200 ms
    // (a third of the interval) later: about 20 operations at 100/s.
    let ops = run["ops"].as_u64().unwrap();
    assert!((10..=45).contains(&ops), "{run}");
    assert!(run["duration_ms"].as_u64().unwrap() >= 100, "{run}");
    assert!(rt["lost"].as_u64().unwrap() >= ops);
    assert!(!rt["passed"].as_bool().unwrap());
    // Each rotation's window holds its losses; the proxy answers 502.
    for w in rt["windows"].as_array().unwrap() {
        assert!(w["lost"].as_u64().unwrap() > 0, "{w}");
    }
    assert!(
        v["outcomes"]["http:502"].as_u64().unwrap() > 0,
        "{}",
        v["outcomes"]
    );
    // Behind the 502s: the proxy refused the service's new certificate, or
    // the service refused the proxy's, both for an issuer nobody trusted yet.
    let upstream = &rt["upstream_outcomes"];
    let unknown = upstream["alert:unknown_ca"].as_u64().unwrap_or(0)
        + upstream["verify:unknown_issuer"].as_u64().unwrap_or(0);
    assert!(unknown > 0, "{upstream}");
    assert!(out.contains("FAIL"), "{out}");
    assert_windows_tile_the_run(&v);
}

#[test]
fn no_overlap_with_a_client_or_server_rotation_is_refused() {
    for rotate in ["client", "server"] {
        let out = certshift()
            .args(["rotation-test", "--rotate", rotate, "--no-overlap"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--no-overlap")
                && stderr.contains(&format!("--rotate {rotate}"))
                && stderr.contains("ca-bundle"),
            "{stderr}"
        );
    }
}

#[test]
fn server_rotation_against_a_given_target_is_refused() {
    let out = certshift()
        .args([
            "rotation-test",
            "--rotate",
            "server",
            "--target",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only client rotations"));
}

/// A rotation mints keys, writes files and reloads components, and the load
/// shares its runtime: that work must not hold a runtime thread. On a
/// current-thread runtime the runtime's only thread is the test's, so every
/// publication ("rotated", logged by `creds::Publisher` on the thread that
/// publishes) must come from another thread; a rotation doing its work
/// inline would publish from this one.
#[tokio::test]
async fn rotations_publish_from_off_the_runtime_thread() {
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;

    use certshift::load::Marks;
    use certshift::rotation_test::{Rig, Rotate, RotationTestArgs};
    use clap::Parser;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RotationTestArgs,
    }

    /// The thread of every event the publication path logs.
    #[derive(Clone, Default)]
    struct Publications(Arc<Mutex<Vec<ThreadId>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Publications {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() == "certshift::creds::publish" {
                self.0.lock().unwrap().push(std::thread::current().id());
            }
        }
    }

    let published = Publications::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(published.clone()))
        .expect("the only subscriber in this test binary");
    let runtime_thread = std::thread::current().id();
    for mode in ["request", "handshake"] {
        let args = Cli::parse_from(["rotation-test", "--mode", mode]).args;
        let dir = tempfile::tempdir().unwrap();
        let rig = Rig::start(&args, dir.path()).await.unwrap();
        let marks = Marks::default();
        for kind in [Rotate::Client, Rotate::Server] {
            published.0.lock().unwrap().clear();
            rig.rotate(kind, false, args.interval, &marks)
                .await
                .unwrap_or_else(|e| panic!("{mode} {}: {e:#}", kind.name()));
            let threads = published.0.lock().unwrap().clone();
            assert!(
                !threads.is_empty(),
                "{mode} {}: nothing published",
                kind.name()
            );
            assert!(
                !threads.contains(&runtime_thread),
                "{mode}: the {} rotation published from the runtime's thread",
                kind.name()
            );
        }
        let kinds: Vec<String> = marks.all().into_iter().map(|m| m.kind).collect();
        assert_eq!(kinds, ["client", "server"], "{mode}");
        rig.stop().await;
    }
}
