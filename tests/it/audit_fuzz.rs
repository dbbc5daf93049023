//! `certshift audit --fuzz N`: random DER mutations of the identity against
//! real services. `serve` (rustls + webpki) must never be flagged; nginx
//! (OpenSSL) completes and every case is counted; a deliberately broken
//! peer that drops the connection without an alert on chosen certificates
//! is flagged for exactly those, and each flagged case is written out as a
//! PEM chain with a curl command.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use certshift::audit::fuzz::{self, Class, FuzzReport, Settings};
use certshift::serve::{Enforcement, ServeArgs};
use common::peers::{nginx_verify_on, start_nginx};
use common::*;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn fuzz_run(pki: &TestPki, target: &str, n: &str, out: &std::path::Path) -> FuzzReport {
    let dir = pki.path().to_str().unwrap();
    let a = audit_args(&[
        "--target",
        target,
        "--pki",
        dir,
        "--fuzz",
        n,
        "--seed",
        "20261201",
        "--fuzz-out",
        out.to_str().unwrap(),
        "--timeout",
        "3s",
    ]);
    let settings = Settings::from_args(&a);
    let r = fuzz::run(&a, &settings).await.expect("fuzz runs");
    println!("{}", fuzz::report::table(&r));
    r
}

fn total(r: &FuzzReport) -> usize {
    r.targets[0].counts.iter().map(|c| c.count).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_strict_survives_200_cases_and_nothing_is_flagged() {
    let pki = TestPki::default_flat();
    let s = start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        mode: Enforcement::Strict,
        ..serve_args()
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let target = format!("https://{}/", s.addr);
    let r = fuzz_run(&pki, &target, "200", out.path()).await;
    let t = &r.targets[0];
    assert!(t.sanity_failed.is_none(), "{:?}", t.sanity_failed);
    assert_eq!(total(&r), 200, "every case counted once");
    assert_eq!(t.cases.len(), 200);
    assert_eq!(r.flagged, 0, "serve was flagged: {:?}", t.counts);
    assert!(t.still_answering);
    assert!(r.passed);
    // serve refuses every mutated certificate it cannot verify with an
    // alert; an accepted case is one whose edit webpki does not see (e.g. a
    // non-critical extension's value) — never closed, reset or timed out.
    for c in &t.cases {
        assert!(
            matches!(
                c.class,
                Class::RefusedAlert { .. } | Class::Accepted { .. } | Class::RefusedHttp { .. }
            ),
            "case {} ({}): {}",
            c.case,
            c.description,
            c.class
        );
    }
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing flagged, nothing written"
    );
    // The same run from the binary: exit 0, the seed printed to repeat it.
    let dir = pki.path().to_str().unwrap().to_string();
    let outdir = out.path().to_str().unwrap().to_string();
    let o = certshift_output(&[
        "audit",
        "--target",
        &target,
        "--pki",
        &dir,
        "--fuzz",
        "200",
        "--fuzz-out",
        &outdir,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("--seed "), "{stdout}");
    assert!(stdout.contains("fuzz PASS"), "{stdout}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_completes_200_cases_and_every_case_is_counted() {
    let pki = TestPki::default_flat();
    let nginx = start_nginx(pki.path(), &nginx_verify_on(pki.path(), 2));
    let out = tempfile::tempdir().unwrap();
    let r = fuzz_run(&pki, &nginx.url(), "200", out.path()).await;
    let t = &r.targets[0];
    assert!(t.sanity_failed.is_none(), "{:?}", t.sanity_failed);
    assert_eq!(total(&r), 200);
    assert!(
        t.still_answering,
        "nginx stopped answering:\n{}",
        nginx.log()
    );
    // nginx (OpenSSL) refuses a certificate it cannot parse or verify with
    // an alert over TLS 1.3 or an HTTP 400 ("The SSL certificate error")
    // after the handshake: never a silent close, reset or hang.
    assert_eq!(r.flagged, 0, "{:?}", t.counts);
    let refused: usize = t
        .cases
        .iter()
        .filter(|c| {
            matches!(
                c.class,
                Class::RefusedAlert { .. } | Class::RefusedHttp { .. }
            )
        })
        .count();
    assert!(refused > 100, "{:?}", t.counts);
}

/// A TLS server that completes every handshake (any certificate, any
/// signature) and then: the valid identity gets 200; another leaf whose
/// TBSCertificate has an odd length (a property of the case, unlike the
/// whole DER: ECDSA signatures vary in length) gets its TCP connection
/// closed without an alert; any other leaf gets 403.
struct Broken {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Broken {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct AcceptAnything;

impl ClientCertVerifier for AcceptAnything {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        certshift::creds::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The broken peer's chosen property; a leaf that does not split is odd.
fn odd_tbs(leaf: &[u8]) -> bool {
    certshift::pki::split_certificate(leaf).map_or(true, |p| p.tbs.len() % 2 == 1)
}

async fn start_broken(pki: &TestPki, identity: CertificateDer<'static>) -> Broken {
    let chain = certshift::creds::load_chain(&pki.file("server/tls.crt")).unwrap();
    let key = certshift::creds::load_key(&pki.file("server/tls.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(certshift::creds::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(AcceptAnything))
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let identity = identity.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let leaf = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().cloned());
                let status = match leaf {
                    Some(l) if l == identity => "200 OK",
                    Some(l) if odd_tbs(&l) => {
                        // Close the TCP connection under TLS: no alert, no
                        // close_notify, no answer. FIN first, then drain what
                        // the client sent, so the kernel sends no RST.
                        let (mut tcp, _) = tls.into_inner();
                        let _ = tcp.shutdown().await;
                        let mut sink = Vec::new();
                        let drain = tcp.read_to_end(&mut sink);
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
                        return;
                    }
                    _ => "403 Forbidden",
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Broken { addr, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_without_an_alert_is_flagged_and_the_cases_are_written_out() {
    let pki = TestPki::default_flat();
    let service = pki.manifest.services[0].clone();
    let e = pki.entry(&service);
    let identity = CertificateDer::from_pem_file(pki.file(&e.cert)).unwrap();
    let broken = start_broken(&pki, identity.clone()).await;
    let out = tempfile::tempdir().unwrap();
    let target = format!("https://{}/", broken.addr);
    let r = fuzz_run(&pki, &target, "40", out.path()).await;
    let t = &r.targets[0];
    assert!(t.sanity_failed.is_none(), "{:?}", t.sanity_failed);
    assert_eq!(total(&r), 40);
    assert!(!r.passed);
    assert!(t.still_answering, "the broken peer never stops answering");

    let flagged: BTreeSet<usize> = t
        .cases
        .iter()
        .filter(|c| c.flagged)
        .map(|c| c.case)
        .collect();
    assert!(!flagged.is_empty(), "{:?}", t.counts);
    assert_eq!(r.flagged, flagged.len());
    let dir = out.path().join(format!("127.0.0.1_{}", broken.addr.port()));
    let readme = std::fs::read_to_string(dir.join("README")).unwrap();
    for c in &t.cases {
        let pem = dir.join(format!("case-{}.pem", c.case));
        if c.flagged {
            assert_eq!(c.class, Class::ClosedWithoutAlert, "case {}", c.case);
            assert_eq!(c.pem.as_deref(), Some(pem.as_path()));
            // The chain as presented: PEM CERTIFICATE blocks, the leaf the
            // one the peer dropped (odd length), not the identity.
            let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(&pem)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!chain.is_empty());
            assert!(odd_tbs(&chain[0]), "case {}", c.case);
            assert_ne!(chain[0], identity);
            assert!(
                readme.contains(&format!("--cert {}", pem.display())) && readme.contains("curl "),
                "{readme}"
            );
        } else {
            assert_eq!(
                c.class,
                Class::RefusedHttp { status: 403 },
                "case {}",
                c.case
            );
            assert!(!pem.exists());
        }
    }

    // The binary: exit 1 on a flagged case, and the JSON says which.
    let json = out.path().join("fuzz.json");
    let (dir_arg, json_arg) = (
        pki.path().to_str().unwrap().to_string(),
        json.to_str().unwrap().to_string(),
    );
    let outdir = out.path().join("cli").to_str().unwrap().to_string();
    let o = certshift_output(&[
        "audit",
        "--target",
        &target,
        "--pki",
        &dir_arg,
        "--fuzz",
        "40",
        "--seed",
        "20261201",
        "--fuzz-out",
        &outdir,
        "--json",
        &json_arg,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("closed without alert"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["certshift_fuzz"], 1);
    assert_eq!(v["seed"], 20261201);
    assert_eq!(
        v["flagged"].as_u64(),
        Some(flagged.len() as u64),
        "same seed, same cases"
    );
    let json_flagged: BTreeSet<usize> = v["targets"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["flagged"] == true)
        .map(|c| c["case"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(json_flagged, flagged);
}

#[test]
fn fuzz_with_junit_is_a_usage_error() {
    let o = certshift()
        .args(["audit", "--target", "https://127.0.0.1:1/", "--insecure"])
        .args(["--fuzz", "5", "--junit", "/nonexistent/x.xml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--json"));
}
