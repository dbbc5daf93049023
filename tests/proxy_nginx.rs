//! The proxy against a real, independently written mTLS server: nginx from
//! Debian with `ssl_verify_client on` and the PKI's CRL (.ci/run installs
//! it). nginx finishes the handshake and answers 400 for a refused
//! certificate; it checks chains, validity, revocation and purpose, but not
//! the SPIFFE identity nor CA:TRUE on a leaf, and the proxy must show
//! exactly those as enforcement holes.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certshift::pki::PkiOptions;
use certshift::plan::Presented;
use certshift::tls::{Outcome, TlsVersion, TlsVersions};
use common::*;

const NGINX: &str = "/usr/sbin/nginx";

struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(pki: &Path) -> Nginx {
    assert!(
        Path::new(NGINX).exists(),
        "nginx is required at {NGINX} (.ci/run installs it: apt-get install nginx)"
    );
    // nginx cannot bind port 0 and report it: take a free port from the
    // kernel, release it, and retry if another process grabs it first.
    for _attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let run = pki.join(format!("nginx-{port}"));
        std::fs::create_dir_all(run.join("tmp")).unwrap();
        let p = |rel: &str| pki.join(rel).display().to_string();
        let r = |rel: &str| run.join(rel).display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
               server {{\n    listen {addr} ssl;\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n    ssl_crl {crl};\n\
                 location / {{ return 200 \"nginx ok $ssl_client_serial\\n\"; }}\n  }}\n}}\n",
            pid = r("nginx.pid"),
            err = r("error.log"),
            tmp = r("tmp"),
            cert = p("server/tls.crt"),
            key = p("server/tls.key"),
            ca = p("ca/ca.crt"),
            crl = p("ca/crl.pem"),
        );
        std::fs::write(run.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(NGINX)
            .args(["-p", &r(""), "-c", &r("nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: port taken or bad config; maybe retry
            }
            if TcpStream::connect(addr).is_ok() {
                return Nginx { child, addr };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(run.join("error.log")).unwrap_or_default();
        if !log.contains("Address already in use") {
            panic!("nginx did not start:\n{log}");
        }
    }
    panic!("nginx could not get a free port in 5 attempts");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_refusals_are_counted_and_its_identity_holes_show_as_unexpected_accepts() {
    let pki = TestPki::new(PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    });
    let nginx = start_nginx(pki.path());
    for version in TlsVersion::ALL {
        let mut args = proxy_args(&pki, nginx.addr);
        args.present_sequence = Some(
            Presented::all()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
        );
        args.tls_versions = TlsVersions::only(version);
        let proxy = start_proxy(args).await;
        for p in Presented::all() {
            let r = probe_plain(proxy.addr, "/").await;
            match p {
                Presented::None => {
                    assert_eq!(r.outcome, Outcome::Http(400), "{p} over TLS {version}")
                }
                _ => assert!(
                    matches!(r.outcome, Outcome::Http(200 | 400)),
                    "{p} over TLS {version}: {}",
                    r.outcome
                ),
            }
        }
        let snap = proxy.stop().await;
        let holes: BTreeSet<&str> = snap
            .variants()
            .filter(|(_, v)| v.unexpected_accept > 0)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            holes,
            BTreeSet::from(["ca-as-leaf", "no-spiffe-id", "wrong-trust-domain"]),
            "over TLS {version}, nginx enforces chain, validity, CRL and purpose but not identity"
        );
        for refused in [
            "expired",
            "not-yet-valid",
            "untrusted-ca",
            "self-signed",
            "revoked",
            "wrong-eku",
            "missing-intermediate",
            "none",
        ] {
            let v = snap.variant(refused).unwrap();
            assert_eq!(
                v.outcomes.get("http:400"),
                Some(&1),
                "{refused} over TLS {version}: {:?}",
                v.outcomes
            );
        }
        assert_eq!(
            snap.variant("valid").unwrap().outcomes.get("http:200"),
            Some(&1)
        );
        assert_eq!(snap.totals().unexpected_reject, 0);
    }
}
