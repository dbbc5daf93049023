//! The test PKI: a CA (certshift's own or the user's), server and client leaves with SPIFFE IDs, the
//! catalogue of bad client variants, CRLs, and certificate inspection.
//!
//! Owns: deciding what a test PKI contains ([`generate`]) and who signs it
//! ([`hierarchy`], with the user's CA checked by [`own_ca`]), issuing with rcgen
//! ([`issue`]), weak credentials rcgen cannot make ([`weak`]: SHA-1 signed,
//! RSA-1024) and the certificate DER surgery behind them ([`resign`]), the
//! `manifest.toml` contract ([`manifest`]), the mutated certificates derived
//! from the valid identity ([`mutate`]), where every file of a `--pki`
//! directory lives ([`layout`], [`PkiDir`]), writing keys safely ([`write`])
//! and reading certificates back for people ([`inspect`]).
//! Never: serves, verifies peers or loads live credentials (that is `creds`),
//! and imports nothing from above the material layer (`x509`, `spiffe`).

pub mod cmd;
mod generate;
mod hierarchy;
pub mod inspect;
mod issue;
pub mod layout;
mod manifest;
pub mod mutate;
mod own_ca;
mod resign;
mod variant;
mod weak;
mod write;

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

pub use generate::{generate, GeneratedPki, PkiOptions, SERVER_ACCOUNT};
pub use issue::{
    key_pem, pem_cert, random_serial, self_signed_leaf, serial_number, Authority, Issued, KeyType,
    LeafSpec, Usage,
};
pub use layout::{CredentialFiles, PkiDir};
pub use manifest::{Entry, IssuedBy, Manifest, MutationEntry, Role, UserCaInfo, MANIFEST_FILE};
pub use mutate::{Mandate, Mutation, MUTATIONS};
pub use own_ca::OwnCaFiles;
pub use resign::{
    algorithm_identifier, assemble, resign, signature_bytes, split_certificate, tbs_elements,
    tbs_from_elements, tlv, CertParts,
};
pub use variant::{Expect, UnknownVariant, Variant};
pub use weak::{rsa1024_client, sha1_signed, WeakKeyCredential};
pub use write::{write_files, PkiFile};

/// Errors of PKI generation and manifest reading.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{field} {value:?} is not valid: {fix}")]
    Option {
        field: String,
        value: String,
        fix: String,
    },
    #[error("cannot issue {what}: {source}")]
    Issue { what: String, source: rcgen::Error },
    #[error("{name:?} is not a valid DNS name or URI for a certificate: {detail}")]
    BadName { name: String, detail: String },
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: String, detail: String },
    #[error(
        "{0} is not empty; choose an empty directory or pass --force to overwrite the PKI in it"
    )]
    NotEmpty(PathBuf),
    /// The user's CA (`--ca-cert`/`--ca-key`) cannot issue this PKI.
    #[error("{}: {problem}; {fix}", file.display())]
    OwnCa {
        file: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("{0} exists and is not a directory; choose another --out")]
    NotADirectory(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error(transparent)]
    Spiffe(#[from] crate::spiffe::SpiffeIdError),
    /// `pki::weak` asked a CA for a SHA-1 signature its key has no form of.
    #[error("the issuing CA's key is {ca_key}; a SHA-1 signature needs an RSA or ECDSA CA")]
    NoSha1Signature { ca_key: String },
    /// Taking a certificate's DER apart or putting it back together failed:
    /// the input is not a well-formed certificate, or an element is too long.
    #[error("certificate DER ({what}): {detail}")]
    Der { what: String, detail: String },
    /// A RustCrypto key could not be loaded, generated or used to sign.
    #[error("{what}: {detail}")]
    Crypto { what: String, detail: String },
    /// A mutation cannot be derived from this identity (e.g. a SPIFFE ID
    /// mutation of a certificate that carries none).
    #[error("mutation {name}: {detail}")]
    Mutation { name: &'static str, detail: String },
}

/// Generate a PKI as of now and write it to `dir`; the manifest is returned.
pub fn init(dir: &Path, opts: &PkiOptions, force: bool) -> Result<Manifest, PkiError> {
    // Refuse before spending seconds on RSA keys we would not write.
    if !force
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(PkiError::NotEmpty(dir.to_path_buf()));
    }
    let pki = generate(opts, OffsetDateTime::now_utc())?;
    write_files(dir, &pki.files, force)?;
    Ok(pki.manifest)
}
