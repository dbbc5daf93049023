//! A server's TLS material read from files: its own chain and key, the CAs
//! client certificates must chain to, and CRLs. Read once per load through
//! [`Sources`], so the fingerprint comes from the very bytes it was built
//! from and a reload tells "unchanged" from "changed" without a second read
//! racing a writer.

use std::path::PathBuf;

use super::{
    add_roots, certified_key, check_validity, parse_chain, parse_crls, parse_key, CredError,
    Sources,
};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::CertificateRevocationListDer;

/// Everything a server TLS config is built from, already loaded and checked.
pub struct ServerTlsMaterial {
    pub identity: Arc<CertifiedKey>,
    pub client_roots: RootCertStore,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    pub trust_domains: Vec<String>,
}

/// The files a server's TLS material is read from (and re-read on reload).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cas: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
}

/// Where a verifier learns that a client certificate was revoked: shown in
/// `/stats` so that running without any source is never silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// No CRL: a revoked certificate is accepted.
    None,
    /// These CRL files.
    Crls(Vec<PathBuf>),
}

impl Revocation {
    pub fn of(crls: &[PathBuf]) -> Self {
        match crls {
            [] => Revocation::None,
            files => Revocation::Crls(files.to_vec()),
        }
    }
}

impl serde::Serialize for Revocation {
    /// `"none"`, or the CRL files.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Revocation::None => s.serialize_str("none"),
            Revocation::Crls(files) => s.collect_seq(files.iter().map(|f| f.display().to_string())),
        }
    }
}

impl ServerFiles {
    /// Where revocation status comes from.
    pub fn revocation(&self) -> Revocation {
        Revocation::of(&self.crls)
    }

    pub fn all(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_cas.iter().cloned());
        v.extend(self.crls.iter().cloned());
        v
    }

    /// Read and check every file through `src`, which fingerprints them.
    pub fn read(
        &self,
        src: &mut Sources,
        trust_domains: &[String],
    ) -> Result<ServerTlsMaterial, CredError> {
        let chain = parse_chain(&self.cert, &src.read(&self.cert)?)?;
        let key = parse_key(&self.key, &src.read(&self.key)?)?;
        let identity = certified_key(&self.cert, chain, &self.key, key)?;
        // An expired server certificate parses and matches its key, and
        // every client would refuse it: not a credential to publish.
        if let Some(leaf) = identity.cert.first() {
            check_validity(&self.cert, leaf, time::OffsetDateTime::now_utc())?;
        }
        let mut client_roots = RootCertStore::empty();
        for ca in &self.client_cas {
            add_roots(&mut client_roots, ca, &src.read(ca)?)?;
        }
        let mut crls = Vec::new();
        for crl in &self.crls {
            crls.extend(parse_crls(crl, &src.read(crl)?)?);
        }
        Ok(ServerTlsMaterial {
            identity,
            client_roots,
            crls,
            trust_domains: trust_domains.to_vec(),
        })
    }
}
