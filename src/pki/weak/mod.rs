//! Deliberately weak client credentials, for `certshift audit`'s
//! `weak-signature` and `weak-key` checks: a leaf signed with SHA-1
//! ([`sha1_signed`]) and a leaf whose key is RSA-1024 ([`rsa1024_client`]).
//! A service that enforces modern crypto refuses both; one that completes the
//! handshake accepts what it should not.
//!
//! aws-lc-rs (behind rcgen and rustls here) will neither sign with SHA-1 nor
//! load an RSA key under 2048 bits, so the weak parts come from RustCrypto:
//! `rsa`, `p256`/`p384` (ECDSA) and `sha1`. Everything else about the leaf
//! is built by `pki::issue`'s own code path, so a weak leaf differs from a
//! good one only in the weakness under test.
//!
//! Never: decides what the audit concludes, nor uses these keys for anything
//! but test credentials.

mod rsa_key;

use std::fmt;
use std::sync::Arc;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rcgen::{KeyPair, SerialNumber, SignatureAlgorithm};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::CertificateDer;
use sha1::{Digest, Sha1};

use super::issue::{pem_cert, Authority, Issued, KeyType, LeafSpec};
use super::resign::{algorithm_identifier, resign};
use super::PkiError;
use rsa_key::RsaSigningKey;

/// sha1WithRSAEncryption (RFC 3279 §2.2.1); its parameters are NULL.
const SHA1_WITH_RSA: &str = "1.2.840.113549.1.1.5";
/// ecdsa-with-SHA1 (RFC 3279 §2.2.3); it has no parameters.
const ECDSA_WITH_SHA1: &str = "1.2.840.10045.4.1";
/// The DER NULL, the parameters of every RSA PKCS#1 v1.5 algorithm.
const DER_NULL: [u8; 2] = [0x05, 0x00];
/// The bits of the weak key: what OpenSSL's security level 1 still accepts
/// and every modern verifier (webpki: 2048 and up) refuses.
const WEAK_RSA_BITS: usize = 1024;

/// A leaf exactly like `ca.issue(spec, key_type)`, but signed with SHA-1:
/// sha1WithRSAEncryption under an RSA CA, ecdsa-with-SHA1 under an ECDSA
/// P-256 or P-384 CA. An Ed25519 CA has no SHA-1 form and is refused
/// ([`PkiError::NoSha1Signature`]).
///
/// rcgen issues the leaf as usual; its DER is then re-signed: the algorithm
/// is replaced in the TBSCertificate and outside it, and the new TBS bytes
/// are signed with SHA-1 by the CA's own key.
pub fn sha1_signed(ca: &Authority, spec: &LeafSpec, key_type: KeyType) -> Result<Issued, PkiError> {
    // Refuse an unusable CA before spending time on the leaf's key.
    let signer = Sha1Signer::for_ca(ca.key())?;
    let issued = ca.issue(spec, key_type)?;
    let cert = signer.resign(&issued.cert)?;
    Ok(Issued { cert, ..issued })
}

/// `cert` (issued by `ca`) signed again by `ca`'s key with SHA-1, the rest
/// byte for byte: `pki::mutate`'s `sha1-signature`, which keeps the
/// identity's key. Refused as [`sha1_signed`] refuses.
pub(in crate::pki) fn sha1_resigned(
    ca: &Authority,
    cert: &[u8],
) -> Result<CertificateDer<'static>, PkiError> {
    Sha1Signer::for_ca(ca.key())?.resign(cert)
}

/// A client leaf whose subject key is RSA-1024, signed by `ca` exactly as
/// [`Authority::issue`] signs (SHA-256 for an RSA or P-256 CA): the key is
/// the only weakness. It is generated with the `rsa` crate because aws-lc-rs
/// generates and loads no RSA key under 2048 bits.
pub fn rsa1024_client(ca: &Authority, spec: &LeafSpec) -> Result<WeakKeyCredential, PkiError> {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, WEAK_RSA_BITS)
        .map_err(crypto("generating an RSA-1024 key"))?;
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(crypto("encoding the RSA-1024 public key"))?
        .into_vec();
    // rcgen only carries the public key into the certificate; the CA signs.
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(&spki).map_err(|source| PkiError::Issue {
            what: "the RSA-1024 public key".into(),
            source,
        })?;
    let (cert, serial) = ca.sign_leaf(spec, &public_key)?;
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(crypto("encoding the RSA-1024 private key"))?
        .to_string();
    Ok(WeakKeyCredential {
        cert,
        key_pem,
        serial,
        key: Arc::new(RsaSigningKey::new(key, spki)),
    })
}

/// A certificate with an RSA-1024 key, and that key in the two forms its
/// users need: PEM for openssl and curl, a rustls signing key for certshift's
/// own handshakes.
pub struct WeakKeyCredential {
    pub cert: CertificateDer<'static>,
    /// The private key as PKCS#8 PEM ("PRIVATE KEY"), ready to be written to
    /// disk (with `pki::write`'s private-file mode).
    pub key_pem: String,
    /// What a CRL names to revoke this certificate.
    pub serial: SerialNumber,
    key: Arc<RsaSigningKey>,
}

impl WeakKeyCredential {
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }

    /// The key as rustls signs with it: RSA-PSS-SHA256 (TLS 1.3 and 1.2) and
    /// RSA-PKCS1-SHA256 (TLS 1.2), so a handshake gets as far as the peer's
    /// verdict on the key.
    pub fn signing_key(&self) -> Arc<dyn SigningKey> {
        self.key.clone()
    }

    /// What a rustls client presents: this leaf followed by `chain` (the
    /// intermediates up to, not including, the root), with [`Self::signing_key`].
    pub fn certified_key(&self, chain: &[CertificateDer<'static>]) -> CertifiedKey {
        let certs = std::iter::once(self.cert.clone())
            .chain(chain.iter().cloned())
            .collect();
        CertifiedKey::new(certs, self.signing_key())
    }
}

impl fmt::Debug for WeakKeyCredential {
    // Never the private key: Debug output ends up in logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakKeyCredential")
            .field("cert_len", &self.cert.len())
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// The CA's private key, loaded into the RustCrypto signer that can sign
/// with SHA-1.
enum Sha1Signer {
    Rsa(RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl Sha1Signer {
    /// rcgen knows which algorithm the key is for; its PKCS#8 DER is what
    /// the RustCrypto crates load.
    fn for_ca(key: &KeyPair) -> Result<Self, PkiError> {
        let alg = key.algorithm();
        let pkcs8 = key.serialized_der();
        let load = crypto("loading the issuing CA's private key");
        if [
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_RSA_SHA384,
            &rcgen::PKCS_RSA_SHA512,
        ]
        .contains(&alg)
        {
            RsaPrivateKey::from_pkcs8_der(pkcs8)
                .map(Sha1Signer::Rsa)
                .map_err(load)
        } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            p256::ecdsa::SigningKey::from_pkcs8_der(pkcs8)
                .map(Sha1Signer::P256)
                .map_err(load)
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            p384::ecdsa::SigningKey::from_pkcs8_der(pkcs8)
                .map(Sha1Signer::P384)
                .map_err(load)
        } else {
            Err(PkiError::NoSha1Signature {
                ca_key: key_name(alg),
            })
        }
    }

    fn resign(&self, cert: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
        resign(cert, &self.algorithm_identifier()?, |tbs| self.sign(tbs))
    }

    fn algorithm_identifier(&self) -> Result<Vec<u8>, PkiError> {
        match self {
            Sha1Signer::Rsa(_) => algorithm_identifier(SHA1_WITH_RSA, Some(&DER_NULL)),
            Sha1Signer::P256(_) | Sha1Signer::P384(_) => {
                algorithm_identifier(ECDSA_WITH_SHA1, None)
            }
        }
    }

    /// The signature over `tbs`: PKCS#1 v1.5 bytes for RSA, a DER
    /// Ecdsa-Sig-Value for ECDSA, as X.509 carries them.
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, PkiError> {
        let digest = Sha1::digest(tbs);
        const WHAT: &str = "signing with SHA-1";
        match self {
            Sha1Signer::Rsa(key) => key
                .sign(Pkcs1v15Sign::new::<Sha1>(), &digest)
                .map_err(crypto(WHAT)),
            Sha1Signer::P256(key) => {
                let sig: p256::ecdsa::Signature = key
                    .sign_prehash(&left_padded::<32>(&digest))
                    .map_err(crypto(WHAT))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Sha1Signer::P384(key) => {
                let sig: p384::ecdsa::Signature = key
                    .sign_prehash(&left_padded::<48>(&digest))
                    .map_err(crypto(WHAT))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

/// A SHA-1 digest as a prehash for a curve of `N`-byte scalars.
///
/// ECDSA turns a digest shorter than the curve order into an integer as it
/// is (FIPS 186-4 §6.4), so leading zeros change nothing: this is the same
/// signature. The padding is needed because the `ecdsa` crate refuses a
/// prehash under half the field size, and 20 bytes is under P-384's 24.
fn left_padded<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let start = N.saturating_sub(digest.len());
    for (o, d) in out[start..].iter_mut().zip(digest) {
        *o = *d;
    }
    out
}

/// A person's name for a CA key rcgen holds, for the error.
fn key_name(alg: &SignatureAlgorithm) -> String {
    if alg == &rcgen::PKCS_ED25519 {
        "Ed25519".into()
    } else if [
        &rcgen::PKCS_ECDSA_P521_SHA256,
        &rcgen::PKCS_ECDSA_P521_SHA384,
        &rcgen::PKCS_ECDSA_P521_SHA512,
    ]
    .contains(&alg)
    {
        // SHA-1 over P-521 exists, but no signer for it is built in here.
        "ECDSA P-521 (certshift signs SHA-1 with P-256 and P-384 keys only)".into()
    } else {
        format!("{alg:?}")
    }
}

fn crypto<E: fmt::Display>(what: &str) -> impl Fn(E) -> PkiError + '_ {
    move |e| PkiError::Crypto {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
