//! Hot reload of `serve`'s TLS material: good files are picked up by the
//! directory watch (including a Kubernetes-style `..data` symlink swap);
//! bad files never replace what is serving.

use crate::common;

use std::path::Path;
use std::time::Duration;

use certshift::creds::CredError;
use certshift::serve::{Enforcement, ServeArgs};
use certshift::tls::{Outcome, TlsVersion};
use common::*;

async fn server_cert_seen(pki: &TestPki, addr: std::net::SocketAddr) -> String {
    let r = probe_tls(pki, addr, pki.cert("order-service"), TlsVersion::Tls13, "/").await;
    assert_eq!(r.outcome, Outcome::Http(200), "service must keep answering");
    sha256(r.server_cert.as_deref().expect("server certificate"))
}

/// Overwrite in place (not rename): what a careless `cp` or editor does.
fn overwrite(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_keep_the_old_credential_and_a_good_one_is_picked_up() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let original = server_cert_seen(&pki, serve.addr).await;
    assert_eq!(
        original,
        pki.manifest
            .find(certshift::pki::Role::Server, "server")
            .unwrap()
            .sha256
    );
    let (cert, key) = (pki.file("server/tls.crt"), pki.file("server/tls.key"));
    let good_cert = std::fs::read(&cert).unwrap();

    // Garbage over the certificate: the watcher's reload is refused.
    overwrite(&cert, b"this is not a certificate\n");
    let h = serve.handle.clone();
    assert!(
        wait_until(Duration::from_secs(5), || h.reload_status().failures >= 1).await,
        "watcher must try the garbage file"
    );
    assert_eq!(server_cert_seen(&pki, serve.addr).await, original);
    let failures = serve.handle.reload_status().failures;
    assert!(matches!(
        serve.handle.reload(),
        Err(CredError::NoCertificate { .. })
    ));
    assert_eq!(
        serve.handle.reload_status().failures,
        failures + 1,
        "each refused reload is counted"
    );
    assert!(
        serve
            .handle
            .reload_status()
            .last_error
            .unwrap()
            .contains("tls.crt"),
        "the error names the file"
    );

    // A truncated certificate (half-written file).
    overwrite(&cert, &good_cert[..good_cert.len() / 2]);
    assert!(matches!(
        serve.handle.reload(),
        Err(CredError::BadCertificate { .. })
    ));
    assert_eq!(server_cert_seen(&pki, serve.addr).await, original);

    // A key that belongs to another certificate.
    overwrite(&cert, &good_cert);
    let (_, other_key) = mint_server(&pki);
    let good_key = std::fs::read(&key).unwrap();
    overwrite(&key, other_key.as_bytes());
    assert!(matches!(
        serve.handle.reload(),
        Err(CredError::KeyMismatch { .. })
    ));
    assert_eq!(server_cert_seen(&pki, serve.addr).await, original);
    overwrite(&key, &good_key);

    // Now a genuinely new credential, written atomically: it serves.
    let reloads = serve.handle.reload_status().reloads;
    let (new_cert, new_key) = mint_server(&pki);
    let tmp = pki.file("server/new.tmp");
    std::fs::write(&tmp, &new_key).unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    std::fs::write(&tmp, &new_cert).unwrap();
    std::fs::rename(&tmp, &cert).unwrap();
    let h = serve.handle.clone();
    assert!(
        wait_until(Duration::from_secs(5), || h.reload_status().reloads
            > reloads)
        .await,
        "watcher must publish the new credential"
    );
    let now_serving = server_cert_seen(&pki, serve.addr).await;
    assert_ne!(now_serving, original);
    let expected = certshift::creds::load_chain(&cert).unwrap();
    assert_eq!(now_serving, sha256(&expected[0]));
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secret_symlink_swap_is_picked_up() {
    // A mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>;
    // kubelet updates by swapping the ..data link atomically.
    let pki = TestPki::default_flat();
    let mount = pki.file("mount");
    let v1 = mount.join("..2026_11_24_v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::copy(pki.file("server/tls.crt"), v1.join("tls.crt")).unwrap();
    std::fs::copy(pki.file("server/tls.key"), v1.join("tls.key")).unwrap();
    std::os::unix::fs::symlink("..2026_11_24_v1", mount.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), mount.join(f)).unwrap();
    }
    let serve = start_serve_with(ServeArgs {
        cert: Some(mount.join("tls.crt")),
        key: Some(mount.join("tls.key")),
        pki: Some(pki.path().to_path_buf()),
        ..serve_args()
    })
    .await;
    let original = server_cert_seen(&pki, serve.addr).await;

    let v2 = mount.join("..2026_11_24_v2");
    std::fs::create_dir_all(&v2).unwrap();
    let (cert, key) = mint_server(&pki);
    std::fs::write(v2.join("tls.crt"), &cert).unwrap();
    std::fs::write(v2.join("tls.key"), &key).unwrap();
    std::os::unix::fs::symlink("..2026_11_24_v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();

    let h = serve.handle.clone();
    assert!(
        wait_until(Duration::from_secs(5), || h.reload_status().reloads >= 1).await,
        "the ..data swap must trigger a reload"
    );
    let now = server_cert_seen(&pki, serve.addr).await;
    assert_ne!(now, original);
    assert_eq!(
        now,
        sha256(&certshift::creds::load_chain(&v2.join("tls.crt")).unwrap()[0])
    );
    assert_eq!(
        serve.handle.reload_status().failures,
        0,
        "an atomic swap is never seen half-done"
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_reload_revokes_a_client_while_serving() {
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    let r = probe_tls(
        &pki,
        serve.addr,
        pki.cert("payment-service"),
        TlsVersion::Tls13,
        "/",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Http(200));
    // Re-issue the CRL with payment-service's serial added.
    let ca = certshift::pki::Authority::from_pem(
        &std::fs::read_to_string(pki.file("ca/ca.crt")).unwrap(),
        &std::fs::read_to_string(pki.file("ca/ca.key")).unwrap(),
    )
    .unwrap();
    let serials: Vec<rcgen::SerialNumber> = ["revoked", "payment-service"]
        .iter()
        .map(|n| certshift::pki::serial_number(&pki.entry(n).serial).unwrap())
        .collect();
    let crl = ca
        .crl(
            &serials,
            time::OffsetDateTime::now_utc(),
            Duration::from_secs(86400),
        )
        .unwrap();
    let tmp = pki.file("ca/crl.tmp");
    std::fs::write(&tmp, crl).unwrap();
    std::fs::rename(&tmp, pki.file("ca/crl.pem")).unwrap();
    let h = serve.handle.clone();
    assert!(wait_until(Duration::from_secs(5), || h.reload_status().reloads >= 1).await);
    for version in TlsVersion::ALL {
        let r = probe_tls(&pki, serve.addr, pki.cert("payment-service"), version, "/").await;
        assert_eq!(
            r.outcome,
            Outcome::Alert("certificate_revoked".into()),
            "TLS {version}"
        );
        let r = probe_tls(&pki, serve.addr, pki.cert("order-service"), version, "/").await;
        assert_eq!(r.outcome, Outcome::Http(200));
    }
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_file_changes_are_picked_up_and_a_bad_policy_keeps_the_old() {
    let pki = TestPki::default_flat();
    let policy = pki.file("policy.toml");
    let allow = |principal: &str| {
        format!("[[rules]]\npaths = [\"/api/*\"]\nprincipals = [\"cluster.local/ns/production/sa/{principal}\"]\n")
    };
    std::fs::write(&policy, allow("order-service")).unwrap();
    let serve = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        policy: Some(policy.clone()),
        ..serve_args()
    })
    .await;
    let status = |name: &'static str| {
        let (pki, addr) = (&pki, serve.addr);
        async move {
            probe_tls(pki, addr, pki.cert(name), TlsVersion::Tls13, "/api/x")
                .await
                .outcome
        }
    };
    assert_eq!(status("order-service").await, Outcome::Http(200));
    assert_eq!(status("payment-service").await, Outcome::Http(403));

    let tmp = pki.file("policy.tmp");
    std::fs::write(&tmp, allow("payment-service")).unwrap();
    std::fs::rename(&tmp, &policy).unwrap();
    let h = serve.handle.clone();
    assert!(
        wait_until(Duration::from_secs(5), || h.policy_reload_status().reloads
            >= 1)
        .await,
        "policy change must be picked up"
    );
    assert_eq!(status("payment-service").await, Outcome::Http(200));
    assert_eq!(status("order-service").await, Outcome::Http(403));

    // A typo keeps the last good policy.
    overwrite(&policy, b"[[rules]]\npath = [\"/api/*\"]\n");
    assert!(
        wait_until(Duration::from_secs(5), || h.policy_reload_status().failures
            >= 1)
        .await
    );
    assert!(h
        .policy_reload_status()
        .last_error
        .unwrap()
        .contains("path"));
    assert_eq!(status("payment-service").await, Outcome::Http(200));
    assert_eq!(
        h.reload_status().failures,
        0,
        "a policy error is not a TLS error"
    );
    serve.stop().await;
}
