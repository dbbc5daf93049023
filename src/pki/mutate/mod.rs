//! Mutated certificates: the valid identity's certificate with exactly one
//! thing changed, each carrying the verdict RFC 5280 and the SPIFFE
//! X.509-SVID rules require of a validator.
//!
//! A mutation keeps the identity's public key, so a client holding the
//! identity's private key completes its side of the TLS handshake, and is
//! re-signed by the identity's issuing CA unless the signature is what it
//! changes: what is tested is the service's certificate validation, not the
//! TLS stack. Mutations rcgen can express go through `pki::issue`'s own
//! leaf and intermediate parameters ([`LeafSpec`], `new_intermediate_with`);
//! the rest start as such a certificate and are edited as DER
//! (`pki::resign`).
//!
//! Under an issuing CA with pathLenConstraint 0 (`pki init --intermediate`
//! makes one), the mutations that add an intermediate below it
//! (`issuer-not-ca`, `name-constraints-violated`) exceed that constraint
//! too: their one change is only the one in a PKI whose issuing CA may have
//! CAs below it (the default flat PKI, most users' own CAs).
//!
//! Names are a contract: `mutations/<name>/` in a PKI, the audit's check
//! `mutation:<name>`, report rows. Never rename one.
//! Never: decides what a service did with one (that is the audit) or writes
//! files (`pki::generate`, `pki::write`).

mod catalogue;
pub mod fuzz;

use std::fmt;
use std::time::Duration;

use rcgen::SubjectPublicKeyInfo;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::issue::{Authority, KeyType, LeafSpec, Usage};
use super::resign::{assemble, split_certificate, tbs_elements, tbs_from_elements};
use super::{Expect, PkiError};
use crate::spiffe::SpiffeId;
use crate::x509::CertFacts;

pub use catalogue::MUTATIONS;

/// Who a rule binds, which decides how hard an audit holds a service to a
/// mutation's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mandate {
    /// A rule every validator applies: RFC 5280 path validation (§6) and
    /// certificate processing (unknown critical extensions, signatures,
    /// usage), DER itself.
    Validator,
    /// A MUST on the issuing CA (RFC 5280's profile, §4; X.509-SVID's leaf
    /// profile) that validation is not required to re-check; RFC 5280 even
    /// asks users to handle some gracefully (negative serials). Strict
    /// validators refuse; the audit holds a service to it under `--strict`.
    Issuer,
    /// A rule of the SPIFFE ID and X.509-SVID standards for validators:
    /// binding on SPIFFE authentication, not on plain X.509 mTLS.
    Svid,
    /// Algorithm policy beyond RFC 5280 (SHA-1), like the audit's
    /// `weak-signature`: held to under `--strict`.
    Crypto,
}

impl Mandate {
    pub fn name(self) -> &'static str {
        match self {
            Mandate::Validator => "validator",
            Mandate::Issuer => "issuer",
            Mandate::Svid => "svid",
            Mandate::Crypto => "crypto",
        }
    }
}

impl fmt::Display for Mandate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of the catalogue.
pub struct Mutation {
    /// Kebab-case, a contract (see the module header).
    pub name: &'static str,
    /// `mutation:<name>`, the audit check's id.
    pub check_id: &'static str,
    /// One line: what differs from the valid identity.
    pub changes: &'static str,
    /// The section of RFC 5280 / X.509-SVID / SPIFFE-ID that decides, and why.
    pub rule: &'static str,
    /// What a conforming validator bound by [`Self::mandate`] does.
    pub expect: Expect,
    pub mandate: Mandate,
    derive: fn(&Base<'_>) -> Result<Vec<CertificateDer<'static>>, PkiError>,
}

impl fmt::Debug for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutation")
            .field("name", &self.name)
            .finish()
    }
}

impl Mutation {
    /// The chain to present, leaf first: the mutated leaf, any intermediate
    /// the mutation adds, then `chain` (the identity's own intermediates).
    /// `leaf` is the identity's certificate, issued by `issuing`; its public
    /// key is kept, so the identity's private key goes with the result.
    pub fn derive(
        &self,
        leaf: &CertificateDer<'_>,
        issuing: &Authority,
        chain: &[CertificateDer<'static>],
    ) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        let base = Base::new(self.name, leaf, issuing, chain)?;
        (self.derive)(&base)
    }
}

/// The mutation called `name`.
pub fn find(name: &str) -> Option<&'static Mutation> {
    MUTATIONS.iter().find(|m| m.name == name)
}

/// What every mutation starts from: the identity's leaf read back as a
/// [`LeafSpec`] and its public key, and who signs.
struct Base<'a> {
    name: &'static str,
    issuing: &'a Authority,
    chain: &'a [CertificateDer<'static>],
    facts: CertFacts,
    public_key: SubjectPublicKeyInfo,
}

impl<'a> Base<'a> {
    fn new(
        name: &'static str,
        leaf: &CertificateDer<'_>,
        issuing: &'a Authority,
        chain: &'a [CertificateDer<'static>],
    ) -> Result<Self, PkiError> {
        let facts = CertFacts::from_der(leaf).map_err(|e| PkiError::Pem {
            what: "the identity's certificate".into(),
            detail: e.to_string(),
        })?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| PkiError::Pem {
            what: "the identity's certificate".into(),
            detail: e.to_string(),
        })?;
        let public_key =
            SubjectPublicKeyInfo::from_der(cert.public_key().raw).map_err(|source| {
                PkiError::Issue {
                    what: "the identity's public key".into(),
                    source,
                }
            })?;
        Ok(Base {
            name,
            issuing,
            chain,
            facts,
            public_key,
        })
    }

    /// The identity as `pki::issue` would issue it: its names, SPIFFE ID and
    /// validity, a client leaf (digitalSignature, clientAuth). The subject is
    /// the PKI's (`O=certshift test PKI, CN=<the identity's CN>`).
    fn spec(&self) -> LeafSpec {
        let f = &self.facts;
        let cn = f.common_name.clone().unwrap_or_default();
        let mut spec = LeafSpec::new(&cn, Usage::Client, f.not_before, Duration::ZERO);
        spec.names = f.sans.dns.iter().chain(&f.sans.ip).cloned().collect();
        spec.spiffe_id = f.sans.uri.iter().find(|u| SpiffeId::has_scheme(u)).cloned();
        spec.not_before = f.not_before;
        spec.not_after = f.not_after;
        spec
    }

    /// The identity's SPIFFE ID, for the mutations that bend it.
    fn spiffe_id(&self) -> Result<SpiffeId, PkiError> {
        self.facts
            .spiffe_id
            .clone()
            .ok_or_else(|| PkiError::Mutation {
                name: self.name,
                detail: "the identity carries no SPIFFE ID to change".into(),
            })
    }

    /// A leaf for `spec` around the identity's key, signed by `by`.
    fn sign(&self, by: &Authority, spec: &LeafSpec) -> Result<CertificateDer<'static>, PkiError> {
        by.sign_leaf(spec, &self.public_key).map(|(cert, _)| cert)
    }

    /// A leaf for `spec`, signed by the issuing CA, presented with the
    /// identity's chain.
    fn issued(&self, spec: &LeafSpec) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        Ok(self.present(self.sign(self.issuing, spec)?, Vec::new()))
    }

    /// `leaf`, then `extra` intermediates, then the identity's chain.
    fn present(
        &self,
        leaf: CertificateDer<'static>,
        extra: Vec<CertificateDer<'static>>,
    ) -> Vec<CertificateDer<'static>> {
        let mut out = vec![leaf];
        out.extend(extra);
        out.extend(self.chain.iter().cloned());
        out
    }

    /// The identity re-issued unchanged, its TBSCertificate edited by `edit`
    /// (its elements, whole TLVs: version, serial, signature, issuer,
    /// validity, subject, key, extensions) and signed again by the issuing CA
    /// with its own algorithm.
    fn edited(
        &self,
        edit: impl FnOnce(&mut Vec<Vec<u8>>) -> Result<(), PkiError>,
    ) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        let cert = self.sign(self.issuing, &self.spec())?;
        let parts = split_certificate(&cert)?;
        let mut elements: Vec<Vec<u8>> = tbs_elements(parts.tbs)?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        edit(&mut elements)?;
        let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
        let tbs = tbs_from_elements(&refs)?;
        let signature = self.issuing.sign_bytes(&tbs)?;
        let leaf = assemble(&tbs, parts.signature_algorithm, &signature)?;
        Ok(self.present(leaf, Vec::new()))
    }

    /// An intermediate signed by `by`, valid around the identity's validity,
    /// with `tweak` applied to its parameters. P-256 whatever the PKI's key
    /// type: the key of an added CA is not what these mutations test, and
    /// RSA keys take long to generate.
    fn intermediate(
        &self,
        by: &Authority,
        name: &str,
        tweak: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Result<Authority, PkiError> {
        let from = self.facts.not_before;
        let lifetime = (self.facts.not_after - from).unsigned_abs() + Duration::from_secs(7200);
        by.new_intermediate_with(
            &format!("certshift mutation: {name}"),
            KeyType::EcdsaP256,
            from,
            lifetime,
            tweak,
        )
    }
}

#[cfg(test)]
mod tests;
