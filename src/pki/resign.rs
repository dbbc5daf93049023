//! Certificate surgery on DER: take a certificate apart into its
//! TBSCertificate, signature algorithm and signature, change what the caller
//! wants, and put it back together under a new signature.
//!
//! rcgen signs only with the algorithms aws-lc-rs offers, so any certificate
//! it will not make (a SHA-1 signature, a wrong algorithm field, a flipped
//! signature bit) starts as an ordinary rcgen certificate and is edited here.
//! Every element the caller does not touch stays byte for byte as issued.
//!
//! Built on the `der` crate's reader and encoders (already in the tree
//! through the RustCrypto key crates) rather than a hand-written TLV parser:
//! it enforces DER's length rules, long forms included, and its errors say
//! what was wrong.
//!
//! Never: decides which edits make a certificate "weak" (that is the caller's
//! job, e.g. `pki::weak`) or signs anything itself; the signature comes from
//! the caller's closure.

use der::asn1::{BitStringRef, ObjectIdentifier};
use der::{Decode, Encode, Header, Reader, SliceReader, Tag, Tagged};
use rustls_pki_types::CertificateDer;

use super::PkiError;

/// The three elements of a Certificate (RFC 5280 §4.1), each as its whole
/// TLV (tag, length and content), borrowed from the certificate's DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertParts<'a> {
    /// The TBSCertificate SEQUENCE: the bytes the signature covers.
    pub tbs: &'a [u8],
    /// The outer signatureAlgorithm AlgorithmIdentifier.
    pub signature_algorithm: &'a [u8],
    /// The signatureValue BIT STRING.
    pub signature: &'a [u8],
}

/// Split a certificate into its TBSCertificate, signature algorithm and
/// signature.
pub fn split_certificate(cert: &[u8]) -> Result<CertParts<'_>, PkiError> {
    match sequence_elements(cert, "certificate")?.as_slice() {
        [tbs, signature_algorithm, signature] => {
            expect_tag(tbs, Tag::Sequence, "certificate's TBSCertificate")?;
            expect_tag(
                signature_algorithm,
                Tag::Sequence,
                "certificate's signatureAlgorithm",
            )?;
            expect_tag(signature, Tag::BitString, "certificate's signatureValue")?;
            Ok(CertParts {
                tbs,
                signature_algorithm,
                signature,
            })
        }
        other => Err(der_problem(
            "certificate",
            format!("a Certificate has 3 elements, this one has {}", other.len()),
        )),
    }
}

/// The elements of a TBSCertificate SEQUENCE, each as its whole TLV, in
/// order: `[0] version` (absent only in v1 certificates), serialNumber,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, then the
/// optional unique IDs and `[3] extensions`.
pub fn tbs_elements(tbs: &[u8]) -> Result<Vec<&[u8]>, PkiError> {
    sequence_elements(tbs, "TBSCertificate")
}

/// A TBSCertificate from its elements (whole TLVs, in order, as
/// [`tbs_elements`] gives them): after an edit that `resign` does not make
/// (a version removed, a subject emptied, a serial replaced).
pub fn tbs_from_elements(elements: &[&[u8]]) -> Result<Vec<u8>, PkiError> {
    sequence(elements, "TBSCertificate")
}

/// The raw bytes of a signatureValue BIT STRING (`CertParts::signature`).
pub fn signature_bytes(signature: &[u8]) -> Result<&[u8], PkiError> {
    let what = "certificate's signatureValue";
    let bits = BitStringRef::from_der(signature).map_err(der_err(what))?;
    bits.as_bytes()
        .ok_or_else(|| der_problem(what, "the signature is not whole bytes".into()))
}

/// One DER element: `tag` (a whole identifier octet, e.g. 0x86 for a
/// `[6]` IMPLICIT URI) around `content`, with DER's length rules.
pub fn tlv(tag: u8, content: &[u8]) -> Result<Vec<u8>, PkiError> {
    let what = "DER element";
    let tag = Tag::try_from(tag).map_err(der_err(what))?;
    let header = Header::new(tag, content.len()).map_err(der_err(what))?;
    let mut out = Vec::with_capacity(content.len() + 6);
    header.encode_to_vec(&mut out).map_err(der_err(what))?;
    out.extend_from_slice(content);
    Ok(out)
}

/// An AlgorithmIdentifier: `oid` (dotted, e.g. "1.2.840.113549.1.1.5") and
/// its parameters as a whole DER TLV, or none. RSA PKCS#1 v1.5 algorithms
/// carry NULL (`Some(&[0x05, 0x00])`); ECDSA ones carry nothing (RFC 5758).
pub fn algorithm_identifier(oid: &str, parameters: Option<&[u8]>) -> Result<Vec<u8>, PkiError> {
    let what = "AlgorithmIdentifier";
    let oid = ObjectIdentifier::new(oid).map_err(|e| der_problem(what, e.to_string()))?;
    let oid = oid.to_der().map_err(der_err(what))?;
    let mut elements = vec![oid.as_slice()];
    elements.extend(parameters);
    sequence(&elements, what)
}

/// A Certificate from a TBSCertificate, the outer signatureAlgorithm (both
/// whole TLVs, used as given) and the raw signature bytes. Nothing is checked
/// against anything: a certificate that lies is what some callers want.
pub fn assemble(
    tbs: &[u8],
    signature_algorithm: &[u8],
    signature: &[u8],
) -> Result<CertificateDer<'static>, PkiError> {
    let what = "certificate";
    // Signatures are whole bytes, so no bits of the last byte are unused.
    let signature = BitStringRef::from_bytes(signature)
        .and_then(|bits| bits.to_der())
        .map_err(der_err(what))?;
    let der = sequence(&[tbs, signature_algorithm, &signature], what)?;
    Ok(CertificateDer::from(der))
}

/// `cert` under a new signature algorithm: `algorithm` (a whole
/// AlgorithmIdentifier TLV, see [`algorithm_identifier`]) replaces both the
/// TBSCertificate's `signature` field and the outer signatureAlgorithm (RFC
/// 5280 requires them equal), and `sign` signs the new TBSCertificate bytes.
pub fn resign(
    cert: &[u8],
    algorithm: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, PkiError>,
) -> Result<CertificateDer<'static>, PkiError> {
    let parts = split_certificate(cert)?;
    let mut elements = tbs_elements(parts.tbs)?;
    let at = signature_field_index(&elements)?;
    elements[at] = algorithm;
    let tbs = sequence(&elements, "TBSCertificate")?;
    let signature = sign(&tbs)?;
    assemble(&tbs, algorithm, &signature)
}

/// Where the TBSCertificate's `signature` AlgorithmIdentifier is: after the
/// serial number, which follows the `[0] version` when there is one.
fn signature_field_index(elements: &[&[u8]]) -> Result<usize, PkiError> {
    let version = Tag::ContextSpecific {
        constructed: true,
        number: der::TagNumber::N0,
    };
    let at = match elements.first().map(|e| tag_of(e)) {
        Some(Ok(tag)) if tag == version => 2,
        _ => 1,
    };
    let field = elements.get(at).ok_or_else(|| {
        der_problem(
            "TBSCertificate",
            format!("only {} elements, no signature field", elements.len()),
        )
    })?;
    expect_tag(field, Tag::Sequence, "TBSCertificate's signature field")?;
    Ok(at)
}

/// The elements of the SEQUENCE `tlv`, each as its whole TLV. `tlv` must be
/// exactly one SEQUENCE: trailing bytes are an error, not ignored.
fn sequence_elements<'a>(tlv: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, PkiError> {
    let err = der_err(what);
    let mut outer = SliceReader::new(tlv).map_err(&err)?;
    let header = Header::decode(&mut outer).map_err(&err)?;
    header.tag.assert_eq(Tag::Sequence).map_err(&err)?;
    let content = outer.read_slice(header.length).map_err(&err)?;
    outer.finish(()).map_err(&err)?;
    let mut inner = SliceReader::new(content).map_err(&err)?;
    let mut elements = Vec::new();
    while !inner.is_finished() {
        elements.push(inner.tlv_bytes().map_err(&err)?);
    }
    Ok(elements)
}

/// A SEQUENCE of `elements` (whole TLVs, concatenated as they are).
fn sequence(elements: &[&[u8]], what: &str) -> Result<Vec<u8>, PkiError> {
    let content = elements.concat();
    let header = Header::new(Tag::Sequence, content.len()).map_err(der_err(what))?;
    let mut out = Vec::with_capacity(content.len() + 6);
    header.encode_to_vec(&mut out).map_err(der_err(what))?;
    out.extend_from_slice(&content);
    Ok(out)
}

fn tag_of(tlv: &[u8]) -> der::Result<Tag> {
    der::asn1::AnyRef::from_der(tlv).map(|any| any.tag())
}

fn expect_tag(tlv: &[u8], tag: Tag, what: &str) -> Result<(), PkiError> {
    let found = tag_of(tlv).map_err(der_err(what))?;
    if found == tag {
        Ok(())
    } else {
        Err(der_problem(what, format!("expected {tag}, found {found}")))
    }
}

fn der_err(what: &str) -> impl Fn(der::Error) -> PkiError + '_ {
    move |e| der_problem(what, e.to_string())
}

fn der_problem(what: &str, detail: String) -> PkiError {
    PkiError::Der {
        what: what.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::OffsetDateTime;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::pki::{Authority, KeyType, LeafSpec, Usage};

    fn leaf() -> CertificateDer<'static> {
        let now = OffsetDateTime::now_utc();
        let year = Duration::from_secs(365 * 86_400);
        let ca = Authority::new_root("resign CA", KeyType::EcdsaP256, now, year).unwrap();
        let mut spec = LeafSpec::new("resign leaf", Usage::Client, now, year);
        spec.names = vec!["leaf.example".into()];
        ca.issue(&spec, KeyType::EcdsaP256).unwrap().cert
    }

    #[test]
    fn split_then_assemble_gives_back_the_same_bytes() {
        let cert = leaf();
        let parts = split_certificate(&cert).unwrap();
        let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
        assert_eq!(parts.tbs, parsed.tbs_certificate.as_ref());
        // BIT STRING: tag, length, 0 unused bits, then the signature.
        assert_eq!(&parts.signature[3..], parsed.signature_value.data.as_ref());
        let again = assemble(parts.tbs, parts.signature_algorithm, &parts.signature[3..]).unwrap();
        assert_eq!(again.as_ref(), cert.as_ref());
    }

    #[test]
    fn resign_replaces_both_algorithm_fields_signs_the_new_tbs_and_keeps_the_rest() {
        let cert = leaf();
        let before = split_certificate(&cert).unwrap();
        // A made-up algorithm and signature: resign checks neither.
        let algorithm = algorithm_identifier("1.2.3.4", Some(&[0x05, 0x00])).unwrap();
        assert_eq!(
            algorithm,
            [0x30, 0x07, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x05, 0x00]
        );
        let mut signed = Vec::new();
        let out = resign(&cert, &algorithm, |tbs| {
            signed = tbs.to_vec();
            Ok(vec![0xab; 300])
        })
        .unwrap();

        let after = split_certificate(&out).unwrap();
        assert_eq!(after.tbs, signed, "the signature covers the new TBS");
        assert_eq!(after.signature_algorithm, algorithm);
        let (old, new) = (
            tbs_elements(before.tbs).unwrap(),
            tbs_elements(after.tbs).unwrap(),
        );
        assert_eq!(old.len(), new.len());
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            if i == 2 {
                assert_eq!(*n, algorithm.as_slice(), "the TBS signature field");
            } else {
                assert_eq!(o, n, "TBS element {i} is untouched");
            }
        }
        // A 300-byte signature needs a long-form length; x509-parser agrees.
        let (rest, parsed) = X509Certificate::from_der(&out).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.signature_value.data.as_ref(), [0xab; 300]);
        assert_eq!(
            parsed.signature_algorithm.algorithm.to_id_string(),
            "1.2.3.4"
        );
        assert_eq!(parsed.tbs_certificate.subject.to_string(), {
            let (_, orig) = X509Certificate::from_der(&cert).unwrap();
            orig.tbs_certificate.subject.to_string()
        });
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let cert = leaf();
        let truncated = &cert[..cert.len() - 1];
        assert!(matches!(
            split_certificate(truncated),
            Err(PkiError::Der { .. })
        ));
        let trailing = [cert.as_ref(), &[0x00]].concat();
        assert!(matches!(
            split_certificate(&trailing),
            Err(PkiError::Der { .. })
        ));
        let err = resign(&[0x30, 0x00], &[], |_| Ok(Vec::new())).unwrap_err();
        assert!(err.to_string().contains("3 elements"), "{err}");
        let err = resign(&cert, &[0x30, 0x00], |_| {
            Err(PkiError::Crypto {
                what: "test signer".into(),
                detail: "refuses".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, PkiError::Crypto { .. }), "{err}");
    }
}
