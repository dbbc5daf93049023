//! `manifest.toml`: the index of a test PKI. Every later command (serve,
//! proxy, audit, demo) finds credentials and their expected verdicts here
//! rather than by guessing file names, so its field names are a contract.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Expect, KeyType, PkiError, Variant};

pub const MANIFEST_FILE: &str = "manifest.toml";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub generator: String,
    pub generated_at: String,
    pub key_type: KeyType,
    pub trust_domain: String,
    pub namespace: String,
    pub services: Vec<String>,
    pub server_names: Vec<String>,
    pub intermediate: bool,
    /// Leaf validity as given to `--validity`.
    pub validity: String,
    pub credentials: Vec<Entry>,
}

/// What a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The trusted root.
    Ca,
    /// Issues the leaves when the PKI was made with `--intermediate`.
    IntermediateCa,
    /// A root nobody trusts; issues the `untrusted-ca` variant.
    UntrustedCa,
    Server,
    /// A valid client identity, one per service.
    Client,
    /// A bad client credential of the first service.
    Variant,
}

/// One credential: a certificate (and its key) under the PKI directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub role: Role,
    /// Directory of the credential, relative to the PKI root.
    pub path: String,
    /// Certificate file (leaf first, then chain), relative to the PKI root.
    pub cert: String,
    /// PKCS#8 private key, relative to the PKI root.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
    /// The service (Kubernetes service account) this credential speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Uppercase hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// SHA-256 of the leaf's DER, colon-separated uppercase hex.
    pub sha256: String,
    /// The verdict a strict server must give this credential (clients only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Manifest {
    /// Read `DIR/manifest.toml`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| PkiError::Manifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if manifest.format != FORMAT_VERSION {
            return Err(PkiError::Manifest {
                path,
                detail: format!(
                    "format {} is not supported (this certshift reads format {FORMAT_VERSION}); re-run `certshift pki init --force`",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }

    pub fn to_toml(&self) -> Result<String, PkiError> {
        let body = toml::to_string(self).map_err(|e| PkiError::Manifest {
            path: PathBuf::from(MANIFEST_FILE),
            detail: e.to_string(),
        })?;
        Ok(format!(
            "# certshift test PKI, made by `certshift pki init`. Test use only: every key here is throwaway.\n\
             # `expect` is the verdict a strict mTLS server must give the credential, `why` the check behind it.\n\n{body}"
        ))
    }

    /// Credentials a client can present: the valid identities and the bad variants.
    pub fn clients(&self) -> impl Iterator<Item = &Entry> {
        self.credentials
            .iter()
            .filter(|e| matches!(e.role, Role::Client | Role::Variant))
    }

    pub fn find(&self, role: Role, name: &str) -> Option<&Entry> {
        self.credentials
            .iter()
            .find(|e| e.role == role && e.name == name)
    }

    /// The valid credential of `service`.
    pub fn client(&self, service: &str) -> Option<&Entry> {
        self.find(Role::Client, service)
    }

    /// The credential of `variant`; `valid` is the first service's own.
    pub fn variant(&self, variant: Variant) -> Option<&Entry> {
        match variant {
            Variant::Valid => self.services.first().and_then(|s| self.client(s)),
            v => self
                .credentials
                .iter()
                .find(|e| e.role == Role::Variant && e.variant == Some(v)),
        }
    }
}

/// The facts a manifest entry records about a certificate, read back from the
/// DER the way any other tool would see them.
pub(crate) struct CertFacts {
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
}

impl CertFacts {
    pub fn of(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Pem {
            what: "issued certificate".into(),
            detail: e.to_string(),
        })?;
        let time = |t: x509_parser::time::ASN1Time| {
            t.to_datetime()
                .format(&Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        Ok(CertFacts {
            serial: serial_hex(cert.raw_serial()),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            sha256: fingerprint(der),
        })
    }
}

/// SHA-256 of `der`, colon-separated uppercase hex (openssl's `-fingerprint`).
pub fn fingerprint(der: &[u8]) -> String {
    hex_upper(&Sha256::digest(der), ":")
}

/// A serial as `openssl x509 -serial` prints it: uppercase hex of the
/// unsigned value, without DER sign-padding zeros.
pub fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    match &raw[first..] {
        [] => "00".to_string(),
        digits => hex_upper(digits, ""),
    }
}

fn hex_upper(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}
