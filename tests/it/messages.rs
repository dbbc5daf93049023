//! What the binary says when the input is wrong: a truncated PEM names its
//! file and says it is truncated; unwritable output paths are refused before
//! any run starts; an unclosed IPv6 bracket is named; a missing PKI comes
//! with the command that makes one. Each exits 2.

use crate::common;

use certshift::serve::Enforcement;
use common::{certshift, certshift_output, start_serve, TestPki};

/// `certshift ARGS` that must exit 2: (stdout, stderr).
fn usage_error(args: &[&str]) -> (String, String) {
    let out = certshift().args(args).output().expect("run certshift");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

#[test]
fn a_truncated_pem_names_the_file_and_says_truncated() {
    let pki = TestPki::default_flat();
    let ca = std::fs::read_to_string(pki.file("ca/ca.crt")).unwrap();
    let cut = pki.path().join("cut.crt");
    std::fs::write(&cut, &ca[..ca.len() / 2]).unwrap();
    let cut = cut.to_str().unwrap();
    let out = pki.path().join("out");
    let (_, err) = usage_error(&[
        "pki",
        "init",
        "--out",
        out.to_str().unwrap(),
        "--ca-cert",
        cut,
        "--ca-key",
        pki.file("ca/ca.key").to_str().unwrap(),
    ]);
    assert!(err.contains(cut) && err.contains("truncated"), "{err}");
    assert!(err.contains("-----END CERTIFICATE-----"), "{err}");
    assert!(!err.contains("[67, 69"), "bytes instead of text: {err}");
    let (_, err) = usage_error(&["pki", "inspect", cut]);
    assert!(err.contains(cut) && err.contains("truncated"), "{err}");
    // The credential loaders of serve, the proxy and load word it the same.
    let (_, err) = usage_error(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        cut,
        "--key",
        pki.file("ca/ca.key").to_str().unwrap(),
        "--client-ca",
        pki.file("ca/ca.crt").to_str().unwrap(),
    ]);
    assert!(err.contains(cut) && err.contains("truncated"), "{err}");
    assert!(!err.contains("[67, 69"), "bytes instead of text: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_output_paths_are_refused_before_the_run() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let target = serve.addr.to_string();
    let dir = pki.path().to_str().unwrap();
    let bad = "/nonexistent/dir/x.json";
    let load = |flag: &'static str| {
        vec![
            "load",
            "--target",
            &target,
            "--pki",
            dir,
            "--server-name",
            "localhost",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--no-progress",
            flag,
            bad,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    for flag in ["--json", "--hdr-log", "--plot"] {
        let args = load(flag);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = certshift_output(&args).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(2), "{flag}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("{flag} {bad}"))
                && stderr.contains("/nonexistent/dir does not exist"),
            "{stderr}"
        );
        // Refused before the run: no operation was sent, no table printed.
        assert!(stdout.is_empty(), "the load ran first: {stdout}");
    }
    let served = serve
        .handle
        .counters()
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(served, 0, "the load ran before the check");
    serve.stop().await;

    for args in [
        vec!["rotation-test", "--json", bad],
        vec!["rotation-test", "--plot", bad],
        vec![
            "audit",
            "--target",
            "127.0.0.1:9",
            "--pki",
            dir,
            "--junit",
            bad,
        ],
        vec![
            "audit",
            "--target",
            "127.0.0.1:9",
            "--pki",
            dir,
            "--json",
            bad,
        ],
        vec!["report", "merge", "a.hlog", "--json", bad],
    ] {
        let (stdout, err) = usage_error(&args);
        assert!(
            err.contains(bad) && err.contains("does not exist"),
            "{args:?}: {err}"
        );
        assert!(stdout.is_empty(), "{args:?} ran first: {stdout}");
    }
    // The proxy's --json, from the command line or its config file.
    let (_, err) = usage_error(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--upstream",
        "127.0.0.1:9",
        "--pki",
        dir,
        "--json",
        bad,
    ]);
    assert!(
        err.contains("--json") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn an_unclosed_ipv6_bracket_is_named() {
    let pki = TestPki::default_flat();
    let dir = pki.path().to_str().unwrap();
    let (_, err) = usage_error(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--upstream",
        "[::1",
        "--pki",
        dir,
    ]);
    assert!(
        err.contains("--upstream") && err.contains("never closed"),
        "{err}"
    );
    assert!(!err.contains("\"[:\""), "{err}");
    let (_, err) = usage_error(&["load", "--target", "[::1", "--pki", dir]);
    assert!(
        err.contains("--target") && err.contains("never closed"),
        "{err}"
    );
    let (_, err) = usage_error(&["load", "--target", "localhost", "--pki", dir]);
    assert!(err.contains("--target") && err.contains("no port"), "{err}");
}

#[test]
fn a_missing_pki_says_how_to_make_one() {
    let fix = "certshift pki init --out /nonexistent/pki";
    for args in [
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pki",
            "/nonexistent/pki",
        ],
        vec![
            "load",
            "--target",
            "127.0.0.1:9",
            "--pki",
            "/nonexistent/pki",
        ],
        vec![
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--upstream",
            "127.0.0.1:9",
            "--pki",
            "/nonexistent/pki",
        ],
    ] {
        let (_, err) = usage_error(&args);
        assert!(err.contains(fix), "{args:?}: {err}");
    }
}
