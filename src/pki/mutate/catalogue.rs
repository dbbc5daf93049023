//! The catalogue: every mutation, its verdict and the rule behind it, and
//! the function that derives it from [`Base`]. In report order: extensions,
//! signature, serial and validity, SPIFFE ID, usage, the issuer side, then
//! DER form. Two entries are controls a conforming validator must ACCEPT
//! (`unknown-non-critical-extension`, `serial-20-bytes`), and one the
//! SPIFFE standard says is valid (`spiffe-id-uppercase-scheme`): a service
//! that refuses them refuses good certificates.

use rcgen::{BasicConstraints, CustomExtension, IsCa, KeyUsagePurpose, SerialNumber};
use rustls_pki_types::CertificateDer;

use super::{Base, Mandate, Mutation};
use crate::pki::resign::{algorithm_identifier, assemble, signature_bytes, split_certificate, tlv};
use crate::pki::weak::sha1_resigned;
use crate::pki::{Expect, PkiError};

type Chain = Result<Vec<CertificateDer<'static>>, PkiError>;

macro_rules! mutation {
    ($name:literal, $expect:ident, $mandate:ident, $derive:path, $changes:literal, $rule:literal $(,)?) => {
        Mutation {
            name: $name,
            check_id: concat!("mutation:", $name),
            changes: $changes,
            rule: $rule,
            expect: Expect::$expect,
            mandate: Mandate::$mandate,
            derive: $derive,
        }
    };
}

/// Every mutation, in report order.
pub static MUTATIONS: &[Mutation] = &[
    mutation!(
        "unknown-critical-extension", Reject, Validator, unknown_critical_extension,
        "adds an extension no validator knows (OID 1.3.6.1.4.1.32473.1.1), marked critical",
        "RFC 5280 §4.2: a system MUST reject a certificate with a critical extension it does not recognize",
    ),
    mutation!(
        "unknown-non-critical-extension", Accept, Validator, unknown_non_critical_extension,
        "adds an extension no validator knows (OID 1.3.6.1.4.1.32473.1.1), not critical",
        "RFC 5280 §4.2: an unrecognized non-critical extension MAY be ignored; refusing it refuses a valid certificate",
    ),
    mutation!(
        "duplicate-extension", Reject, Issuer, duplicate_extension,
        "carries the extendedKeyUsage extension twice (same content)",
        "RFC 5280 §4.2: a certificate MUST NOT include more than one instance of a particular extension",
    ),
    mutation!(
        "bad-signature", Reject, Validator, bad_signature,
        "the CA's signature with its last bit flipped",
        "RFC 5280 §6.1.3 (a)(1): the signature must verify with the issuer's public key",
    ),
    mutation!(
        "signature-algorithm-mismatch", Reject, Validator, signature_algorithm_mismatch,
        "the outer signatureAlgorithm names another hash than the TBS signature field and the signature",
        "RFC 5280 §4.1.1.2: signatureAlgorithm MUST equal the tbsCertificate signature field; the signature cannot verify under the algorithm named",
    ),
    mutation!(
        "sha1-signature", Reject, Crypto, sha1_signature,
        "signed by the issuing CA with SHA-1 (sha1WithRSAEncryption / ecdsa-with-SHA1)",
        "SHA-1 is collision-broken: CA/B Forum, webpki and OpenSSL's security level 1+ refuse it (RFC 5280 itself predates the break)",
    ),
    mutation!(
        "negative-serial", Reject, Issuer, negative_serial,
        "the serial number is a negative INTEGER",
        "RFC 5280 §4.1.2.2: the serial number MUST be a positive integer (users SHOULD handle non-conforming ones gracefully)",
    ),
    mutation!(
        "serial-21-bytes", Reject, Issuer, serial_21_bytes,
        "a 21-octet serial number",
        "RFC 5280 §4.1.2.2: conforming CAs MUST NOT use serial numbers longer than 20 octets",
    ),
    mutation!(
        "serial-20-bytes", Accept, Validator, serial_20_bytes,
        "a 20-octet serial number, the longest allowed",
        "RFC 5280 §4.1.2.2: certificate users MUST be able to handle serial numbers up to 20 octets",
    ),
    mutation!(
        "validity-reversed", Reject, Validator, validity_reversed,
        "notBefore and notAfter swapped: notAfter is before notBefore",
        "RFC 5280 §6.1.3 (a)(2): the current time must lie within the validity period, and this one is empty",
    ),
    mutation!(
        "two-spiffe-ids", Reject, Svid, two_spiffe_ids,
        "a second SPIFFE ID URI SAN after the identity's own",
        "X.509-SVID §2 and §5.2: an SVID MUST contain exactly one URI SAN; validators MUST reject more",
    ),
    mutation!(
        "spiffe-id-dot-segment", Reject, Svid, spiffe_id_dot_segment,
        "SPIFFE ID path with a `..` segment that normalizes back to the identity (/sa/evil/../order-service)",
        "SPIFFE-ID §2.2: the path MUST NOT include `.` or `..` segments",
    ),
    mutation!(
        "spiffe-id-percent-encoded", Reject, Svid, spiffe_id_percent_encoded,
        "SPIFFE ID path with a percent-encoded character that decodes to the identity (%6F for o)",
        "SPIFFE-ID §2.2: the path MUST NOT include percent-encoded characters",
    ),
    mutation!(
        "spiffe-id-uppercase-scheme", Accept, Svid, spiffe_id_uppercase_scheme,
        "SPIFFE ID written with an uppercase scheme (SPIFFE://...)",
        "SPIFFE-ID §2.4 and RFC 3986 §3.1: the scheme is case-insensitive, so this is the identity's valid SPIFFE ID (go-spiffe nevertheless refuses it)",
    ),
    mutation!(
        "spiffe-id-port", Reject, Svid, spiffe_id_port,
        "SPIFFE ID with a port after the trust domain (spiffe://td:443/...)",
        "SPIFFE-ID §2.1: the port part of the authority MUST be empty",
    ),
    mutation!(
        "spiffe-id-query", Reject, Svid, spiffe_id_query,
        "SPIFFE ID with a query (...?admin=true)",
        "SPIFFE-ID §2: a SPIFFE ID MUST NOT include a query or fragment",
    ),
    mutation!(
        "spiffe-uri-empty", Reject, Svid, spiffe_uri_empty,
        "the URI SAN is `spiffe://`: no trust domain, no path",
        "SPIFFE-ID §2 and §2.1: a SPIFFE ID has a non-empty trust domain; `spiffe://` is no identity",
    ),
    mutation!(
        "spiffe-id-without-path", Reject, Issuer, spiffe_id_without_path,
        "the SPIFFE ID is the trust domain's own (spiffe://td), without a workload path",
        "X.509-SVID §3.1: leaf SPIFFE IDs MUST have a non-root path (a rule on the issuer; an authorizer that matches workloads refuses it)",
    ),
    mutation!(
        "key-usage-without-digital-signature", Reject, Issuer, key_usage_without_digital_signature,
        "keyUsage is contentCommitment only: digitalSignature is missing",
        "X.509-SVID §4.3: leaf SVIDs MUST set digitalSignature; RFC 5280 §4.2.1.3: without it the key may not sign the TLS handshake",
    ),
    mutation!(
        "eku-server-auth-only", Reject, Validator, eku_server_auth_only,
        "extendedKeyUsage is serverAuth only: clientAuth is missing",
        "RFC 5280 §4.2.1.12: the certificate MUST only be used for a purpose its extendedKeyUsage lists",
    ),
    mutation!(
        "issuer-not-ca", Reject, Validator, issuer_not_ca,
        "issued by an intermediate (sent in the chain) that has no basicConstraints",
        "RFC 5280 §6.1.4 (k): every intermediate MUST carry basicConstraints with cA TRUE",
    ),
    mutation!(
        "path-len-exceeded", Reject, Validator, path_len_exceeded,
        "issued two CAs below an intermediate whose pathLenConstraint is 0 (both sent in the chain)",
        "RFC 5280 §6.1.4 (l)/(m): a pathLenConstraint bounds the intermediates below it",
    ),
    mutation!(
        "name-constraints-violated", Reject, Validator, name_constraints_violated,
        "issued by an intermediate (sent in the chain) whose nameConstraints permit only another host than the SAN's",
        "RFC 5280 §6.1.3 (b) and §4.2.1.10: every SAN must be within the permitted subtrees; a validator that cannot process a constraint MUST reject",
    ),
    mutation!(
        "v1-with-extensions", Reject, Issuer, v1_with_extensions,
        "version 1 (the version field removed), extensions kept",
        "RFC 5280 §4.1.2.1 and §4.1.2.9: extensions require version 3",
    ),
    mutation!(
        "trailing-bytes", Reject, Validator, trailing_bytes,
        "two bytes (a DER NULL) after the certificate in its TLS certificate entry",
        "X.690 DER and RFC 8446 §4.4.2 / RFC 5246 §7.4.2: each entry holds one DER certificate; anything else is not a certificate",
    ),
    mutation!(
        "empty-subject-non-critical-san", Reject, Issuer, empty_subject_non_critical_san,
        "the subject is an empty name while the subjectAltName stays non-critical",
        "RFC 5280 §4.1.2.6 (and X.509-SVID §3.1): with an empty subject the subjectAltName MUST be critical",
    ),
];

/// An OID under IANA's example enterprise number (RFC 5612): nobody's
/// extension.
const UNKNOWN_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1];
/// extendedKeyUsage (RFC 5280 §4.2.1.12).
const EKU_OID: &[u64] = &[2, 5, 29, 37];
/// An ExtKeyUsageSyntax of id-kp-clientAuth alone, as rcgen writes it.
const EKU_CLIENT_AUTH: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
];
/// nameConstraints (RFC 5280 §4.2.1.10).
const NAME_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 30];
/// A DER NULL: the extension value and the stray bytes.
const DER_NULL: [u8; 2] = [0x05, 0x00];

/// TBSCertificate element positions of a v3 certificate.
const SERIAL: usize = 1;
const SUBJECT: usize = 5;
const VERSION: usize = 0;

fn unknown_extension(b: &Base<'_>, critical: bool) -> Chain {
    let mut ext = CustomExtension::from_oid_content(UNKNOWN_OID, DER_NULL.to_vec());
    ext.set_criticality(critical);
    let mut spec = b.spec();
    spec.extensions.push(ext);
    b.issued(&spec)
}

fn unknown_critical_extension(b: &Base<'_>) -> Chain {
    unknown_extension(b, true)
}

fn unknown_non_critical_extension(b: &Base<'_>) -> Chain {
    unknown_extension(b, false)
}

fn duplicate_extension(b: &Base<'_>) -> Chain {
    let mut spec = b.spec();
    // rcgen writes the clientAuth EKU non-critical; this is the same again.
    spec.extensions.push(CustomExtension::from_oid_content(
        EKU_OID,
        EKU_CLIENT_AUTH.to_vec(),
    ));
    b.issued(&spec)
}

/// The identity re-issued unchanged, taken apart.
struct Parts {
    tbs: Vec<u8>,
    algorithm: Vec<u8>,
    /// The raw signature, out of its BIT STRING.
    signature: Vec<u8>,
}

fn reissued_parts(b: &Base<'_>) -> Result<Parts, PkiError> {
    let cert = b.sign(b.issuing, &b.spec())?;
    let parts = split_certificate(&cert)?;
    Ok(Parts {
        tbs: parts.tbs.to_vec(),
        algorithm: parts.signature_algorithm.to_vec(),
        signature: signature_bytes(parts.signature)?.to_vec(),
    })
}

fn bad_signature(b: &Base<'_>) -> Chain {
    let Parts {
        tbs,
        algorithm,
        mut signature,
    } = reissued_parts(b)?;
    // The last byte is inside the signature value (RSA's integer, ECDSA's s,
    // Ed25519's S), never a DER length: the result still parses.
    if let Some(last) = signature.last_mut() {
        *last ^= 0x01;
    }
    Ok(b.present(assemble(&tbs, &algorithm, &signature)?, Vec::new()))
}

fn signature_algorithm_mismatch(b: &Base<'_>) -> Chain {
    let p = reissued_parts(b)?;
    let other = disagreeing_algorithm(&p.algorithm)?;
    Ok(b.present(assemble(&p.tbs, &other, &p.signature)?, Vec::new()))
}

/// An AlgorithmIdentifier of the same key family with another hash than
/// `algorithm`; for Ed25519 (one algorithm only), ecdsa-with-SHA256.
fn disagreeing_algorithm(algorithm: &[u8]) -> Result<Vec<u8>, PkiError> {
    const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
    const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
    const RSA_SHA256: &str = "1.2.840.113549.1.1.11";
    const RSA_SHA384: &str = "1.2.840.113549.1.1.12";
    const RSA_SHA512: &str = "1.2.840.113549.1.1.13";
    let null = Some(&DER_NULL[..]);
    let swaps = [
        (ECDSA_SHA256, None, ECDSA_SHA384, None),
        (ECDSA_SHA384, None, ECDSA_SHA256, None),
        (RSA_SHA256, null, RSA_SHA384, null),
        (RSA_SHA384, null, RSA_SHA256, null),
        (RSA_SHA512, null, RSA_SHA256, null),
    ];
    for (from, from_params, to, to_params) in swaps {
        if algorithm_identifier(from, from_params)? == algorithm {
            return algorithm_identifier(to, to_params);
        }
    }
    algorithm_identifier(ECDSA_SHA256, None)
}

fn sha1_signature(b: &Base<'_>) -> Chain {
    let cert = b.sign(b.issuing, &b.spec())?;
    Ok(b.present(sha1_resigned(b.issuing, &cert)?, Vec::new()))
}

fn negative_serial(b: &Base<'_>) -> Chain {
    b.edited(|tbs| {
        let serial = tbs.get_mut(SERIAL).ok_or_else(|| missing("serial"))?;
        // INTEGER, short length, content: set the sign bit of the first
        // content octet. Clearing the next bit keeps it from becoming 0xFF,
        // so the encoding stays minimal (X.690 §8.3.2).
        let first = serial.get_mut(2).ok_or_else(|| missing("serial content"))?;
        *first = 0x80 | (*first & 0x3f);
        Ok(())
    })
}

fn serial_of_len(b: &Base<'_>, len: usize) -> Chain {
    let mut bytes = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    // Positive with no padding octet: exactly `len` content octets.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    let mut spec = b.spec();
    spec.serial = Some(SerialNumber::from_slice(&bytes));
    b.issued(&spec)
}

fn serial_21_bytes(b: &Base<'_>) -> Chain {
    serial_of_len(b, 21)
}

fn serial_20_bytes(b: &Base<'_>) -> Chain {
    serial_of_len(b, 20)
}

fn validity_reversed(b: &Base<'_>) -> Chain {
    let mut spec = b.spec();
    std::mem::swap(&mut spec.not_before, &mut spec.not_after);
    b.issued(&spec)
}

/// The identity with its SPIFFE ID replaced by `bend(id)`.
fn spiffe_bent(b: &Base<'_>, bend: impl FnOnce(&crate::spiffe::SpiffeId) -> String) -> Chain {
    let id = b.spiffe_id()?;
    let mut spec = b.spec();
    spec.spiffe_id = Some(bend(&id));
    b.issued(&spec)
}

fn two_spiffe_ids(b: &Base<'_>) -> Chain {
    let id = b.spiffe_id()?;
    let mut spec = b.spec();
    spec.extra_uris.push(format!("{id}-twin"));
    b.issued(&spec)
}

fn spiffe_id_dot_segment(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |id| {
        let (head, last) = id.as_str().rsplit_once('/').unwrap_or((id.as_str(), ""));
        format!("{head}/evil/../{last}")
    })
}

fn spiffe_id_percent_encoded(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |id| {
        let (head, last) = id.as_str().rsplit_once('/').unwrap_or((id.as_str(), ""));
        let mut chars = last.chars();
        let first = chars
            .next()
            .map_or(String::new(), |c| format!("%{:02X}", c as u32));
        format!("{head}/{first}{}", chars.as_str())
    })
}

fn spiffe_id_uppercase_scheme(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |id| format!("SPIFFE://{}", id.principal()))
}

fn spiffe_id_port(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |id| {
        format!("spiffe://{}:443{}", id.trust_domain(), id.path())
    })
}

fn spiffe_id_query(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |id| format!("{id}?admin=true"))
}

fn spiffe_uri_empty(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |_| "spiffe://".to_string())
}

fn spiffe_id_without_path(b: &Base<'_>) -> Chain {
    spiffe_bent(b, |id| format!("spiffe://{}", id.trust_domain()))
}

fn key_usage_without_digital_signature(b: &Base<'_>) -> Chain {
    let mut spec = b.spec();
    // Neither digitalSignature nor keyAgreement: OpenSSL's sslclient purpose
    // accepts either; contentCommitment suits every key type.
    spec.key_usage_override = Some(vec![KeyUsagePurpose::ContentCommitment]);
    b.issued(&spec)
}

fn eku_server_auth_only(b: &Base<'_>) -> Chain {
    let mut spec = b.spec();
    spec.eku_override = Some(vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
    b.issued(&spec)
}

fn issuer_not_ca(b: &Base<'_>) -> Chain {
    // A CA in every other way (keyCertSign, cRLSign): only basicConstraints
    // is missing.
    let ca = b.intermediate(b.issuing, "no basicConstraints", |p| {
        p.is_ca = IsCa::NoCa;
    })?;
    let leaf = b.sign(&ca, &b.spec())?;
    Ok(b.present(leaf, vec![ca.cert.clone()]))
}

fn path_len_exceeded(b: &Base<'_>) -> Chain {
    let top = b.intermediate(b.issuing, "pathLenConstraint 0", |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    })?;
    let below = b.intermediate(&top, "below pathLenConstraint 0", |_| {})?;
    let leaf = b.sign(&below, &b.spec())?;
    Ok(b.present(leaf, vec![below.cert.clone(), top.cert.clone()]))
}

fn name_constraints_violated(b: &Base<'_>) -> Chain {
    // Constrain the name form the leaf identifies by: its URI (SPIFFE ID),
    // else its DNS names. The permitted host is one no identity has.
    let f = &b.facts;
    let (tag, form) = if !f.sans.uri.is_empty() {
        (0x86, "URI")
    } else if !f.sans.dns.is_empty() {
        (0x82, "DNS")
    } else {
        return Err(PkiError::Mutation {
            name: b.name,
            detail: "the identity has no URI or DNS SAN for a name constraint to exclude".into(),
        });
    };
    let base = tlv(tag, b"constrained.invalid")?;
    let permitted = tlv(0xa0, &tlv(0x30, &base)?)?;
    let mut ext = CustomExtension::from_oid_content(NAME_CONSTRAINTS_OID, tlv(0x30, &permitted)?);
    ext.set_criticality(true);
    let ca = b.intermediate(b.issuing, &format!("{form} nameConstraints"), |p| {
        p.custom_extensions.push(ext);
    })?;
    let leaf = b.sign(&ca, &b.spec())?;
    Ok(b.present(leaf, vec![ca.cert.clone()]))
}

fn v1_with_extensions(b: &Base<'_>) -> Chain {
    b.edited(|tbs| {
        // v1 is the version field's DEFAULT, so DER leaves it out.
        if tbs.get(VERSION).and_then(|v| v.first()) != Some(&0xa0) {
            return Err(missing("version"));
        }
        tbs.remove(VERSION);
        Ok(())
    })
}

fn trailing_bytes(b: &Base<'_>) -> Chain {
    let cert = b.sign(b.issuing, &b.spec())?;
    let with_tail = [cert.as_ref(), &DER_NULL].concat();
    Ok(b.present(CertificateDer::from(with_tail), Vec::new()))
}

fn empty_subject_non_critical_san(b: &Base<'_>) -> Chain {
    // Issued with a subject, rcgen marked the SAN non-critical; only the
    // subject is emptied afterwards.
    b.edited(|tbs| {
        let subject = tbs.get_mut(SUBJECT).ok_or_else(|| missing("subject"))?;
        *subject = vec![0x30, 0x00];
        Ok(())
    })
}

fn missing(what: &str) -> PkiError {
    PkiError::Der {
        what: "TBSCertificate".into(),
        detail: format!("no {what} where rcgen writes it"),
    }
}
