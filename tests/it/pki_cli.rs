//! `certshift pki init` and `certshift pki inspect` through the built binary:
//! the files and manifest a user (and every later command) relies on, the
//! refusals with exit code 2 and a message naming the problem, and the
//! inspection report in JSON and text.

use crate::common;

use std::path::Path;
use std::process::Output;

use certshift::pki::inspect::inspect_file;
use certshift::pki::{Expect, KeyType, Manifest, PkiOptions, Role};
use common::{certshift, TestPki};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const SERVICES: [&str; 4] = [
    "order-service",
    "checkout-service",
    "inventory-service",
    "payment-service",
];

/// Variant directory names are a contract; spelled out rather than taken
/// from `Variant::ALL` so a rename fails here.
const VARIANTS: [&str; 9] = [
    "expired",
    "not-yet-valid",
    "untrusted-ca",
    "self-signed",
    "revoked",
    "wrong-eku",
    "wrong-trust-domain",
    "no-spiffe-id",
    "ca-as-leaf",
];

fn init(out: &Path, extra: &[&str]) -> Output {
    certshift()
        .args(["pki", "init", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run certshift pki init")
}

fn inspect(args: &[&str]) -> Output {
    certshift()
        .args(["pki", "inspect"])
        .args(args)
        .output()
        .expect("run certshift pki inspect")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "{}", show(out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_files(dir: &Path, files: &[String]) {
    for f in files {
        assert!(dir.join(f).is_file(), "missing {f} in {}", dir.display());
    }
}

fn leaf_files(dir: &str, with_ca: bool) -> Vec<String> {
    let mut files = vec![format!("{dir}/tls.crt"), format!("{dir}/tls.key")];
    if with_ca {
        files.push(format!("{dir}/ca.crt"));
    }
    files
}

fn load(dir: &Path) -> Manifest {
    Manifest::load(dir).unwrap_or_else(|e| panic!("manifest of {}: {e}", dir.display()))
}

#[test]
fn init_writes_the_contract_layout_and_manifest() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // A directory that does not exist yet: init creates it.
    let dir = tmp.path().join("pki");
    let out = init(&dir, &[]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&dir.display().to_string()),
        "init should say where it wrote: {}",
        show(&out)
    );

    let mut files: Vec<String> = [
        "manifest.toml",
        "ca/ca.crt",
        "ca/ca.key",
        "ca/crl.pem",
        "other-ca/ca.crt",
        "other-ca/ca.key",
    ]
    .map(String::from)
    .to_vec();
    files.extend(leaf_files("server", true));
    for s in SERVICES {
        files.extend(leaf_files(&format!("clients/{s}"), true));
    }
    for v in VARIANTS {
        files.extend(leaf_files(&format!("variants/{v}"), false));
    }
    assert_files(&dir, &files);
    assert!(
        !dir.join("variants/missing-intermediate").exists(),
        "missing-intermediate needs --intermediate"
    );
    let variant_dirs = std::fs::read_dir(dir.join("variants"))
        .expect("variants dir")
        .count();
    assert_eq!(
        variant_dirs,
        VARIANTS.len(),
        "variants/ holds the 9 variants"
    );

    let m = load(&dir);
    assert_eq!(m.services, SERVICES.map(String::from).to_vec());
    assert!(!m.intermediate);
    for e in &m.credentials {
        assert!(
            dir.join(&e.cert).is_file() && dir.join(&e.key).is_file(),
            "{}: {} / {} not written",
            e.name,
            e.cert,
            e.key
        );
        match e.role {
            Role::Client => {
                assert_eq!(e.expect, Some(Expect::Accept), "{}", e.name);
                let id = format!("spiffe://cluster.local/ns/production/sa/{}", e.name);
                assert_eq!(e.spiffe_id.as_deref(), Some(id.as_str()));
            }
            Role::Variant => {
                assert_eq!(e.expect, Some(Expect::Reject), "{}", e.name);
                assert!(
                    e.why.as_deref().is_some_and(|w| !w.trim().is_empty()),
                    "{} needs a why",
                    e.name
                );
                assert_eq!(e.identity.as_deref(), Some(SERVICES[0]), "{}", e.name);
            }
            _ => assert_eq!(e.expect, None, "{} is not a client", e.name),
        }
    }
    let clients: Vec<&str> = m
        .credentials
        .iter()
        .filter(|e| e.role == Role::Client)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(clients, SERVICES);
    let mut variants: Vec<&str> = m
        .credentials
        .iter()
        .filter(|e| e.role == Role::Variant)
        .map(|e| e.name.as_str())
        .collect();
    variants.sort_unstable();
    let mut want = VARIANTS;
    want.sort_unstable();
    assert_eq!(variants, want);
}

#[test]
fn init_with_intermediate_adds_the_missing_intermediate_variant() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = init(tmp.path(), &["--intermediate"]);
    assert_success(&out);
    let mut files = leaf_files("variants/missing-intermediate", false);
    files.extend(["ca/intermediate.crt", "ca/intermediate.key"].map(String::from));
    assert_files(tmp.path(), &files);

    let m = load(tmp.path());
    assert!(m.intermediate);
    let e = m
        .credentials
        .iter()
        .find(|e| e.role == Role::Variant && e.name == "missing-intermediate")
        .expect("missing-intermediate in the manifest");
    assert_eq!(e.expect, Some(Expect::Reject));
    assert!(e.why.as_deref().is_some_and(|w| !w.is_empty()));
    assert!(m.find(Role::IntermediateCa, "intermediate-ca").is_some());
}

#[test]
fn init_custom_flags_reach_manifest_and_certificates() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let out = init(
        dir,
        &[
            "--trust-domain",
            "example.org",
            "--namespace",
            "shop",
            "--service",
            "a",
            "--service",
            "b",
            "--server-name",
            "api.test",
            "--key-type",
            "ecdsa-p384",
            "--validity",
            "2d",
        ],
    );
    assert_success(&out);

    let m = load(dir);
    assert_eq!(m.trust_domain, "example.org");
    assert_eq!(m.namespace, "shop");
    assert_eq!(m.services, ["a", "b"]);
    assert_eq!(m.server_names, ["api.test"]);
    assert_eq!(m.key_type, KeyType::EcdsaP384);
    for s in ["a", "b"] {
        let id = format!("spiffe://example.org/ns/shop/sa/{s}");
        let e = m.client(s).unwrap_or_else(|| panic!("no client {s}"));
        assert_eq!(e.spiffe_id.as_deref(), Some(id.as_str()));
        assert_files(dir, &leaf_files(&format!("clients/{s}"), true));
    }
    assert!(
        !dir.join("clients/order-service").exists(),
        "defaults replaced"
    );

    let server = inspect_file(&dir.join("server/tls.crt")).expect("inspect server");
    let cert = &server.certificates[0];
    assert_eq!(cert.sans.dns, ["api.test"]);
    assert!(cert.sans.ip.is_empty(), "{:?}", cert.sans.ip);
    assert_eq!(
        cert.spiffe_id.as_deref(),
        Some("spiffe://example.org/ns/shop/sa/certshift-serve")
    );
    assert_eq!(cert.key.curve.as_deref(), Some("P-384"));

    for leaf in [
        "clients/a/tls.crt",
        "clients/b/tls.crt",
        "variants/revoked/tls.crt",
    ] {
        let report = inspect_file(&dir.join(leaf)).expect("inspect leaf");
        let c = &report.certificates[0];
        assert_eq!(c.key.curve.as_deref(), Some("P-384"), "{leaf}");
        let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).expect("RFC 3339 time");
        let lifetime = parse(&c.not_after) - parse(&c.not_before);
        // Backdated a few minutes for clock skew, never more than ten.
        let two_days = time::Duration::days(2);
        assert!(
            lifetime >= two_days && lifetime <= two_days + time::Duration::minutes(10),
            "{leaf}: lifetime {lifetime} is not about 2 days ({} .. {})",
            c.not_before,
            c.not_after
        );
    }
}

#[test]
fn init_refuses_a_non_empty_directory_and_touches_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let sentinel = dir.join("keep.txt");
    std::fs::write(&sentinel, "do not overwrite\n").expect("write sentinel");

    let out = init(dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("is not empty"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(
        err.contains(&dir.display().to_string()),
        "names the dir: {err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["keep.txt"], "nothing may be written when refusing");
    assert_eq!(
        std::fs::read_to_string(&sentinel).expect("sentinel"),
        "do not overwrite\n"
    );

    let out = init(dir, &["--force"]);
    assert_success(&out);
    load(dir);
    assert!(dir.join("clients/order-service/tls.crt").is_file());
}

#[test]
fn bad_options_exit_2_naming_the_flag_and_write_nothing() {
    let cases: [(&[&str], &str, &str); 4] = [
        (&["--service", "Bad_Name"], "--service", "Bad_Name"),
        (
            &["--trust-domain", "Bad Domain"],
            "--trust-domain",
            "Bad Domain",
        ),
        (&["--key-type", "dsa"], "--key-type", "dsa"),
        (&["--validity", "0s"], "--validity", "0s"),
    ];
    let tmp = tempfile::tempdir().expect("temp dir");
    for (args, flag, value) in cases {
        let dir = tmp.path().join("pki");
        let out = init(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let err = stderr(&out);
        assert!(err.contains(flag), "{args:?} must name {flag}: {err}");
        assert!(err.contains(value), "{args:?} must show {value:?}: {err}");
        assert!(!dir.exists(), "{args:?}: nothing may be written");
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}): {}", show(out)))
}

#[test]
fn inspect_json_reports_spiffe_id_usage_and_validity() {
    let pki = TestPki::default_flat();
    let e = pki.entry("order-service");
    let path = pki.file(&e.cert);
    let path = path.to_str().expect("utf-8 temp path");
    let v = json(&inspect(&[path, "--json"]));
    let files = v.as_array().expect("a JSON array");
    assert_eq!(files.len(), 1, "{v}");
    let report = &files[0];
    assert_eq!(report["file"], path);
    let certs = report["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 1, "a flat PKI leaf file holds one certificate");
    assert!(report["chain"].is_null(), "no chain verdict for one cert");
    let c = &certs[0];
    assert_eq!(c["spiffe_id"].as_str(), e.spiffe_id.as_deref());
    let eku = c["extended_key_usage"].as_array().expect("eku array");
    assert!(eku.iter().any(|u| u == "clientAuth"), "{eku:?}");
    assert_eq!(c["validity"]["state"], "valid");
    assert_eq!(c["sha256_fingerprint"].as_str(), Some(e.sha256.as_str()));
}

#[test]
fn inspect_json_checks_the_chain_of_an_intermediate_pki() {
    let pki = TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    });
    let e = pki.entry("order-service");
    let path = pki.file(&e.cert);
    let v = json(&inspect(&[path.to_str().expect("utf-8 path"), "--json"]));
    let report = &v[0];
    let certs = report["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 2, "leaf and intermediate: {v}");
    assert_eq!(report["chain"]["leaf_to_root"], true, "{v}");
    assert_eq!(certs[0]["spiffe_id"].as_str(), e.spiffe_id.as_deref());
    assert_eq!(certs[1]["is_ca"], true, "second is the intermediate: {v}");
}

#[test]
fn inspect_text_shows_the_spiffe_id() {
    let pki = TestPki::default_flat();
    let e = pki.entry("checkout-service");
    let id = e.spiffe_id.as_deref().expect("client has a SPIFFE ID");
    let out = inspect(&[pki.file(&e.cert).to_str().expect("utf-8 path")]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("spiffe id:") && l.contains(id)),
        "no `spiffe id:` line with {id}:\n{text}"
    );
}

#[test]
fn inspect_refuses_a_key_file_naming_it() {
    let pki = TestPki::default_flat();
    let key = pki.file(&pki.entry("order-service").key);
    let key = key.to_str().expect("utf-8 path");
    let out = inspect(&[key]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains(key), "stderr must name {key}: {err}");
    assert!(out.stdout.is_empty(), "{}", show(&out));
}

#[test]
fn inspect_reports_the_expired_variant_as_expired() {
    let pki = TestPki::default_flat();
    let path = pki.file(&pki.entry("expired").cert);
    let v = json(&inspect(&[path.to_str().expect("utf-8 path"), "--json"]));
    assert_eq!(
        v[0]["certificates"][0]["validity"]["state"], "expired",
        "{v}"
    );
    let text = inspect(&[path.to_str().expect("utf-8 path")]);
    assert_success(&text);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("EXPIRED"),
        "{}",
        show(&text)
    );
}

#[test]
fn force_over_an_earlier_pki_leaves_no_stale_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let status = common::certshift()
        .args(["pki", "init", "--intermediate", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(out.join("keep-me"), "not ours").unwrap();
    let status = common::certshift()
        .args(["pki", "init", "--force", "--service", "only-one", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !out.join("clients/order-service").exists(),
        "a dropped service's key must not survive --force"
    );
    assert!(
        !out.join("ca/intermediate.key").exists(),
        "the old intermediate key must not survive --force"
    );
    assert!(!out.join("variants/missing-intermediate").exists());
    for key in [
        "ca/ca.key",
        "clients/only-one/tls.key",
        "variants/expired/tls.key",
    ] {
        let mode = std::fs::metadata(out.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let m = certshift::pki::Manifest::load(&out).unwrap();
    assert_eq!(m.services, vec!["only-one".to_string()]);
    assert_eq!(
        std::fs::read_to_string(out.join("keep-me")).unwrap(),
        "not ours",
        "--force replaces the PKI, not the user's other files"
    );
}
