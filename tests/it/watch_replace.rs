//! Watches that keep watching (issue 11): the directory holding the
//! credential files removed and recreated, a new one moved into place, a
//! parent symlink swapped, a SIGHUP pick-up followed by more writes, and
//! the fingerprint poll alone. Each time the new certificate must be the one
//! served within a bounded wait.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use certshift::serve::ServeArgs;
use certshift::tls::{Outcome, TlsVersion};
use common::*;

/// How long a change may take to be served: the debounce is 200 ms.
const BOUND: Duration = Duration::from_secs(10);

fn write_server(dir: &Path, (cert, key): &(String, String)) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

fn fingerprint_of(pem: &str) -> String {
    sha256(&certshift::creds::parse_chain(Path::new("-"), pem.as_bytes()).unwrap()[0])
}

/// Probe until the server presents `want` (a SHA-256), for at most BOUND.
async fn served_within(pki: &TestPki, addr: SocketAddr, want: &str) -> bool {
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        let r = probe_tls(pki, addr, pki.cert("order-service"), TlsVersion::Tls13, "/").await;
        assert_eq!(r.outcome, Outcome::Http(200), "the service keeps answering");
        if r.server_cert.as_deref().map(sha256).as_deref() == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn serve_on(dir: &Path, pki: &TestPki) -> ServeArgs {
    ServeArgs {
        cert: Some(dir.join("tls.crt")),
        key: Some(dir.join("tls.key")),
        pki: Some(pki.path().to_path_buf()),
        ..serve_args()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_follows_its_directory_removed_recreated_and_moved_into_place() {
    let pki = TestPki::default_flat();
    let dir = pki.file("live");
    write_server(&dir, &mint_server(&pki));
    // Events only: the poll would hide a lost watch.
    let serve = start_serve_with(ServeArgs {
        reload_poll: Some(Duration::ZERO),
        ..serve_on(&dir, &pki)
    })
    .await;

    // rm -rf and recreate.
    std::fs::remove_dir_all(&dir).unwrap();
    let a = mint_server(&pki);
    write_server(&dir, &a);
    assert!(
        served_within(&pki, serve.addr, &fingerprint_of(&a.0)).await,
        "recreated"
    );

    // A new directory moved into place (the old one moved aside first).
    let b = mint_server(&pki);
    let staged = pki.file("live.new");
    write_server(&staged, &b);
    std::fs::rename(&dir, pki.file("live.old")).unwrap();
    std::fs::rename(&staged, &dir).unwrap();
    assert!(
        served_within(&pki, serve.addr, &fingerprint_of(&b.0)).await,
        "moved into place"
    );

    // And a plain write into the directory now in place.
    let c = mint_server(&pki);
    write_server(&dir, &c);
    assert!(
        served_within(&pki, serve.addr, &fingerprint_of(&c.0)).await,
        "written after"
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_poll_alone_picks_up_a_change_no_watch_saw() {
    let pki = TestPki::default_flat();
    let dir = pki.file("live");
    write_server(&dir, &mint_server(&pki));
    let serve = start_serve_with(ServeArgs {
        no_watch: true,
        reload_poll: Some(Duration::from_millis(300)),
        ..serve_on(&dir, &pki)
    })
    .await;
    let next = mint_server(&pki);
    write_server(&dir, &next);
    assert!(served_within(&pki, serve.addr, &fingerprint_of(&next.0)).await);
    let status = serve.handle.reload_status();
    assert_eq!(
        (status.reloads, status.failures),
        (1, 0),
        "one change, one reload"
    );
    serve.stop().await;
}

/// `current -> v1` swapped to `v2` the way deploy tools do it: a new
/// symlink renamed over the old one.
fn swap_link(parent: &Path, to: &str) {
    let tmp = parent.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, parent.join("current")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_follows_a_parent_symlink_swap_of_its_identity() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    let root = pki.file("ids");
    for (v, service) in [("v1", "order-service"), ("v2", "payment-service")] {
        std::fs::create_dir_all(root.join(v)).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::fs::copy(
                pki.file(&format!("clients/{service}/{f}")),
                root.join(v).join(f),
            )
            .unwrap();
        }
    }
    swap_link(&root, "v1");
    let mut args = proxy_args(&pki, serve.addr);
    args.client_cert = Some(root.join("current/tls.crt"));
    args.client_key = Some(root.join("current/tls.key"));
    args.reload_poll = Some(Duration::ZERO); // events only
    let proxy = start_proxy(args).await;
    let serial = || async {
        let r = probe_plain(proxy.addr, "/").await;
        assert_eq!(r.outcome, Outcome::Http(200));
        echo(&r)["serial"].as_str().unwrap().to_string()
    };
    assert_eq!(serial().await, pki.entry("order-service").serial);
    swap_link(&root, "v2");
    let want = pki.entry("payment-service").serial.clone();
    let deadline = Instant::now() + BOUND;
    let mut seen = serial().await;
    while seen != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = serial().await;
    }
    assert_eq!(seen, want, "the swapped-in identity is presented");
    proxy.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_sighup_pick_up_of_a_replaced_directory_later_writes_are_seen() {
    let pki = TestPki::default_flat();
    let dir = pki.file("live");
    write_server(&dir, &mint_server(&pki));
    let args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--pki",
        pki.path().to_str().unwrap(),
        "--cert",
        dir.join("tls.crt").to_str().unwrap(),
        "--key",
        dir.join("tls.key").to_str().unwrap(),
        "--reload-poll",
        "0",
    ]
    .map(String::from)
    .to_vec();
    let running = tokio::task::spawn_blocking(move || {
        spawn_certshift(&args, |l| l.starts_with("listening on "))
    })
    .await
    .unwrap();
    let addr = running.addr();
    let pid = running.child.id().to_string();

    // Replaced and picked up by SIGHUP (the watch may or may not see it).
    std::fs::rename(&dir, pki.file("live.old")).unwrap();
    let a = mint_server(&pki);
    write_server(&dir, &a);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        served_within(&pki, addr, &fingerprint_of(&a.0)).await,
        "SIGHUP pick-up"
    );

    // Later writes, with no signal and no poll: only the watch can see them.
    let b = mint_server(&pki);
    write_server(&dir, &b);
    assert!(
        served_within(&pki, addr, &fingerprint_of(&b.0)).await,
        "a later write"
    );
    drop(running);
}
