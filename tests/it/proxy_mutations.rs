//! The proxy presents the catalogue's mutated certificates (`pki init`'s
//! `mutations/<name>/`) like any variant: by name (`mutation:<name>`) in
//! `--present-sequence`, `--present` and `PUT /plan`, or all of them as the
//! group `mutations`. A strict `serve` judges each; the proxy counts the
//! verdicts against the catalogue's. Real binaries and handshakes over
//! loopback, a PKI made per test by the project's own `pki` module.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;

use certshift::pki::{Expect, MUTATIONS};
use certshift::plan::{Plan, Presented};
use certshift::probe::ProbeResult;
use certshift::serve::Enforcement;
use certshift::tls::Outcome;
use common::*;
use serde_json::Value;

/// `GET /stats` once `n` connections are recorded: the proxy records a
/// connection when it closes, which may be just after the client has its
/// answer. Gives up after 10 s and returns what it has.
async fn stats_after(addr: SocketAddr, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (code, stats) = admin(addr, "GET", "/stats", None, None).await;
        assert_eq!(code, 200);
        let total = stats["connections"]["total"].as_u64().unwrap_or(0);
        if total >= n || tokio::time::Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `certshift proxy` in front of `upstream` with the PKI and `extra` flags,
/// its admin API on; returns it once it prints its plan.
fn spawn_proxy(pki: &TestPki, upstream: SocketAddr, extra: &[&str]) -> Running {
    let mut args: Vec<String> = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--upstream-name",
        "localhost",
        "--pki",
        pki.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_certshift(&args, |l| l.starts_with("presenting:"))
}

/// The serial the service echoes for the leaf of `cert` (a path in the PKI).
fn leaf_serial(pki: &TestPki, cert: &str) -> String {
    let chain =
        certshift::creds::load_chain(&pki.file(cert)).unwrap_or_else(|e| panic!("{cert}: {e}"));
    certshift::x509::CertFacts::from_der(&chain[0])
        .unwrap()
        .serial
}

/// A refusal as an HTTP client sees it through the proxy: a 502 naming the
/// credential presented, or (when the service's alert beat the request to
/// the proxy) a closed connection.
fn assert_refused(r: &ProbeResult, name: &str) {
    match &r.outcome {
        Outcome::Http(502) => assert!(
            r.body_text()
                .contains(&format!("presented credential: {name}")),
            "{name}: {}",
            r.body_text()
        ),
        Outcome::Http(s) => panic!("{name}: refused expected, got HTTP {s}"),
        _ => {}
    }
}

/// The /stats row of `name`: (expect, connections, unexpected accepts,
/// unexpected rejects).
fn row(stats: &Value, name: &str) -> (String, u64, u64, u64) {
    let r = &stats["variants"][name];
    (
        r["expect"].as_str().unwrap_or("(no row)").to_string(),
        r["connections"].as_u64().unwrap_or(0),
        r["unexpected_accept"].as_u64().unwrap_or(0),
        r["unexpected_reject"].as_u64().unwrap_or(0),
    )
}

/// Controls a strict validator must accept, and refusals webpki makes as
/// the catalogue says (`serve --mode strict`'s verdicts are listed per
/// mutation in tests/it/audit_serve.rs). `trailing-bytes` is DER no parser
/// reads: the proxy must still present it, for the service to judge.
const SEQUENCE: [&str; 7] = [
    "valid",
    "mutation:bad-signature",
    "mutation:serial-20-bytes",
    "mutation:unknown-non-critical-extension",
    "mutation:unknown-critical-extension",
    "mutation:validity-reversed",
    "mutation:trailing-bytes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_of_mutations_gets_the_catalogues_verdict_from_a_strict_service() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let p = spawn_proxy(
        &pki,
        serve.addr,
        &["--present-sequence", &SEQUENCE.join(",")],
    );
    let (listen, admin_addr) = (p.addr(), p.line("admin on ").parse().unwrap());
    assert_eq!(
        p.line("presenting: "),
        format!("sequence {} (cycled)", SEQUENCE.join(","))
    );
    let valid_serial = leaf_serial(&pki, &pki.entry("order-service").cert);

    // Sequential requests, one connection each: request i presents item i % 7.
    for cycle in 0..2 {
        for name in SEQUENCE {
            let r = probe_plain(listen, "/api/orders").await;
            let p: Presented = name.parse().unwrap();
            match p.expected() {
                Expect::Accept => {
                    assert_eq!(r.outcome, Outcome::Http(200), "{cycle}: {name}: {r:?}");
                    // The service saw the mutated leaf, not the identity's.
                    let want = match name.strip_prefix("mutation:") {
                        Some(m) => leaf_serial(&pki, &format!("mutations/{m}/tls.crt")),
                        None => valid_serial.clone(),
                    };
                    assert_eq!(echo(&r)["serial"], want.as_str(), "{name}");
                }
                Expect::Reject => assert_refused(&r, name),
            }
        }
    }
    assert_ne!(
        leaf_serial(&pki, "mutations/serial-20-bytes/tls.crt"),
        valid_serial
    );

    let stats = stats_after(admin_addr, 14).await;
    assert_eq!(stats["connections"]["total"], 14, "{stats}");
    for name in SEQUENCE {
        let want = match name.parse::<Presented>().unwrap().expected() {
            Expect::Accept => "accept",
            Expect::Reject => "reject",
        };
        // Two each, and every verdict the one a strict validator gives.
        assert_eq!(row(&stats, name), (want.to_string(), 2, 0, 0), "{stats}");
    }
    // The refusals came from the service judging the certificate presented,
    // the unparsable one included (tests/it/audit_serve.rs lists these alerts).
    for (name, alert) in [
        ("mutation:bad-signature", "alert:decrypt_error"),
        ("mutation:trailing-bytes", "alert:bad_certificate"),
    ] {
        assert_eq!(stats["outcomes"][name][alert], 2, "{name}: {stats}");
    }
    assert_eq!(row(&stats, "mutation:bad-signature").0, "reject");
    assert_eq!(row(&stats, "mutation:serial-20-bytes").0, "accept");
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mutations_group_spreads_its_weight_over_the_catalogue() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let p = spawn_proxy(
        &pki,
        serve.addr,
        &["--present", "valid=80,mutations=20", "--seed", "7"],
    );
    let (listen, admin_addr) = (p.addr(), p.line("admin on ").parse().unwrap());
    // The group stays one item in the description.
    assert_eq!(
        p.line("presenting: "),
        "weights valid=80 mutations=20, seed 7"
    );
    const CONNECTIONS: u64 = 100;
    for _ in 0..CONNECTIONS {
        probe_plain(listen, "/api/orders").await;
    }
    // pick is a pure function of (plan, n): the same plan in this process
    // says exactly which mutations the proxy presented.
    let plan = Plan::parse_weights("valid=80,mutations=20", 7).unwrap();
    let mut want: Vec<&str> = (0..CONNECTIONS)
        .map(|n| plan.pick(n))
        .filter(|p| matches!(p, Presented::Mutation(_)))
        .map(Presented::name)
        .collect();
    want.sort_unstable();
    want.dedup();
    assert!(want.len() > 5, "{want:?}");

    let stats = stats_after(admin_addr, CONNECTIONS).await;
    assert_eq!(stats["connections"]["total"], CONNECTIONS, "{stats}");
    let variants = stats["variants"].as_object().unwrap();
    let mut seen: Vec<&str> = variants
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("mutation:"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, want, "{stats}");
    let mutated: u64 = seen.iter().map(|k| row(&stats, k).1).sum();
    let valid = row(&stats, "valid").1;
    assert_eq!(valid + mutated, CONNECTIONS);
    // Every name in /stats is a catalogue mutation's, with its verdict.
    for k in seen {
        let m = MUTATIONS.iter().find(|m| m.check_id == k).unwrap();
        assert_eq!(row(&stats, k).0, m.expect.to_string(), "{k}");
    }
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_plan_presents_a_mutation_and_refuses_an_unknown_one_naming_the_fix() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let admin_addr = start_admin(&proxy, None).await;

    let body = r#"{"present_sequence":"mutation:validity-reversed"}"#;
    let (code, plan) = admin(admin_addr, "PUT", "/plan", Some(body), None).await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["active"], "always mutation:validity-reversed");
    let r = probe_plain(proxy.addr, "/api/orders").await;
    assert_refused(&r, "mutation:validity-reversed");

    // An unknown mutation: 400, the fix named, the running plan untouched.
    let (code, refused) = admin(
        admin_addr,
        "PUT",
        "/plan",
        Some(r#"{"present_sequence":"valid,mutation:nope"}"#),
        None,
    )
    .await;
    assert_eq!(code, 400);
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("\"mutation:nope\"")
            && error.contains("mutation:<name>")
            && error.contains("bad-signature"),
        "{error}"
    );
    let (_, plan) = admin(admin_addr, "GET", "/plan", None, None).await;
    assert_eq!(plan["active"], "always mutation:validity-reversed");

    // The group works here too.
    let (code, plan) = admin(
        admin_addr,
        "PUT",
        "/plan",
        Some(r#"{"present":"valid=1,mutations=1","seed":3}"#),
        None,
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["active"], "weights valid=1 mutations=1, seed 3");

    let snap = proxy.stop().await;
    let v = snap
        .variant("mutation:validity-reversed")
        .expect("a row for the mutation");
    assert_eq!((v.connections, v.unexpected_accept), (1, 0));
    serve.stop().await;
}

/// A PKI as written before mutations existed: no `mutations/`, none in the
/// manifest.
fn without_mutations(pki: &mut TestPki) {
    std::fs::remove_dir_all(pki.file("mutations")).unwrap();
    pki.manifest.mutations.clear();
    std::fs::write(pki.file("manifest.toml"), pki.manifest.to_toml().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pki_without_mutations_still_proxies_and_says_to_re_run_pki_init() {
    let mut pki = TestPki::default_flat();
    without_mutations(&mut pki);
    let serve = start_serve(&pki, Enforcement::Strict).await;

    // At startup: exit 2, the fix named.
    let dir = pki.path().to_str().unwrap();
    let out = certshift()
        .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "off"])
        .args(["--upstream", &serve.addr.to_string(), "--pki", dir])
        .args(["--present-sequence", "valid,mutation:bad-signature"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no mutated certificates") && stderr.contains("certshift pki init"),
        "{stderr}"
    );

    // Variants still work; a change to a mutation is a 400 with the fix.
    let proxy = start_proxy(proxy_args(&pki, serve.addr)).await;
    let admin_addr = start_admin(&proxy, None).await;
    let r = probe_plain(proxy.addr, "/api/orders").await;
    assert_eq!(r.outcome, Outcome::Http(200), "{r:?}");
    let (code, refused) = admin(
        admin_addr,
        "PUT",
        "/plan",
        Some(r#"{"present":"valid=9,mutations=1"}"#),
        None,
    )
    .await;
    assert_eq!(code, 400);
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("mutation:bad-signature") && error.contains("re-run `certshift pki init`"),
        "{error}"
    );
    assert!(!Path::new(&pki.file("mutations")).exists());
    proxy.stop().await;
    serve.stop().await;
}
