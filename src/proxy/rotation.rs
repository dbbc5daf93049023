//! What rotates in the proxy and how: the identity's client credential
//! (file reload, SIGHUP, `POST /rotate`, or minted on a schedule), the
//! downstream server material, and the upstream trust bundle. Every change is
//! checked before it is published, every publication and refusal lands on the
//! metrics timeline, and client rotations bump a generation that connections
//! established with the old credential watch (`--on-rotate`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::config::{ClientFiles, ProxyConfig};
use crate::creds::{self, CredError, Live};
use crate::metrics::Metrics;
use crate::pki::{Authority, KeyType, LeafSpec, Usage};
use crate::tls;

pub const KIND_CLIENT: &str = "client";
pub const KIND_SERVER: &str = "server";
pub const KIND_TRUST: &str = "trust-bundle";

/// Everything that can rotate, and the sources that rotate it.
pub struct Rotating {
    pub client: Option<Arc<Live<CertifiedKey>>>,
    client_files: Option<ClientFiles>,
    minter: Option<Minter>,
    /// Bumped on every published client rotation.
    pub client_generation: watch::Sender<u64>,
    pub server: Option<Arc<Live<ServerConfig>>>,
    /// Bumped on every published downstream server rotation.
    pub server_generation: watch::Sender<u64>,
    pub upstream_roots: Arc<Live<Arc<dyn ServerCertVerifier>>>,
    cfg: Arc<ProxyConfig>,
    metrics: Metrics,
    lock: std::sync::Mutex<()>,
}

impl Rotating {
    /// Load everything once; any bad file here is a startup error.
    pub fn load(cfg: Arc<ProxyConfig>, metrics: Metrics) -> Result<Self, CredError> {
        let client = match &cfg.client {
            Some(f) => {
                let (ck, fp) = load_client(f)?;
                Some(Arc::new(Live::new(ck, fp)))
            }
            None => None,
        };
        let server = match &cfg.listen_files {
            Some(files) => {
                let (config, fp) = load_server(&cfg, files)?;
                Some(Arc::new(Live::new(config, fp)))
            }
            None => None,
        };
        let (verifier, fp) = load_roots(&cfg.upstream_cas, &cfg.upstream_crls)?;
        let minter = match (&cfg.rotate_ca, &client) {
            (Some((cert, key)), Some(live)) => Some(Minter::new(cert, key, &live.current())?),
            _ => None,
        };
        Ok(Rotating {
            client,
            client_files: cfg.client.clone(),
            minter,
            client_generation: watch::channel(0).0,
            server,
            server_generation: watch::channel(0).0,
            upstream_roots: Arc::new(Live::new(verifier, fp)),
            cfg,
            metrics,
            lock: std::sync::Mutex::new(()),
        })
    }

    /// The files whose change triggers [`Rotating::reload_files`].
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(f) = &self.client_files {
            v.extend([f.cert.clone(), f.key.clone()]);
        }
        if let Some(files) = &self.cfg.listen_files {
            v.extend(files.all());
        }
        v.extend(self.cfg.upstream_cas.iter().cloned());
        v.extend(self.cfg.upstream_crls.iter().cloned());
        v
    }

    /// Re-read every file-backed credential; each is published or refused on
    /// its own, so a bad CA file does not hold back a good client cert.
    /// Returns the errors (also counted and logged).
    pub fn reload_files(&self) -> Vec<(&'static str, CredError)> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = Vec::new();
        if let (Some(live), Some(files)) = (&self.client, &self.client_files) {
            match load_client(files) {
                Ok((ck, fp)) => {
                    let serial = leaf_serial(&ck);
                    if live.publish(ck, fp) {
                        self.published(KIND_CLIENT, serial, &self.client_generation);
                    }
                }
                Err(e) => errors.push((KIND_CLIENT, self.refused(live, KIND_CLIENT, e))),
            }
        }
        if let (Some(live), Some(files)) = (&self.server, &self.cfg.listen_files) {
            match load_server(&self.cfg, files) {
                Ok((config, fp)) => {
                    if live.publish(config, fp) {
                        let serial = creds::load_chain(&files.cert)
                            .ok()
                            .and_then(|c| c.first().map(serial_of));
                        self.published(KIND_SERVER, serial, &self.server_generation);
                    }
                }
                Err(e) => errors.push((KIND_SERVER, self.refused(live, KIND_SERVER, e))),
            }
        }
        match load_roots(&self.cfg.upstream_cas, &self.cfg.upstream_crls) {
            Ok((v, fp)) => {
                if self.upstream_roots.publish(v, fp) {
                    self.metrics.rotation(Instant::now(), KIND_TRUST, None);
                    tracing::info!("upstream trust bundle rotated");
                }
            }
            Err(e) => errors.push((
                KIND_TRUST,
                self.refused(&self.upstream_roots, KIND_TRUST, e),
            )),
        }
        errors
    }

    /// Mint and publish a fresh client leaf; the serial of the new leaf.
    pub fn mint(&self) -> Result<String, CredError> {
        let (Some(live), Some(minter)) = (&self.client, &self.minter) else {
            return Err(CredError::Tls(
                "minting needs a client identity and a CA (--rotate-ca-cert or --pki)".into(),
            ));
        };
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match minter.mint() {
            Ok(ck) => {
                let serial = leaf_serial(&ck);
                live.publish_minted(ck);
                self.published(KIND_CLIENT, serial.clone(), &self.client_generation);
                Ok(serial.unwrap_or_default())
            }
            Err(e) => Err(self.refused(live, KIND_CLIENT, e)),
        }
    }

    fn published(
        &self,
        kind: &'static str,
        serial: Option<String>,
        generation: &watch::Sender<u64>,
    ) {
        tracing::info!(kind, serial = serial.as_deref().unwrap_or("-"), "rotated");
        self.metrics.rotation(Instant::now(), kind, serial);
        generation.send_modify(|g| *g += 1);
    }

    fn refused<T>(&self, live: &Live<T>, kind: &'static str, e: CredError) -> CredError {
        tracing::error!(kind, error = %e, "rotation refused; the previous credential keeps serving");
        live.record_failure(e.to_string());
        self.metrics
            .rotation_failure(Instant::now(), kind, e.to_string());
        e
    }

    /// Mint on `--rotate-every` (plus jitter) until dropped.
    pub fn spawn_schedule(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.cfg.rotate_every?;
        let jitter = self.cfg.rotate_jitter;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            loop {
                next += every + jitter.mul_f64(rand::random::<f64>());
                tokio::time::sleep_until(next).await;
                let _ = me.mint();
            }
        }))
    }
}

fn load_client(f: &ClientFiles) -> Result<(CertifiedKey, Vec<u8>), CredError> {
    creds::load_client_pair(&f.cert, &f.key)
}

fn load_server(
    cfg: &ProxyConfig,
    files: &creds::ServerFiles,
) -> Result<(ServerConfig, Vec<u8>), CredError> {
    let (material, fp) = files.load(&cfg.trust_domains)?;
    Ok((
        tls::server_config(material, cfg.listen_auth(), &crate::tls::TlsVersions::all())?,
        fp,
    ))
}

/// The upstream trust bundle (and CRLs) as a verifier; both rotate together.
fn load_roots(
    cas: &[PathBuf],
    crl_files: &[PathBuf],
) -> Result<(Arc<dyn ServerCertVerifier>, Vec<u8>), CredError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut hash = Sha256::new();
    for ca in cas {
        let bytes = creds::read(ca)?;
        hash.update(&bytes);
        creds::add_roots(&mut roots, ca, &bytes)?;
    }
    let mut crls = Vec::new();
    for crl in crl_files {
        let bytes = creds::read(crl)?;
        hash.update(&bytes);
        crls.extend(creds::parse_crls(crl, &bytes)?);
    }
    if roots.is_empty() {
        // Plaintext upstream: a verifier is never asked; keep one anyway so
        // the type is uniform. An empty store cannot verify anything.
        return Ok((Arc::new(NoRoots), hash.finalize().to_vec()));
    }
    Ok((
        tls::webpki_server_verifier(roots, crls)?,
        hash.finalize().to_vec(),
    ))
}

use crate::x509::CertFacts;
use creds::{leaf_serial, serial_of};

/// Mints leaves with the identity of the current credential.
struct Minter {
    ca: Authority,
    /// The CA certificate when it is an intermediate: it travels with the leaf.
    tail: Vec<CertificateDer<'static>>,
    key_type: KeyType,
    common_name: String,
    spiffe_id: Option<String>,
    validity: Duration,
}

impl Minter {
    fn new(cert: &Path, key: &Path, current: &CertifiedKey) -> Result<Self, CredError> {
        let cert_pem = String::from_utf8_lossy(&creds::read(cert)?).into_owned();
        let key_pem = String::from_utf8_lossy(&creds::read(key)?).into_owned();
        let ca = Authority::from_pem(&cert_pem, &key_pem).map_err(|e| CredError::BadKey {
            path: key.to_path_buf(),
            detail: format!("cannot mint with this CA: {e}"),
        })?;
        let ca_self_signed = CertFacts::from_der(&ca.cert)
            .map(|f| f.self_signed)
            .unwrap_or(true);
        let tail = if ca_self_signed {
            Vec::new()
        } else {
            vec![ca.cert.clone()]
        };
        let leaf = current
            .cert
            .first()
            .ok_or_else(|| CredError::Tls("client credential has no certificate".into()))?;
        let facts = CertFacts::from_der(leaf).map_err(|e| CredError::Tls(e.to_string()))?;
        let lifetime = facts.lifetime().whole_seconds();
        Ok(Minter {
            ca,
            tail,
            key_type: KeyType::like(&facts.key),
            common_name: facts.common_name.unwrap_or_else(|| "certshift".into()),
            spiffe_id: facts.spiffe_id.map(|id| id.to_string()),
            validity: Duration::from_secs(lifetime.max(3600) as u64),
        })
    }

    fn mint(&self) -> Result<CertifiedKey, CredError> {
        let mut spec = LeafSpec::new(
            &self.common_name,
            Usage::Client,
            time::OffsetDateTime::now_utc(),
            self.validity,
        );
        spec.spiffe_id = self.spiffe_id.clone();
        let issued = self
            .ca
            .issue(&spec, self.key_type)
            .map_err(|e| CredError::Tls(e.to_string()))?;
        let mut chain = vec![issued.cert.clone()];
        chain.extend(self.tail.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key.serialize_der()));
        let path = PathBuf::from("(minted)");
        Ok(Arc::unwrap_or_clone(creds::certified_key(
            &path, chain, &path, key,
        )?))
    }
}

/// A verifier for a proxy with no upstream TLS: refuses everything.
#[derive(Debug)]
struct NoRoots;

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no upstream trust bundle".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no upstream trust bundle".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        creds::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
