//! `certshift audit` usage errors as a user meets them: exit 2, a message
//! naming the problem and what to give instead, and no report written (a CI
//! job's JUnit reporter then finds no tests instead of a stale file).

use crate::common;

use std::path::Path;

use certshift::audit::checks;
use common::*;

/// `certshift audit ARGS --junit F --json G` where the audit must not run:
/// its stderr, after checking the exit code and that no report was written.
fn usage_error(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let (junit, json) = (dir.path().join("audit.xml"), dir.path().join("audit.json"));
    let out = certshift()
        .arg("audit")
        .args(args)
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run certshift audit");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "audit {args:?}: a usage error exits 2\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !junit.exists() && !json.exists(),
        "audit {args:?}: a usage error writes no report"
    );
    stderr
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

#[test]
fn no_target_says_how_to_give_one() {
    let pki = TestPki::default_flat();
    let e = usage_error(&["--pki", arg(pki.path())]);
    assert!(
        e.contains("no target") && e.contains("--target") && e.contains("--targets"),
        "{e}"
    );
}

#[test]
fn an_unknown_check_in_expect_names_the_known_ones() {
    let e = usage_error(&[
        "--target",
        "https://127.0.0.1:1/",
        "--insecure",
        "--expect",
        "revokd=skip",
    ]);
    assert!(e.contains("--expect") && e.contains("\"revokd\""), "{e}");
    for c in checks() {
        assert!(e.contains(c.id), "the message lists {}: {e}", c.id);
    }
}

#[test]
fn a_plain_http_target_is_refused_with_the_way_out() {
    let e = usage_error(&["--target", "http://127.0.0.1:8080/", "--insecure"]);
    assert!(
        e.contains("http://127.0.0.1:8080/")
            && e.contains("https://")
            && e.contains("--plaintext-port"),
        "{e}"
    );
}

#[test]
fn a_pki_flag_on_a_directory_that_is_no_pki_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), "not a PKI").expect("write");
    let e = usage_error(&["--target", "https://127.0.0.1:1/", "--pki", arg(dir.path())]);
    assert!(
        e.contains("--pki") && e.contains(arg(dir.path())) && e.contains("not a certshift PKI"),
        "{e}"
    );
}

#[test]
fn no_way_to_verify_the_server_lists_the_three() {
    let e = usage_error(&["--target", "https://127.0.0.1:1/"]);
    for flag in ["--ca", "--pki", "--insecure"] {
        assert!(e.contains(flag), "the message names {flag}: {e}");
    }
}
