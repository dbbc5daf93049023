//! Certificate issuance with rcgen: key generation, certificate authorities,
//! leaves and CRLs. Everything here works in memory; writing files is
//! `pki::write`'s job, and deciding *what* to issue is `pki::generate`'s.
//!
//! The proxy's scheduled rotation reuses [`Authority::issue`] to mint fresh
//! leaves without touching the disk.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevocationReason, RevokedCertParams, SanType, SerialNumber, SigningKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::PkiError;
use crate::x509::{CertFacts, KeyAlgorithm, KeyInfo};

/// The key algorithm of every credential in a PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[value(name = "ecdsa-p256")]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "ecdsa-p384")]
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[value(name = "ed25519")]
    Ed25519,
    #[value(name = "rsa-2048")]
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[value(name = "rsa-3072")]
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[value(name = "rsa-4096")]
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The key type to mint a replacement for a certificate whose key is
    /// `key`: the same algorithm and curve, RSA rounded down to a size rcgen
    /// makes, and RSA 2048 for anything rcgen cannot generate (Ed448, RSA-PSS).
    pub fn like(key: &KeyInfo) -> KeyType {
        match (&key.algorithm, key.curve.as_deref()) {
            (KeyAlgorithm::Ecdsa, Some("P-384")) => KeyType::EcdsaP384,
            (KeyAlgorithm::Ecdsa, _) => KeyType::EcdsaP256,
            (KeyAlgorithm::Ed25519, _) => KeyType::Ed25519,
            (KeyAlgorithm::Rsa, _) if key.size_bits >= 4096 => KeyType::Rsa4096,
            (KeyAlgorithm::Rsa, _) if key.size_bits >= 3072 => KeyType::Rsa3072,
            _ => KeyType::Rsa2048,
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// A fresh private key of this type.
    pub fn generate(self) -> Result<KeyPair, PkiError> {
        use rcgen::RsaKeySize;
        let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size);
        let key = match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyType::Rsa2048 => rsa(RsaKeySize::_2048),
            KeyType::Rsa3072 => rsa(RsaKeySize::_3072),
            KeyType::Rsa4096 => rsa(RsaKeySize::_4096),
        };
        key.map_err(|e| PkiError::Issue {
            what: format!("{} key", self.name()),
            source: e,
        })
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <KeyType as clap::ValueEnum>::from_str(s, false)
    }
}

/// What an issued leaf is for; decides its key usage and EKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
}

/// Everything that varies between the leaves a PKI issues.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    /// DNS names and IP addresses (parsed: an IP literal becomes an IP SAN).
    pub names: Vec<String>,
    pub spiffe_id: Option<String>,
    pub usage: Usage,
    /// Replace the usage's EKU (the `wrong-eku` variant).
    pub eku_override: Option<Vec<ExtendedKeyUsagePurpose>>,
    /// basicConstraints CA:TRUE on a leaf (the `ca-as-leaf` variant).
    pub ca_flag: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The serial to write instead of a random one (`pki::mutate`'s serial
    /// mutations; rcgen encodes it as a positive INTEGER).
    pub serial: Option<SerialNumber>,
    /// Replace the leaf's keyUsage (digitalSignature).
    pub key_usage_override: Option<Vec<KeyUsagePurpose>>,
    /// URI SANs after the SPIFFE ID (a second SPIFFE ID, for one).
    pub extra_uris: Vec<String>,
    /// Extensions written after the usual ones, as given: unknown, critical
    /// or duplicated ones are the point (`pki::mutate`).
    pub extensions: Vec<CustomExtension>,
}

impl LeafSpec {
    /// A leaf valid from a few minutes ago (tolerating clock skew between the
    /// generator and the peers) for `validity`.
    pub fn new(common_name: &str, usage: Usage, now: OffsetDateTime, validity: Duration) -> Self {
        let not_before = now - time::Duration::minutes(5);
        LeafSpec {
            common_name: common_name.to_string(),
            names: Vec::new(),
            spiffe_id: None,
            usage,
            eku_override: None,
            ca_flag: false,
            not_before,
            not_after: now + validity,
            serial: None,
            key_usage_override: None,
            extra_uris: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

/// A certificate and its private key, in memory.
pub struct Issued {
    pub cert: CertificateDer<'static>,
    pub key: KeyPair,
    /// What a CRL names to revoke this certificate.
    pub serial: SerialNumber,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }
}

/// A certificate authority that can sign leaves, intermediates and CRLs.
pub struct Authority {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new self-signed root.
    pub fn new_root(
        name: &str,
        key_type: KeyType,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<Self, PkiError> {
        let key = key_type.generate()?;
        let params = ca_params(name, now, lifetime, None);
        let cert = params.self_signed(&key).map_err(issue_err(name))?;
        Ok(Authority {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A new intermediate signed by `self`, allowed to issue leaves only.
    pub fn new_intermediate(
        &self,
        name: &str,
        key_type: KeyType,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<Self, PkiError> {
        self.new_intermediate_with(name, key_type, now, lifetime, |_| {})
    }

    /// [`Self::new_intermediate`], with `tweak` changing its parameters
    /// before it is signed: the broken CAs of `pki::mutate` (no
    /// basicConstraints, name constraints) differ from a good one only there.
    pub(super) fn new_intermediate_with(
        &self,
        name: &str,
        key_type: KeyType,
        now: OffsetDateTime,
        lifetime: Duration,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Result<Self, PkiError> {
        let key = key_type.generate()?;
        let mut params = ca_params(name, now, lifetime, Some(0));
        tweak(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(issue_err(name))?;
        Ok(Authority {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Load a CA from its certificate and PKCS#8 key PEM (to mint in memory).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(issue_err("CA key"))?;
        let cert =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::Pem {
                what: "CA certificate".into(),
                detail: crate::x509::pem_problem(&e),
            })?;
        Authority::from_parts(cert, key)
    }

    /// A CA from its certificate and its (already parsed) private key. The
    /// key is not checked against the certificate here: callers that take
    /// both from a user check that first (`pki::own_ca`).
    pub fn from_parts(cert: CertificateDer<'static>, key: KeyPair) -> Result<Self, PkiError> {
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(issue_err("CA certificate"))?;
        Ok(Authority { cert, issuer })
    }

    /// The CA's private key.
    pub fn key(&self) -> &KeyPair {
        self.issuer.key()
    }

    /// Issue a leaf signed by this authority.
    pub fn issue(&self, spec: &LeafSpec, key_type: KeyType) -> Result<Issued, PkiError> {
        let key = key_type.generate()?;
        let (cert, serial) = self.sign_leaf(spec, &key)?;
        Ok(Issued { cert, key, serial })
    }

    /// Sign a leaf for `spec` around any subject public key: one rcgen made,
    /// or one it cannot make whose SubjectPublicKeyInfo it only carries
    /// (`pki::weak`'s RSA-1024).
    pub(super) fn sign_leaf(
        &self,
        spec: &LeafSpec,
        public_key: &impl PublicKeyData,
    ) -> Result<(CertificateDer<'static>, SerialNumber), PkiError> {
        let (params, serial) = leaf_params(spec)?;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(issue_err(&spec.common_name))?;
        Ok((cert.der().clone(), serial))
    }

    /// This authority's signature over `message` with its own algorithm
    /// (the one in the certificates it issues): `pki::mutate` re-signs a
    /// TBSCertificate it edited as DER.
    pub(super) fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        self.key()
            .sign(message)
            .map_err(issue_err("a re-signed certificate"))
    }

    /// A CRL signed by this authority listing `revoked` serials.
    pub fn crl(
        &self,
        revoked: &[SerialNumber],
        now: OffsetDateTime,
        next_update: Duration,
    ) -> Result<String, PkiError> {
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + next_update,
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.key_id_method(),
        };
        let crl = params.signed_by(&self.issuer).map_err(issue_err("CRL"))?;
        crl.pem().map_err(issue_err("CRL PEM"))
    }
}

impl Authority {
    /// The CRL's authorityKeyIdentifier must equal the CA's own
    /// subjectKeyIdentifier, or OpenSSL finds no CRL for the CA ("unable to
    /// get certificate CRL"). A CA made elsewhere (OpenSSL derives it with
    /// SHA-1) keeps its own; rcgen's SHA-256 derivation only fits our CAs.
    fn key_id_method(&self) -> rcgen::KeyIdMethod {
        match CertFacts::from_der(&self.cert)
            .ok()
            .and_then(|f| f.link.subject_key_id)
        {
            Some(ski) => rcgen::KeyIdMethod::PreSpecified(ski),
            None => rcgen::KeyIdMethod::Sha256,
        }
    }
}

/// Issue a self-signed leaf (the `self-signed` variant).
pub fn self_signed_leaf(spec: &LeafSpec, key_type: KeyType) -> Result<Issued, PkiError> {
    let key = key_type.generate()?;
    let (params, serial) = leaf_params(spec)?;
    let cert = params
        .self_signed(&key)
        .map_err(issue_err(&spec.common_name))?;
    Ok(Issued {
        cert: cert.der().clone(),
        key,
        serial,
    })
}

/// PKCS#8 PEM of a private key, in the form every TLS stack reads.
///
/// aws-lc-rs writes Ed25519 keys as PKCS#8 v2 (with the public key), which
/// OpenSSL 3.0 refuses ("unsupported"); rewrite those as v1 (RFC 8410).
pub fn key_pem(key: &KeyPair) -> String {
    if key.algorithm() == &rcgen::PKCS_ED25519 {
        if let Some(v1) = ed25519_pkcs8_v1(key.serialized_der()) {
            return pem::encode(&pem::Pem::new("PRIVATE KEY", v1));
        }
    }
    key.serialize_pem()
}

/// The 32-byte seed of an Ed25519 PKCS#8 (v1 or v2), re-wrapped as v1.
fn ed25519_pkcs8_v1(der: &[u8]) -> Option<Vec<u8>> {
    // privateKey is an OCTET STRING holding an OCTET STRING of 32 bytes.
    const SEED_PREFIX: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    const V1_HEADER: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let at = der.windows(4).position(|w| w == SEED_PREFIX)? + 4;
    let seed = der.get(at..at + 32)?;
    Some([&V1_HEADER[..], seed].concat())
}

pub fn pem_cert(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

fn issue_err(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Issue {
        what: what.to_string(),
        source,
    }
}

/// A serial from the hex `manifest.toml` and `openssl x509 -serial` use.
pub fn serial_number(hex: &str) -> Option<SerialNumber> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(SerialNumber::from_slice(&bytes))
}

/// A random positive serial of 16 bytes: unique enough that a rotated leaf
/// never collides with a revoked one.
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "certshift test PKI");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params(
    name: &str,
    now: OffsetDateTime,
    lifetime: Duration,
    path_len: Option<u8>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + lifetime;
    params.use_authority_key_identifier_extension = path_len.is_some();
    params
}

fn leaf_params(spec: &LeafSpec) -> Result<(CertificateParams, SerialNumber), PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&spec.common_name);
    for name in &spec.names {
        let san = match IpAddr::from_str(name) {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                SanType::DnsName(name.as_str().try_into().map_err(|e| PkiError::BadName {
                    name: name.clone(),
                    detail: format!("{e}"),
                })?)
            }
        };
        params.subject_alt_names.push(san);
    }
    for id in spec.spiffe_id.iter().chain(&spec.extra_uris) {
        let uri = id.as_str().try_into().map_err(|e| PkiError::BadName {
            name: id.clone(),
            detail: format!("{e}"),
        })?;
        params.subject_alt_names.push(SanType::URI(uri));
    }
    params.key_usages = spec
        .key_usage_override
        .clone()
        .unwrap_or_else(|| vec![KeyUsagePurpose::DigitalSignature]);
    params.extended_key_usages = spec
        .eku_override
        .clone()
        .unwrap_or_else(|| match spec.usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        });
    if spec.ca_flag {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
    }
    let serial = spec.serial.clone().unwrap_or_else(random_serial);
    params.serial_number = Some(serial.clone());
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.use_authority_key_identifier_extension = true;
    params.custom_extensions = spec.extensions.clone();
    Ok((params, serial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_and_still_load() {
        let key = KeyType::Ed25519.generate().unwrap();
        let pem_text = key_pem(&key);
        let der = pem::parse(&pem_text).unwrap().into_contents();
        assert_eq!(der.len(), 48, "v1 Ed25519 PKCS#8 is 48 bytes");
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x00], "version 0 (v1)");
        let back = KeyPair::from_pem(&pem_text).unwrap();
        assert_eq!(
            back.public_key_raw(),
            key.public_key_raw(),
            "same key after the rewrite"
        );
    }

    #[test]
    fn key_type_like_a_certificates_key_round_trips() {
        let now = OffsetDateTime::now_utc();
        let spec = LeafSpec::new("like", Usage::Client, now, Duration::from_secs(3600));
        // RSA 3072/4096 take seconds to generate; their sizes are checked below.
        for kt in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let issued = self_signed_leaf(&spec, kt).unwrap();
            let facts = crate::x509::CertFacts::from_der(&issued.cert).unwrap();
            assert_eq!(KeyType::like(&facts.key), kt, "{}", kt.name());
        }
        let key = |algorithm, size_bits| KeyInfo {
            algorithm,
            size_bits,
            curve: None,
        };
        assert_eq!(
            KeyType::like(&key(KeyAlgorithm::Rsa, 3072)),
            KeyType::Rsa3072
        );
        assert_eq!(
            KeyType::like(&key(KeyAlgorithm::Rsa, 8192)),
            KeyType::Rsa4096
        );
        assert_eq!(
            KeyType::like(&key(KeyAlgorithm::Ed448, 448)),
            KeyType::Rsa2048
        );
        assert_eq!(
            KeyType::like(&key(KeyAlgorithm::RsaPss, 4096)),
            KeyType::Rsa2048
        );
    }
}
