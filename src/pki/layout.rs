//! Where things live in a `--pki` directory.
//!
//! Owns: the file and directory names `pki init` writes (cert-manager's
//! Secret keys `tls.crt`, `tls.key`, `ca.crt`, plus `crl.pem`) and
//! [`PkiDir`], which answers "which file is the CA, the CRL, the server's
//! certificate, this identity's or this variant's key" from the directory's
//! `manifest.toml`. Every command that takes `--pki` asks here instead of
//! joining file names of its own.
//! Never: reads or checks the credential files themselves (that is `creds`).

use std::path::{Path, PathBuf};

use super::{Entry, Manifest, PkiError, Role, Variant};

/// A leaf credential's certificate chain, leaf first.
pub const CERT_FILE: &str = "tls.crt";
/// A leaf credential's PKCS#8 private key.
pub const KEY_FILE: &str = "tls.key";
/// The root that verifies the peer, beside a leaf credential; also the
/// certificate file of a CA directory.
pub const CA_FILE: &str = "ca.crt";
/// A CA directory's PKCS#8 private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CRL(s), beside the trusted root.
pub const CRL_FILE: &str = "crl.pem";
/// The trusted root's directory.
pub const CA_DIR: &str = "ca";
/// The directory of the valid client identities, one sub-directory each.
pub const CLIENTS_DIR: &str = "clients";
/// The directory of the bad client variants, one sub-directory each.
pub const VARIANTS_DIR: &str = "variants";
/// The directory of the mutated certificates, one sub-directory each.
pub const MUTATIONS_DIR: &str = "mutations";
/// The server credential's directory.
pub const SERVER_DIR: &str = "server";
/// The root nobody trusts (it issues the `untrusted-ca` variant).
pub const UNTRUSTED_CA_DIR: &str = "other-ca";
/// The intermediate CA's certificate and key, in [`CA_DIR`].
pub const INTERMEDIATE_FILE: &str = "intermediate.crt";
pub const INTERMEDIATE_KEY_FILE: &str = "intermediate.key";
/// The user's CA certificate, in [`CA_DIR`], when it is an intermediate
/// below the root in `ca.crt` (its key stays where the user keeps it).
pub const USER_CA_FILE: &str = "user-ca.crt";

/// The files of one credential, as paths under the PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The root that verifies the peer, written beside the server's and each
    /// identity's credential; `None` for variants and CAs.
    pub ca: Option<PathBuf>,
}

/// A test PKI on disk, opened through its manifest.
#[derive(Debug, Clone)]
pub struct PkiDir {
    dir: PathBuf,
    manifest: Manifest,
}

impl PkiDir {
    /// Read `DIR/manifest.toml`; fails as [`Manifest::load`] does, except
    /// that a missing directory or manifest says how to make a PKI.
    pub fn open(dir: &Path) -> Result<PkiDir, PkiError> {
        match Manifest::load(dir) {
            Ok(m) => Ok(PkiDir::new(dir, m)),
            Err(PkiError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                let detail = if dir.is_dir() {
                    format!(
                        "not found: {} is not a PKI written by `certshift pki init`; write one with `certshift pki init --out DIR` and pass that DIR",
                        dir.display()
                    )
                } else {
                    format!(
                        "no such directory; write a test PKI there with `certshift pki init --out {}`",
                        dir.display()
                    )
                };
                let path = if dir.is_dir() {
                    path
                } else {
                    dir.to_path_buf()
                };
                Err(PkiError::Manifest { path, detail })
            }
            Err(e) => Err(e),
        }
    }

    /// A PKI whose manifest is already in hand (e.g. just generated).
    pub fn new(dir: &Path, manifest: Manifest) -> PkiDir {
        PkiDir {
            dir: dir.to_path_buf(),
            manifest,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The trusted root's certificate: what verifies servers and clients.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca().cert
    }

    /// The trusted root's certificate and key.
    pub fn ca(&self) -> CredentialFiles {
        match self.root_entry() {
            Some(e) => self.files(e),
            None => CredentialFiles {
                cert: self.dir.join(CA_DIR).join(CA_FILE),
                key: self.dir.join(CA_DIR).join(CA_KEY_FILE),
                ca: None,
            },
        }
    }

    /// The CRLs of the PKI's CAs, beside the trusted root. Older PKIs may
    /// have none: callers check that it exists.
    pub fn crl(&self) -> PathBuf {
        let ca_dir = self.root_entry().map_or(CA_DIR, |e| e.path.as_str());
        self.dir.join(ca_dir).join(CRL_FILE)
    }

    /// The server credential.
    pub fn server(&self) -> Option<CredentialFiles> {
        self.manifest
            .credentials
            .iter()
            .find(|e| e.role == Role::Server)
            .map(|e| self.files(e))
    }

    /// The valid credential of `service`.
    pub fn client(&self, service: &str) -> Option<CredentialFiles> {
        self.manifest.client(service).map(|e| self.files(e))
    }

    /// The credential of `variant`; `valid` is the first service's own.
    pub fn variant(&self, variant: Variant) -> Option<CredentialFiles> {
        self.manifest.variant(variant).map(|e| self.files(e))
    }

    /// The files of the mutated certificate called `name`, when the PKI has
    /// it (PKIs written before mutations have none).
    pub fn mutation(&self, name: &str) -> Option<CredentialFiles> {
        self.manifest.mutation(name).map(|m| CredentialFiles {
            cert: self.dir.join(&m.cert),
            key: self.dir.join(&m.key),
            ca: None,
        })
    }

    /// The CA that issues the leaves: the intermediate when there is one,
    /// else the root.
    pub fn issuing_ca(&self) -> Option<CredentialFiles> {
        let creds = &self.manifest.credentials;
        creds
            .iter()
            .find(|e| e.role == Role::IntermediateCa)
            .or_else(|| self.root_entry())
            .map(|e| self.files(e))
    }

    /// The files of any manifest entry.
    pub fn files(&self, e: &Entry) -> CredentialFiles {
        let ca = matches!(e.role, Role::Server | Role::Client)
            .then(|| self.dir.join(&e.path).join(CA_FILE));
        CredentialFiles {
            cert: self.dir.join(&e.cert),
            key: self.dir.join(&e.key),
            ca,
        }
    }

    fn root_entry(&self) -> Option<&Entry> {
        self.manifest
            .credentials
            .iter()
            .find(|e| e.role == Role::Ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{init, PkiOptions};

    #[test]
    fn every_path_names_a_file_pki_init_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = PkiOptions {
            intermediate: true,
            ..PkiOptions::default()
        };
        init(tmp.path(), &opts, false).unwrap();
        let pki = PkiDir::open(tmp.path()).unwrap();
        let root = tmp.path();
        assert_eq!(pki.dir(), root);
        assert_eq!(pki.ca_cert(), root.join("ca/ca.crt"));
        assert_eq!(pki.crl(), root.join("ca/crl.pem"));
        let server = pki.server().unwrap();
        assert_eq!(server.cert, root.join("server/tls.crt"));
        assert_eq!(server.key, root.join("server/tls.key"));
        assert_eq!(server.ca, Some(root.join("server/ca.crt")));
        let order = pki.client("order-service").unwrap();
        assert_eq!(order.cert, root.join("clients/order-service/tls.crt"));
        assert_eq!(order.ca, Some(root.join("clients/order-service/ca.crt")));
        assert_eq!(pki.client("nobody"), None);
        let expired = pki.variant(Variant::Expired).unwrap();
        assert_eq!(expired.key, root.join("variants/expired/tls.key"));
        assert_eq!(expired.ca, None);
        assert_eq!(pki.variant(Variant::Valid), Some(order));
        let issuing = pki.issuing_ca().unwrap();
        assert_eq!(issuing.cert, root.join("ca/intermediate.crt"));

        let mut files = vec![pki.ca_cert(), pki.crl(), issuing.cert, issuing.key];
        for e in &pki.manifest().credentials {
            let f = pki.files(e);
            files.extend([f.cert, f.key].into_iter().chain(f.ca));
        }
        for f in files {
            assert!(f.is_file(), "{} was not written", f.display());
        }
    }

    #[test]
    fn without_intermediate_the_root_issues() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = PkiOptions {
            services: vec!["a".into()],
            ..PkiOptions::default()
        };
        let manifest = init(tmp.path(), &opts, false).unwrap();
        let pki = PkiDir::new(tmp.path(), manifest);
        let issuing = pki.issuing_ca().unwrap();
        assert_eq!(issuing.cert, pki.ca_cert());
        assert_eq!(issuing.key, tmp.path().join("ca/ca.key"));
        assert_eq!(pki.ca(), issuing);
        let nope = tmp.path().join("nope");
        let missing = PkiDir::open(&nope).unwrap_err();
        assert!(matches!(missing, PkiError::Manifest { .. }), "{missing}");
        let text = missing.to_string();
        let fix = format!("certshift pki init --out {}", nope.display());
        assert!(text.contains(&fix), "{text}");
        // A directory that is no PKI: the manifest is named, and the fix.
        let text = PkiDir::open(&tmp.path().join("ca"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("manifest.toml") && text.contains("certshift pki init --out DIR"),
            "{text}"
        );
    }
}
