//! Reloads that parse but cannot work (issue 11): an expired or
//! untrusted-CA identity, an expired server certificate, a rotate CA pair
//! that does not belong together, a policy with no rules. Each is refused,
//! counted, and the old value keeps serving.

use crate::common;

use std::path::Path;

use certshift::creds::CredError;
use certshift::serve::{Enforcement, PolicyError, ServeArgs};
use certshift::tls::{Outcome, TlsVersion};
use common::*;

fn copy(from: &Path, to: &Path) {
    std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_an_expired_server_certificate_and_keeps_the_old_one() {
    let pki = TestPki::default_flat();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        no_watch: true,
        ..serve_args()
    })
    .await;
    let seen = || async {
        let r = probe_tls(
            &pki,
            serve.addr,
            pki.cert("order-service"),
            TlsVersion::Tls13,
            "/",
        )
        .await;
        assert_eq!(
            r.outcome,
            Outcome::Http(200),
            "the old certificate keeps serving"
        );
        sha256(r.server_cert.as_deref().unwrap())
    };
    let before = seen().await;
    let (cert, key) = expired_server(&pki);
    std::fs::write(pki.file("server/tls.crt"), cert).unwrap();
    std::fs::write(pki.file("server/tls.key"), key).unwrap();
    let err = serve.handle.reload().unwrap_err();
    assert!(matches!(err, CredError::Unusable { .. }), "{err}");
    let status = serve.handle.reload_status();
    assert_eq!(status.failures, 1, "the refusal is counted");
    let why = status.last_error.unwrap();
    assert!(
        why.contains("server/tls.crt") && why.contains("expired"),
        "{why}"
    );
    assert_eq!(seen().await, before);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_identity_takes_only_a_credential_usable_now() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let mut args = proxy_args(&pki, serve.addr);
    args.no_watch = true; // reloads are triggered here, one failure each
    let proxy = start_proxy(args).await;
    let original = pki.entry("order-service").serial.clone();
    let serial_seen = || async {
        let r = probe_plain(proxy.addr, "/").await;
        assert_eq!(
            r.outcome,
            Outcome::Http(200),
            "the old identity keeps serving"
        );
        echo(&r)["serial"].as_str().unwrap().to_string()
    };
    assert_eq!(serial_seen().await, original);
    let id = pki.entry("order-service").clone();
    let (cert, key) = (pki.file(&id.cert), pki.file(&id.key));
    let (good_cert, good_key) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let creds = proxy.handle.credentials().clone();
    for (i, (variant, says)) in [
        ("expired", "expired at"),
        ("untrusted-ca", "does not chain"),
    ]
    .into_iter()
    .enumerate()
    {
        let v = pki.entry(variant).clone();
        copy(&pki.file(&v.cert), &cert);
        copy(&pki.file(&v.key), &key);
        let errors = creds.reload_files();
        assert_eq!(errors.len(), 1, "{variant}: {errors:?}");
        let text = errors[0].1.to_string();
        assert!(
            text.contains(says) && text.contains("tls.crt"),
            "{variant}: {text}"
        );
        let status = creds.client.as_ref().unwrap().status();
        assert_eq!(status.failures, i as u64 + 1, "{variant}: counted");
        assert_eq!(serial_seen().await, original, "{variant}: not published");
        std::fs::write(&cert, &good_cert).unwrap();
        std::fs::write(&key, &good_key).unwrap();
    }
    // The bad variants the plan presents on purpose are untouched.
    assert!(creds.reload_files().is_empty());
    let snap = proxy.stop().await;
    let stats = snap.to_stats_json();
    assert_eq!(
        stats["rotation_failures"]["client"], 2,
        "the refused-rotation counter moved"
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotate_ca_pair_that_does_not_belong_together_is_exit_2_naming_both_flags() {
    let pki = TestPki::default_flat();
    let (cert, other_key) = (pki.file("ca/ca.crt"), pki.file("other-ca/ca.key"));
    assert!(other_key.exists(), "the untrusted CA's key");
    let out = certshift_output(&[
        "proxy",
        "--pki",
        pki.path().to_str().unwrap(),
        "--upstream",
        "127.0.0.1:9",
        "--upstream-name",
        "localhost",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--rotate-ca-cert",
        cert.to_str().unwrap(),
        "--rotate-ca-key",
        other_key.to_str().unwrap(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--rotate-ca-key") && stderr.contains("--rotate-ca-cert"),
        "{stderr}"
    );
    assert!(
        stderr.contains("do not match") || stderr.contains("does not match"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_with_no_rules_is_refused_unless_asked_for() {
    let pki = TestPki::default_flat();
    let policy = pki.file("policy.toml");
    std::fs::write(&policy, "# nothing yet\n").unwrap();
    let args = || ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        policy: Some(policy.clone()),
        no_watch: true,
        ..serve_args()
    };
    let err = args().into_config().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("policy.toml") && text.contains("--allow-empty-policy"),
        "{text}"
    );
    // Asked for: deny-all is served.
    let deny_all = start_serve_with(ServeArgs {
        allow_empty_policy: true,
        ..args()
    })
    .await;
    let r = probe_tls(
        &pki,
        deny_all.addr,
        pki.cert("order-service"),
        TlsVersion::Tls13,
        "/",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Http(403));
    deny_all.stop().await;

    // On reload: an emptied file keeps the old policy serving.
    std::fs::write(&policy, "[[rules]]\npaths = [\"/\"]\n").unwrap();
    let serve = start_serve_with(args()).await;
    for empty in ["", "# all rules removed\n"] {
        std::fs::write(&policy, empty).unwrap();
        let err = serve.handle.reload_policy().unwrap_err();
        assert!(matches!(err, PolicyError::NoRules { .. }), "{err}");
        let r = probe_tls(
            &pki,
            serve.addr,
            pki.cert("order-service"),
            TlsVersion::Tls13,
            "/",
        )
        .await;
        assert_eq!(
            r.outcome,
            Outcome::Http(200),
            "{empty:?}: the old policy keeps serving"
        );
    }
    let status = serve.handle.policy_reload_status();
    assert_eq!(status.failures, 2, "each refusal counted");
    assert!(status.last_error.unwrap().contains("no [[rules]]"));
    serve.stop().await;
}
