//! Shared helpers for integration tests: a PKI generated per test with the
//! project's own `pki` module, `serve` started in-process on 127.0.0.1:0,
//! and probes that present a manifest credential. `own_ca`: CAs made with
//! openssl, as a user's own; `peers`: nginx, haproxy and `openssl s_server`
//! on loopback.
#![allow(dead_code)]

pub mod own_ca;
pub mod peers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certshift::creds;
use certshift::pki::{self, Entry, Manifest, PkiOptions};
use certshift::probe::{self, Probe, ProbeResult};
use certshift::serve::{Enforcement, ServeArgs, Service, ServiceHandle};
use certshift::tls::{client_config, ClientCert, TlsVersion, TlsVersions};
use rustls_pki_types::ServerName;
use tempfile::TempDir;

pub struct TestPki {
    pub dir: TempDir,
    pub manifest: Manifest,
}

impl TestPki {
    pub fn new(opts: PkiOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifest = pki::init(dir.path(), &opts, false).expect("pki init");
        TestPki { dir, manifest }
    }

    pub fn default_flat() -> Self {
        Self::new(PkiOptions::default())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The client credential named `name` (a service or a variant).
    pub fn entry(&self, name: &str) -> &Entry {
        self.manifest
            .clients()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no client credential {name}"))
    }

    pub fn cert(&self, name: &str) -> ClientCert {
        let e = self.entry(name);
        ClientCert::Always(
            creds::load_certified_key(&self.file(&e.cert), &self.file(&e.key))
                .expect("load client cert"),
        )
    }
}

pub struct RunningServe {
    pub addr: SocketAddr,
    pub handle: ServiceHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServe {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// `serve` in-process on 127.0.0.1:0 with the PKI and `mode`.
pub async fn start_serve(pki: &TestPki, mode: Enforcement) -> RunningServe {
    start_serve_with(ServeArgs {
        pki: Some(pki.path().to_path_buf()),
        mode,
        ..serve_args()
    })
    .await
}

pub fn serve_args() -> ServeArgs {
    ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        handshake_timeout: Duration::from_secs(5),
        ..ServeArgs::default()
    }
}

pub async fn start_serve_with(args: ServeArgs) -> RunningServe {
    let service = Service::bind(args.into_config().expect("serve config"))
        .await
        .expect("serve bind");
    let addr = service.local_addr();
    let handle = service.handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async { drop(rx.await) }, Duration::from_secs(2)));
    RunningServe {
        addr,
        handle,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Present `cert` over `version` and GET `path`.
pub async fn probe_tls(
    pki: &TestPki,
    addr: SocketAddr,
    cert: ClientCert,
    version: TlsVersion,
    path: &str,
) -> ProbeResult {
    let roots = creds::load_roots(&[pki.file("ca/ca.crt")]).expect("roots");
    let config = client_config(roots, cert, &TlsVersions::only(version)).expect("client config");
    let name = ServerName::try_from("localhost").expect("server name");
    let p = Probe::new(addr, Some((Arc::new(config), name))).path(path);
    probe::run(&p).await
}

pub async fn probe_plain(addr: SocketAddr, path: &str) -> ProbeResult {
    probe::run(&Probe::new(addr, None).path(path)).await
}

/// The JSON echo of an accepted request.
pub fn echo(r: &ProbeResult) -> serde_json::Value {
    serde_json::from_slice(r.body.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("echo body is not JSON ({e}): {:?}", r.body_text()))
}

/// Parse an audit command line the way the binary does.
pub fn audit_args(extra: &[&str]) -> certshift::audit::AuditArgs {
    use clap::Parser;
    let mut argv = vec!["certshift", "audit"];
    argv.extend_from_slice(extra);
    match certshift::cli::Cli::try_parse_from(argv)
        .expect("audit flags parse")
        .command
    {
        certshift::cli::Command::Audit(a) => *a,
        other => panic!("parsed as {other:?}"),
    }
}

/// Run the certshift binary.
pub fn certshift() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_certshift"))
}

/// `certshift ARGS` to completion from async code (on a blocking thread,
/// so an in-process server on the test's runtime keeps answering).
pub async fn certshift_output(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || certshift().args(args).output().expect("run certshift"))
        .await
        .expect("certshift thread")
}

/// `curl ARGS` with a 10 s limit: (body, HTTP status code).
pub fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_string(), code.to_string())
}

pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
        || std::process::Command::new(tool)
            .arg("version")
            .output()
            .is_ok()
}

/// The PKI's own CA (`ca/ca.crt`, `ca/ca.key`), to mint in memory.
pub fn authority(pki: &TestPki) -> certshift::pki::Authority {
    certshift::pki::Authority::from_pem(
        &std::fs::read_to_string(pki.file("ca/ca.crt")).unwrap(),
        &std::fs::read_to_string(pki.file("ca/ca.key")).unwrap(),
    )
    .expect("load CA")
}

/// A fresh server credential (new key, new serial) from the PKI's own CA,
/// as PEM (chain, key).
pub fn mint_server(pki: &TestPki) -> (String, String) {
    use certshift::pki::{pem_cert, LeafSpec, Usage};
    let ca = authority(pki);
    let mut spec = LeafSpec::new(
        "certshift-serve",
        Usage::Server,
        time::OffsetDateTime::now_utc(),
        Duration::from_secs(86400),
    );
    spec.names = pki.manifest.server_names.clone();
    let issued = ca
        .issue(&spec, pki.manifest.key_type)
        .expect("issue server leaf");
    (pem_cert(&issued.cert), certshift::pki::key_pem(&issued.key))
}

/// A server certificate of the PKI's CA that expired yesterday, as PEM
/// (chain, key).
pub fn expired_server(pki: &TestPki) -> (String, String) {
    use certshift::pki::{key_pem, pem_cert, LeafSpec, Usage};
    let ca = authority(pki);
    let now = time::OffsetDateTime::now_utc();
    let mut spec = LeafSpec::new(
        "certshift-serve",
        Usage::Server,
        now - time::Duration::days(2),
        Duration::from_secs(86_400),
    );
    spec.names = pki.manifest.server_names.clone();
    let issued = ca.issue(&spec, pki.manifest.key_type).unwrap();
    (pem_cert(&issued.cert), key_pem(&issued.key))
}

/// The first bytes of a TLS ClientHello record; a slow peer sends them one
/// at a time and never finishes.
pub const HELLO_START: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// `n` peers trickling a ClientHello to `addr`, a byte every 100 ms, never
/// finishing: only an overall handshake deadline closes them. Whether each
/// was closed within 5 s.
pub async fn slow_hellos(addr: std::net::SocketAddr, n: usize) -> Vec<bool> {
    let peers: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                trickle(
                    s,
                    HELLO_START,
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                )
                .await
            })
        })
        .collect();
    let mut closed = Vec::with_capacity(n);
    for p in peers {
        closed.push(p.await.unwrap());
    }
    closed
}

/// The value of the sample of `family` carrying `label` (or the first one)
/// in a Prometheus text exposition, read with a real exposition parser.
pub fn metric(text: &str, family: &str, label: Option<(&str, &str)>) -> f64 {
    use openmetrics_parser::prometheus::parse_prometheus;
    use openmetrics_parser::PrometheusValue;
    let parsed = parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let f = parsed
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no {family} in\n{text}"));
    let names = f.get_label_names().to_vec();
    let s = f
        .iter_samples()
        .find(|s| {
            label.is_none_or(|(k, v)| {
                names.iter().any(|n| n == k)
                    && s.get_labelset().unwrap().get_label_value(k) == Some(v)
            })
        })
        .unwrap_or_else(|| panic!("no {family} {label:?} in\n{text}"));
    match &s.value {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Gauge(g) => g.as_f64(),
        v => panic!("{family}: {v:?}"),
    }
}

/// A peer that sends `bytes` one every `every`, then waits; ends when the
/// server closes. Returns whether the server closed it within `limit`.
pub async fn trickle(
    mut s: tokio::net::TcpStream,
    bytes: &[u8],
    every: Duration,
    limit: Duration,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = bytes.to_vec();
    tokio::time::timeout(limit, async move {
        let mut buf = [0u8; 256];
        for b in bytes.iter().cycle() {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            // Reading between bytes notices the close without a write failing.
            match tokio::time::timeout(every, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Poll `cond` every 20 ms for at most `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub fn sha256(der: &[u8]) -> String {
    certshift::x509::fingerprint(der)
}

pub struct RunningProxy {
    pub addr: SocketAddr,
    pub handle: certshift::proxy::ProxyHandle,
    pub metrics: certshift::metrics::Metrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningProxy {
    /// Stop accepting and drain; returns the final snapshot.
    pub async fn stop(mut self) -> certshift::metrics::Snapshot {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.metrics.snapshot().await.expect("metrics snapshot")
    }
}

/// Proxy options toward `upstream` with the test PKI, on 127.0.0.1:0, admin off.
pub fn proxy_args(pki: &TestPki, upstream: SocketAddr) -> certshift::proxy::ProxyArgs {
    let mut a = certshift::proxy::ProxyArgs::for_upstream(&upstream.to_string());
    a.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    a.admin = "off".into();
    a.pki = Some(pki.path().to_path_buf());
    a.upstream_name = Some("localhost".into());
    a.drain_timeout = Duration::from_secs(2);
    a
}

pub async fn start_proxy(args: certshift::proxy::ProxyArgs) -> RunningProxy {
    let metrics = certshift::metrics::Metrics::start();
    let proxy =
        certshift::proxy::Proxy::bind(args.into_config().expect("proxy config"), metrics.clone())
            .await
            .expect("proxy bind");
    let addr = proxy.local_addr();
    let handle = proxy.handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async { drop(rx.await) }));
    RunningProxy {
        addr,
        handle,
        metrics,
        stop: Some(tx),
        task: Some(task),
    }
}

/// The binary as a user runs it; killed on drop.
pub struct Running {
    pub child: std::process::Child,
    pub lines: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Send SIGTERM, as a service manager would, and wait (at most 15 s)
    /// for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "certshift must exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn line(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {:?}", self.lines))
    }

    /// The address of the `listening on IP:PORT` line.
    pub fn addr(&self) -> SocketAddr {
        self.line("listening on ")
            .parse()
            .expect("listening on IP:PORT")
    }
}

/// `certshift ARGS`, reading stdout lines up to the first for which `last`
/// is true; the rest of stdout is drained so the child never blocks.
pub fn spawn_certshift(args: &[String], last: impl Fn(&str) -> bool) -> Running {
    use std::io::{BufRead, BufReader};
    let mut child = certshift()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn certshift");
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap_or(0) > 0,
            "certshift exited early: {lines:?}"
        );
        let l = l.trim().to_string();
        let done = last(&l);
        lines.push(l);
        if done {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Running { child, lines }
}

/// The names of a JUnit suite's testcases that failed (`<failure>`, not
/// errors or skips), in file order.
pub fn junit_failures(suite: &quick_junit::TestSuite) -> Vec<String> {
    use quick_junit::{NonSuccessKind, TestCaseStatus};
    suite
        .test_cases
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Failure,
                    ..
                }
            )
        })
        .map(|c| c.name.as_str().to_string())
        .collect()
}

/// One admin API request over a fresh connection, naming the API by its
/// own address (as a browser or curl would): (status, JSON body or Null).
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, body) = admin_text(addr, method, path, body, token).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// [`admin`] with the body as text (`/metrics`), read for at most 5 s.
pub async fn admin_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// `GET path` on an admin API without a token: (status, body text).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_text(addr, "GET", path, None, None).await
}

/// `serve`'s admin API on 127.0.0.1:0, in-process; `token` if given.
pub async fn start_serve_admin(serve: &RunningServe, token: Option<&str>) -> SocketAddr {
    let a = certshift::admin::Admin::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        serve.handle.clone(),
        token.map(str::to_string),
    )
    .await
    .unwrap();
    let addr = a.local_addr().unwrap();
    tokio::spawn(a.run(std::future::pending()));
    addr
}

/// The proxy's admin API on 127.0.0.1:0, in-process; `token` if given.
pub async fn start_admin(proxy: &RunningProxy, token: Option<&str>) -> SocketAddr {
    let a = certshift::admin::Admin::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        proxy.handle.clone(),
        token.map(str::to_string),
    )
    .await
    .unwrap();
    let addr = a.local_addr().unwrap();
    tokio::spawn(a.run(std::future::pending()));
    addr
}

/// `none` and the variants, without the catalogue's mutations: what the
/// variant tests cycle through (tests/it/proxy_mutations.rs covers the rest).
pub fn none_and_variants() -> impl Iterator<Item = certshift::plan::Presented> {
    certshift::plan::Presented::all()
        .filter(|p| !matches!(p, certshift::plan::Presented::Mutation(_)))
}

/// The backlog of each listening socket on `addr`'s port: `ss` shows it as
/// a listener's Send-Q.
pub fn listen_backlogs(addr: SocketAddr) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
        .collect()
}
