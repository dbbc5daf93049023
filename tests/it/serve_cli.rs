//! `certshift serve` and `certshift demo` as a user runs them: the binary,
//! its first stdout line, an independent client (curl), signals, exit codes.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use certshift::tls::{Outcome, TlsVersion};
use common::*;

/// `certshift serve --listen 127.0.0.1:0 ARGS`, after its first line.
fn spawn_serve(args: &[&str]) -> Running {
    let mut all: Vec<String> = ["serve", "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    all.extend(args.iter().map(|a| a.to_string()));
    let p = spawn_certshift(&all, |_| true);
    assert!(
        p.lines[0].starts_with("listening on "),
        "first stdout line must be `listening on IP:PORT`: {:?}",
        p.lines
    );
    p
}

fn curl(args: &[&str]) -> std::process::Output {
    assert!(have("curl"), "curl is required (.ci/run installs it)");
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl")
}

#[test]
fn curl_with_a_valid_identity_gets_200_and_without_a_certificate_is_refused() {
    let pki = TestPki::default_flat();
    let dir = pki.path().to_str().unwrap();
    let serve = spawn_serve(&["--pki", dir]);
    let url = format!(
        "https://127.0.0.1:{}/api/payment/process",
        serve.addr().port()
    );
    let c = |f: &str| pki.file(f).to_str().unwrap().to_string();
    let (cert, key, ca) = (
        c("clients/order-service/tls.crt"),
        c("clients/order-service/tls.key"),
        c("ca/ca.crt"),
    );
    for tls in ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"] {
        let mut args: Vec<&str> = tls.split(' ').collect();
        args.extend([
            "--cert",
            &cert,
            "--key",
            &key,
            "--cacert",
            &ca,
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        let out = curl(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {tls} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.ends_with("\n200"), "{stdout}");
        assert!(
            stdout.contains("\"peer\":\"spiffe://cluster.local/ns/production/sa/order-service\""),
            "{stdout}"
        );

        let mut args: Vec<&str> = tls.split(' ').collect();
        args.extend(["--cacert", &ca, &url]);
        let out = curl(&args);
        assert!(
            !out.status.success(),
            "curl without a certificate must be refused ({tls})"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("alert") || err.contains("certificate"),
            "curl's error should show the TLS refusal: {err}"
        );
    }
    // Keep-alive: a second request reuses the connection.
    let out = curl(&[
        "-v", "--cert", &cert, "--key", &key, "--cacert", &ca, &url, &url,
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
    // The untrusted variant is refused too.
    let out = curl(&[
        "--cert",
        &c("variants/untrusted-ca/tls.crt"),
        "--key",
        &c("variants/untrusted-ca/tls.key"),
        "--cacert",
        &ca,
        &url,
    ]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_sigterm_stops_the_process() {
    let pki = TestPki::default_flat();
    let mut serve = spawn_serve(&["--pki", pki.path().to_str().unwrap(), "--no-watch"]);
    let seen = |r: certshift::probe::ProbeResult| {
        assert_eq!(r.outcome, Outcome::Http(200));
        sha256(r.server_cert.as_deref().unwrap())
    };
    let before = seen(
        probe_tls(
            &pki,
            serve.addr(),
            pki.cert("order-service"),
            TlsVersion::Tls13,
            "/",
        )
        .await,
    );
    let (cert, key) = mint_server(&pki);
    std::fs::write(pki.file("server/tls.key"), key).unwrap();
    std::fs::write(pki.file("server/tls.crt"), &cert).unwrap();
    // --no-watch: nothing changes until SIGHUP.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        seen(
            probe_tls(
                &pki,
                serve.addr(),
                pki.cert("order-service"),
                TlsVersion::Tls13,
                "/"
            )
            .await
        ),
        before
    );
    let pid = serve.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = before.clone();
    while after == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = seen(
            probe_tls(
                &pki,
                serve.addr(),
                pki.cert("order-service"),
                TlsVersion::Tls13,
                "/",
            )
            .await,
        );
    }
    assert_ne!(
        after, before,
        "SIGHUP must publish the new server certificate"
    );

    let status = serve.terminate();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
}

#[test]
fn configuration_errors_exit_2_and_name_the_flag() {
    let pki = TestPki::default_flat();
    let run = |args: &[&str]| {
        let out = certshift()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--cert") && err.contains("--pki"), "{err}");

    let garbage = pki.file("garbage.crt");
    std::fs::write(&garbage, "nope").unwrap();
    let (code, err) = run(&[
        "--pki",
        pki.path().to_str().unwrap(),
        "--cert",
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("garbage.crt") && err.contains("no certificate"),
        "{err}"
    );

    let policy = pki.file("policy.toml");
    std::fs::write(&policy, "[[rules]]\npaths = [\"api/x\"]\n").unwrap();
    let (code, err) = run(&[
        "--pki",
        pki.path().to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("rules[1].paths[0]"), "{err}");

    let (code, err) = run(&[
        "--pki",
        pki.path().to_str().unwrap(),
        "--tls-versions",
        "1.1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("1.1"), "{err}");
}

#[test]
fn demo_runs_load_through_the_proxy_with_rotations_and_judges_every_variant() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = certshift()
        .args(["demo", "--duration", "3s", "--rate", "100", "--out"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    // The verdict matrix: the valid identity accepted, each bad variant
    // refused with its own alert.
    for (variant, alert) in [
        ("revoked", "alert:certificate_revoked"),
        ("untrusted-ca", "alert:unknown_ca"),
        ("expired", "alert:certificate_expired"),
        ("none", "alert:certificate_required"),
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{variant} ")))
            .unwrap_or_else(|| panic!("no {variant} row in {stdout}"));
        assert!(
            row.contains("reject") && row.contains(alert) && row.ends_with("ok"),
            "{row}"
        );
    }
    assert!(stdout.contains("latency (from intended start"), "{stdout}");
    assert!(
        stdout.contains(
            "rotation downtime: 2 client rotations; the valid identity was refused 0 times"
        ),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("demo.json")).unwrap()).unwrap();
    let attempted = json["load"]["attempted"].as_u64().unwrap();
    assert!((298..=302).contains(&attempted), "{attempted}");
    assert_eq!(json["wrong_verdicts"].as_u64(), Some(0));
    assert_eq!(json["load"]["rotations"].as_array().unwrap().len(), 2);
    let svg = std::fs::read_to_string(out_dir.path().join("demo.svg")).unwrap();
    roxmltree::Document::parse(&svg).expect("the plot is valid XML");
}

#[test]
fn sighup_right_after_the_first_line_is_handled() {
    let pki = TestPki::default_flat();
    let mut serve = spawn_serve(&["--pki", pki.path().to_str().unwrap()]);
    let pid = serve.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "a SIGHUP as soon as `listening on` is printed must not kill serve"
    );
    let ca = pki.file("ca/ca.crt");
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        pki.file("clients/order-service/tls.crt").to_str().unwrap(),
        "--key",
        pki.file("clients/order-service/tls.key").to_str().unwrap(),
        &format!("https://127.0.0.1:{}/", serve.addr().port()),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}
