//! The rotation test's rig: the PKI, the service and the proxy it starts (or
//! the target it was given), and the rotations it performs on them.
//!
//! Rotations go through the same paths as in production: new files are
//! written beside the old ones, renamed into place, and the component
//! reloads them (checked before they are published). Only the client side of
//! handshake mode, which has no proxy, publishes into the load's live
//! credential directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use time::OffsetDateTime;

use super::{Rotate, RotationTestArgs};
use crate::creds::{self, CredError, Publisher, RotationKind};
use crate::load::{Marks, Mode, Target};
use crate::metrics::Metrics;
use crate::pki::{self, Authority, KeyType, LeafSpec, Manifest, PkiDir, PkiOptions, Role, Usage};
use crate::proxy::{Proxy, ProxyArgs, ProxyHandle};
use crate::report::RunInfo;
use crate::serve::{ServeArgs, Service, ServiceHandle};
use crate::tls::{
    client_config_verified_by, webpki_server_verifier, ClientCert, TlsVersions, UpstreamVerifier,
};

/// Leaves the rig issues live this long.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Everything the test runs against and rotates.
pub struct Rig {
    dir: PathBuf,
    key_type: KeyType,
    /// The CA issuing new leaves; replaced by a CA-bundle rotation.
    issuing: Mutex<Authority>,
    /// PEM of the roots every trust bundle holds now.
    trusted: Mutex<Vec<String>>,
    client_cn: String,
    client_spiffe: Option<String>,
    server_names: Vec<String>,
    server_spiffe: Option<String>,
    serve: Option<Running<ServiceHandle>>,
    proxy: Option<Running<ProxyHandle>>,
    /// Handshake mode and --target: the load presents the client credential.
    direct: Option<Direct>,
    /// Where the load connects.
    addr: SocketAddr,
    server_name: String,
    roots_generated: Mutex<u32>,
    /// The proxy's metrics: what the service answered the proxy.
    metrics: Metrics,
}

struct Running<H> {
    handle: H,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The load's own credential and trust, published in memory; the rig
/// marks the timeline itself (a CA rotation is three steps of one kind).
struct Direct {
    client: Publisher<CertifiedKey>,
    roots: Publisher<Arc<dyn ServerCertVerifier>>,
    config: Arc<rustls::ClientConfig>,
}

impl Rig {
    pub async fn start(args: &RotationTestArgs, tmp: &Path) -> anyhow::Result<Rig> {
        match &args.target {
            Some(t) => Self::for_target(args, t).await,
            None => Self::embedded(args, tmp).await,
        }
    }

    async fn embedded(args: &RotationTestArgs, dir: &Path) -> anyhow::Result<Rig> {
        let opts = PkiOptions {
            key_type: args.key_type,
            ..PkiOptions::default()
        };
        let pki_dir = dir.join("pki");
        let manifest = pki::init(&pki_dir, &opts, false).context("generating the test PKI")?;
        let pki = PkiDir::new(&pki_dir, manifest.clone());
        let issuing = authority(&pki)?;
        let ca_pem = std::fs::read_to_string(pki.ca_cert())?;
        let (client_cn, client_spiffe) = client_identity(&manifest, None)?;
        let server = manifest.credentials.iter().find(|e| e.role == Role::Server);
        let mut rig = Rig {
            dir: dir.to_path_buf(),
            key_type: args.key_type,
            issuing: Mutex::new(issuing),
            trusted: Mutex::new(vec![ca_pem]),
            client_cn,
            client_spiffe,
            server_names: manifest.server_names.clone(),
            server_spiffe: server.and_then(|e| e.spiffe_id.clone()),
            serve: None,
            proxy: None,
            direct: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_name: "localhost".into(),
            roots_generated: Mutex::new(0),
            metrics: Metrics::start(),
        };
        for d in ["serve", "proxy"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        rig.issue_server()?;
        rig.write_bundles()?;
        let serve = ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: Some(dir.join("serve/tls.crt")),
            key: Some(dir.join("serve/tls.key")),
            client_ca: vec![dir.join("serve/client-ca.crt")],
            trust_domain: vec![manifest.trust_domain.clone()],
            no_watch: true,
            ..ServeArgs::default()
        };
        let service = Service::bind(serve.into_config()?).await?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let (handle, addr) = (service.handle(), service.local_addr());
        let task = tokio::spawn(service.run(async { drop(rx.await) }, Duration::from_secs(2)));
        rig.serve = Some(Running {
            handle,
            addr,
            stop,
            task,
        });
        rig.addr = addr;
        let (client, cert, key) = rig.issue_client()?;
        if args.mode == Mode::Handshake {
            rig.direct = Some(Direct::new(client, &rig.trusted_pem())?);
        } else {
            rig.write_client(&cert, &key)?;
            let mut p = ProxyArgs::for_upstream(&addr.to_string());
            p.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            p.upstream_ca = vec![dir.join("proxy/upstream-ca.crt")];
            p.upstream_name = Some("localhost".into());
            p.client_cert = Some(dir.join("proxy/tls.crt"));
            p.client_key = Some(dir.join("proxy/tls.key"));
            p.admin = "off".into();
            p.no_watch = true;
            p.connect_timeout = Duration::from_secs(2);
            let proxy = Proxy::bind(p.into_config()?, rig.metrics.clone()).await?;
            let (stop, rx) = tokio::sync::oneshot::channel::<()>();
            let (handle, paddr) = (proxy.handle(), proxy.local_addr());
            let task = tokio::spawn(proxy.run(async { drop(rx.await) }));
            rig.proxy = Some(Running {
                handle,
                addr: paddr,
                stop,
                task,
            });
            rig.addr = paddr;
        }
        Ok(rig)
    }

    async fn for_target(args: &RotationTestArgs, target: &str) -> anyhow::Result<Rig> {
        let Some(pki_dir) = &args.pki else {
            anyhow::bail!("--pki: --target needs the PKI whose CA issues the rotated client certificates (and whose ca/ca.crt verifies the service)");
        };
        let pki = PkiDir::open(pki_dir)?;
        let manifest = pki.manifest();
        let addr = tokio::net::lookup_host(target)
            .await
            .with_context(|| format!("--target: cannot resolve {target}"))?
            .next()
            .with_context(|| format!("--target: {target} resolves to no address"))?;
        let ca_pem = std::fs::read_to_string(pki.ca_cert())
            .with_context(|| format!("reading {}", pki.ca_cert().display()))?;
        let (client_cn, client_spiffe) = client_identity(manifest, args.identity.as_deref())?;
        let mut rig = Rig {
            dir: pki_dir.clone(),
            key_type: manifest.key_type,
            issuing: Mutex::new(authority(&pki)?),
            trusted: Mutex::new(vec![ca_pem]),
            client_cn,
            client_spiffe,
            server_names: Vec::new(),
            server_spiffe: None,
            serve: None,
            proxy: None,
            direct: None,
            addr,
            server_name: args
                .server_name
                .clone()
                .unwrap_or_else(|| "localhost".into()),
            roots_generated: Mutex::new(0),
            metrics: Metrics::start(),
        };
        let (client, _, _) = rig.issue_client()?;
        rig.direct = Some(Direct::new(client, &rig.trusted_pem())?);
        Ok(rig)
    }

    /// The load's target.
    pub fn target(&self, args: &RotationTestArgs) -> Target {
        let tls = self.direct.as_ref().map(|d| {
            let name = ServerName::try_from(self.server_name.clone()).unwrap_or_else(|_| {
                ServerName::try_from("localhost").expect("invariant: a valid DNS name")
            });
            (d.config.clone(), name)
        });
        Target {
            addr: self.addr,
            tls,
            method: hyper::Method::GET,
            path: args.path.clone(),
            authority: self.addr.to_string(),
            confirm_window: Duration::from_millis(100),
        }
    }

    pub fn topology(&self, args: &RotationTestArgs) -> &'static str {
        match (&self.proxy, &args.target) {
            (Some(_), _) => "load -> proxy -> serve (strict mTLS)",
            (None, Some(_)) => "load -> target (mTLS)",
            (None, None) => "load -> serve (strict mTLS)",
        }
    }

    pub fn info(&self, args: &RotationTestArgs) -> RunInfo {
        RunInfo {
            target: args.target.clone().unwrap_or_else(|| self.addr.to_string()),
            mode: args.mode.name().into(),
            tls: if self.direct.is_some() { "mtls" } else { "off" }.into(),
        }
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(sv) = &self.serve {
            s.push_str(&format!("serve --mode strict on {}", sv.addr));
        }
        if let Some(p) = &self.proxy {
            s.push_str(&format!(
                ", proxy on {} presenting {}",
                p.addr, self.client_cn
            ));
        }
        if self.serve.is_none() {
            s.push_str(&format!(
                "target {} presenting {}",
                self.addr, self.client_cn
            ));
        }
        s
    }

    /// Behind the proxy: the outcome of every upstream connection, which
    /// names the cause the load only sees as a 502 (an alert, a failed
    /// verification). Empty without a proxy.
    pub async fn upstream_outcomes(&self) -> std::collections::BTreeMap<String, u64> {
        if self.proxy.is_none() {
            return Default::default();
        }
        let Ok(snap) = self.metrics.snapshot().await else {
            return Default::default();
        };
        let mut out = std::collections::BTreeMap::new();
        for (_, v) in snap.variants() {
            crate::metrics::add_counts(&mut out, &v.outcomes);
        }
        out
    }

    /// Perform one rotation of `kind`, marking each step.
    pub async fn rotate(
        &self,
        kind: Rotate,
        no_overlap: bool,
        interval: Duration,
        marks: &Marks,
    ) -> anyhow::Result<()> {
        match kind {
            Rotate::Client | Rotate::All => {
                let serial = self.rotate_client()?;
                marks.mark(RotationKind::Client, Some(serial));
            }
            Rotate::Server => {
                let serial = self.issue_server()?;
                self.reload_serve()?;
                marks.mark(RotationKind::Server, Some(serial));
            }
            Rotate::CaBundle => self.rotate_ca(no_overlap, interval, marks).await?,
        }
        Ok(())
    }

    /// Add the new root everywhere, issue from it, drop the old root. With
    /// `no_overlap`, issue first and switch the bundles after.
    async fn rotate_ca(
        &self,
        no_overlap: bool,
        interval: Duration,
        marks: &Marks,
    ) -> anyhow::Result<()> {
        let n = {
            let mut g = lock(&self.roots_generated);
            *g += 1;
            *g
        };
        let root = Authority::new_root(
            &format!("certshift rotation-test root {n}"),
            self.key_type,
            OffsetDateTime::now_utc() - time::Duration::minutes(5),
            Duration::from_secs(30 * 86_400),
        )?;
        let root_pem = pki::pem_cert(&root.cert);
        let root_serial = creds::serial_of(&root.cert);
        let step = interval / 3;
        if !no_overlap {
            lock(&self.trusted).push(root_pem.clone());
            self.publish_bundles()?;
            marks.mark(RotationKind::CaAddRoot, Some(root_serial.clone()));
            tokio::time::sleep(step).await;
        }
        *lock(&self.issuing) = root;
        self.rotate_client()?;
        self.issue_server()?;
        self.reload_serve()?;
        marks.mark(RotationKind::CaIssue, Some(root_serial.clone()));
        tokio::time::sleep(step).await;
        *lock(&self.trusted) = vec![root_pem];
        self.publish_bundles()?;
        marks.mark(RotationKind::CaDropRoot, Some(root_serial));
        Ok(())
    }

    fn rotate_client(&self) -> anyhow::Result<String> {
        let (ck, cert, key) = self.issue_client()?;
        let serial = creds::leaf_serial(&ck).unwrap_or_default();
        if let Some(d) = &self.direct {
            d.client
                .publish_with(|| Ok::<_, CredError>((ck, Some(serial.clone()))))?;
        } else if let Some(p) = &self.proxy {
            self.write_client(&cert, &key)?;
            let errors = p.handle.credentials().reload_files();
            if let Some((kind, e)) = errors.first() {
                anyhow::bail!("the proxy refused the new {kind} credential: {e}");
            }
        }
        Ok(serial)
    }

    fn publish_bundles(&self) -> anyhow::Result<()> {
        if let Some(d) = &self.direct {
            d.roots
                .publish_with(|| verifier(&self.trusted_pem()).map(|v| (v, None)))?;
        }
        if self.serve.is_some() {
            self.write_bundles()?;
            self.reload_serve()?;
        }
        if let Some(p) = &self.proxy {
            let errors = p.handle.credentials().reload_files();
            if let Some((kind, e)) = errors.first() {
                anyhow::bail!("the proxy refused the new {kind}: {e}");
            }
        }
        Ok(())
    }

    fn reload_serve(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.serve {
            s.handle
                .reload()
                .context("the service refused its new credentials")?;
        }
        Ok(())
    }

    fn trusted_pem(&self) -> String {
        lock(&self.trusted).concat()
    }

    /// Issue a client leaf with the identity's CN and SPIFFE ID: the
    /// checked credential, and its certificate and key as PEM.
    fn issue_client(&self) -> anyhow::Result<(CertifiedKey, String, String)> {
        let mut spec = LeafSpec::new(&self.client_cn, Usage::Client, now(), LEAF_VALIDITY);
        spec.spiffe_id = self.client_spiffe.clone();
        let issued = lock(&self.issuing).issue(&spec, self.key_type)?;
        let key = pki::key_pem(&issued.key);
        let cert = pki::pem_cert(&issued.cert);
        let path = PathBuf::from("(rotation-test)");
        let chain = creds::parse_chain(&path, cert.as_bytes())?;
        let parsed = creds::parse_key(&path, key.as_bytes())?;
        let ck = Arc::unwrap_or_clone(creds::certified_key(&path, chain, &path, parsed)?);
        Ok((ck, cert, key))
    }

    /// Issue the service's leaf and write it; its serial.
    fn issue_server(&self) -> anyhow::Result<String> {
        let cn = self
            .server_names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let mut spec = LeafSpec::new(&cn, Usage::Server, now(), LEAF_VALIDITY);
        spec.names = self.server_names.clone();
        spec.spiffe_id = self.server_spiffe.clone();
        let issued = lock(&self.issuing).issue(&spec, self.key_type)?;
        write_pair(
            &self.dir.join("serve"),
            &pki::pem_cert(&issued.cert),
            &pki::key_pem(&issued.key),
        )?;
        Ok(creds::serial_of(&issued.cert))
    }

    fn write_client(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        write_pair(&self.dir.join("proxy"), cert_pem, key_pem)
    }

    fn write_bundles(&self) -> anyhow::Result<()> {
        let pem = self.trusted_pem();
        write_file(&self.dir.join("serve/client-ca.crt"), pem.as_bytes(), 0o644)?;
        write_file(
            &self.dir.join("proxy/upstream-ca.crt"),
            pem.as_bytes(),
            0o644,
        )
    }

    pub async fn stop(self) {
        for r in [
            self.proxy.map(|p| (p.stop, p.task)),
            self.serve.map(|s| (s.stop, s.task)),
        ]
        .into_iter()
        .flatten()
        {
            let _ = r.0.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), r.1).await;
        }
    }
}

impl Direct {
    fn new(client: CertifiedKey, roots_pem: &str) -> anyhow::Result<Direct> {
        let client = Publisher::fixed(RotationKind::Client, client, Arc::new(()));
        let roots = Publisher::fixed(
            RotationKind::TrustBundle,
            verifier(roots_pem)?,
            Arc::new(()),
        );
        let upstream = Arc::new(UpstreamVerifier::new(roots.live().clone(), None));
        let mut config = client_config_verified_by(
            upstream,
            ClientCert::Live(client.live().clone()),
            &TlsVersions::all(),
        )?;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Direct {
            client,
            roots,
            config: Arc::new(config),
        })
    }
}

fn verifier(roots_pem: &str) -> anyhow::Result<Arc<dyn ServerCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    creds::add_roots(
        &mut roots,
        Path::new("(trust bundle)"),
        roots_pem.as_bytes(),
    )?;
    Ok(webpki_server_verifier(roots, Vec::new())?)
}

/// The PKI's root, which signs the rotated certificates.
fn authority(pki: &PkiDir) -> anyhow::Result<Authority> {
    let read =
        |f: &Path| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()));
    let ca = pki.ca();
    Ok(Authority::from_pem(&read(&ca.cert)?, &read(&ca.key)?)?)
}

fn client_identity(
    m: &Manifest,
    identity: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let service = identity
        .map(str::to_string)
        .or_else(|| m.services.first().cloned())
        .unwrap_or_default();
    let e = m.client(&service).with_context(|| {
        format!(
            "--identity: {service:?} is not a service of the PKI; it has {}",
            m.services.join(", ")
        )
    })?;
    Ok((service, e.spiffe_id.clone()))
}

fn now() -> OffsetDateTime {
    // A little in the past, so a peer whose clock lags a second still
    // accepts a leaf issued this instant.
    OffsetDateTime::now_utc() - time::Duration::minutes(5)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
    // Key first: a reload between the two writes then sees a new key with
    // the old certificate, which the checks refuse, and the old pair stays.
    write_file(&dir.join("tls.key"), key.as_bytes(), 0o600)?;
    write_file(&dir.join("tls.crt"), cert.as_bytes(), 0o644)
}

/// Write beside, then rename into place: readers see the old or the new file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
