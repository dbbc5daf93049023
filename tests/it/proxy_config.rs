//! `certshift proxy --config FILE`: the examples in `configs/` run as they
//! are, flags override the file, bad files exit 2 naming the key and the
//! fix, and relative paths resolve against the file's directory.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use certshift::pki::{self, Expect, PkiOptions};
use certshift::proxy::{ConfigError, FileError, OnRotate, ProxyArgs, TlsMode};
use certshift::serve::Enforcement;
use certshift::tls::{Outcome, TlsVersion};
use common::*;
use tempfile::TempDir;

/// A directory holding a test PKI in `pki/`, the layout the examples expect
/// next to themselves.
struct Workdir {
    /// The PKI in `dir/pki`, for the helpers of `common`. Declared first:
    /// it is removed before its parent.
    pki: TestPki,
    dir: TempDir,
}

impl Workdir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki_dir = tempfile::Builder::new()
            .prefix("pki")
            .rand_bytes(0)
            .tempdir_in(dir.path())
            .expect("pki dir");
        let manifest = pki::init(pki_dir.path(), &PkiOptions::default(), false).expect("pki init");
        let pki = TestPki {
            dir: pki_dir,
            manifest,
        };
        Workdir { pki, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` in the work dir; returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The example files, `configs/proxy-*.toml`.
fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("proxy-") && name.ends_with(".toml")
        })
        .collect();
    v.sort();
    v
}

fn args(flags: &[&str]) -> ProxyArgs {
    ProxyArgs::from_flags(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_validates_binds_and_carries_traffic() {
    let names: Vec<String> = examples()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "proxy-chaos.toml",
        "proxy-rotation-under-load.toml",
        "proxy-sidecar-inbound.toml",
        "proxy-sidecar-outbound.toml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }

    for example in examples() {
        let name = example.file_name().unwrap().to_string_lossy().into_owned();
        let work = Workdir::new();
        // The example as it is, beside a PKI at ./pki, as its header says.
        let config = work.path().join(&name);
        std::fs::copy(&example, &config).unwrap();
        let inbound = name.contains("inbound");
        // Inbound forwards in plaintext to a local app: a permissive serve
        // answers plain HTTP.
        let mode = if inbound {
            Enforcement::Permissive
        } else {
            Enforcement::Strict
        };
        let serve = start_serve(&work.pki, mode).await;
        // Free ports instead of the example's fixed ones, so tests can run
        // side by side: flags overriding the file.
        let upstream = format!("--upstream={}", serve.addr);
        let flags = [
            "--config",
            config.to_str().unwrap(),
            "--listen=127.0.0.1:0",
            "--admin=off",
            &upstream,
        ];
        let args = args(&flags);
        let cfg = args
            .clone()
            .into_config()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // `pki = "./pki"` resolved against the file's directory.
        let client = cfg.client.as_ref().expect("identity from ./pki");
        assert!(client.cert.starts_with(work.path()), "{name}: {client:?}");
        assert!(client.cert.exists(), "{name}: {client:?}");

        match name.as_str() {
            "proxy-sidecar-outbound.toml" => {
                assert_eq!(
                    (cfg.listen_tls, cfg.upstream_tls),
                    (TlsMode::Off, TlsMode::Mtls)
                );
                assert!(cfg.upstream_spiffe_id.is_some());
            }
            "proxy-sidecar-inbound.toml" => {
                assert_eq!(
                    (cfg.listen_tls, cfg.upstream_tls),
                    (TlsMode::Mtls, TlsMode::Off)
                );
                let files = cfg.listen_files.as_ref().expect("downstream TLS files");
                assert!(files.cert.starts_with(work.path()) && files.cert.exists());
            }
            "proxy-rotation-under-load.toml" => {
                assert!(cfg.rotate_every.is_some() && cfg.rotate_jitter > Duration::ZERO);
                assert!(matches!(cfg.on_rotate, OnRotate::Drain(_)));
                assert!(cfg.rotate_ca.is_some(), "minting CA from ./pki");
            }
            "proxy-chaos.toml" => {
                assert!(cfg.plan.seed().is_some(), "chaos runs are reproducible");
                assert!(cfg.plan.needs().len() >= 5, "{}", cfg.plan.describe());
            }
            other => panic!("{other}: add what this example must configure"),
        }

        // Bind loads every credential the example names; then one
        // connection, whose verdict the plan fixes (chaos: seeded).
        let expect_ok = cfg.plan.pick(0).expected() == Expect::Accept;
        let proxy = start_proxy(args).await;
        let r = if inbound {
            let cert = work.pki.cert("checkout-service");
            probe_tls(&work.pki, proxy.addr, cert, TlsVersion::Tls13, "/healthz").await
        } else {
            probe_plain(proxy.addr, "/api/orders").await
        };
        let expected = Outcome::Http(if expect_ok { 200 } else { 502 });
        assert_eq!(r.outcome, expected, "{name}: {}", r.body_text());
        let t = proxy.stop().await.totals();
        assert_eq!(
            (t.connections, t.unexpected_reject, t.unexpected_accept),
            (1, 0, 0),
            "{name}"
        );
        serve.stop().await;
    }
}

/// `certshift proxy ARGS`, until its `presenting:` line.
fn spawn_proxy(args: &[String]) -> Running {
    let mut all = vec!["proxy".to_string()];
    all.extend(args.iter().cloned());
    spawn_certshift(&all, |l| l.starts_with("presenting:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flag_on_the_command_line_overrides_the_file() {
    let work = Workdir::new();
    let serve = start_serve(&work.pki, Enforcement::Strict).await;
    let config = work.write(
        "proxy.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"off\"\nupstream = \"{}\"\npki = \"pki\"\npresent = \"valid=1\"\n",
            serve.addr
        ),
    );
    let config = config.display().to_string();

    // The file alone: the identity's own certificate, accepted.
    let p = spawn_proxy(&["--config".into(), config.clone()]);
    assert!(
        p.line("presenting: ").starts_with("weights valid=1"),
        "{:?}",
        p.lines
    );
    assert_eq!(probe_plain(p.addr(), "/").await.outcome, Outcome::Http(200));
    drop(p);

    // The flag wins over the file's `present` (its pair): nothing presented,
    // and the strict service refuses the connection.
    let p = spawn_proxy(&[
        "--config".into(),
        config,
        "--present-sequence".into(),
        "none".into(),
    ]);
    assert_eq!(p.line("presenting: "), "always none");
    let r = probe_plain(p.addr(), "/").await;
    assert_eq!(r.outcome, Outcome::Http(502), "{}", r.body_text());
    assert!(
        r.body_text().contains("presented credential: none"),
        "{}",
        r.body_text()
    );
    drop(p);
    serve.stop().await;
}

#[test]
fn a_repeatable_flag_replaces_the_files_list() {
    let work = Workdir::new();
    let config = work.write(
        "proxy.toml",
        "upstream = \"127.0.0.1:9443\"\npki = \"pki\"\nlisten_tls = \"mtls\"\n\
         upstream_ca = [\"pki/ca/ca.crt\", \"pki/other-ca/ca.crt\"]\n\
         listen_client_ca = [\"pki/ca/ca.crt\", \"pki/other-ca/ca.crt\"]\n",
    );
    let flag_ca = work.path().join("pki/other-ca/ca.crt");
    let cfg = args(&[
        "--config",
        config.to_str().unwrap(),
        "--upstream-ca",
        flag_ca.to_str().unwrap(),
    ])
    .into_config()
    .unwrap();
    assert_eq!(
        cfg.upstream_cas,
        vec![flag_ca],
        "the flag's list, not appended"
    );
    // No flag for the other list: the file's, whole.
    let files = cfg.listen_files.unwrap();
    assert_eq!(
        files.client_cas,
        vec![
            work.path().join("pki/ca/ca.crt"),
            work.path().join("pki/other-ca/ca.crt")
        ]
    );
}

#[test]
fn relative_paths_resolve_against_the_files_directory() {
    let work = Workdir::new();
    let abs_ca = work.path().join("pki/ca/ca.crt");
    let abs_key = work.path().join("pki/ca/ca.key");
    let config = work.write(
        "conf/sub/proxy.toml",
        &format!(
            "upstream = \"127.0.0.1:9443\"\npki = \"../../pki\"\njson = \"out/summary.json\"\n\
             listen_tls = \"mtls\"\nlisten_crl = \"../../pki/ca/crl.pem\"\n\
             rotate_every = \"1m\"\nrotate_ca_cert = {abs_ca:?}\nrotate_ca_key = {abs_key:?}\n"
        ),
    );
    // The test's working directory is the crate, not the file's directory.
    assert_ne!(std::env::current_dir().unwrap(), config.parent().unwrap());
    let cfg = args(&["--config", config.to_str().unwrap()])
        .into_config()
        .unwrap();
    let here = work.path().join("conf/sub");
    assert_eq!(cfg.json, Some(here.join("out/summary.json")));
    let files = cfg.listen_files.unwrap();
    assert_eq!(files.crls, vec![here.join("../../pki/ca/crl.pem")]);
    assert!(files.crls[0].exists());
    // `pki` found the manifest there: the identity and the server files.
    assert!(cfg.client.unwrap().cert.exists());
    assert!(files.cert.starts_with(&here) && files.cert.exists());
    // Absolute paths are taken as they are.
    assert_eq!(cfg.rotate_ca, Some((abs_ca, abs_key)));
}

/// Runs the binary on a config file; (exit code, stderr).
fn run_with(config: &Path) -> (Option<i32>, String) {
    let out = certshift()
        .args(["proxy", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_exits_2_naming_it_and_the_valid_keys() {
    let work = Workdir::new();
    let config = work.write(
        "proxy.toml",
        "upstream = \"127.0.0.1:9443\"\nlisten_tsl = \"mtls\"\n",
    );
    let (code, err) = run_with(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("line 2, column 1"), "{err}");
    assert!(err.contains("unknown field `listen_tsl`"), "{err}");
    assert!(
        err.contains("`listen_tls`"),
        "the valid keys are listed: {err}"
    );
}

#[test]
fn a_bad_value_exits_2_naming_the_key_where_and_the_fix() {
    let work = Workdir::new();
    // (line 3 of the file, key, a piece of the fix)
    let cases = [
        (
            "listen_tls = \"mutual\"",
            "listen_tls",
            "use \"off\", \"tls\" or \"mtls\"",
        ),
        (
            "rotate_every = \"soon\"",
            "rotate_every",
            "write e.g. \"500ms\"",
        ),
        ("present = \"valid=x\"", "present", "NAME=WEIGHT"),
        ("on_rotate = \"drain\"", "on_rotate", "drain:DURATION"),
        ("upstream_ca = \"\"", "upstream_ca", "give a file"),
        ("client_cert = \"a.crt\"", "client_cert", "needs client_key"),
        // Found valid in the file, refused by the shared validation, and
        // still reported at the file's key.
        ("rotate_every = \"1ms\"", "rotate_every", "at least 10ms"),
        ("max_connections = 0", "max_connections", "give 1 to"),
        (
            "upstream_kx = \"x25519,ffdhe2048\"",
            "upstream_kx",
            "x25519, secp256r1, secp384r1, X25519MLKEM768",
        ),
    ];
    for (line, key, fix) in cases {
        let config = work.write(
            "proxy.toml",
            &format!("upstream = \"127.0.0.1:9443\"\npki = \"pki\"\n{line}\n"),
        );
        let (code, err) = run_with(&config);
        assert_eq!(code, Some(2), "{line}: {err}");
        assert!(
            err.contains(&format!("{}:3:", config.display())),
            "{line}: where: {err}"
        );
        assert!(err.contains(&format!(": {key}: ")), "{line}: key: {err}");
        assert!(err.contains(fix), "{line}: fix: {err}");

        // The library reports the same as a typed error.
        let e = args(&["--config", config.to_str().unwrap()])
            .into_config()
            .unwrap_err();
        assert!(
            matches!(&e, ConfigError::File(FileError::Value { key: k, line: 3, .. }) if k == key),
            "{line}: {e:?}"
        );
    }
}

#[test]
fn upstream_comes_from_the_file_or_a_flag_but_must_come() {
    let work = Workdir::new();
    let config = work.write("proxy.toml", "pki = \"pki\"\n");
    let (code, err) = run_with(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--upstream") && err.contains("upstream = "),
        "{err}"
    );
    // The flag alone suffices with a file.
    let cfg = args(&[
        "--config",
        config.to_str().unwrap(),
        "--upstream",
        "127.0.0.1:1",
    ])
    .into_config()
    .unwrap();
    assert_eq!(cfg.upstream, "127.0.0.1:1");
    // Without --config, --upstream is still required by clap.
    let out = certshift().args(["proxy"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));
}

#[test]
fn a_missing_file_exits_2_naming_it() {
    let work = Workdir::new();
    let (code, err) = run_with(&work.path().join("nope.toml"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read --config") && err.contains("nope.toml"),
        "{err}"
    );
}

#[test]
fn without_flags_the_file_sets_every_field_it_names() {
    let work = Workdir::new();
    let config = work.write(
        "proxy.toml",
        "listen = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9443\"\npki = \"pki\"\n\
         tls_versions = \"1.3\"\nidentity = \"payment-service\"\n\
         present_sequence = \"valid,none\"\nadmin = \"off\"\nno_watch = true\n\
         handshake_timeout = \"3s\"\nseed = \"18446744073709551615\"\n",
    );
    let cfg = args(&["--config", config.to_str().unwrap()])
        .into_config()
        .unwrap();
    assert_eq!(cfg.listen.port(), 0);
    assert_eq!(cfg.versions.to_string(), "1.3");
    assert!(cfg
        .client
        .unwrap()
        .cert
        .ends_with("clients/payment-service/tls.crt"));
    assert_eq!(cfg.plan.describe(), "sequence valid,none (cycled)");
    assert_eq!(cfg.admin, None);
    assert!(!cfg.watch);
    assert_eq!(cfg.handshake_timeout, Duration::from_secs(3));

    // A given flag keeps its value even when it equals the default.
    let cfg = args(&[
        "--config",
        config.to_str().unwrap(),
        "--handshake-timeout",
        "10s",
    ])
    .into_config()
    .unwrap();
    assert_eq!(cfg.handshake_timeout, Duration::from_secs(10));
}
