//! Reading credentials from files and checking them before anyone uses them:
//! a chain that parses, a key that matches its certificate, CAs and CRLs
//! that parse. A file that fails here never reaches a TLS config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::Sources;
use crate::x509::{looks_like_pem, pem_labels};

/// Why a credential file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks or one DER certificate){found}")]
    NoCertificate { path: PathBuf, found: String },
    #[error("{path}: certificate {index} is malformed ({detail}); the file may be truncated or half-written")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("{path} holds no private key (expected a PEM `PRIVATE KEY` block, PKCS#8){found}")]
    NoKey { path: PathBuf, found: String },
    #[error("{path}: private key unusable: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("key {key} does not match certificate {cert} (public keys differ); pass the key that belongs to this certificate")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path} holds no CRL (expected PEM `BEGIN X509 CRL` blocks)")]
    NoCrl { path: PathBuf },
    #[error("{path}: CRL malformed: {detail}")]
    BadCrl { path: PathBuf, detail: String },
    #[error("{path}: certificate {index} cannot be a trust anchor: {detail}")]
    BadAnchor {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("{path}: the certificate cannot be used now: {detail}")]
    Unusable { path: PathBuf, detail: String },
    #[error("building the TLS configuration: {0}")]
    Tls(String),
}

/// Bytes of a file, with its path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, CredError> {
    std::fs::read(path).map_err(|source| CredError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate chain (leaf first) from PEM or DER; every certificate must parse.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredError> {
    parse_chain(path, &read(path)?)
}

pub fn parse_chain(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CredError> {
    let certs: Vec<CertificateDer<'static>> = if looks_like_pem(bytes) {
        let mut certs = Vec::new();
        for (index, item) in CertificateDer::pem_slice_iter(bytes).enumerate() {
            certs.push(item.map_err(|e| CredError::BadCertificate {
                path: path.to_path_buf(),
                index: index + 1,
                detail: crate::x509::pem_problem(&e),
            })?);
        }
        certs
    } else if bytes.first() == Some(&0x30) {
        vec![CertificateDer::from(bytes.to_vec())]
    } else {
        Vec::new()
    };
    if certs.is_empty() {
        return Err(CredError::NoCertificate {
            path: path.to_path_buf(),
            found: held(bytes),
        });
    }
    for (index, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert).map_err(|e| CredError::BadCertificate {
            path: path.to_path_buf(),
            index: index + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// A PKCS#8 (or PKCS#1 / SEC1) private key from PEM.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CredError> {
    parse_key(path, &read(path)?)
}

pub fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CredError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => CredError::NoKey {
            path: path.to_path_buf(),
            found: held(bytes),
        },
        e => CredError::BadKey {
            path: path.to_path_buf(),
            detail: crate::x509::pem_problem(&e),
        },
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CredError> {
    certified_key(cert, load_chain(cert)?, key, load_key(key)?)
}

pub fn certified_key(
    cert_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, CredError> {
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CredError::BadKey {
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CredError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        Err(e) => Err(CredError::BadCertificate {
            path: cert_path.to_path_buf(),
            index: 1,
            detail: e.to_string(),
        }),
    }
}

/// Refuse a leaf outside its validity window at `now`: it parses and its
/// key matches, yet every peer would refuse it. What presents a bad
/// certificate on purpose (the plan's variants) never comes through here.
pub fn check_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: time::OffsetDateTime,
) -> Result<(), CredError> {
    let facts = crate::x509::CertFacts::from_der(leaf).map_err(|e| CredError::BadCertificate {
        path: path.to_path_buf(),
        index: 1,
        detail: e.to_string(),
    })?;
    let at = crate::x509::rfc3339;
    let detail = if now > facts.not_after {
        format!("it expired at {}", at(facts.not_after))
    } else if now < facts.not_before {
        format!("it is not valid before {}", at(facts.not_before))
    } else {
        return Ok(());
    };
    Err(CredError::Unusable {
        path: path.to_path_buf(),
        detail: format!("{detail} (now {}); write a certificate valid now", at(now)),
    })
}

/// Refuse a client credential that does not chain to `roots` (the CA it is
/// meant for, read from `ca`), judged as a server judging client
/// certificates would judge it: chain, validity and clientAuth usage.
pub fn check_client_chain(
    path: &Path,
    ck: &CertifiedKey,
    ca: &Path,
    roots: RootCertStore,
) -> Result<(), CredError> {
    use rustls::server::WebPkiClientVerifier;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| CredError::Tls(e.to_string()))?;
    let (leaf, rest) = ck
        .cert
        .split_first()
        .ok_or_else(|| CredError::NoCertificate {
            path: path.to_path_buf(),
            found: String::new(),
        })?;
    verifier
        .verify_client_cert(leaf, rest, rustls_pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| CredError::Unusable {
            path: path.to_path_buf(),
            detail: format!(
                "it does not chain to the CA it is meant for, {} ({e}); write a certificate that CA issued",
                ca.display()
            ),
        })
}

/// A client certificate and key, read through `src` (which fingerprints
/// both files) and checked.
pub fn read_client_pair(
    src: &mut Sources,
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, CredError> {
    let (cert_bytes, key_bytes) = (src.read(cert)?, src.read(key)?);
    let chain = parse_chain(cert, &cert_bytes)?;
    let ck = certified_key(cert, chain, key, parse_key(key, &key_bytes)?)?;
    Ok(Arc::unwrap_or_clone(ck))
}

/// The serial of a credential's leaf, as hex (the manifest's spelling).
pub fn leaf_serial(ck: &CertifiedKey) -> Option<String> {
    ck.cert.first().map(serial_of)
}

/// The serial of a certificate (see [`crate::x509::serial_hex`]); empty when
/// it does not parse, since it only labels a log line or a timeline mark.
pub fn serial_of(der: &CertificateDer<'_>) -> String {
    crate::x509::serial_of(der).unwrap_or_default()
}

/// Trust anchors from one or more CA bundle files.
pub fn load_roots(paths: &[PathBuf]) -> Result<RootCertStore, CredError> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        add_roots(&mut roots, path, &read(path)?)?;
    }
    Ok(roots)
}

/// Add every certificate of a CA bundle to `roots`.
pub fn add_roots(roots: &mut RootCertStore, path: &Path, bytes: &[u8]) -> Result<(), CredError> {
    for (index, cert) in parse_chain(path, bytes)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| CredError::BadAnchor {
            path: path.to_path_buf(),
            index: index + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// Every CRL in the given PEM files.
pub fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, CredError> {
    let mut crls = Vec::new();
    for path in paths {
        crls.extend(parse_crls(path, &read(path)?)?);
    }
    Ok(crls)
}

/// The CRLs of one PEM file; at least one, each well-formed.
pub fn parse_crls(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, CredError> {
    let bad = |detail: String| CredError::BadCrl {
        path: path.to_path_buf(),
        detail,
    };
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if crls.is_empty() {
        return Err(CredError::NoCrl {
            path: path.to_path_buf(),
        });
    }
    for crl in &crls {
        x509_parser::parse_x509_crl(crl).map_err(|e| bad(e.to_string()))?;
    }
    Ok(crls)
}

/// The process-wide crypto provider (aws-lc-rs), installed and warmed on
/// first use.
pub fn provider() -> Arc<CryptoProvider> {
    if let Some(p) = CryptoProvider::get_default() {
        return p.clone();
    }
    // Racing installers all install the same provider; losing the race is fine.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
    {
        if let Some(p) = CryptoProvider::get_default() {
            warm(p);
        }
    }
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// One key generation in every key-exchange group: aws-lc initialises each
/// algorithm on its first use, which took 40-50 ms for the first handshake
/// of a process here (X25519MLKEM768 above all). Done while the process
/// sets up, that is not in the first operation a load times, nor in the
/// first client a service answers.
fn warm(p: &CryptoProvider) {
    for group in &p.kx_groups {
        let _ = group.start();
    }
}

/// "; it holds: PRIVATE KEY" — the tail of a wrong-file error.
fn held(bytes: &[u8]) -> String {
    match pem_labels(bytes).as_slice() {
        [] if bytes.is_empty() => "; the file is empty".into(),
        [] => String::new(),
        l => format!("; it holds: {}", l.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_pem_are_refused_with_the_file_named() {
        let p = Path::new("/x/tls.crt");
        let err = parse_chain(p, b"not a certificate at all").unwrap_err();
        assert!(matches!(err, CredError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("/x/tls.crt"));
        let err = parse_chain(p, b"-----BEGIN CERTIFICATE-----\nMIIB").unwrap_err();
        assert!(matches!(err, CredError::BadCertificate { .. }), "{err}");
        let err = parse_chain(
            p,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("it holds: PRIVATE KEY"), "{err}");
    }
}
