//! What a certificate revocation list says: who issued it and which serials
//! it revokes, in the spellings [`CertFacts`](super::CertFacts) uses, so a
//! certificate and a CRL compare without re-parsing either.

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::{serial_hex, FactsError};

/// The parts of one CRL that say which certificates it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFacts {
    /// RFC 4514-style, as [`CertFacts::issuer`](super::CertFacts::issuer).
    pub issuer: String,
    /// Raw DER, compared with a certificate's
    /// [`IssuerLink::issuer_der`](super::IssuerLink::issuer_der) byte for
    /// byte, as path builders match names.
    pub issuer_der: Vec<u8>,
    /// Revoked serials, see [`serial_hex`].
    pub revoked: Vec<String>,
    /// When the issuer promises a newer list; past it, this one is stale.
    pub next_update: Option<time::OffsetDateTime>,
}

impl CrlFacts {
    /// Parse one DER CRL; bytes after it are an error. The signature is not
    /// checked (this module never verifies).
    pub fn from_der(der: &[u8]) -> Result<CrlFacts, FactsError> {
        let (rest, crl) = CertificateRevocationList::from_der(der)?;
        if !rest.is_empty() {
            return Err(FactsError::TrailingBytes(rest.len()));
        }
        Ok(CrlFacts {
            issuer: crl.issuer().to_string(),
            issuer_der: crl.issuer().as_raw().to_vec(),
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| serial_hex(r.raw_serial()))
                .collect(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
        })
    }

    /// Whether this CRL speaks for `issuer_der` and lists `serial`.
    pub fn revokes(&self, issuer_der: &[u8], serial: &str) -> bool {
        self.issuer_der == issuer_der && self.revoked.iter().any(|s| s == serial)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateRevocationListDer;
    use time::OffsetDateTime;

    use super::*;
    use crate::pki::{Authority, KeyType, LeafSpec, Usage};
    use crate::x509::CertFacts;

    #[test]
    fn a_crl_revokes_its_own_issuers_serials_only() {
        let now = OffsetDateTime::now_utc();
        let day = Duration::from_secs(86_400);
        let ca = Authority::new_root("crl CA", KeyType::EcdsaP256, now, day).unwrap();
        let other = Authority::new_root("other CA", KeyType::EcdsaP256, now, day).unwrap();
        let spec = LeafSpec::new("a", Usage::Client, now, day);
        let revoked = ca.issue(&spec, KeyType::EcdsaP256).unwrap();
        let kept = ca.issue(&spec, KeyType::EcdsaP256).unwrap();
        let pem = ca
            .crl(std::slice::from_ref(&revoked.serial), now, day)
            .unwrap();
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let crl = CrlFacts::from_der(&der).unwrap();
        assert_eq!(crl.issuer, "O=certshift test PKI, CN=crl CA");
        let next = crl.next_update.expect("the PKI's CRLs carry nextUpdate");
        assert!(
            (next - (now + day)).abs() < time::Duration::seconds(2),
            "{next}"
        );

        let facts = |der: &[u8]| CertFacts::from_der(der).unwrap();
        let (r, k) = (facts(&revoked.cert), facts(&kept.cert));
        assert_eq!(crl.revoked, std::slice::from_ref(&r.serial));
        assert!(crl.revokes(&r.link.issuer_der, &r.serial));
        assert!(!crl.revokes(&k.link.issuer_der, &k.serial));
        // The same serial under another issuer's name is not this CRL's to revoke.
        let foreign = facts(&other.cert).link.subject_der;
        assert!(!crl.revokes(&foreign, &r.serial));

        let mut trailing = der.to_vec();
        trailing.push(0);
        assert!(matches!(
            CrlFacts::from_der(&trailing),
            Err(FactsError::TrailingBytes(1))
        ));
    }
}
