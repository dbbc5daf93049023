//! What kind of public key a certificate carries: algorithm, size, curve.

use std::fmt;

use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;

use super::oid_name;

/// The public key of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub algorithm: KeyAlgorithm,
    /// 0 when the size cannot be determined for an unfamiliar algorithm.
    pub size_bits: u32,
    /// Named curve for ECDSA keys ("P-256", "P-384", ...).
    pub curve: Option<String>,
}

/// A public key algorithm; printed (and serialised) as "ECDSA", "RSA",
/// "RSA-PSS", "Ed25519", "Ed448", or the registry name / dotted OID otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Ecdsa,
    Rsa,
    RsaPss,
    Ed25519,
    Ed448,
    Other(String),
}

impl KeyAlgorithm {
    pub fn name(&self) -> &str {
        match self {
            KeyAlgorithm::Ecdsa => "ECDSA",
            KeyAlgorithm::Rsa => "RSA",
            KeyAlgorithm::RsaPss => "RSA-PSS",
            KeyAlgorithm::Ed25519 => "Ed25519",
            KeyAlgorithm::Ed448 => "Ed448",
            KeyAlgorithm::Other(name) => name,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

pub(super) fn key_info(cert: &X509Certificate<'_>) -> KeyInfo {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let info = |algorithm, size_bits, curve| KeyInfo {
        algorithm,
        size_bits,
        curve,
    };
    if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION || *alg == oid_registry::OID_PKCS1_RSASSAPSS {
        let algorithm = if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION {
            KeyAlgorithm::Rsa
        } else {
            KeyAlgorithm::RsaPss
        };
        let bits = RSAPublicKey::from_der(key_bytes)
            .map(|(_, k)| significant_bits(k.modulus))
            .unwrap_or(0);
        info(algorithm, bits, None)
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
        info(KeyAlgorithm::Ecdsa, bits, Some(curve))
    } else if *alg == oid_registry::OID_SIG_ED25519 {
        info(KeyAlgorithm::Ed25519, 256, None)
    } else if *alg == oid_registry::OID_SIG_ED448 {
        info(KeyAlgorithm::Ed448, 448, None)
    } else {
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        info(
            KeyAlgorithm::Other(oid_name(alg)),
            u32::try_from(bits).unwrap_or(0),
            None,
        )
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

/// Compares with the printed name, so `key.algorithm == "ECDSA"` reads as
/// the JSON does.
impl PartialEq<&str> for KeyAlgorithm {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}
