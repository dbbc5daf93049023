//! `certshift audit --differential`: the same certificates to two services,
//! only the rows where they disagree. `serve` (strict: webpki plus SPIFFE
//! checks) against nginx (`ssl_verify_client on`, OpenSSL) with the same CA
//! differ exactly where their validators do; `serve` against itself agrees
//! on everything.

use crate::common;

use std::collections::BTreeSet;

use certshift::audit::differential::{self, DifferentialReport};
use certshift::audit::fuzz::Settings;
use certshift::serve::{Enforcement, ServeArgs};
use common::peers::{nginx_verify_on, start_nginx};
use common::*;

async fn serve(pki: &TestPki) -> RunningServe {
    start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        mode: Enforcement::Strict,
        ..serve_args()
    })
    .await
}

async fn compare(pki: &TestPki, a: &str, b: &str, extra: &[&str]) -> DifferentialReport {
    let dir = pki.path().to_str().unwrap();
    let mut argv = vec!["--target", a, "--target", b, "--pki", dir, "--differential"];
    argv.extend_from_slice(extra);
    let args = audit_args(&argv);
    let fuzz = args.fuzz.map(|_| Settings::from_args(&args));
    let r = differential::run(&args, fuzz.as_ref())
        .await
        .expect("differential runs");
    println!("{}", differential::table(&r));
    r
}

fn ids(rows: &[differential::Row]) -> BTreeSet<&str> {
    rows.iter().map(|x| x.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_nginx_disagree_where_their_validators_do() {
    let pki = TestPki::default_flat();
    let s = serve(&pki).await;
    let nginx = start_nginx(pki.path(), &nginx_verify_on(pki.path(), 2));
    let a = format!("https://{}/", s.addr);
    let r = compare(&pki, &a, &nginx.url(), &[]).await;
    assert_eq!(r.targets.len(), 2);
    let decision = ids(&r.rows);
    let minor = ids(&r.minor);
    // Where they really decide differently: serve checks the SPIFFE ID,
    // nginx never reads it, so nginx accepts a foreign trust domain, no
    // SPIFFE ID and every bent SPIFFE ID; OpenSSL accepts a CA certificate
    // as a client and a version-1 certificate with extensions (webpki
    // refuses both) but refuses a keyUsage without digitalSignature (webpki
    // does not read keyUsage); nginx resumes a session after its certificate
    // expired (serve answers 495).
    let expected: BTreeSet<&str> = [
        "wrong-trust-domain",
        "no-spiffe-id",
        "ca-as-leaf",
        "resumption-after-expiry",
        "mutation:two-spiffe-ids",
        "mutation:spiffe-id-dot-segment",
        "mutation:spiffe-id-percent-encoded",
        "mutation:spiffe-id-port",
        "mutation:spiffe-id-query",
        "mutation:spiffe-uri-empty",
        "mutation:v1-with-extensions",
        "mutation:key-usage-without-digital-signature",
    ]
    .into_iter()
    .collect();
    assert_eq!(decision, expected);
    let did = |id: &str| {
        let row = r.rows.iter().find(|x| x.id == id).unwrap();
        assert_ne!(row.did[0].decision, row.did[1].decision, "{id}");
        (row.did[0].did.clone(), row.did[1].did.clone())
    };
    assert_eq!(
        did("wrong-trust-domain"),
        ("alert:access_denied".into(), "200".into())
    );
    assert_eq!(
        did("mutation:key-usage-without-digital-signature"),
        ("200".into(), "400".into())
    );
    assert_eq!(r.disagree, expected.len());
    // Both refuse: not a row. serve refuses with an alert, nginx with 400
    // after the handshake: minor. Both accept the valid identity: nowhere.
    for id in [
        "expired",
        "untrusted-ca",
        "revoked",
        "no-client-cert",
        "wrong-eku",
    ] {
        assert!(!decision.contains(id), "{id}: both refuse");
        assert!(minor.contains(id), "{id}: alert vs 400 is minor: {minor:?}");
    }
    assert!(
        !decision.contains("valid-identity-accepted") && !minor.contains("valid-identity-accepted")
    );
    assert!(r.compared > r.disagree + r.minor.len());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_against_the_same_serve_agrees_everywhere_and_exits_0() {
    let pki = TestPki::default_flat();
    let s = serve(&pki).await;
    let other = serve(&pki).await;
    let (a, b) = (
        format!("https://{}/", s.addr),
        format!("https://{}/", other.addr),
    );
    let r = compare(&pki, &a, &b, &["--fuzz", "30", "--seed", "7"]).await;
    assert!(r.rows.is_empty(), "{:?}", r.rows);
    assert!(r.passed());
    // The registry and the 30 fuzz cases were compared.
    assert!(r.compared >= 30 + 20, "{}", r.compared);

    // From the binary: exit 0, the footer; one target is a usage error.
    let dir = pki.path().to_str().unwrap().to_string();
    let o = certshift_output(&[
        "audit",
        "--target",
        &a,
        "--target",
        &b,
        "--pki",
        &dir,
        "--differential",
        "--expect",
        "resumption-after-expiry=skip",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 disagree"), "{stdout}");
    let o = certshift_output(&["audit", "--target", &a, "--pki", &dir, "--differential"]).await;
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("two or more"), "{stderr}");
    s.stop().await;
    other.stop().await;
}
