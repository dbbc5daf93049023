//! Real, independently written TLS servers the tests point certshift at:
//! nginx, haproxy and `openssl s_server` (.ci/run installs them), each on a
//! free loopback port with its own run directory (config, logs, temp
//! files), killed on drop.
//!
//! None of them can bind port 0 and report the port: take a free port from
//! the kernel, release it, start the server on it, and retry when another
//! process grabbed it first.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

/// A server process listening on `addr`; killed on drop.
pub struct Peer {
    child: Child,
    pub addr: SocketAddr,
    /// The server's own directory: config, logs, temp files.
    pub run: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    /// What the server logged so far (every `*.log` of its run directory).
    pub fn log(&self) -> String {
        logs(&self.run)
    }
}

fn logs(run: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            out += &format!("== {}\n", p.display());
            out += &std::fs::read_to_string(&p).unwrap_or_default();
        }
    }
    out
}

/// Start a server on a free port of 127.0.0.1. `command` gets the address
/// and a fresh run directory `BASE/NAME-PORT`, writes its config there and
/// returns the command line; stdout and stderr go to `out.log` there. The
/// server is up when a TCP connect succeeds while it runs: at most 5 s per
/// attempt, 5 attempts.
pub fn start_on_free_port(
    base: &Path,
    name: &str,
    mut command: impl FnMut(SocketAddr, &Path) -> Command,
) -> Peer {
    for _attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let run = base.join(format!("{name}-{port}"));
        std::fs::create_dir_all(&run).unwrap();
        let out = std::fs::File::create(run.join("out.log")).unwrap();
        let mut child = command(addr, &run)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({e}): is it installed?"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: port taken or bad config; maybe retry
            }
            // Still running after the connect: the listener is ours.
            if TcpStream::connect(addr).is_ok() && matches!(child.try_wait(), Ok(None)) {
                return Peer { child, addr, run };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = logs(&run);
        if !log.contains("in use") {
            panic!("{name} did not start on {addr}:\n{log}");
        }
    }
    panic!("{name} could not get a free port in 5 attempts");
}

/// An absolute path in the PKI, as a config file wants it.
pub fn at(pki: &Path, rel: &str) -> String {
    pki.join(rel).display().to_string()
}

/// nginx with the PKI's server credential over TLS 1.2 and 1.3, answering
/// 200 `nginx ok SERIAL`; `client` holds the server block's directives
/// about client certificates and sessions.
pub fn start_nginx(pki: &Path, client: &str) -> Peer {
    assert!(
        Path::new(NGINX).exists(),
        "nginx is required at {NGINX} (.ci/run installs it: apt-get install nginx)"
    );
    start_on_free_port(pki, "nginx", |addr, run| {
        std::fs::create_dir_all(run.join("tmp")).unwrap();
        let r = |rel: &str| run.join(rel).display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
               server {{\n    listen {addr} ssl;\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n    {client}\n\
                 location / {{ return 200 \"nginx ok $ssl_client_serial\\n\"; }}\n  }}\n}}\n",
            pid = r("nginx.pid"),
            err = r("error.log"),
            tmp = r("tmp"),
            cert = at(pki, "server/tls.crt"),
            key = at(pki, "server/tls.key"),
        );
        std::fs::write(run.join("nginx.conf"), conf).unwrap();
        let mut c = Command::new(NGINX);
        c.args(["-p", &r(""), "-c", &r("nginx.conf")]);
        c
    })
}

/// nginx's strict client verification against the PKI: its CA, its CRL,
/// chains up to `depth` certificates above the leaf.
pub fn nginx_verify_on(pki: &Path, depth: u8) -> String {
    format!(
        "ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_verify_depth {depth};\n    ssl_crl {};",
        at(pki, "ca/ca.crt"),
        at(pki, "ca/crl.pem")
    )
}

/// haproxy terminating TLS with the PKI's server credential and answering
/// 200 `ok` itself (`http-request return`, haproxy ≥ 2.2); `bind` is the
/// rest of the bind line, e.g. `ca-file CA verify required crl-file CRL`.
pub fn start_haproxy(pki: &Path, bind: &str) -> Peer {
    assert!(
        super::have("haproxy"),
        "haproxy is required (.ci/run installs it: apt-get install haproxy)"
    );
    start_on_free_port(pki, "haproxy", |addr, run| {
        // haproxy takes the chain and its key in one file.
        let pem = std::fs::read_to_string(pki.join("server/tls.crt")).unwrap()
            + &std::fs::read_to_string(pki.join("server/tls.key")).unwrap();
        let crt = run.join("server.pem");
        std::fs::write(&crt, pem).unwrap();
        let cfg = format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 5s\n  timeout server 5s\n\
             frontend mtls\n  bind {addr} ssl crt {crt} {bind}\n  http-request return status 200 content-type text/plain string ok\n",
            crt = crt.display(),
        );
        let cfg_path = run.join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut c = Command::new("haproxy");
        c.arg("-db").arg("-f").arg(cfg_path);
        c
    })
}

/// `openssl s_server -www` (any request gets 200 and an HTML status page)
/// with the PKI's server credential and the chain above its leaf; `verify`
/// are the client-verification options, paths relative to the PKI (e.g.
/// `-Verify 1 -CAfile ca/ca.crt`). It serves one connection at a time.
pub fn start_s_server(pki: &Path, verify: &[&str]) -> Peer {
    start_on_free_port(pki, "s_server", |addr, run| {
        let full = std::fs::read_to_string(pki.join("server/tls.crt")).unwrap();
        let mut c = Command::new("openssl");
        c.current_dir(pki).args([
            "s_server",
            "-accept",
            &addr.to_string(),
            "-cert",
            "server/tls.crt",
            "-key",
            "server/tls.key",
            "-www",
        ]);
        // -cert reads the leaf only; the rest of the file is its chain.
        if let Some((i, _)) = full.match_indices("-----BEGIN CERTIFICATE-----").nth(1) {
            let chain = run.join("chain.pem");
            std::fs::write(&chain, &full[i..]).unwrap();
            c.arg("-cert_chain").arg(chain);
        }
        c.args(verify);
        c
    })
}
