//! Rotation while traffic flows: scheduled minting under load loses nothing;
//! bad files never replace the serving client credential; a Kubernetes-style
//! Secret symlink swap is picked up.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certshift::serve::Enforcement;
use certshift::tls::Outcome;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_every_50ms_under_2000_connections_loses_none() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.rotate_every = Some(Duration::from_millis(50));
    let proxy = start_proxy(args).await;
    let addr = proxy.addr;

    const CONNECTIONS: usize = 2000;
    const WORKERS: usize = 8;
    let serials = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let serials = serials.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..CONNECTIONS / WORKERS {
                let r = probe_plain(addr, "/api/orders").await;
                match &r.outcome {
                    Outcome::Http(200) => {
                        let serial = echo(&r)["serial"].as_str().unwrap_or_default().to_string();
                        serials.lock().unwrap().push(serial);
                    }
                    o => failures.push(format!("{o}: {}", r.body_text())),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    let snap = proxy.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} connections failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let t = snap.totals();
    assert_eq!(
        (t.connections, t.ok, t.failed, t.unexpected_reject),
        (CONNECTIONS as u64, CONNECTIONS as u64, 0, 0)
    );
    let seen: HashSet<String> = serials.lock().unwrap().iter().cloned().collect();
    let rotations = snap.to_stats_json()["rotations"]["client"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        rotations >= 3,
        "the schedule must have rotated during the run ({rotations})"
    );
    assert!(
        seen.len() >= 3,
        "the service must have seen the serial change: {} distinct",
        seen.len()
    );
    serve.stop().await;
}

fn overwrite(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_client_files_keep_the_old_credential_and_each_failure_is_counted() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    // The identity from explicit files the test can spoil.
    let dir = pki.file("identity");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(pki.file("clients/order-service/tls.crt"), &cert).unwrap();
    std::fs::copy(pki.file("clients/order-service/tls.key"), &key).unwrap();
    let mut args = proxy_args(&pki, serve.addr);
    args.client_cert = Some(cert.clone());
    args.client_key = Some(key.clone());
    args.no_watch = true; // each reload is triggered explicitly, so each failure counts once
    let proxy = start_proxy(args).await;
    let original = pki.entry("order-service").serial.clone();
    let serial_seen = || async {
        let r = probe_plain(proxy.addr, "/").await;
        assert_eq!(
            r.outcome,
            Outcome::Http(200),
            "the old credential must keep serving"
        );
        echo(&r)["serial"].as_str().unwrap().to_string()
    };
    assert_eq!(serial_seen().await, original);
    let rotating = proxy.handle.credentials().clone();
    let failures = || rotating.client.as_ref().unwrap().status().failures;
    let good_cert = std::fs::read(&cert).unwrap();
    let good_key = std::fs::read(&key).unwrap();

    let spoil: [(&str, &Path, Vec<u8>); 3] = [
        ("garbage", &cert, b"garbage, not PEM".to_vec()),
        (
            "truncated",
            &cert,
            good_cert[..good_cert.len() / 2].to_vec(),
        ),
        (
            "mismatched key",
            &key,
            std::fs::read(pki.file("clients/payment-service/tls.key")).unwrap(),
        ),
    ];
    for (i, (what, path, bytes)) in spoil.iter().enumerate() {
        overwrite(path, bytes);
        let errors = rotating.reload_files();
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        assert_eq!(
            failures(),
            i as u64 + 1,
            "{what}: the failure counter rises by one"
        );
        assert_eq!(
            serial_seen().await,
            original,
            "{what}: the old credential keeps serving"
        );
        overwrite(&cert, &good_cert);
        overwrite(&key, &good_key);
    }
    let snap = proxy.stop().await;
    let stats = snap.to_stats_json();
    assert_eq!(stats["rotation_failures"]["client"], 3);
    assert!(stats["last_rotation_error"]["error"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    assert_eq!(snap.totals().unexpected_reject, 0);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_secret_symlink_swap_rotates_the_client_credential() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mount = pki.file("secret");
    let stage = |version: &str, service: &str| {
        let d = mount.join(format!("..2026_11_24_{version}"));
        std::fs::create_dir_all(&d).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::fs::copy(pki.file(&format!("clients/{service}/{f}")), d.join(f)).unwrap();
        }
        format!("..2026_11_24_{version}")
    };
    let v1 = stage("v1", "order-service");
    std::os::unix::fs::symlink(&v1, mount.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), mount.join(f)).unwrap();
    }
    let mut args = proxy_args(&pki, serve.addr);
    args.client_cert = Some(mount.join("tls.crt"));
    args.client_key = Some(mount.join("tls.key"));
    let proxy = start_proxy(args).await;
    let peer = || async {
        echo(&probe_plain(proxy.addr, "/").await)["peer"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(peer().await.ends_with("/sa/order-service"));

    let v2 = stage("v2", "inventory-service");
    std::os::unix::fs::symlink(&v2, mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    let live = proxy
        .handle
        .credentials()
        .client
        .as_ref()
        .unwrap()
        .live()
        .clone();
    assert!(
        wait_until(Duration::from_secs(5), || live.status().reloads >= 1).await,
        "the swap must be picked up"
    );
    assert!(peer().await.ends_with("/sa/inventory-service"));
    assert_eq!(
        live.status().failures,
        0,
        "an atomic swap is never seen half-done"
    );
    let snap = proxy.stop().await;
    assert_eq!(snap.to_stats_json()["rotations"]["client"], 1);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minted_leaf_survives_a_reload_of_unchanged_files() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let rotating = proxy.handle.credentials().clone();
    let serial = rotating.mint().unwrap();
    let reloads = rotating.client.as_ref().unwrap().status().reloads;
    assert!(rotating.reload_files().is_empty());
    assert_eq!(
        rotating.client.as_ref().unwrap().status().reloads,
        reloads,
        "unchanged files are no rotation"
    );
    assert_eq!(
        echo(&probe_plain(proxy.addr, "/").await)["serial"],
        serial.as_str(),
        "the minted identity keeps serving"
    );
    proxy.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_without_a_request_is_no_wrong_verdict() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    // A TCP health check: connect, close.
    drop(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    let mut recorded = false;
    for _ in 0..150 {
        if proxy.metrics.snapshot().await.unwrap().totals().connections == 1 {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recorded, "the connection must be recorded");
    let snap = proxy.stop().await;
    let v = snap.variant("valid").unwrap();
    assert_eq!(v.unexpected_reject, 0, "{:?}", v.outcomes);
    assert_eq!(
        v.outcomes.get("client_closed"),
        Some(&1),
        "{:?}",
        v.outcomes
    );
    serve.stop().await;
}
