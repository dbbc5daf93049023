//! An RSA key rustls can sign with although its own providers refuse it: the
//! RSA-1024 key of `weak-key`. rustls takes any [`SigningKey`]; this one
//! signs with the `rsa` crate.

use std::fmt;
use std::sync::Arc;

use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use sha2::{Digest, Sha256};

/// The schemes offered, best first. TLS 1.3 allows only PSS for RSA (RFC
/// 8446 §4.4.3), so it comes first; PKCS#1 v1.5 is for TLS 1.2 peers that
/// ask for nothing else. SHA-256 alone: the weakness under test is the key
/// size, not the hash.
const SCHEMES: [SignatureScheme; 2] = [
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];

pub(super) struct RsaSigningKey {
    key: Arc<RsaPrivateKey>,
    /// The SubjectPublicKeyInfo, so rustls can check it matches the
    /// certificate (`CertifiedKey::keys_match`).
    spki: Vec<u8>,
}

impl RsaSigningKey {
    pub(super) fn new(key: RsaPrivateKey, spki: Vec<u8>) -> Self {
        RsaSigningKey {
            key: Arc::new(key),
            spki,
        }
    }
}

impl SigningKey for RsaSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = SCHEMES.into_iter().find(|s| offered.contains(s))?;
        Some(Box::new(RsaSigner {
            key: self.key.clone(),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

impl fmt::Debug for RsaSigningKey {
    // The derived Debug of `RsaPrivateKey` would print the private exponent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigningKey")
            .field("bits", &(self.key.size() * 8))
            .finish_non_exhaustive()
    }
}

/// One handshake's signer, for the scheme chosen.
struct RsaSigner {
    key: Arc<RsaPrivateKey>,
    scheme: SignatureScheme,
}

impl Signer for RsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let digest = Sha256::digest(message);
        let signed = if self.scheme == SignatureScheme::RSA_PSS_SHA256 {
            // Salt as long as the hash, as TLS requires (RFC 8446 §4.2.3);
            // the random salt and blinding come from the OS.
            self.key
                .sign_with_rng(&mut rsa::rand_core::OsRng, Pss::new::<Sha256>(), &digest)
        } else {
            self.key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        };
        signed
            .map_err(|e| rustls::Error::General(format!("RSA-1024 {:?} signing: {e}", self.scheme)))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigner")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}
