//! The proxy's admin API against a web page: on loopback without a token it
//! refuses a cross-site request (foreign `Origin`) and a DNS-rebound one
//! (foreign `Host`) and rotates nothing; a plain curl still works. A short
//! token is refused at startup, and a config file's parse error never shows
//! the token.

use crate::common;

use certshift::serve::Enforcement;
use common::{certshift, curl, spawn_certshift, start_serve, TestPki};

/// Publications of the client identity, as `/stats` counts them.
fn client_reloads(admin: &str) -> u64 {
    let (body, code) = curl(&[&format!("http://{admin}/stats")]);
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    v["reload"]["client"]["reloads"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reload.client.reloads in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_or_host_rotates_nothing_and_curl_still_works() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let file = |rel: &str| pki.file(rel).to_str().unwrap().to_string();
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
        &file(""),
        "--rotate-ca-cert",
        &file("ca/ca.crt"),
        "--rotate-ca-key",
        &file("ca/ca.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = tokio::task::spawn_blocking(move || {
        spawn_certshift(&args, |l| l.starts_with("presenting:"))
    })
    .await
    .unwrap();
    let admin = p.line("admin on ").to_string();
    let rotate = format!("http://{admin}/rotate?mint");
    let checks = tokio::task::spawn_blocking(move || {
        assert_eq!(client_reloads(&admin), 0);
        // A page on another site posting cross-origin.
        let (body, code) = curl(&["-X", "POST", "-H", "Origin: http://evil.example", &rotate]);
        assert_eq!(code, "403", "{body}");
        assert!(body.contains("origin"), "{body}");
        // A page whose own name was rebound to 127.0.0.1.
        let (body, code) = curl(&["-X", "POST", "-H", "Host: evil.example", &rotate]);
        assert_eq!(code, "421", "{body}");
        assert!(body.contains("Host"), "{body}");
        let (_, code) = curl(&[
            "-X",
            "POST",
            "-H",
            "Host: evil.example:80",
            "-H",
            "Origin: http://evil.example",
            &rotate,
        ]);
        assert_eq!(code, "421");
        assert_eq!(client_reloads(&admin), 0, "a refused request rotated");
        // The operator's own curl, and a local dashboard's origin.
        let (body, code) = curl(&["-X", "POST", &rotate]);
        assert_eq!(code, "200", "{body}");
        assert_eq!(client_reloads(&admin), 1);
        let (_, code) = curl(&[
            "-H",
            "Origin: http://localhost:3000",
            &format!(
                "http://localhost:{}/healthz",
                admin.rsplit(':').next().unwrap()
            ),
        ]);
        assert_eq!(code, "200");
    });
    checks.await.unwrap();
    drop(p);
    serve.stop().await;
}

/// `certshift proxy ARGS` that must refuse to start: its stderr.
fn refused(args: &[&str]) -> String {
    let out = certshift()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .args(args)
        .env_remove("CERTSHIFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

#[test]
fn a_short_admin_token_is_refused_without_showing_it() {
    let pki = TestPki::default_flat();
    let dir = pki.path().to_str().unwrap();
    for token in [" ", "x", "short-tok3n", "               a               "] {
        let err = refused(&[
            "--pki",
            dir,
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            token,
        ]);
        assert!(
            err.contains("--admin-token") && err.contains("16"),
            "{token:?}: {err}"
        );
        if token.trim().len() > 1 {
            assert!(!err.contains(token.trim()), "the token is echoed: {err}");
        }
    }
    // From the environment, the same rule.
    let out = certshift()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--pki",
            dir,
        ])
        .args(["--admin", "127.0.0.1:0"])
        .env("CERTSHIFT_ADMIN_TOKEN", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));
}

#[test]
fn a_config_file_error_never_shows_the_token() {
    let pki = TestPki::default_flat();
    let secret = "Zq8vT3kLm9pR2xW7";
    for (i, text) in [
        // An unterminated string: toml would quote this very line.
        format!("upstream = \"127.0.0.1:9\"\nadmin_token = \"{secret}\nadmin = \"127.0.0.1:0\"\n"),
        // A bare word where a value belongs.
        format!("admin_token = {secret}\n"),
    ]
    .iter()
    .enumerate()
    {
        let path = pki.path().join(format!("proxy-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let err = refused(&["--config", path.to_str().unwrap()]);
        assert!(!err.contains(secret), "the token is echoed: {err}");
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains("line "),
            "{err}"
        );
    }
    // A short token in a file names the key and its line, not the token.
    let path = pki.path().join("short.toml");
    std::fs::write(
        &path,
        "upstream = \"127.0.0.1:9\"\npki = \".\"\nadmin_token = \"tiny-secret\"\n",
    )
    .unwrap();
    let err = refused(&["--config", path.to_str().unwrap()]);
    assert!(
        err.contains("admin_token") && !err.contains("tiny-secret"),
        "{err}"
    );
}
