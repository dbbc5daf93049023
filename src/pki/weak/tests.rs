//! Tests of the weak credentials against independent judges: x509-parser for
//! the fields, the `openssl` binary for signatures and security levels, and
//! real rustls handshakes (webpki's client verifier) for the RSA-1024 key.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::PublicKeyData;
use rsa::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::pki::Usage;
use crate::x509::{CertFacts, KeyAlgorithm};

const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// ecdsa-with-SHA256: how a P-256 CA signs an ordinary leaf.
const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

fn root(key_type: KeyType) -> Authority {
    Authority::new_root("weak test CA", key_type, OffsetDateTime::now_utc(), YEAR).unwrap()
}

fn client_spec() -> LeafSpec {
    let mut spec = LeafSpec::new(
        "weak-client",
        Usage::Client,
        OffsetDateTime::now_utc(),
        YEAR,
    );
    spec.spiffe_id = Some("spiffe://example.org/ns/audit/sa/weak".into());
    spec
}

/// `openssl ARGS` in `dir`: whether it succeeded, and stdout + stderr.
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `openssl` ({e}): these tests judge the weak certificates with \
                 the real openssl binary; install it (e.g. `apt-get install openssl`)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A temp dir holding `ca.pem` and `leaf.pem`.
fn pem_dir(ca: &Authority, leaf: &CertificateDer<'_>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pem_cert(&ca.cert)).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), pem_cert(leaf)).unwrap();
    dir
}

/// The signature over `tbs` checked with the CA's public key by RustCrypto.
/// (The `openssl verify` below is the independent judge; this one pins the
/// algorithm: it accepts SHA-1 only.)
fn sha1_signature_verifies(ca: &Authority, tbs: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let (_, ca_cert) = X509Certificate::from_der(&ca.cert).unwrap();
    let spki = ca_cert.public_key().raw;
    let digest = Sha1::digest(tbs);
    match KeyType::like(&CertFacts::from_der(&ca.cert).unwrap().key) {
        KeyType::EcdsaP256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            let sig = p256::ecdsa::Signature::from_der(signature).unwrap();
            key.verify_prehash(&left_padded::<32>(&digest), &sig)
                .is_ok()
        }
        KeyType::EcdsaP384 => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            let sig = p384::ecdsa::Signature::from_der(signature).unwrap();
            key.verify_prehash(&left_padded::<48>(&digest), &sig)
                .is_ok()
        }
        _ => RsaPublicKey::from_public_key_der(spki)
            .unwrap()
            .verify(Pkcs1v15Sign::new::<Sha1>(), &digest, signature)
            .is_ok(),
    }
}

#[test]
fn sha1_signed_leaves_name_sha1_in_both_places_and_verify_under_rsa_and_ecdsa_cas() {
    for (ca_key, oid, null_params) in [
        (KeyType::Rsa2048, SHA1_WITH_RSA, true),
        (KeyType::EcdsaP256, ECDSA_WITH_SHA1, false),
        (KeyType::EcdsaP384, ECDSA_WITH_SHA1, false),
    ] {
        let ca = root(ca_key);
        let spec = client_spec();
        let issued = sha1_signed(&ca, &spec, KeyType::EcdsaP256).unwrap();

        let (rest, cert) = X509Certificate::from_der(&issued.cert).unwrap();
        assert!(rest.is_empty(), "{ca_key}: trailing bytes");
        for (place, alg) in [
            ("signatureAlgorithm", &cert.signature_algorithm),
            ("TBS signature", &cert.tbs_certificate.signature),
        ] {
            assert_eq!(alg.algorithm.to_id_string(), oid, "{ca_key}: {place}");
            let params = alg.parameters.as_ref().map(|p| p.tag().0);
            // NULL (tag 5) for RSA; absent for ECDSA (RFC 3279, RFC 5758).
            let want = null_params.then_some(5);
            assert_eq!(params, want, "{ca_key}: {place} parameters");
        }
        assert!(
            sha1_signature_verifies(
                &ca,
                cert.tbs_certificate.as_ref(),
                &cert.signature_value.data
            ),
            "{ca_key}: the SHA-1 signature does not verify with the CA's key"
        );
        // Otherwise the leaf `issue` makes: its key, names and issuer.
        assert_eq!(cert.public_key().raw, issued.key.subject_public_key_info());
        assert_eq!(
            cert.issuer(),
            X509Certificate::from_der(&ca.cert).unwrap().1.subject()
        );
        let facts = CertFacts::from_der(&issued.cert).unwrap();
        assert_eq!(
            facts.spiffe_id.map(|id| id.to_string()),
            spec.spiffe_id.clone()
        );

        // OpenSSL checks the signature with no security level (0), and
        // refuses it at level 1: the default its TLS stack applies to a
        // peer's chain, where SHA-1 counts as under 80 bits of security.
        let dir = pem_dir(&ca, &issued.cert);
        let (ok, text) = openssl(
            dir.path(),
            &[
                "verify",
                "-auth_level",
                "0",
                "-CAfile",
                "ca.pem",
                "leaf.pem",
            ],
        );
        assert!(ok && text.trim() == "leaf.pem: OK", "{ca_key}: {text}");
        let (ok, text) = openssl(
            dir.path(),
            &[
                "verify",
                "-auth_level",
                "1",
                "-CAfile",
                "ca.pem",
                "leaf.pem",
            ],
        );
        assert!(
            !ok && text.contains("CA signature digest algorithm too weak"),
            "{ca_key}: {text}"
        );
    }
}

#[test]
fn an_ed25519_ca_has_no_sha1_signature_and_says_so() {
    let ca = root(KeyType::Ed25519);
    match sha1_signed(&ca, &client_spec(), KeyType::EcdsaP256) {
        Err(err @ PkiError::NoSha1Signature { .. }) => assert_eq!(
            err.to_string(),
            "the issuing CA's key is Ed25519; a SHA-1 signature needs an RSA or ECDSA CA"
        ),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("an Ed25519 CA signed with SHA-1"),
    }
}

#[test]
fn rsa1024_client_carries_a_1024_bit_key_signed_normally_by_the_ca() {
    let ca = root(KeyType::EcdsaP256);
    let cred = rsa1024_client(&ca, &client_spec()).unwrap();

    let facts = CertFacts::from_der(&cred.cert).unwrap();
    assert_eq!(facts.key.algorithm, KeyAlgorithm::Rsa);
    assert_eq!(facts.key.size_bits, 1024);
    assert_eq!(facts.extended_key_usage, ["clientAuth"]);
    let (_, cert) = X509Certificate::from_der(&cred.cert).unwrap();
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        ECDSA_WITH_SHA256
    );
    // The key the signer holds is the certificate's.
    let ck = cred.certified_key(&[]);
    ck.keys_match().unwrap();

    // The chain verifies; only a security level above OpenSSL's default
    // (2: Debian's TLS default, 112 bits) sees the 80-bit key.
    let dir = pem_dir(&ca, &cred.cert);
    let (ok, text) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
    assert!(ok && text.trim() == "leaf.pem: OK", "{text}");
    let (ok, text) = openssl(
        dir.path(),
        &[
            "verify",
            "-auth_level",
            "2",
            "-CAfile",
            "ca.pem",
            "leaf.pem",
        ],
    );
    assert!(
        !ok && text.contains("EE certificate key too weak"),
        "{text}"
    );

    // The PEM key is what openssl (and so curl, nginx) reads, and it is the
    // certificate's key.
    std::fs::write(dir.path().join("leaf.key"), &cred.key_pem).unwrap();
    assert!(cred.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let (ok, text) = openssl(dir.path(), &["pkey", "-in", "leaf.key", "-noout", "-text"]);
    assert!(ok && text.starts_with("Private-Key: (1024 bit"), "{text}");
    let (ok, from_key) = openssl(dir.path(), &["pkey", "-in", "leaf.key", "-pubout"]);
    assert!(ok, "openssl cannot read the key: {from_key}");
    let (ok, from_cert) = openssl(
        dir.path(),
        &["x509", "-in", "leaf.pem", "-noout", "-pubkey"],
    );
    assert!(ok, "{from_cert}");
    assert_eq!(
        from_key, from_cert,
        "key.pem does not match the certificate"
    );
}

/// The server's client verifier: webpki's, with its verdicts recorded (on the
/// chain, and on each CertificateVerify with the scheme the client chose). A
/// `lenient` one then judges the signature with RustCrypto instead, as a
/// server that still accepts 1024-bit keys would.
#[derive(Debug)]
struct Recording {
    webpki: Arc<dyn ClientCertVerifier>,
    /// The schemes the server asks for; webpki's own when `None`.
    schemes: Option<Vec<SignatureScheme>>,
    lenient: bool,
    chains: Mutex<Vec<Result<(), rustls::Error>>>,
    seen: Mutex<Vec<(SignatureScheme, Result<(), rustls::Error>)>>,
}

impl Recording {
    fn new(ca: &Authority, schemes: Option<Vec<SignatureScheme>>, lenient: bool) -> Arc<Self> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.clone()).unwrap();
        let webpki =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::creds::provider())
                .build()
                .unwrap();
        Arc::new(Recording {
            webpki,
            schemes,
            lenient,
            chains: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn chains(&self) -> Vec<Result<(), rustls::Error>> {
        self.chains.lock().unwrap().clone()
    }

    fn seen(&self) -> Vec<(SignatureScheme, Result<(), rustls::Error>)> {
        self.seen.lock().unwrap().clone()
    }

    fn judge(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        webpki: Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.seen.lock().unwrap().push((
            dss.scheme,
            webpki.as_ref().map(|_| ()).map_err(Clone::clone),
        ));
        if !self.lenient {
            return webpki;
        }
        let (_, parsed) = X509Certificate::from_der(cert).unwrap();
        let key = RsaPublicKey::from_public_key_der(parsed.public_key().raw).unwrap();
        let digest = sha2::Sha256::digest(message);
        let checked = match dss.scheme {
            SignatureScheme::RSA_PSS_SHA256 => {
                key.verify(rsa::Pss::new::<sha2::Sha256>(), &digest, dss.signature())
            }
            SignatureScheme::RSA_PKCS1_SHA256 => key.verify(
                Pkcs1v15Sign::new::<sha2::Sha256>(),
                &digest,
                dss.signature(),
            ),
            other => panic!("the client signed with {other:?}"),
        };
        checked
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|e| rustls::Error::General(format!("RustCrypto: {e}")))
    }
}

impl ClientCertVerifier for Recording {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now);
        self.chains
            .lock()
            .unwrap()
            .push(verdict.as_ref().map(|_| ()).map_err(Clone::clone));
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let webpki = self.webpki.verify_tls12_signature(message, cert, dss);
        self.judge(message, cert, dss, webpki)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let webpki = self.webpki.verify_tls13_signature(message, cert, dss);
        self.judge(message, cert, dss, webpki)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes
            .clone()
            .unwrap_or_else(|| self.webpki.supported_verify_schemes())
    }
}

/// What each side of one handshake + "ping"/"pong" exchange saw.
struct Exchange {
    /// The server's accept: `Err` holds the rustls error it failed with.
    server: Result<(), rustls::Error>,
    /// The client's connect, write and read: the reply, or the rustls error.
    client: Result<Vec<u8>, rustls::Error>,
}

/// A handshake over an in-memory pipe between a rustls server (P-256 leaf of
/// `ca`, verifying clients with `verifier`) and a rustls client presenting
/// `cred`, at `version`; then the client sends "ping" and reads the reply.
async fn exchange(
    ca: &Authority,
    verifier: Arc<Recording>,
    cred: &WeakKeyCredential,
    version: &'static rustls::SupportedProtocolVersion,
) -> Exchange {
    let provider = crate::creds::provider();
    let mut server_spec = LeafSpec::new("server", Usage::Server, OffsetDateTime::now_utc(), YEAR);
    server_spec.names = vec!["localhost".into()];
    let server_leaf = ca.issue(&server_spec, KeyType::EcdsaP256).unwrap();
    let server_key =
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_leaf.key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_leaf.cert.clone()], server_key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            cred.certified_key(&[]),
        )));

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let server_side = async move {
        let mut tls = acceptor.accept(server_io).await.map_err(rustls_error)?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(rustls_error)?;
        tls.write_all(b"pong").await.map_err(rustls_error)?;
        tls.shutdown().await.map_err(rustls_error)
    };
    let client_side = async move {
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(rustls_error)?;
        tls.write_all(b"ping").await.map_err(rustls_error)?;
        let mut pong = Vec::new();
        tls.read_to_end(&mut pong).await.map_err(rustls_error)?;
        Ok(pong)
    };
    let (server, client) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(server_side, client_side)
    })
    .await
    .expect("the handshake finishes within 10 s");
    Exchange { server, client }
}

/// The rustls error inside a tokio-rustls I/O error.
fn rustls_error(e: std::io::Error) -> rustls::Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.clone(),
        None => rustls::Error::General(format!("I/O: {e}")),
    }
}

/// webpki takes the chain (the CA signed it normally) but refuses the
/// 1024-bit key when it checks the client's CertificateVerify: aws-lc-rs
/// verifies RSA signatures from 2048-bit keys up, and its refusal reaches
/// rustls as webpki's InvalidSignatureForPublicKey, i.e. BadSignature. The
/// client is told with a decrypt_error alert.
#[tokio::test]
async fn webpki_refuses_the_rsa1024_client_at_its_certificate_verify() {
    let ca = root(KeyType::EcdsaP256);
    let cred = rsa1024_client(&ca, &client_spec()).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let at = format!("{:?}", version.version);
        let verifier = Recording::new(&ca, None, false);
        let got = exchange(&ca, verifier.clone(), &cred, version).await;
        let bad_signature =
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        assert_eq!(verifier.chains(), [Ok(())], "{at}: webpki's chain verdict");
        // PSS is the client's first choice in both versions, and webpki
        // offers it in both.
        assert_eq!(
            verifier.seen(),
            [(SignatureScheme::RSA_PSS_SHA256, Err(bad_signature.clone()))],
            "{at}: the client signed, webpki refused"
        );
        assert_eq!(got.server, Err(bad_signature), "{at}: server");
        assert_eq!(
            got.client,
            Err(rustls::Error::AlertReceived(
                rustls::AlertDescription::DecryptError
            )),
            "{at}: client"
        );
    }
}

/// The same client completes the handshake with a server that still checks
/// RSA-1024 signatures (RustCrypto's, in the test verifier): the signing key
/// makes valid PSS (TLS 1.3) and PKCS#1 (TLS 1.2) signatures, which webpki
/// refuses for the key size alone.
#[tokio::test]
async fn a_server_that_allows_rsa1024_completes_the_handshake_with_its_signatures() {
    let ca = root(KeyType::EcdsaP256);
    let cred = rsa1024_client(&ca, &client_spec()).unwrap();
    for (version, scheme) in [
        (&rustls::version::TLS13, SignatureScheme::RSA_PSS_SHA256),
        (&rustls::version::TLS12, SignatureScheme::RSA_PKCS1_SHA256),
    ] {
        let at = format!("{:?} {scheme:?}", version.version);
        let verifier = Recording::new(&ca, Some(vec![scheme]), true);
        let got = exchange(&ca, verifier.clone(), &cred, version).await;
        assert_eq!(got.server, Ok(()), "{at}: server");
        assert_eq!(got.client, Ok(b"pong".to_vec()), "{at}: client");
        let bad_signature =
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        assert_eq!(
            verifier.seen(),
            [(scheme, Err(bad_signature))],
            "{at}: webpki's verdict on the same, valid signature"
        );
    }
}
