//! Certificate inspection for `certshift pki inspect FILE...`.
//!
//! This module owns turning a certificate file (a PEM chain or a single DER
//! certificate) into a [`FileReport`]: the facts an operator needs when an mTLS
//! handshake fails (names, SANs and SPIFFE ID, validity relative to "now", key and
//! usage constraints, fingerprint, and whether a bundle is ordered leaf-to-root).
//! The report types double as the stable `--json` output, and [`render_text`]
//! is the terminal rendering. It does not verify signatures or trust; that belongs
//! to the handshake code.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;

/// Why a file could not be inspected. Every message names the file, because the
/// command takes several files and the operator must know which one is wrong.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: cannot read file: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{name}: {detail}")]
    NotACertificate { name: String, detail: String },
    #[error("{name}: certificate {index} cannot be parsed: {detail}")]
    Parse {
        name: String,
        /// 1-based position of the certificate within the file.
        index: usize,
        detail: String,
    },
}

/// Everything learned from one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    /// In file order.
    pub certificates: Vec<CertReport>,
    /// Present only when the file holds more than one certificate.
    pub chain: Option<ChainReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Each certificate is issued by the one after it, as TLS peers must send it.
    pub leaf_to_root: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    /// Uppercase hex of the serial's unsigned value, as `openssl x509 -serial`
    /// prints it and `manifest.toml` records it.
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    pub validity: Validity,
    pub sans: Sans,
    pub spiffe_id: Option<String>,
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint; `None` means unconstrained or not a CA.
    pub path_len: Option<u32>,
    /// RFC 5280 names, e.g. "digitalSignature"; empty when the extension is absent.
    pub key_usage: Vec<String>,
    /// "serverAuth", "clientAuth", ... or the dotted OID for unnamed purposes.
    pub extended_key_usage: Vec<String>,
    pub key: KeyInfo,
    /// OpenSSL-style short name, e.g. "ecdsa-with-SHA256", or the dotted OID.
    pub signature_algorithm: String,
    /// Same format as `openssl x509 -fingerprint -sha256`.
    pub sha256_fingerprint: String,
    pub self_signed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidityState {
    Valid,
    Expired,
    NotYetValid,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validity {
    pub state: ValidityState,
    /// e.g. "valid for 29 days", "expired 3 days ago".
    pub hint: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sans {
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub uri: Vec<String>,
    pub email: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// "ECDSA", "RSA", "RSA-PSS", "Ed25519", "Ed448", or a name/OID otherwise.
    pub algorithm: String,
    /// 0 when the size cannot be determined for an unfamiliar algorithm.
    pub size_bits: u32,
    /// Named curve for ECDSA keys ("P-256", "P-384", ...).
    pub curve: Option<String>,
}

/// Reads and inspects one file, judging validity against the current time.
pub fn inspect_file(path: &Path) -> Result<FileReport, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    inspect_bytes(
        &path.display().to_string(),
        &bytes,
        OffsetDateTime::now_utc(),
    )
}

/// Inspects file contents; `name` is only used in the report and error messages.
pub fn inspect_bytes(
    name: &str,
    bytes: &[u8],
    now: OffsetDateTime,
) -> Result<FileReport, InspectError> {
    let ders = extract_certificates(bytes).map_err(|detail| InspectError::NotACertificate {
        name: name.to_string(),
        detail,
    })?;
    let mut parsed = Vec::with_capacity(ders.len());
    let mut certificates = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let parse_err = |detail: String| InspectError::Parse {
            name: name.to_string(),
            index: i + 1,
            detail,
        };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_err(e.to_string()))?;
        if !rest.is_empty() {
            let extra = rest.len();
            return Err(parse_err(format!(
                "{extra} stray bytes after the certificate"
            )));
        }
        certificates.push(cert_report(&cert, der, now).map_err(parse_err)?);
        parsed.push(cert);
    }
    let chain = (parsed.len() > 1).then(|| chain_report(&parsed));
    Ok(FileReport {
        file: name.to_string(),
        certificates,
        chain,
    })
}

const USE_A_CERT: &str = "pass a certificate file such as tls.crt";

/// Returns the DER of every certificate in the file, in order, or what the file
/// holds instead.
fn extract_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".to_string());
    }
    const BEGIN: &[u8] = b"-----BEGIN ";
    if !bytes.windows(BEGIN.len()).any(|w| w == BEGIN) {
        // Not PEM: the only other format we accept is one DER certificate, and
        // parsing it is the only reliable way to tell it apart from a DER key.
        return match X509Certificate::from_der(bytes) {
            Ok(_) => Ok(vec![bytes.to_vec()]),
            // 0x30 (SEQUENCE) starts every DER certificate and key; only then is
            // the parser's complaint worth showing.
            Err(e) if bytes.first() == Some(&0x30) => Err(format!(
                "no certificate found (DER data that is not a certificate: {e}); {USE_A_CERT}"
            )),
            Err(_) => Err(format!(
                "no certificate found (the file is neither PEM nor DER); {USE_A_CERT}"
            )),
        };
    }
    let mut certs = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match section {
            Ok((SectionKind::Certificate, der)) => certs.push(der),
            Ok(_) => {}
            Err(e) => {
                let place = match certs.len() {
                    0 => String::new(),
                    n => format!(" after certificate {n}"),
                };
                return Err(format!("malformed PEM{place}: {}", describe_pem_error(&e)));
            }
        }
    }
    if certs.is_empty() {
        let held = match crate::creds::pem_labels(bytes).as_slice() {
            [] => "no recognisable PEM blocks".to_string(),
            [one] if one.starts_with(['A', 'E', 'I', 'O', 'U']) => format!("an {one} PEM block"),
            [one] => format!("a {one} PEM block"),
            many => format!("PEM blocks {}", many.join(", ")),
        };
        return Err(format!(
            "no certificate found (the file holds {held}); {USE_A_CERT}"
        ));
    }
    Ok(certs)
}

/// pki-types prints byte vectors with `{:?}`; show them as text instead.
fn describe_pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "no \"-----END {}-----\" line (truncated file?)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("bad BEGIN line {:?}", String::from_utf8_lossy(line).trim())
        }
        other => other.to_string(),
    }
}

fn cert_report(
    cert: &X509Certificate<'_>,
    der: &[u8],
    now: OffsetDateTime,
) -> Result<CertReport, String> {
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();

    let mut sans = Sans::default();
    if let Some(ext) = cert.subject_alternative_name().map_err(|e| e.to_string())? {
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
    let spiffe_id = super::spiffe_id_in(sans.uri.iter().map(String::as_str)).map(str::to_string);

    let basic = cert.basic_constraints().map_err(|e| e.to_string())?;
    let is_ca = basic.as_ref().is_some_and(|bc| bc.value.ca);
    let path_len = basic.and_then(|bc| bc.value.path_len_constraint);

    let key_usage = match cert.key_usage().map_err(|e| e.to_string())? {
        Some(ku) => KEY_USAGE_NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| ku.value.flags & (1 << bit) != 0)
            .map(|(_, n)| n.to_string())
            .collect(),
        None => Vec::new(),
    };

    let mut extended_key_usage = Vec::new();
    if let Some(eku) = cert.extended_key_usage().map_err(|e| e.to_string())? {
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
        extended_key_usage.extend(
            named
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| n.to_string()),
        );
        extended_key_usage.extend(e.other.iter().map(Oid::to_id_string));
    }

    Ok(CertReport {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: super::serial_hex(cert.raw_serial()),
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        validity: validity(not_before, not_after, now),
        sans,
        spiffe_id,
        is_ca,
        path_len,
        key_usage,
        extended_key_usage,
        key: key_info(cert),
        signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
        sha256_fingerprint: super::fingerprint(der),
        // Raw DER comparison, as path builders do, rather than a lenient string match.
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
    })
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

fn format_ip(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ipv6Addr::from(v6).to_string()
    } else {
        // Malformed lengths happen in hand-made certs; show them rather than hide them.
        format!("invalid ({})", hex_colon(bytes))
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Only fails for years outside 0..=9999, which X.509 time cannot express.
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// RFC 5280 validity is inclusive at both ends.
fn validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Validity {
    let (state, hint) = if now < not_before {
        let left = human_duration(not_before - now);
        (
            ValidityState::NotYetValid,
            format!("not valid for another {left}"),
        )
    } else if now > not_after {
        let ago = human_duration(now - not_after);
        (ValidityState::Expired, format!("expired {ago} ago"))
    } else {
        let left = human_duration(not_after - now);
        (ValidityState::Valid, format!("valid for {left}"))
    };
    Validity { state, hint }
}

/// Coarsest unit that still leaves at least 2 of it, so "1 day" never hides 23 hours.
fn human_duration(d: time::Duration) -> String {
    let secs = d.whole_seconds().unsigned_abs();
    let (n, unit) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "day"),
        s if s >= 2 * 3_600 => (s / 3_600, "hour"),
        s if s >= 2 * 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn oid_name(oid: &Oid<'_>) -> String {
    x509_parser::objects::oid_registry()
        .get(oid)
        .map(|e| e.sn().to_string())
        .unwrap_or_else(|| oid.to_id_string())
}

fn key_info(cert: &X509Certificate<'_>) -> KeyInfo {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let info = |algorithm: &str, size_bits: u32, curve: Option<String>| KeyInfo {
        algorithm: algorithm.to_string(),
        size_bits,
        curve,
    };
    if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION || *alg == oid_registry::OID_PKCS1_RSASSAPSS {
        let name = if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION {
            "RSA"
        } else {
            "RSA-PSS"
        };
        let bits = RSAPublicKey::from_der(key_bytes)
            .map(|(_, k)| significant_bits(k.modulus))
            .unwrap_or(0);
        info(name, bits, None)
    } else if *alg == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve_oid = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| Oid::try_from(p.clone()).ok());
        let (curve, bits) = match curve_oid {
            Some(c) if c == oid_registry::OID_EC_P256 => ("P-256".to_string(), 256),
            Some(c) if c == oid_registry::OID_NIST_EC_P384 => ("P-384".to_string(), 384),
            Some(c) if c == oid_registry::OID_NIST_EC_P521 => ("P-521".to_string(), 521),
            Some(c) => (oid_name(&c), ec_point_bits(key_bytes)),
            None => ("unknown".to_string(), ec_point_bits(key_bytes)),
        };
        info("ECDSA", bits, Some(curve))
    } else if *alg == oid_registry::OID_SIG_ED25519 {
        info("Ed25519", 256, None)
    } else if *alg == oid_registry::OID_SIG_ED448 {
        info("Ed448", 448, None)
    } else {
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        info(&oid_name(alg), u32::try_from(bits).unwrap_or(0), None)
    }
}

/// Bit length of a big-endian unsigned integer, ignoring sign padding.
fn significant_bits(be: &[u8]) -> u32 {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i - 1) as u32 * 8 + (8 - be[i].leading_zeros()),
        None => 0,
    }
}

/// Field size from an uncompressed (04||X||Y) or compressed (02/03||X) point.
fn ec_point_bits(point: &[u8]) -> u32 {
    let bytes = match point.first() {
        Some(4) => (point.len() - 1) / 2,
        Some(2 | 3) => point.len() - 1,
        _ => 0,
    };
    bytes as u32 * 8
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

/// First place where `certs[i]` is not issued by `certs[i + 1]`, described 1-based.
fn first_order_break(certs: &[&X509Certificate<'_>]) -> Option<String> {
    certs.windows(2).enumerate().find_map(|(i, pair)| {
        let (child, parent) = (pair[0], pair[1]);
        let (c, p) = (i + 1, i + 2);
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Some(format!(
                "certificate {c}'s issuer is not certificate {p}'s subject"
            ));
        }
        // Same DN but a different key is what a half-finished CA rotation looks like.
        match (key_id(child, true), key_id(parent, false)) {
            (Some(aki), Some(ski)) if aki != ski => Some(format!(
                "certificate {c}'s authority key identifier does not match \
                 certificate {p}'s subject key identifier (same issuer name, different key)"
            )),
            _ => None,
        }
    })
}

fn chain_report(certs: &[X509Certificate<'_>]) -> ChainReport {
    let forward: Vec<&X509Certificate<'_>> = certs.iter().collect();
    match first_order_break(&forward) {
        None => ChainReport {
            leaf_to_root: true,
            detail: "each certificate is issued by the next one".to_string(),
        },
        Some(why) => {
            let reversed: Vec<&X509Certificate<'_>> = certs.iter().rev().collect();
            let advice = if first_order_break(&reversed).is_none() {
                "; the file is in root-to-leaf order, reverse it so the leaf comes first"
            } else {
                ""
            };
            ChainReport {
                leaf_to_root: false,
                detail: format!("{why}{advice}"),
            }
        }
    }
}

/// What the certificate is, judged from its own fields rather than its position,
/// so a misordered bundle is not mislabelled.
fn role(c: &CertReport) -> &'static str {
    match (c.is_ca, c.self_signed) {
        (true, true) => "root CA",
        (true, false) => "intermediate CA",
        (false, true) => "self-signed leaf",
        (false, false) => "leaf",
    }
}

/// Terminal rendering: one aligned block per certificate, then the chain verdict.
pub fn render_text(report: &FileReport) -> String {
    let total = report.certificates.len();
    let plural = if total == 1 { "" } else { "s" };
    let mut out = format!("{}: {total} certificate{plural}\n", report.file);
    let join = |items: &[String]| (!items.is_empty()).then(|| items.join(", "));
    for (i, c) in report.certificates.iter().enumerate() {
        let _ = writeln!(out, "\ncertificate {} of {total} ({})", i + 1, role(c));
        let state = match c.validity.state {
            ValidityState::Valid => "OK",
            ValidityState::Expired => "EXPIRED",
            ValidityState::NotYetValid => "NOT YET VALID",
        };
        let s = &c.sans;
        let no_sans = [&s.dns, &s.ip, &s.uri, &s.email]
            .iter()
            .all(|v| v.is_empty());
        let ca = match (c.is_ca, c.path_len) {
            (false, _) => "no".to_string(),
            (true, Some(n)) => format!("yes (path length {n})"),
            (true, None) => "yes (path length unlimited)".to_string(),
        };
        let curve = c.key.curve.as_ref().map(|n| format!(" ({n})"));
        let key = format!(
            "{} {} bits{}",
            c.key.algorithm,
            c.key.size_bits,
            curve.unwrap_or_default()
        );
        // An absent EKU extension permits every purpose, which matters for mTLS.
        let any_purpose = "(not present, any purpose)".to_string();
        // Optional rows are skipped when empty so the eye lands on what is there.
        let rows: [(&str, Option<String>); 19] = [
            ("subject", Some(c.subject.clone())),
            ("issuer", Some(c.issuer.clone())),
            ("spiffe id", c.spiffe_id.clone()),
            ("status", Some(format!("{state}, {}", c.validity.hint))),
            ("not before", Some(c.not_before.clone())),
            ("not after", Some(c.not_after.clone())),
            ("sans", no_sans.then(|| "(none)".to_string())),
            ("dns names", join(&s.dns)),
            ("ip addresses", join(&s.ip)),
            ("uris", join(&s.uri)),
            ("emails", join(&s.email)),
            ("ca", Some(ca)),
            ("key", Some(key)),
            (
                "key usage",
                join(&c.key_usage).or(Some("(not present)".into())),
            ),
            (
                "ext key usage",
                join(&c.extended_key_usage).or(Some(any_purpose)),
            ),
            ("signature", Some(c.signature_algorithm.clone())),
            ("serial", Some(c.serial.clone())),
            ("sha256", Some(c.sha256_fingerprint.clone())),
            (
                "self-signed",
                Some(if c.self_signed { "yes" } else { "no" }.to_string()),
            ),
        ];
        for (label, value) in rows {
            if let Some(value) = value {
                let _ = writeln!(out, "  {:<16}{value}", format!("{label}:"));
            }
        }
    }
    if let Some(chain) = &report.chain {
        let verdict = if chain.leaf_to_root {
            "leaf-to-root"
        } else {
            "NOT leaf-to-root"
        };
        let _ = writeln!(out, "\n  {:<16}{verdict}: {}", "chain order:", chain.detail);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::{
        key_pem, pem_cert, self_signed_leaf, serial_hex, Authority, Issued, KeyType, LeafSpec,
        PkiOptions, Role, Usage,
    };
    use sha2::{Digest, Sha256};
    use time::macros::datetime;

    const SPIFFE: &str = "spiffe://example.org/ns/default/sa/web";
    const NOW: OffsetDateTime = datetime!(2025-03-02 00:00 UTC);
    /// Fixture leaves are valid exactly from `START` to `END`, so hints are predictable.
    const START: OffsetDateTime = datetime!(2025-01-01 00:00 UTC);
    const END: OffsetDateTime = datetime!(2025-04-01 00:00 UTC);
    const LIFETIME: Duration = Duration::from_secs(90 * 86_400);

    /// The subject DN the pki module gives every certificate it issues.
    fn dn(cn: &str) -> String {
        format!("O=certshift test PKI, CN={cn}")
    }

    /// A P-256 root valid from an hour before `START` until `END`.
    fn root(cn: &str) -> Authority {
        Authority::new_root(cn, KeyType::EcdsaP256, START, LIFETIME).unwrap()
    }

    /// A P-256 intermediate (pathLen 0) signed by `ca`, valid like `root`.
    fn intermediate(ca: &Authority, cn: &str) -> Authority {
        ca.new_intermediate(cn, KeyType::EcdsaP256, START, LIFETIME)
            .unwrap()
    }

    fn spec(cn: &str, usage: Usage) -> LeafSpec {
        let mut spec = LeafSpec::new(cn, usage, START, LIFETIME);
        spec.not_before = START;
        assert_eq!(spec.not_after, END);
        spec
    }

    /// ECDSA P-256 workload cert with DNS, IP and SPIFFE URI SANs, clientAuth only.
    fn leaf(ca: &Authority) -> Issued {
        let mut spec = spec("workload", Usage::Client);
        spec.names = vec!["web.default.svc".into(), "10.1.2.3".into()];
        spec.spiffe_id = Some(SPIFFE.into());
        ca.issue(&spec, KeyType::EcdsaP256).unwrap()
    }

    fn one(pem: &str) -> CertReport {
        let mut r = inspect_bytes("t.pem", pem.as_bytes(), NOW).unwrap();
        assert_eq!(r.certificates.len(), 1);
        assert!(
            r.chain.is_none(),
            "a single certificate has no chain verdict"
        );
        r.certificates.remove(0)
    }

    #[test]
    fn leaf_reports_spiffe_id_sans_usages_and_issuer() {
        let ca = root("certshift test CA");
        let issued = leaf(&ca);
        let c = one(&issued.cert_pem());
        assert_eq!(c.subject, dn("workload"));
        assert_eq!(c.issuer, dn("certshift test CA"));
        assert_eq!(c.spiffe_id.as_deref(), Some(SPIFFE));
        assert_eq!(c.sans.dns, ["web.default.svc"]);
        assert_eq!(c.sans.ip, ["10.1.2.3"]);
        assert_eq!(c.sans.uri, [SPIFFE]);
        assert!(c.sans.email.is_empty());
        assert_eq!(c.extended_key_usage, ["clientAuth"]);
        assert_eq!(c.key_usage, ["digitalSignature"]);
        assert!(!c.is_ca && !c.self_signed);
        assert_eq!(c.path_len, None);
        assert_eq!(c.key.algorithm, "ECDSA");
        assert_eq!(c.key.size_bits, 256);
        assert_eq!(c.key.curve.as_deref(), Some("P-256"));
        assert_eq!(c.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(c.not_before, "2025-01-01T00:00:00Z");
        assert_eq!(c.not_after, "2025-04-01T00:00:00Z");
        // The serial the issuer recorded (what a CRL names), as colon-free hex.
        assert_eq!(c.serial, serial_hex(&issued.serial.to_bytes()));
        assert!(
            c.serial.len() == 32 && c.serial.chars().all(|ch| ch.is_ascii_hexdigit()),
            "{}",
            c.serial
        );
    }

    #[test]
    fn serial_drops_der_sign_padding_and_email_sans_are_listed() {
        // Raw rcgen: pki cannot pick a serial (8A01FF needs sign padding) or add an e-mail SAN.
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x8A, 0x01, 0xFF]));
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
            "ops@example.org".try_into().unwrap(),
        )];
        let key = KeyType::EcdsaP256.generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let (_, parsed) = X509Certificate::from_der(cert.der()).unwrap();
        assert_eq!(
            parsed.raw_serial(),
            [0x00, 0x8A, 0x01, 0xFF],
            "the fixture must carry a DER sign-padding byte"
        );

        let report = inspect_bytes("e.pem", cert.pem().as_bytes(), NOW).unwrap();
        let c = &report.certificates[0];
        // The DER sign-padding byte before 0x8A must not show up.
        assert_eq!(c.serial, "8A01FF");
        assert_eq!(c.sans.email, ["ops@example.org"]);
        assert!(c.sans.dns.is_empty() && c.sans.ip.is_empty() && c.sans.uri.is_empty());
        assert_eq!(c.spiffe_id, None);
        let text = render_text(&report);
        for needle in [
            "  emails:         ops@example.org\n",
            "  serial:         8A01FF\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn ca_reports_basic_constraints_and_cert_signing_usage() {
        let ca = root("root");
        let c = one(&pem_cert(&ca.cert));
        assert!(c.is_ca && c.self_signed);
        assert_eq!(c.path_len, None, "a pki root is unconstrained");
        assert_eq!(c.key_usage, ["digitalSignature", "keyCertSign", "cRLSign"]);
        assert!(c.extended_key_usage.is_empty());
        assert_eq!(c.spiffe_id, None);

        let c = one(&pem_cert(&intermediate(&ca, "issuing").cert));
        assert!(c.is_ca && !c.self_signed);
        assert_eq!(c.path_len, Some(0));
        assert_eq!(c.issuer, dn("root"));
        assert_eq!(c.key_usage, ["digitalSignature", "keyCertSign", "cRLSign"]);
        assert!(c.extended_key_usage.is_empty());
        assert_eq!(c.spiffe_id, None);
    }

    #[test]
    fn rsa_ecdsa_p384_and_ed25519_keys_are_identified_with_sizes() {
        let cert = |cn, key_type| {
            let issued = self_signed_leaf(&spec(cn, Usage::Server), key_type).unwrap();
            one(&issued.cert_pem())
        };
        let rsa = cert("rsa", KeyType::Rsa2048);
        assert_eq!(rsa.key.algorithm, "RSA");
        assert_eq!(rsa.key.size_bits, 2048);
        assert_eq!(rsa.key.curve, None);
        assert_eq!(rsa.signature_algorithm, "sha256WithRSAEncryption");
        assert!(rsa.self_signed && !rsa.is_ca);
        assert_eq!(rsa.extended_key_usage, ["serverAuth"]);

        let ed = cert("ed", KeyType::Ed25519);
        assert_eq!(ed.key.algorithm, "Ed25519");
        assert_eq!(ed.key.size_bits, 256);
        assert_eq!(ed.key.curve, None);
        assert_eq!(ed.signature_algorithm, "ed25519");

        let p384 = cert("p384", KeyType::EcdsaP384);
        assert_eq!(p384.key.algorithm, "ECDSA");
        assert_eq!(p384.key.size_bits, 384);
        assert_eq!(p384.key.curve.as_deref(), Some("P-384"));
        assert_eq!(p384.signature_algorithm, "ecdsa-with-SHA384");
    }

    #[test]
    fn validity_state_and_hint_follow_now() {
        let issued = self_signed_leaf(&spec("v", Usage::Client), KeyType::EcdsaP256).unwrap();
        let pem = issued.cert_pem();
        let at = |now| {
            inspect_bytes("v.pem", pem.as_bytes(), now)
                .unwrap()
                .certificates[0]
                .clone()
        };

        let c = at(NOW);
        assert_eq!(c.not_before, "2025-01-01T00:00:00Z");
        assert_eq!(c.not_after, "2025-04-01T00:00:00Z");
        assert_eq!(c.validity.state, ValidityState::Valid);
        assert_eq!(c.validity.hint, "valid for 30 days");

        let expired = at(datetime!(2025-04-04 00:00 UTC)).validity;
        assert_eq!(expired.state, ValidityState::Expired);
        assert_eq!(expired.hint, "expired 3 days ago");

        let early = at(datetime!(2024-12-31 19:00 UTC)).validity;
        assert_eq!(early.state, ValidityState::NotYetValid);
        assert_eq!(early.hint, "not valid for another 5 hours");

        // RFC 5280: notBefore and notAfter themselves are inside the validity period.
        let edge = at(datetime!(2025-04-01 00:00 UTC)).validity;
        assert_eq!(edge.state, ValidityState::Valid);
        assert_eq!(at(START).validity.state, ValidityState::Valid);
        let after = at(datetime!(2025-04-01 00:00:01 UTC)).validity;
        assert_eq!(after.state, ValidityState::Expired);
        assert_eq!(after.hint, "expired 1 second ago");
    }

    #[test]
    fn durations_use_the_coarsest_unit_with_at_least_two() {
        let d = time::Duration::seconds;
        assert_eq!(human_duration(d(2 * 86_400)), "2 days");
        assert_eq!(human_duration(d(2 * 86_400 - 1)), "47 hours");
        assert_eq!(human_duration(d(2 * 3_600 - 1)), "119 minutes");
        assert_eq!(human_duration(d(119)), "119 seconds");
        assert_eq!(human_duration(d(1)), "1 second");
    }

    #[test]
    fn fingerprint_is_sha256_of_der_and_der_input_is_accepted() {
        let ca = root("ca");
        let issued = leaf(&ca);
        let der: &[u8] = issued.cert.as_ref();
        let expected: Vec<String> = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();

        let from_der = inspect_bytes("leaf.der", der, NOW).unwrap();
        let from_pem = one(&issued.cert_pem());
        assert_eq!(from_der.certificates.len(), 1);
        let c = &from_der.certificates[0];
        assert_eq!(c.sha256_fingerprint, expected.join(":"));
        assert_eq!(from_pem.sha256_fingerprint, c.sha256_fingerprint);
        assert_eq!(c.spiffe_id.as_deref(), Some(SPIFFE));
    }

    #[test]
    fn chain_order_is_checked_both_ways() {
        let ca = root("issuing CA");
        let leaf_pem = leaf(&ca).cert_pem();
        let ca_pem = pem_cert(&ca.cert);

        let good =
            inspect_bytes("chain.pem", format!("{leaf_pem}{ca_pem}").as_bytes(), NOW).unwrap();
        let chain = good.chain.unwrap();
        assert!(chain.leaf_to_root, "{}", chain.detail);

        let bad =
            inspect_bytes("chain.pem", format!("{ca_pem}{leaf_pem}").as_bytes(), NOW).unwrap();
        let chain = bad.chain.unwrap();
        assert!(!chain.leaf_to_root);
        assert!(
            chain
                .detail
                .starts_with("certificate 1's issuer is not certificate 2's subject"),
            "{}",
            chain.detail
        );
        assert!(chain.detail.contains("reverse it"), "{}", chain.detail);
    }

    #[test]
    fn three_certificate_chain_order_names_the_break() {
        let ca = root("root");
        let mid = intermediate(&ca, "intermediate");
        let [leaf_pem, mid_pem, ca_pem] =
            [leaf(&mid).cert, mid.cert.clone(), ca.cert.clone()].map(|der| pem_cert(&der));
        let chain_of = |pem: String| {
            inspect_bytes("chain.pem", pem.as_bytes(), NOW)
                .unwrap()
                .chain
                .unwrap()
        };

        let good = chain_of(format!("{leaf_pem}{mid_pem}{ca_pem}"));
        assert!(good.leaf_to_root, "{}", good.detail);

        let reversed = chain_of(format!("{ca_pem}{mid_pem}{leaf_pem}"));
        assert!(!reversed.leaf_to_root);
        assert!(
            reversed.detail.contains("reverse it"),
            "{}",
            reversed.detail
        );

        // Neither order works: the verdict names the first break and gives no advice.
        let shuffled = chain_of(format!("{leaf_pem}{ca_pem}{mid_pem}"));
        assert!(!shuffled.leaf_to_root);
        assert_eq!(
            shuffled.detail,
            "certificate 1's issuer is not certificate 2's subject"
        );
    }

    #[test]
    fn chain_with_same_issuer_name_but_other_key_is_not_in_order() {
        let old_ca = root("rotating CA");
        let new_ca = root("rotating CA");
        let leaf_pem = leaf(&new_ca).cert_pem();
        let chain_with = |ca: &Authority| {
            let bundle = format!("{leaf_pem}{}", pem_cert(&ca.cert));
            inspect_bytes("b.pem", bundle.as_bytes(), NOW)
                .unwrap()
                .chain
                .unwrap()
        };
        // Same names both times: only the key identifiers tell the two apart.
        let right = chain_with(&new_ca);
        assert!(right.leaf_to_root, "{}", right.detail);
        let chain = chain_with(&old_ca);
        assert!(!chain.leaf_to_root);
        assert!(
            chain.detail.contains("authority key identifier"),
            "{}",
            chain.detail
        );
    }

    #[test]
    fn non_certificates_are_rejected_naming_the_file() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let key_pem = key_pem(&key);
        let cases: [(&str, &[u8], &str); 4] = [
            ("./x/tls.key", key_pem.as_bytes(), "PRIVATE KEY PEM block"),
            (
                "junk.bin",
                b"\x01\x02 definitely not a cert",
                "neither PEM nor DER",
            ),
            ("empty.crt", b"  \n", "empty"),
            (
                "key.der",
                &key.serialize_der(),
                "DER data that is not a certificate",
            ),
        ];
        for (name, bytes, why) in cases {
            let err = inspect_bytes(name, bytes, NOW).unwrap_err();
            assert!(
                matches!(err, InspectError::NotACertificate { .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{name}: ")), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn broken_certificate_block_reports_its_position() {
        let ca_pem = pem_cert(&root("ca").cert);
        let bogus = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        let err =
            inspect_bytes("chain.pem", format!("{ca_pem}{bogus}").as_bytes(), NOW).unwrap_err();
        match err {
            InspectError::Parse { name, index, .. } => {
                assert_eq!((name.as_str(), index), ("chain.pem", 2));
            }
            other => panic!("expected Parse, got {other:?}"),
        }
    }

    #[test]
    fn inspect_file_reads_a_generated_pki_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PkiOptions {
            intermediate: true,
            ..PkiOptions::default()
        };
        let manifest = crate::pki::init(dir.path(), &opts, false).unwrap();

        let ca = manifest.find(Role::Ca, "ca").unwrap();
        let path = dir.path().join(&ca.cert);
        let report = inspect_file(&path).unwrap();
        assert_eq!(report.file, path.display().to_string());
        assert!(report.chain.is_none());
        let c = &report.certificates[0];
        assert_eq!(c.subject, dn("certshift test root CA"));
        assert_eq!(c.validity.state, ValidityState::Valid);
        // What inspect reports is what the manifest promises.
        assert_eq!(c.serial, ca.serial);
        assert_eq!(c.sha256_fingerprint, ca.sha256);
        assert_eq!(c.not_after, ca.not_after);

        let server = manifest.find(Role::Server, "server").unwrap();
        let report = inspect_file(&dir.path().join(&server.cert)).unwrap();
        assert_eq!(report.certificates.len(), 2, "leaf then intermediate");
        let chain = report.chain.unwrap();
        assert!(chain.leaf_to_root, "{}", chain.detail);
        let c = &report.certificates[0];
        assert_eq!(c.spiffe_id, server.spiffe_id);
        assert_eq!(c.serial, server.serial);
        assert_eq!(c.extended_key_usage, ["serverAuth"]);
        assert_eq!(
            report.certificates[1].subject,
            dn("certshift test intermediate CA")
        );

        let missing = dir.path().join("nope.crt");
        let err = inspect_file(&missing).unwrap_err();
        assert!(matches!(err, InspectError::Read { .. }));
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }

    #[test]
    fn json_field_names_are_stable() {
        let ca = root("ca");
        let pem = format!("{}{}", leaf(&ca).cert_pem(), pem_cert(&ca.cert));
        let json =
            serde_json::to_value(inspect_bytes("c.pem", pem.as_bytes(), NOW).unwrap()).unwrap();
        assert_eq!(json["chain"]["leaf_to_root"], true);
        let c = &json["certificates"][0];
        assert_eq!(c["spiffe_id"], SPIFFE);
        assert_eq!(c["validity"]["state"], "valid");
        assert_eq!(c["key"]["curve"], "P-256");
        assert_eq!(c["sans"]["ip"][0], "10.1.2.3");
        let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "extended_key_usage",
                "is_ca",
                "issuer",
                "key",
                "key_usage",
                "not_after",
                "not_before",
                "path_len",
                "sans",
                "self_signed",
                "serial",
                "sha256_fingerprint",
                "signature_algorithm",
                "spiffe_id",
                "subject",
                "validity",
            ]
        );
    }

    #[test]
    fn text_rendering_labels_roles_spiffe_id_and_chain() {
        let ca = root("root CA");
        let mid = intermediate(&ca, "issuing CA");
        let issued = leaf(&mid);
        let pem: String = [&issued.cert, &mid.cert, &ca.cert]
            .into_iter()
            .map(pem_cert)
            .collect();
        let text = render_text(&inspect_bytes("chain.pem", pem.as_bytes(), NOW).unwrap());
        let serial = format!(
            "  serial:         {}\n",
            serial_hex(&issued.serial.to_bytes())
        );
        for needle in [
            "chain.pem: 3 certificates",
            "certificate 1 of 3 (leaf)",
            "certificate 2 of 3 (intermediate CA)",
            "certificate 3 of 3 (root CA)",
            &format!("  spiffe id:      {SPIFFE}\n"),
            "  status:         OK, valid for 30 days\n",
            "  key:            ECDSA 256 bits (P-256)\n",
            "  ca:             no\n",
            "  ca:             yes (path length 0)\n",
            "  ca:             yes (path length unlimited)\n",
            &serial,
            "  chain order:    leaf-to-root:",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
