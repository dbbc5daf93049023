//! The rotation test's steps: the PKI state the rig rotates (the issuing CA,
//! the roots every bundle trusts) and the components a step publishes into.
//!
//! Never called on the async runtime's threads while the load runs: every
//! method here blocks (key generation, file writes, reloads), and the rig
//! runs each step on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::creds::{self, CredError, Publisher, RotationKind};
use crate::pki::{self, Authority, KeyType, LeafSpec, Usage};
use crate::proxy::ProxyHandle;
use crate::serve::ServiceHandle;
use crate::tls::{
    client_config_verified_by, webpki_server_verifier, ClientCert, TlsVersions, UpstreamVerifier,
};
/// Leaves the rig issues live this long.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The PKI state and the components a rotation publishes into; its methods
/// are the blocking steps of a rotation.
pub(super) struct Steps {
    dir: PathBuf,
    key_type: KeyType,
    /// The CA issuing new leaves; replaced by a CA-bundle rotation.
    issuing: Mutex<Issuing>,
    /// PEM of the roots every trust bundle holds now.
    trusted: Mutex<Vec<String>>,
    pub(super) client_cn: String,
    client_spiffe: Option<String>,
    pub(super) server_names: Vec<String>,
    pub(super) server_spiffe: Option<String>,
    pub(super) serve: Option<ServiceHandle>,
    pub(super) proxy: Option<ProxyHandle>,
    /// Handshake mode and --target: the load presents the client credential.
    pub(super) direct: Option<Direct>,
    roots_generated: AtomicU32,
}

/// A CA-bundle rotation's new root.
pub(super) struct NewRoot {
    pub(super) authority: Authority,
    pub(super) pem: String,
    pub(super) serial: String,
}

/// The load's own credential and trust, published in memory; the rig
/// marks the timeline itself (a CA rotation is three steps of one kind).
pub(super) struct Direct {
    client: Publisher<CertifiedKey>,
    roots: Publisher<Arc<dyn ServerCertVerifier>>,
    pub(super) config: Arc<rustls::ClientConfig>,
}

/// A CA that issues leaves, and the certificates that travel with them: its
/// own when it is an intermediate (the service trusts the root), nothing
/// for a root.
pub(super) struct Issuing {
    pub(super) ca: Authority,
    pub(super) chain_pem: String,
}

impl Issuing {
    pub(super) fn root(ca: Authority) -> Issuing {
        Issuing {
            ca,
            chain_pem: String::new(),
        }
    }
}

impl Steps {
    /// Issuing from `issuing`, trusting `ca_pem`, presenting the client
    /// identity `(common name, SPIFFE ID)`; no components yet.
    pub(super) fn new(
        dir: &Path,
        key_type: KeyType,
        issuing: Issuing,
        ca_pem: String,
        (client_cn, client_spiffe): (String, Option<String>),
    ) -> Steps {
        Steps {
            dir: dir.to_path_buf(),
            key_type,
            issuing: Mutex::new(issuing),
            trusted: Mutex::new(vec![ca_pem]),
            client_cn,
            client_spiffe,
            server_names: Vec::new(),
            server_spiffe: None,
            serve: None,
            proxy: None,
            direct: None,
            roots_generated: AtomicU32::new(0),
        }
    }

    /// A new self-signed root for a CA-bundle rotation.
    pub(super) fn new_root(&self) -> anyhow::Result<NewRoot> {
        let n = self.roots_generated.fetch_add(1, Ordering::Relaxed) + 1;
        let authority = Authority::new_root(
            &format!("certshift rotation-test root {n}"),
            self.key_type,
            OffsetDateTime::now_utc() - time::Duration::minutes(5),
            Duration::from_secs(30 * 86_400),
        )?;
        Ok(NewRoot {
            pem: pki::pem_cert(&authority.cert),
            serial: creds::serial_of(&authority.cert),
            authority,
        })
    }

    pub(super) fn rotate_client(&self) -> anyhow::Result<String> {
        let (ck, cert, key) = self.issue_client()?;
        let serial = creds::leaf_serial(&ck).unwrap_or_default();
        if let Some(d) = &self.direct {
            d.client
                .publish_with(|| Ok::<_, CredError>((ck, Some(serial.clone()))))?;
        } else if let Some(p) = &self.proxy {
            self.write_client(&cert, &key)?;
            let errors = p.credentials().reload_files();
            if let Some((kind, e)) = errors.first() {
                anyhow::bail!("the proxy refused the new {kind} credential: {e}");
            }
        }
        Ok(serial)
    }

    /// Add `root_pem` to every trust bundle.
    pub(super) fn trust_also(&self, root_pem: String) -> anyhow::Result<()> {
        lock(&self.trusted).push(root_pem);
        self.publish_bundles()
    }

    /// Make `root_pem` the only root every trust bundle holds.
    pub(super) fn trust_only(&self, root_pem: String) -> anyhow::Result<()> {
        *lock(&self.trusted) = vec![root_pem];
        self.publish_bundles()
    }

    /// Issue new leaves from `ca`.
    pub(super) fn issue_from(&self, ca: Authority) {
        *lock(&self.issuing) = Issuing::root(ca);
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
            let errors = p.credentials().reload_files();
            if let Some((kind, e)) = errors.first() {
                anyhow::bail!("the proxy refused the new {kind}: {e}");
            }
        }
        Ok(())
    }

    pub(super) fn reload_serve(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.serve {
            s.reload()
                .context("the service refused its new credentials")?;
        }
        Ok(())
    }

    pub(super) fn trusted_pem(&self) -> String {
        lock(&self.trusted).concat()
    }

    /// Issue a client leaf with the identity's CN and SPIFFE ID: the
    /// checked credential, and its certificate and key as PEM.
    pub(super) fn issue_client(&self) -> anyhow::Result<(CertifiedKey, String, String)> {
        let mut spec = LeafSpec::new(&self.client_cn, Usage::Client, now(), LEAF_VALIDITY);
        spec.spiffe_id = self.client_spiffe.clone();
        let (issued, chain) = self.issue(&spec)?;
        let key = pki::key_pem(&issued.key);
        let cert = pki::pem_cert(&issued.cert) + &chain;
        let path = PathBuf::from("(rotation-test)");
        let chain = creds::parse_chain(&path, cert.as_bytes())?;
        let parsed = creds::parse_key(&path, key.as_bytes())?;
        let ck = Arc::unwrap_or_clone(creds::certified_key(&path, chain, &path, parsed)?);
        Ok((ck, cert, key))
    }

    /// A leaf from the issuing CA, and the chain (PEM) that goes with it.
    fn issue(&self, spec: &LeafSpec) -> anyhow::Result<(pki::Issued, String)> {
        let issuing = lock(&self.issuing);
        Ok((
            issuing.ca.issue(spec, self.key_type)?,
            issuing.chain_pem.clone(),
        ))
    }

    /// Issue the service's leaf and write it; its serial.
    pub(super) fn issue_server(&self) -> anyhow::Result<String> {
        let cn = self
            .server_names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let mut spec = LeafSpec::new(&cn, Usage::Server, now(), LEAF_VALIDITY);
        spec.names = self.server_names.clone();
        spec.spiffe_id = self.server_spiffe.clone();
        let (issued, chain) = self.issue(&spec)?;
        write_pair(
            &self.dir.join("serve"),
            &(pki::pem_cert(&issued.cert) + &chain),
            &pki::key_pem(&issued.key),
        )?;
        Ok(creds::serial_of(&issued.cert))
    }

    pub(super) fn write_client(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        write_pair(&self.dir.join("proxy"), cert_pem, key_pem)
    }

    pub(super) fn write_bundles(&self) -> anyhow::Result<()> {
        let pem = self.trusted_pem();
        write_file(&self.dir.join("serve/client-ca.crt"), pem.as_bytes(), 0o644)?;
        write_file(
            &self.dir.join("proxy/upstream-ca.crt"),
            pem.as_bytes(),
            0o644,
        )
    }
}

impl Direct {
    pub(super) fn new(client: CertifiedKey, roots_pem: &str) -> anyhow::Result<Direct> {
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
