//! Certificate facts: everything certshift reads from a certificate, parsed
//! once from DER into a plain [`CertFacts`].
//!
//! Owns: the one spelling of each fact that more than one module shows or
//! compares — the serial (uppercase hex, as `openssl x509 -serial`), the
//! SHA-256 fingerprint (as `openssl x509 -fingerprint -sha256`), validity,
//! SANs and the SPIFFE ID, key type, CA flag, self-signed, usages — the
//! issuer and serials of a CRL, and reading PEM labels. `pki inspect`, the
//! manifest, `creds`, `serve`'s echo, the any-ca verifier and the proxy's
//! minter all read certificates through here.
//! Never: verifies signatures, chains or trust (that is the handshake code),
//! and imports nothing but `spiffe` from this crate: it is the bottom layer.

mod crl;
mod key;
mod pem;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer;

use crate::spiffe::SpiffeId;

pub use crl::CrlFacts;
pub use key::{KeyAlgorithm, KeyInfo};
pub use pem::{looks_like_pem, pem_labels, pem_problem};

/// What one certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// RFC 4514-style, e.g. "O=certshift test PKI, CN=order-service".
    pub subject: String,
    pub issuer: String,
    /// The first commonName of the subject.
    pub common_name: Option<String>,
    /// See [`serial_hex`].
    pub serial: String,
    /// See [`fingerprint`].
    pub sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub sans: Sans,
    /// The one valid SPIFFE ID among the URI SANs, if there is exactly one.
    pub spiffe_id: Option<SpiffeId>,
    pub key: KeyInfo,
    /// The subjectPublicKey bits (an EC point, an RSAPublicKey, an Ed25519
    /// key): what a private key's public half is compared with.
    pub public_key_raw: Vec<u8>,
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint; `None` means unconstrained or not a CA.
    pub path_len: Option<u32>,
    /// RFC 5280 names, e.g. "digitalSignature"; empty when the extension is absent.
    pub key_usage: Vec<String>,
    /// "serverAuth", "clientAuth", ... or the dotted OID for unnamed purposes.
    pub extended_key_usage: Vec<String>,
    /// OpenSSL-style short name, e.g. "ecdsa-with-SHA256", or the dotted OID.
    pub signature_algorithm: String,
    /// Subject and issuer are the same name, compared as raw DER the way
    /// path builders do rather than by a lenient string match.
    pub self_signed: bool,
    /// What links a certificate to its issuer: raw DER names and key identifiers.
    pub link: IssuerLink,
}

/// The fields that say which certificate issued which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerLink {
    pub subject_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
}

/// Subject alternative names by kind, in certificate order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sans {
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub uri: Vec<String>,
    pub email: Vec<String>,
}

/// Why DER is not a certificate we can read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Der(#[from] x509_parser::nom::Err<X509Error>),
    #[error("{0} stray bytes after the certificate")]
    TrailingBytes(usize),
    /// An extension is present but malformed or duplicated.
    #[error(transparent)]
    Extension(#[from] X509Error),
}

impl CertFacts {
    /// Parse one DER certificate; bytes after it are an error.
    pub fn from_der(der: &[u8]) -> Result<CertFacts, FactsError> {
        let (rest, cert) = X509Certificate::from_der(der)?;
        if !rest.is_empty() {
            return Err(FactsError::TrailingBytes(rest.len()));
        }
        let sans = sans(&cert)?;
        let spiffe_id = SpiffeId::from_uri_sans(sans.uri.iter().map(String::as_str));
        let basic = cert.basic_constraints()?;
        let key_usage = match cert.key_usage()? {
            Some(ku) => KEY_USAGE_NAMES
                .iter()
                .enumerate()
                .filter(|(bit, _)| ku.value.flags & (1 << bit) != 0)
                .map(|(_, n)| n.to_string())
                .collect(),
            None => Vec::new(),
        };
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_string);
        Ok(CertFacts {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            common_name,
            serial: serial_hex(cert.raw_serial()),
            sha256: fingerprint(der),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            sans,
            spiffe_id,
            key: key::key_info(&cert),
            public_key_raw: cert.public_key().subject_public_key.data.to_vec(),
            is_ca: basic.as_ref().is_some_and(|bc| bc.value.ca),
            path_len: basic.and_then(|bc| bc.value.path_len_constraint),
            key_usage,
            extended_key_usage: extended_key_usage(&cert)?,
            signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
            link: IssuerLink {
                subject_der: cert.subject().as_raw().to_vec(),
                issuer_der: cert.issuer().as_raw().to_vec(),
                subject_key_id: key_id(&cert, false).map(<[u8]>::to_vec),
                authority_key_id: key_id(&cert, true).map(<[u8]>::to_vec),
            },
        })
    }

    /// Seconds from notBefore to notAfter (negative for a backwards certificate).
    pub fn lifetime(&self) -> time::Duration {
        self.not_after - self.not_before
    }
}

/// The SPIFFE ID of a DER certificate, reading only its SANs: for the
/// per-handshake paths (verifiers, `serve`'s peer) that need nothing else.
pub fn spiffe_id(der: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let sans = sans(&cert).ok()?;
    SpiffeId::from_uri_sans(sans.uri.iter().map(String::as_str))
}

/// The serial of a DER certificate (see [`serial_hex`]), reading nothing else.
pub fn serial_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(serial_hex(cert.raw_serial()))
}

/// SHA-256 of `der`, colon-separated uppercase hex (openssl's `-fingerprint`).
pub fn fingerprint(der: &[u8]) -> String {
    hex_upper(&Sha256::digest(der), ":")
}

/// A serial as `openssl x509 -serial` prints it and `manifest.toml` records
/// it: uppercase hex of the unsigned value, without DER sign-padding zeros.
pub fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    match &raw[first..] {
        [] => "00".to_string(),
        digits => hex_upper(digits, ""),
    }
}

/// RFC 3339 in UTC, as the manifest and `pki inspect` print validity.
pub fn rfc3339(t: OffsetDateTime) -> String {
    // Only fails for years outside 0..=9999, which X.509 time cannot express.
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Bit order of the KeyUsage BIT STRING (RFC 5280 4.2.1.3).
const KEY_USAGE_NAMES: [&str; 9] = [
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

fn sans(cert: &X509Certificate<'_>) -> Result<Sans, X509Error> {
    let mut sans = Sans::default();
    if let Some(ext) = cert.subject_alternative_name()? {
        for gn in &ext.value.general_names {
            match gn {
                GeneralName::DNSName(s) => sans.dns.push(s.to_string()),
                GeneralName::URI(s) => sans.uri.push(s.to_string()),
                GeneralName::RFC822Name(s) => sans.email.push(s.to_string()),
                GeneralName::IPAddress(b) => sans.ip.push(format_ip(b)),
                _ => {}
            }
        }
    }
    Ok(sans)
}

fn extended_key_usage(cert: &X509Certificate<'_>) -> Result<Vec<String>, X509Error> {
    let mut names = Vec::new();
    if let Some(eku) = cert.extended_key_usage()? {
        let e = eku.value;
        let named = [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.time_stamping, "timeStamping"),
            (e.ocsp_signing, "OCSPSigning"),
            (e.any, "anyExtendedKeyUsage"),
        ];
        names.extend(
            named
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| n.to_string()),
        );
        names.extend(e.other.iter().map(Oid::to_id_string));
    }
    Ok(names)
}

fn key_id<'a>(cert: &'a X509Certificate<'_>, want_authority: bool) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) if want_authority => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            ParsedExtension::SubjectKeyIdentifier(ski) if !want_authority => Some(ski.0),
            _ => None,
        })
}

fn format_ip(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ipv6Addr::from(v6).to_string()
    } else {
        // Malformed lengths happen in hand-made certs; show them rather than hide them.
        let mut out = String::from("invalid (");
        for (i, b) in bytes.iter().enumerate() {
            let sep = if i > 0 { ":" } else { "" };
            let _ = write!(out, "{sep}{b:02X}");
        }
        out.push(')');
        out
    }
}

fn oid_name(oid: &Oid<'_>) -> String {
    x509_parser::objects::oid_registry()
        .get(oid)
        .map(|e| e.sn().to_string())
        .unwrap_or_else(|| oid.to_id_string())
}

fn hex_upper(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::{self_signed_leaf, Authority, KeyType, LeafSpec, Usage};
    use time::macros::datetime;

    const ID: &str = "spiffe://cluster.local/ns/production/sa/order-service";
    const START: OffsetDateTime = datetime!(2025-01-01 00:00 UTC);
    const DAY: Duration = Duration::from_secs(86_400);

    fn client(ca: &Authority) -> crate::pki::Issued {
        let mut spec = LeafSpec::new("order-service", Usage::Client, START, 30 * DAY);
        spec.not_before = START;
        spec.names = vec!["order.production.svc".into(), "::1".into()];
        spec.spiffe_id = Some(ID.into());
        ca.issue(&spec, KeyType::EcdsaP256).unwrap()
    }

    #[test]
    fn facts_of_an_issued_client_certificate() {
        let ca = Authority::new_root("facts CA", KeyType::EcdsaP256, START, 90 * DAY).unwrap();
        let issued = client(&ca);
        let f = CertFacts::from_der(&issued.cert).unwrap();
        assert_eq!(f.serial, serial_hex(&issued.serial.to_bytes()));
        assert_eq!(serial_of(&issued.cert).as_deref(), Some(f.serial.as_str()));
        assert_eq!(f.sha256, fingerprint(&issued.cert));
        assert_eq!(f.sha256.len(), 32 * 3 - 1);
        assert_eq!(f.common_name.as_deref(), Some("order-service"));
        assert_eq!(f.subject, "O=certshift test PKI, CN=order-service");
        assert_eq!(f.issuer, "O=certshift test PKI, CN=facts CA");
        assert_eq!(
            (f.not_before, f.lifetime()),
            (START, time::Duration::days(30))
        );
        assert_eq!(rfc3339(f.not_after), "2025-01-31T00:00:00Z");
        assert_eq!(f.sans.dns, ["order.production.svc"]);
        assert_eq!(f.sans.ip, ["::1"]);
        assert_eq!(f.sans.uri, [ID]);
        assert_eq!(f.spiffe_id.as_ref().map(SpiffeId::as_str), Some(ID));
        assert_eq!(spiffe_id(&issued.cert), f.spiffe_id);
        assert_eq!(f.key.algorithm, KeyAlgorithm::Ecdsa);
        assert_eq!(
            (f.key.size_bits, f.key.curve.as_deref()),
            (256, Some("P-256"))
        );
        assert!(!f.is_ca && !f.self_signed);
        assert_eq!(f.extended_key_usage, ["clientAuth"]);
        assert_eq!(f.key_usage, ["digitalSignature"]);
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA256");

        let ca_facts = CertFacts::from_der(&ca.cert).unwrap();
        assert!(ca_facts.is_ca && ca_facts.self_signed);
        assert_eq!(f.link.issuer_der, ca_facts.link.subject_der);
        assert!(f.link.authority_key_id.is_some());
        assert_eq!(f.link.authority_key_id, ca_facts.link.subject_key_id);
    }

    #[test]
    fn ed25519_key_and_no_spiffe_id() {
        let spec = LeafSpec::new("plain", Usage::Server, START, DAY);
        let issued = self_signed_leaf(&spec, KeyType::Ed25519).unwrap();
        let f = CertFacts::from_der(&issued.cert).unwrap();
        assert_eq!(f.key.algorithm.to_string(), "Ed25519");
        assert_eq!(serde_json::to_value(&f.key.algorithm).unwrap(), "Ed25519");
        assert_eq!(f.spiffe_id, None);
        assert!(f.self_signed);
    }

    #[test]
    fn trailing_bytes_and_garbage_are_errors() {
        let spec = LeafSpec::new("t", Usage::Client, START, DAY);
        let issued = self_signed_leaf(&spec, KeyType::EcdsaP256).unwrap();
        let mut der = issued.cert.to_vec();
        der.extend_from_slice(&[0, 0, 0]);
        let err = CertFacts::from_der(&der).unwrap_err();
        assert!(matches!(err, FactsError::TrailingBytes(3)), "{err:?}");
        assert_eq!(err.to_string(), "3 stray bytes after the certificate");
        assert!(matches!(
            CertFacts::from_der(b"\x30\x03\x02\x01\x01"),
            Err(FactsError::Der(_))
        ));
        assert_eq!(serial_of(b"junk"), None);
    }

    #[test]
    fn serial_and_ip_spellings() {
        assert_eq!(serial_hex(&[0x00, 0x8A, 0x01, 0xFF]), "8A01FF");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "00");
        assert_eq!(format_ip(&[10, 1, 2, 3]), "10.1.2.3");
        assert_eq!(format_ip(&[1, 2, 3]), "invalid (01:02:03)");
    }
}
