//! "Bring your own CA": reading the user's CA certificate and key given to
//! `pki init --ca-cert --ca-key`, and checking before anything is issued
//! that the pair can sign a test PKI (the key matches, the certificate is a
//! CA, valid now and long enough, its path length allows what is asked).
//!
//! Owns: the checks and their messages, each naming the file and the fix.
//! Never: copies the user's private key anywhere, writes it, or puts any of
//! its bytes in an error or a log line; the key lives only in the in-memory
//! [`Authority`] that signs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::issue::Authority;
use super::PkiError;
use crate::x509::{pem_labels, pem_problem, rfc3339, CertFacts};

/// The files of the user's CA, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCaFiles {
    /// The CA certificate, optionally followed by its chain up to the root
    /// (issuing CA first, as in a `tls.crt`).
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM, unencrypted.
    pub key: PathBuf,
}

/// The user's CA, checked and ready to sign.
pub(super) struct UserCa {
    /// Absolute paths, as the manifest records them.
    pub files: OwnCaFiles,
    pub authority: Authority,
    pub facts: CertFacts,
    /// Certificates after the CA in `--ca-cert` and below the root: they
    /// travel in every `tls.crt` after the CA itself.
    pub middles: Vec<CertificateDer<'static>>,
    /// The self-signed root ending `--ca-cert`, when the CA is an
    /// intermediate and the user gave its chain.
    pub root: Option<CertificateDer<'static>>,
}

impl UserCa {
    /// Read and check the pair for a PKI whose leaves live `validity` from
    /// `now`; `intermediate` asks for a certshift intermediate below the CA.
    pub fn load(
        files: &OwnCaFiles,
        validity: Duration,
        intermediate: bool,
        now: OffsetDateTime,
    ) -> Result<UserCa, PkiError> {
        let cert_file = &files.cert;
        let key_file = &files.key;
        let certs = read_certs(cert_file)?;
        let key = read_key(key_file)?;
        let (ca_der, rest) = certs
            .split_first()
            .expect("read_certs returns at least one certificate");
        let facts = CertFacts::from_der(ca_der).map_err(|e| {
            bad(
                cert_file,
                format!("the first certificate cannot be read ({e})"),
                "pass your CA certificate in PEM",
            )
        })?;

        if key.public_key_raw() != facts.public_key_raw.as_slice() {
            return Err(bad(
                key_file,
                format!(
                    "does not match the certificate in {} (public keys differ)",
                    cert_file.display()
                ),
                "pass the private key of this CA certificate",
            ));
        }
        if !facts.is_ca {
            return Err(bad(
                cert_file,
                format!(
                    "{} is not a CA certificate (no basicConstraints CA:TRUE)",
                    facts.subject
                ),
                "pass the certificate of a CA (root or intermediate), not a leaf",
            ));
        }
        for (usage, what) in [
            ("keyCertSign", "sign certificates"),
            ("cRLSign", "sign the CRL that revokes the `revoked` variant"),
        ] {
            // An absent keyUsage extension restricts nothing (RFC 5280 4.2.1.3).
            if !facts.key_usage.is_empty() && !facts.key_usage.iter().any(|u| u == usage) {
                return Err(bad(
                    cert_file,
                    format!("keyUsage has no {usage}: this CA may not {what}"),
                    "use a CA whose keyUsage includes keyCertSign and cRLSign",
                ));
            }
        }
        if facts.not_before > now {
            return Err(bad(
                cert_file,
                format!("is not valid until {}", rfc3339(facts.not_before)),
                "check the clock, or use a CA that is valid now",
            ));
        }
        if facts.not_after <= now {
            return Err(bad(
                cert_file,
                format!("expired at {}", rfc3339(facts.not_after)),
                "renew the CA or use one that is valid now",
            ));
        }
        if facts.not_after < now + validity {
            return Err(bad(
                cert_file,
                format!(
                    "expires at {}, before leaves valid for {} would",
                    rfc3339(facts.not_after),
                    humantime::format_duration(validity)
                ),
                "pass a shorter --validity or renew the CA",
            ));
        }
        if intermediate && facts.path_len == Some(0) {
            return Err(bad(
                cert_file,
                "basicConstraints pathlen:0 allows no intermediate CA below it".into(),
                "drop --intermediate (leaves are then issued by this CA directly)",
            ));
        }

        let (middles, root) = chain_above(cert_file, &facts, rest)?;
        let authority = Authority::from_parts(ca_der.clone(), key)?;
        let files = OwnCaFiles {
            cert: absolute(cert_file),
            key: absolute(key_file),
        };
        Ok(UserCa {
            files,
            authority,
            facts,
            middles,
            root,
        })
    }

    /// What `ca/ca.crt` holds: the root when the user gave one, else the CA.
    pub fn anchor(&self) -> &CertificateDer<'static> {
        self.root.as_ref().unwrap_or(&self.authority.cert)
    }
}

/// The error of a check on a user's file.
fn bad(file: &Path, problem: String, fix: &str) -> PkiError {
    PkiError::OwnCa {
        file: file.to_path_buf(),
        problem,
        fix: fix.into(),
    }
}

fn read(file: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(file).map_err(|source| PkiError::Io {
        path: file.to_path_buf(),
        source,
    })
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            bad(
                file,
                format!("is not valid PEM: {}", pem_problem(&e)),
                "pass the CA certificate in PEM",
            )
        })?;
    if certs.is_empty() {
        let labels = pem_labels(&bytes);
        let holds = match labels.is_empty() {
            true => "no PEM certificate".to_string(),
            false => format!("no certificate (it holds {})", labels.join(", ")),
        };
        return Err(bad(
            file,
            holds,
            "pass the CA certificate (-----BEGIN CERTIFICATE-----) as --ca-cert",
        ));
    }
    Ok(certs)
}

fn read_key(file: &Path) -> Result<KeyPair, PkiError> {
    let bytes = read(file)?;
    let labels = pem_labels(&bytes);
    if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") {
        return Err(bad(
            file,
            "is encrypted".into(),
            "decrypt it to a private file first (`openssl pkey -in CA.key -out plain.key`, mode 0600) and pass that",
        ));
    }
    let Some(label) = labels.iter().find(|l| l.ends_with("PRIVATE KEY")) else {
        let holds = match labels.is_empty() {
            true => "no PEM private key".to_string(),
            false => format!("no private key (it holds {})", labels.join(", ")),
        };
        return Err(bad(file, holds, "pass the CA's private key as --ca-key"));
    };
    // Only the block of the key: a file may also carry the certificate.
    let text = String::from_utf8_lossy(&bytes);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let block = text
        .find(&begin)
        .and_then(|at| {
            text[at..]
                .find(&end)
                .map(|len| &text[at..at + len + end.len()])
        })
        .unwrap_or_default();
    // rcgen's error names no key material; keep it out of ours too.
    KeyPair::from_pem(block).map_err(|e| {
        bad(
            file,
            format!("cannot be used to sign ({e})"),
            "use an ECDSA P-256/P-384, Ed25519 or RSA key in PEM (PKCS#8, PKCS#1 or SEC1)",
        )
    })
}

/// Split the certificates after the CA into the ones sent with every leaf
/// and the root; each must be issued by the next.
fn chain_above(
    file: &Path,
    ca_facts: &CertFacts,
    rest: &[CertificateDer<'static>],
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        Option<CertificateDer<'static>>,
    ),
    PkiError,
> {
    if ca_facts.self_signed && !rest.is_empty() {
        return Err(bad(
            file,
            format!(
                "holds {} certificate(s) after a self-signed root",
                rest.len()
            ),
            "pass the root alone, or the intermediate first followed by its chain",
        ));
    }
    let mut below = ca_facts.clone();
    let mut middles = Vec::new();
    for (i, der) in rest.iter().enumerate() {
        let facts = CertFacts::from_der(der).map_err(|e| {
            bad(
                file,
                format!("certificate {} cannot be read ({e})", i + 2),
                "pass PEM certificates",
            )
        })?;
        if below.link.issuer_der != facts.link.subject_der {
            return Err(bad(
                file,
                format!(
                    "certificate {} ({}) did not issue the one before it ({})",
                    i + 2,
                    facts.subject,
                    below.subject
                ),
                "order the file as a chain: your CA first, then each issuer up to the root",
            ));
        }
        if facts.self_signed {
            if i + 1 != rest.len() {
                return Err(bad(
                    file,
                    "has certificates after its root".into(),
                    "end the chain with the root",
                ));
            }
            return Ok((middles, Some(der.clone())));
        }
        middles.push(der.clone());
        below = facts;
    }
    Ok((middles, None))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
