//! Silent weakening (issue 11): a PKI whose CRL is gone is a startup error
//! naming the file, a service without any revocation source says so (log
//! line, `/stats`), and trust domains and SPIFFE IDs of the wrong form are
//! refused with the form to write.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use certshift::proxy::TlsMode;
use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pki_whose_crl_is_missing_is_exit_2_naming_the_file() {
    let pki = TestPki::default_flat();
    let crl = pki.file("ca/crl.pem");
    std::fs::remove_file(&crl).unwrap();
    let serve =
        certshift_output(&["serve", "--pki", s(pki.path()), "--listen", "127.0.0.1:0"]).await;
    let err = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(2), "{err}");
    assert!(err.contains(s(&crl)) && err.contains("missing"), "{err}");

    let proxy = certshift_output(&[
        "proxy",
        "--pki",
        s(pki.path()),
        "--upstream",
        "127.0.0.1:9",
        "--upstream-name",
        "localhost",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--listen-tls",
        "mtls",
    ])
    .await;
    let err = String::from_utf8_lossy(&proxy.stderr);
    assert_eq!(proxy.status.code(), Some(2), "{err}");
    assert!(err.contains(s(&crl)) && err.contains("missing"), "{err}");
}

#[test]
fn serve_without_a_crl_says_so_at_startup() {
    let pki = TestPki::default_flat();
    let mut child = certshift()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            s(&pki.file("server/tls.crt")),
            "--key",
            s(&pki.file("server/tls.key")),
            "--client-ca",
            s(&pki.file("ca/ca.crt")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read on a thread so a silent child cannot hang the test past 10 s.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line)
                if line.contains("revocation=\"none\"") || line.contains("revocation=none") =>
            {
                assert!(line.contains("WARN") && line.contains("--crl"), "{line}");
                seen.push(line);
                break;
            }
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.last().is_some_and(|l| l.contains("none")),
        "no revocation warning in {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_listener_shows_its_revocation_source_in_stats() {
    let pki = TestPki::default_flat();
    let upstream = start_serve(&pki, certshift::serve::Enforcement::Strict).await;
    for with_crl in [true, false] {
        let mut args = proxy_args(&pki, upstream.addr);
        args.listen_tls = TlsMode::Mtls;
        if !with_crl {
            // Another CA bundle (the same file by another name): no CRL by default.
            let ca = pki.file("ca-copy.crt");
            std::fs::copy(pki.file("ca/ca.crt"), &ca).unwrap();
            args.listen_client_ca = vec![ca];
        }
        let proxy = start_proxy(args).await;
        let admin_addr = start_admin(&proxy, None).await;
        let (status, stats) = admin(admin_addr, "GET", "/stats", None, None).await;
        assert_eq!(status, 200);
        let revocation = &stats["reload"]["server"]["revocation"];
        if with_crl {
            assert_eq!(revocation[0], s(&pki.file("ca/crl.pem")), "{stats}");
        } else {
            assert_eq!(revocation, "none", "{stats}");
        }
        proxy.stop().await;
    }
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_domains_and_spiffe_ids_of_the_wrong_form_are_refused_with_the_right_one() {
    let pki = TestPki::default_flat();
    for (td, hint) in [
        ("", "such as cluster.local"),
        ("spiffe://cluster.local", "write it as cluster.local"),
    ] {
        let out = certshift_output(&[
            "serve",
            "--pki",
            s(pki.path()),
            "--listen",
            "127.0.0.1:0",
            "--trust-domain",
            td,
        ])
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{td:?}: {err}");
        assert!(
            err.contains("--trust-domain") && err.contains(hint),
            "{td:?}: {err}"
        );
    }
    let out = certshift_output(&[
        "proxy",
        "--pki",
        s(pki.path()),
        "--upstream",
        "127.0.0.1:9",
        "--upstream-name",
        "localhost",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--upstream-spiffe-id",
        "not-a-spiffe-id",
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--upstream-spiffe-id") && err.contains("spiffe://cluster.local/"),
        "{err}"
    );
}
