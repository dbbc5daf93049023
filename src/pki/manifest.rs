//! `manifest.toml`: the index of a test PKI. Every later command (serve,
//! proxy, audit, demo) finds credentials and their expected verdicts here
//! rather than by guessing file names, so its field names are a contract.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Expect, KeyType, Mandate, PkiError, Variant};
use crate::x509::{rfc3339, CertFacts};

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
    /// Where the CA came from when `pki init --ca-cert/--ca-key` issued the
    /// PKI under the user's own CA; absent for certshift's own root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ca: Option<UserCaInfo>,
    pub credentials: Vec<Entry>,
    /// The mutated certificates of the first service (`pki::mutate`); absent
    /// in PKIs written before there were any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutations: Vec<MutationEntry>,
}

/// One mutated certificate: `tls.crt` (the mutated leaf, any intermediate
/// it adds, the identity's chain) and `tls.key` (the identity's own key).
/// Its facts are not recorded the way [`Entry`]'s are: some mutations are
/// certificates no parser reads back (trailing bytes, a duplicate
/// extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutationEntry {
    /// The catalogue's name (`mutation:<name>` in the audit).
    pub name: String,
    /// Directory, relative to the PKI root.
    pub path: String,
    pub cert: String,
    pub key: String,
    /// The service whose valid identity was mutated.
    pub identity: String,
    /// The verdict a conforming validator gives it.
    pub expect: Expect,
    /// Who the rule binds: validator, issuer, svid or crypto.
    pub mandate: Mandate,
    /// What differs from the valid identity.
    pub changes: String,
    /// The rule that decides.
    pub rule: String,
    /// SHA-256 of the leaf's bytes as presented, colon-separated hex.
    pub sha256: String,
}

/// The user's CA a PKI was issued under. Its private key stays where the
/// user keeps it: `key` is that path, never a copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCaInfo {
    /// `--ca-cert` as given, made absolute.
    pub cert: String,
    /// `--ca-key` as given, made absolute.
    pub key: String,
    pub subject: String,
    /// SHA-256 of the CA certificate's DER, as the entries' `sha256`.
    pub sha256: String,
    pub not_after: String,
    /// "root" (self-signed) or "intermediate".
    pub kind: String,
    /// Subject of `ca/ca.crt`, what a service must trust: the root when
    /// `--ca-cert` carried the chain up to it, else the CA itself.
    pub trust_anchor: String,
}

/// Which CA signed a certificate of the PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuedBy {
    /// certshift's own root.
    GeneratedRoot,
    /// The intermediate certshift made (`--intermediate`).
    GeneratedIntermediate,
    /// The user's CA (`--ca-cert`).
    UserCa,
    /// The fresh root nobody trusts.
    UntrustedCa,
    /// Self-signed.
    #[serde(rename = "self")]
    Itself,
    /// Made outside certshift: the user's CA certificate and its chain.
    External,
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
    /// PKCS#8 private key, relative to the PKI root. For the user's CA it
    /// is the absolute path the key was read from (never copied), and empty
    /// for a root whose key certshift never saw.
    pub key: String,
    /// Which CA signed the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuedBy>,
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

    /// The mutated certificate called `name`.
    pub fn mutation(&self, name: &str) -> Option<&MutationEntry> {
        self.mutations.iter().find(|m| m.name == name)
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
pub(crate) struct EntryFacts {
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
}

impl EntryFacts {
    pub fn of(der: &[u8]) -> Result<Self, PkiError> {
        let facts = CertFacts::from_der(der).map_err(|e| PkiError::Pem {
            what: "issued certificate".into(),
            detail: e.to_string(),
        })?;
        Ok(EntryFacts {
            serial: facts.serial,
            not_before: rfc3339(facts.not_before),
            not_after: rfc3339(facts.not_after),
            sha256: facts.sha256,
        })
    }
}
