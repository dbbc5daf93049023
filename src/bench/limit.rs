//! The limit beside each cell: what the cell's public-key operations cost
//! alone, measured in this process with the provider the handshakes use
//! (aws-lc-rs through rustls's provider traits), on this thread's CPU clock.
//!
//! Each operation is measured once per run and summed per cell (see
//! [`crate::report::bench::LIMIT_DEFINITION`]). Never: opens a connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, SignatureVerificationAlgorithm};

use super::matrix::{CellSpec, Kx};
use super::BenchError;
use crate::metrics::cpu;
use crate::pki::KeyType;
use crate::tls::TlsVersion;

/// Enough repetitions that one preemption or cache miss does not decide
/// the figure, bounded so an RSA-4096 signature costs well under a second.
const MIN_ITERS: u32 = 30;
const MIN_CPU: Duration = Duration::from_millis(30);
const MAX_ITERS: u32 = 5_000;

/// What one side must compute, at least, in one handshake (µs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SideLimits {
    pub client: f64,
    pub server: f64,
}

/// Measured operation costs, memoised for the run.
pub struct Limits {
    provider: Arc<CryptoProvider>,
    keys: HashMap<KeyType, Arc<dyn SigningKey>>,
    publics: HashMap<KeyType, Vec<u8>>,
    costs: HashMap<Op, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    /// The handshake signature (ServerKeyExchange / CertificateVerify).
    Sign(KeyType, TlsVersion),
    /// Checking the peer's handshake signature.
    VerifyHandshake(KeyType, TlsVersion),
    /// Checking one certificate's signature (by its issuer, same key type).
    VerifyCertificate(KeyType),
    /// The client's key share and agreement.
    KxClient(Kx),
    /// The server's key share and agreement (encapsulation for ML-KEM).
    KxServer(Kx),
}

impl Limits {
    pub fn new() -> Limits {
        Limits {
            provider: crate::creds::provider(),
            keys: HashMap::new(),
            publics: HashMap::new(),
            costs: HashMap::new(),
        }
    }

    /// The cell's limit on each side: both leaves are of the cell's key
    /// type and each side sends 1 certificate (2 with an intermediate).
    pub fn cell(&mut self, c: &CellSpec) -> Result<SideLimits, BenchError> {
        let certs = if c.intermediate { 2 } else { 1 };
        self.handshake(
            c.key,
            c.tls,
            c.kx,
            c.resumed,
            c.auth.then_some((c.key, certs)),
            certs,
        )
    }

    /// The limit of a handshake whose server leaf is `server_key` and sends
    /// `server_certs` certificates (each verified once: the leaf by the
    /// intermediate, the intermediate by the root), with `client` = the
    /// client's key type and certificates when it authenticates.
    pub fn handshake(
        &mut self,
        server_key: KeyType,
        tls: TlsVersion,
        kx: Kx,
        resumed: bool,
        client: Option<(KeyType, usize)>,
        server_certs: usize,
    ) -> Result<SideLimits, BenchError> {
        if resumed {
            return Ok(match tls {
                // psk_dhe_ke: a fresh key exchange, no signature, no certificate.
                TlsVersion::Tls13 => SideLimits {
                    client: self.cost(Op::KxClient(kx))?,
                    server: self.cost(Op::KxServer(kx))?,
                },
                // The master secret is reused: no public-key operation.
                TlsVersion::Tls12 => SideLimits {
                    client: 0.0,
                    server: 0.0,
                },
            });
        }
        let mut client_us = self.cost(Op::KxClient(kx))?
            + self.cost(Op::VerifyHandshake(server_key, tls))?
            + server_certs as f64 * self.cost(Op::VerifyCertificate(server_key))?;
        let mut server_us = self.cost(Op::KxServer(kx))? + self.cost(Op::Sign(server_key, tls))?;
        if let Some((ck, certs)) = client {
            client_us += self.cost(Op::Sign(ck, tls))?;
            server_us += self.cost(Op::VerifyHandshake(ck, tls))?
                + certs as f64 * self.cost(Op::VerifyCertificate(ck))?;
        }
        Ok(SideLimits {
            client: client_us,
            server: server_us,
        })
    }

    fn cost(&mut self, op: Op) -> Result<f64, BenchError> {
        if let Some(c) = self.costs.get(&op) {
            return Ok(*c);
        }
        let c = self.measure(op)?;
        self.costs.insert(op, c);
        Ok(c)
    }

    fn measure(&mut self, op: Op) -> Result<f64, BenchError> {
        let fail = |what: String| BenchError::Limit(what);
        match op {
            Op::Sign(key, tls) => {
                let scheme = self.handshake_scheme(key, tls)?;
                let signer = self.signer(key, scheme)?;
                let msg = [0x20u8; 130];
                Ok(per_op(|| {
                    let _ = signer.sign(&msg);
                }))
            }
            Op::VerifyHandshake(key, tls) => {
                let scheme = self.handshake_scheme(key, tls)?;
                self.verify_cost(key, scheme, 130)
            }
            Op::VerifyCertificate(key) => self.verify_cost(key, certificate_scheme(key), 450),
            Op::KxClient(kx) => {
                let g = kx.group();
                let mut err = None;
                let us = per_op(|| {
                    let run = || -> Result<(), rustls::Error> {
                        let c = g.start()?;
                        // The server's share comes from a server that
                        // answered this very client share (ML-KEM's
                        // ciphertext is bound to it); its cost is not ours,
                        // so it is measured apart and subtracted below.
                        let s = g.start_and_complete(c.pub_key())?;
                        c.complete(&s.pub_key)?;
                        Ok(())
                    };
                    if let Err(e) = run() {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    return Err(fail(format!("{} key exchange: {e}", kx.name())));
                }
                Ok((us - self.cost(Op::KxServer(kx))?).max(0.0))
            }
            Op::KxServer(kx) => {
                let g = kx.group();
                let client = g
                    .start()
                    .map_err(|e| fail(format!("{} key exchange: {e}", kx.name())))?;
                let share = client.pub_key().to_vec();
                let mut err = None;
                let us = per_op(|| {
                    if let Err(e) = g.start_and_complete(&share) {
                        err = Some(e);
                    }
                });
                match err {
                    Some(e) => Err(fail(format!("{} key exchange: {e}", kx.name()))),
                    None => Ok(us),
                }
            }
        }
    }

    /// The scheme rustls signs a handshake with for `key` at `tls`: the
    /// key's own choice among what a certshift peer offers for that version.
    fn handshake_scheme(
        &mut self,
        key: KeyType,
        tls: TlsVersion,
    ) -> Result<SignatureScheme, BenchError> {
        let offered: Vec<SignatureScheme> = self
            .provider
            .signature_verification_algorithms
            .supported_schemes()
            .into_iter()
            .filter(|s| tls == TlsVersion::Tls12 || in_tls13(*s))
            .collect();
        let k = self.key(key)?;
        k.choose_scheme(&offered)
            .map(|s| s.scheme())
            .ok_or_else(|| BenchError::Limit(format!("no {tls} signature scheme for {key}")))
    }

    fn verify_cost(
        &mut self,
        key: KeyType,
        scheme: SignatureScheme,
        len: usize,
    ) -> Result<f64, BenchError> {
        let signer = self.signer(key, scheme)?;
        let msg = vec![0x5au8; len];
        let sig = signer
            .sign(&msg)
            .map_err(|e| BenchError::Limit(format!("signing with {key}: {e}")))?;
        let public = self.publics.get(&key).cloned().unwrap_or_default();
        let algs = &self.provider.signature_verification_algorithms;
        // The algorithms rustls would try for this scheme; the one that
        // accepts this key's signature is the one a handshake uses.
        let alg: &dyn SignatureVerificationAlgorithm = algs
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .and_then(|(_, list)| {
                list.iter()
                    .copied()
                    .find(|a| a.verify_signature(&public, &msg, &sig).is_ok())
            })
            .ok_or_else(|| BenchError::Limit(format!("no verifier for {scheme:?} with {key}")))?;
        Ok(per_op(|| {
            let _ = alg.verify_signature(&public, &msg, &sig);
        }))
    }

    fn signer(
        &mut self,
        key: KeyType,
        scheme: SignatureScheme,
    ) -> Result<Box<dyn rustls::sign::Signer>, BenchError> {
        self.key(key)?
            .choose_scheme(&[scheme])
            .ok_or_else(|| BenchError::Limit(format!("{key} cannot sign {scheme:?}")))
    }

    /// Measure `key`'s operations with this key pair (a cell's own leaf
    /// key) instead of generating one: RSA-4096 key generation takes seconds.
    pub fn seed(&mut self, key: KeyType, pair: &rcgen::KeyPair) -> Result<(), BenchError> {
        if !self.keys.contains_key(&key) {
            self.load(key, pair)?;
        }
        Ok(())
    }

    fn key(&mut self, key: KeyType) -> Result<Arc<dyn SigningKey>, BenchError> {
        if let Some(k) = self.keys.get(&key) {
            return Ok(k.clone());
        }
        let pair = key.generate()?;
        self.load(key, &pair)
    }

    fn load(
        &mut self,
        key: KeyType,
        pair: &rcgen::KeyPair,
    ) -> Result<Arc<dyn SigningKey>, BenchError> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        let k = self
            .provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| BenchError::Limit(format!("loading a {key} key: {e}")))?;
        self.publics.insert(key, pair.public_key_raw().to_vec());
        self.keys.insert(key, k.clone());
        Ok(k)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

/// TLS 1.3 signs with neither PKCS#1 v1.5 nor SHA-1 (RFC 8446 4.2.3).
fn in_tls13(s: SignatureScheme) -> bool {
    !matches!(
        s,
        SignatureScheme::RSA_PKCS1_SHA1
            | SignatureScheme::ECDSA_SHA1_Legacy
            | SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::RSA_PKCS1_SHA512
    )
}

/// How rcgen signs certificates with `key` (what a chain check verifies).
fn certificate_scheme(key: KeyType) -> SignatureScheme {
    match key {
        KeyType::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        KeyType::EcdsaP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        KeyType::Ed25519 => SignatureScheme::ED25519,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => SignatureScheme::RSA_PKCS1_SHA256,
    }
}

/// Median thread-CPU µs of one call of `f`, over enough calls to be
/// stable. The median, not the mean: on a shared machine a few calls pay
/// for a neighbour's cache traffic, and the limit is the math's own cost.
fn per_op(mut f: impl FnMut()) -> f64 {
    f(); // warm: first use pays for lazy tables and page faults
    let mut samples = Vec::with_capacity(MIN_ITERS as usize);
    let mut total = Duration::ZERO;
    while (samples.len() < MIN_ITERS as usize || total < MIN_CPU)
        && samples.len() < MAX_ITERS as usize
    {
        let t0 = cpu::thread();
        f();
        let d = cpu::thread().saturating_sub(t0);
        total += d;
        samples.push(d);
    }
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mtls_handshake_costs_more_than_a_resumed_one() {
        let mut l = Limits::new();
        let full = l
            .handshake(
                KeyType::EcdsaP256,
                TlsVersion::Tls13,
                Kx::X25519,
                false,
                Some((KeyType::EcdsaP256, 1)),
                1,
            )
            .unwrap();
        let resumed = l
            .handshake(
                KeyType::EcdsaP256,
                TlsVersion::Tls13,
                Kx::X25519,
                true,
                None,
                1,
            )
            .unwrap();
        assert!(full.client > resumed.client && full.server > resumed.server);
        assert!(resumed.client > 0.0);
        let r12 = l
            .handshake(
                KeyType::EcdsaP256,
                TlsVersion::Tls12,
                Kx::X25519,
                true,
                None,
                1,
            )
            .unwrap();
        assert_eq!((r12.client, r12.server), (0.0, 0.0));
    }
}
