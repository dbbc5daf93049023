//! What rotates in the proxy and how: the identity's client credential
//! (file reload, SIGHUP, `POST /rotate`, or minted on a schedule), the
//! downstream server material, and the upstream trust bundle. Each is a
//! [`Publisher`]: checked before it is published, every publication and
//! refusal on the metrics timeline, and a generation that connections
//! established with the old value watch (`--on-rotate`). Also the one
//! credential kind that never rotates and is loaded differently: the
//! catalogue's mutated certificates ([`load_mutation`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::config::{ClientFiles, ProxyConfig};
use crate::creds::{self, CredError, Loaded, Publisher, RotationKind, RotationLog, Sources};
use crate::metrics::Metrics;
use crate::pki::{self, Authority, KeyType, LeafSpec, Usage};
use crate::tls;
use crate::x509::CertFacts;

/// Everything that can rotate in the proxy, each with its one publication path.
pub struct ProxyCredentials {
    /// The identity presented upstream as the `valid` variant.
    pub client: Option<Publisher<CertifiedKey>>,
    /// The downstream listener's server config.
    pub server: Option<Publisher<ServerConfig>>,
    /// The upstream trust bundle and CRLs, as a verifier.
    pub trust: Publisher<Arc<dyn ServerCertVerifier>>,
    minter: Option<Minter>,
    cfg: Arc<ProxyConfig>,
}

impl ProxyCredentials {
    /// Load everything once; any bad file here is a startup error.
    pub fn load(cfg: Arc<ProxyConfig>, metrics: Metrics) -> Result<Self, super::ProxyError> {
        let log: Arc<dyn RotationLog> = Arc::new(metrics);
        let client = match cfg.client.clone() {
            Some(f) => {
                let ca = cfg.client_ca.clone();
                Some(Publisher::load(
                    RotationKind::Client,
                    move || load_client(&f, ca.as_deref()),
                    log.clone(),
                )?)
            }
            None => None,
        };
        let server = match cfg.listen_files.clone() {
            Some(files) => {
                let c = cfg.clone();
                Some(Publisher::load(
                    RotationKind::Server,
                    move || load_server(&c, &files),
                    log.clone(),
                )?)
            }
            None => None,
        };
        let (cas, crls) = (cfg.upstream_cas.clone(), cfg.upstream_crls.clone());
        let trust = Publisher::load(
            RotationKind::TrustBundle,
            move || load_trust(&cas, &crls),
            log,
        )?;
        if let (Some(files), Some(server)) = (&cfg.listen_files, &server) {
            if cfg.listen_tls == super::config::TlsMode::Mtls {
                let revocation = files.revocation();
                if revocation == creds::Revocation::None {
                    tracing::warn!("the mTLS listener has no CRL: revoked client certificates are accepted (pass --listen-crl FILE)");
                }
                server.live().set_revocation(revocation);
            }
        }
        trust
            .live()
            .set_revocation(creds::Revocation::of(&cfg.upstream_crls));
        // A pair that does not belong together would mint leaves that no
        // service can verify: refused before anything is minted.
        let ca = match &cfg.rotate_ca {
            Some((cert, key)) => Some(rotate_ca(cert, key)?),
            None => None,
        };
        let minter = match (ca, &client) {
            (Some(ca), Some(c)) => Some(Minter::new(ca, &c.current())?),
            _ => None,
        };
        Ok(ProxyCredentials {
            client,
            server,
            trust,
            minter,
            cfg,
        })
    }

    /// The files whose change triggers [`ProxyCredentials::reload_files`].
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(f) = &self.cfg.client {
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
    /// Returns the errors (also counted, logged and marked). Blocking.
    pub fn reload_files(&self) -> Vec<(RotationKind, CredError)> {
        let mut errors = Vec::new();
        if let Some(p) = &self.client {
            if let Err(e) = p.reload() {
                errors.push((p.kind(), e));
            }
        }
        if let Some(p) = &self.server {
            if let Err(e) = p.reload() {
                errors.push((p.kind(), e));
            }
        }
        if let Err(e) = self.trust.reload() {
            errors.push((self.trust.kind(), e));
        }
        errors
    }

    /// Mint and publish a fresh client leaf; the serial of the new leaf.
    /// Blocking (key generation).
    pub fn mint(&self) -> Result<String, MintError> {
        let (Some(client), Some(minter)) = (&self.client, &self.minter) else {
            return Err(MintError::Unavailable);
        };
        client
            .publish_with(|| {
                let ck = minter.mint()?;
                let serial = creds::leaf_serial(&ck);
                Ok((ck, serial))
            })
            .map(Option::unwrap_or_default)
    }

    /// Mint on `--rotate-every` (plus jitter) until dropped; each mint runs
    /// on the blocking pool.
    pub fn spawn_schedule(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.cfg.rotate_every?;
        let jitter = self.cfg.rotate_jitter;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            loop {
                next += every + jitter.mul_f64(rand::random::<f64>());
                tokio::time::sleep_until(next).await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.mint()).await;
            }
        }))
    }
}

/// Why a client leaf could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("minting needs a client identity and a CA (--rotate-ca-cert or --pki)")]
    Unavailable,
    #[error("--rotate-ca-key {} does not match --rotate-ca-cert {} (public keys differ): every minted leaf would fail verification; pass the key of this CA certificate", key.display(), cert.display())]
    CaMismatch { cert: PathBuf, key: PathBuf },
    #[error("the client credential holds no certificate to copy an identity from")]
    NoCertificate,
    #[error("the client certificate cannot be read to copy its identity")]
    Identity(#[from] crate::x509::FactsError),
    #[error("issuing a client leaf: {0}")]
    Issue(#[from] pki::PkiError),
    #[error(transparent)]
    Credential(#[from] CredError),
}

/// The proxy's timeline: every publication and refusal.
impl RotationLog for Metrics {
    fn published(&self, kind: RotationKind, serial: Option<&str>) {
        self.rotation(Instant::now(), kind.name(), serial.map(str::to_string));
    }

    fn refused(&self, kind: RotationKind, error: &str) {
        self.rotation_failure(Instant::now(), kind.name(), error.to_string());
    }
}

/// A mutated certificate `pki init` wrote (`mutations/<name>/tls.crt`, the
/// identity's key in `tls.key`), to present as is.
///
/// Unlike every other credential the chain is NOT parsed as X.509: some
/// mutations are certificates a strict parser refuses (`trailing-bytes`),
/// and the point is that the *service* judges them. rustls sends a client certificate's DER without parsing it, so only
/// the PEM framing and the key are checked here; a key that provably does
/// not match the leaf is refused, one rustls cannot compare (unparsable
/// leaf) is kept.
pub(super) fn load_mutation(f: &ClientFiles) -> Result<Arc<CertifiedKey>, CredError> {
    let bytes = creds::read(&f.cert)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .enumerate()
        .map(|(index, item)| {
            item.map_err(|e| CredError::BadCertificate {
                path: f.cert.clone(),
                index: index + 1,
                detail: format!("{e}; re-run `certshift pki init` to rewrite mutations/"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(CredError::NoCertificate {
            path: f.cert.clone(),
            found: "; re-run `certshift pki init` to rewrite mutations/".into(),
        });
    }
    let signer = creds::provider()
        .key_provider
        .load_private_key(creds::load_key(&f.key)?)
        .map_err(|e| CredError::BadKey {
            path: f.key.clone(),
            detail: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CredError::KeyMismatch {
                cert: f.cert.clone(),
                key: f.key.clone(),
            })
        }
        _ => Ok(Arc::new(ck)),
    }
}

/// The identity, usable now: it parses, its key matches, it is inside its
/// validity window and, when the CA it is meant for is known, chains to it.
/// Anything less would be published and refused by every service.
fn load_client(f: &ClientFiles, ca: Option<&Path>) -> Result<Loaded<CertifiedKey>, CredError> {
    let mut src = Sources::default();
    let ck = creds::read_client_pair(&mut src, &f.cert, &f.key)?;
    if let Some(leaf) = ck.cert.first() {
        creds::check_validity(&f.cert, leaf, time::OffsetDateTime::now_utc())?;
    }
    if let Some(ca) = ca {
        creds::check_client_chain(&f.cert, &ck, ca, creds::load_roots(&[ca.to_path_buf()])?)?;
    }
    Ok(Loaded {
        serial: creds::leaf_serial(&ck),
        value: ck,
        fingerprint: src.fingerprint(),
    })
}

fn load_server(
    cfg: &ProxyConfig,
    files: &creds::ServerFiles,
) -> Result<Loaded<ServerConfig>, CredError> {
    let mut src = Sources::default();
    let material = files.read(&mut src, &cfg.trust_domains)?;
    let serial = material.identity.cert.first().map(creds::serial_of);
    Ok(Loaded {
        value: tls::server_config(material, cfg.listen_auth(), &tls::TlsVersions::all())?,
        fingerprint: src.fingerprint(),
        serial,
    })
}

/// The upstream trust bundle (and CRLs) as a verifier; both rotate together.
fn load_trust(
    cas: &[PathBuf],
    crl_files: &[PathBuf],
) -> Result<Loaded<Arc<dyn ServerCertVerifier>>, CredError> {
    let mut src = Sources::default();
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        let bytes = src.read(ca)?;
        creds::add_roots(&mut roots, ca, &bytes)?;
    }
    let mut crls = Vec::new();
    for crl in crl_files {
        let bytes = src.read(crl)?;
        crls.extend(creds::parse_crls(crl, &bytes)?);
    }
    let value: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
        // Plaintext upstream: a verifier is never asked; keep one anyway so
        // the type is uniform. An empty store cannot verify anything.
        Arc::new(NoRoots)
    } else {
        tls::webpki_server_verifier(roots, crls)?
    };
    Ok(Loaded {
        value,
        fingerprint: src.fingerprint(),
        serial: None,
    })
}

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

/// The minting CA from `--rotate-ca-cert`/`--rotate-ca-key` (or the
/// PKI's), its key checked against its certificate.
fn rotate_ca(cert: &Path, key: &Path) -> Result<Authority, MintError> {
    let cert_pem = String::from_utf8_lossy(&creds::read(cert)?).into_owned();
    let key_pem = String::from_utf8_lossy(&creds::read(key)?).into_owned();
    let ca = Authority::from_pem(&cert_pem, &key_pem).map_err(|e| CredError::BadKey {
        path: key.to_path_buf(),
        detail: format!("cannot mint with this CA: {e}"),
    })?;
    let facts = CertFacts::from_der(&ca.cert)?;
    if ca.key().public_key_raw() != facts.public_key_raw.as_slice() {
        return Err(MintError::CaMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
    }
    Ok(ca)
}

impl Minter {
    fn new(ca: Authority, current: &CertifiedKey) -> Result<Self, MintError> {
        let ca_self_signed = CertFacts::from_der(&ca.cert)
            .map(|f| f.self_signed)
            .unwrap_or(true);
        let tail = if ca_self_signed {
            Vec::new()
        } else {
            vec![ca.cert.clone()]
        };
        let leaf = current.cert.first().ok_or(MintError::NoCertificate)?;
        let facts = CertFacts::from_der(leaf)?;
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

    fn mint(&self) -> Result<CertifiedKey, MintError> {
        let mut spec = LeafSpec::new(
            &self.common_name,
            Usage::Client,
            time::OffsetDateTime::now_utc(),
            self.validity,
        );
        spec.spiffe_id = self.spiffe_id.clone();
        let issued = self.ca.issue(&spec, self.key_type)?;
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

    tls::handshake_signatures! {
        refuse |_v| rustls::Error::General("no upstream trust bundle".into())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        creds::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{PkiDir, PkiOptions};

    fn files(pki: &PkiDir, name: &str) -> ClientFiles {
        let f = pki.mutation(name).unwrap();
        ClientFiles {
            cert: f.cert,
            key: f.key,
        }
    }

    #[test]
    fn a_mutation_no_parser_reads_is_loaded_as_written_but_a_foreign_key_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        pki::init(tmp.path(), &PkiOptions::default(), false).unwrap();
        let pki = PkiDir::open(tmp.path()).unwrap();

        // trailing-bytes fails the parse every other credential must pass.
        let odd = files(&pki, "trailing-bytes");
        assert!(creds::load_certified_key(&odd.cert, &odd.key).is_err());
        let ck = load_mutation(&odd).unwrap();
        let pem = std::fs::read(&odd.cert).unwrap();
        let first = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(ck.cert[0], first, "presented byte for byte");

        // A key that provably belongs to another certificate (the server's)
        // is refused.
        let mut wrong = files(&pki, "bad-signature");
        wrong.key = pki.server().unwrap().key;
        assert!(matches!(
            load_mutation(&wrong),
            Err(CredError::KeyMismatch { .. })
        ));
        // Not PEM at all: says so, with the fix.
        std::fs::write(&odd.cert, "garbage").unwrap();
        let e = load_mutation(&odd).unwrap_err().to_string();
        assert!(
            e.contains("holds no certificate") && e.contains("pki init"),
            "{e}"
        );
    }
}
