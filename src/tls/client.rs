//! Client-side rustls configs: trust for the server, and the client
//! certificate to present (or none).

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::verify::handshake_signatures;
use super::{spiffe_id_of, TlsVersions};
use crate::creds::{provider, CredError, Live};

/// The certificate a client presents. Whatever it is, it is presented
/// whatever the server's CertificateRequest hints: a test client must be able
/// to present a certificate the server will refuse.
#[derive(Clone, Debug)]
pub enum ClientCert {
    None,
    Always(Arc<CertifiedKey>),
    /// The current value of a rotating credential, read once per handshake.
    Live(Arc<Live<CertifiedKey>>),
}

/// A client config trusting `roots` for the server, presenting `cert`.
pub fn client_config(
    roots: RootCertStore,
    cert: ClientCert,
    versions: &TlsVersions,
) -> Result<ClientConfig, CredError> {
    client_config_with(provider(), roots, cert, versions)
}

/// [`client_config`] with its own crypto provider: `bench` restricts the
/// provider's key-exchange groups to the one a cell measures.
pub fn client_config_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: RootCertStore,
    cert: ClientCert,
    versions: &TlsVersions,
) -> Result<ClientConfig, CredError> {
    let builder = builder_with(provider, versions)?.with_root_certificates(roots);
    let mut config = with_cert(builder, cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config whose server verification is `verifier` (an
/// [`UpstreamVerifier`] with a rotating trust bundle), presenting `cert`.
pub fn client_config_verified_by(
    verifier: Arc<dyn ServerCertVerifier>,
    cert: ClientCert,
    versions: &TlsVersions,
) -> Result<ClientConfig, CredError> {
    client_config_verified_with(provider(), verifier, cert, versions)
}

/// [`client_config_verified_by`] with its own crypto provider: the proxy
/// offers the service the key-exchange groups of `--upstream-kx`.
pub fn client_config_verified_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    cert: ClientCert,
    versions: &TlsVersions,
) -> Result<ClientConfig, CredError> {
    let builder = builder_with(provider, versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(with_cert(builder, cert))
}

fn builder_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    versions: &TlsVersions,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, CredError> {
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions.rustls())
        .map_err(|e| CredError::Tls(e.to_string()))
}

/// `provider` with its AES-128-GCM suites first (the rest in their order).
///
/// Why: a server that follows the client's preference (nginx, haproxy and
/// OpenSSL by default) otherwise picks aws-lc-rs's first suite,
/// AES-256-GCM with SHA-384, whose handshake hashing and HKDF run SHA-512
/// without hardware help on x86 (SHA-NI covers SHA-256 only): measured
/// here as 7% of the proxy's CPU per upstream mTLS connection. AES-128-GCM
/// also seals bulk data faster (10 rounds, not 14). Both are offered; the
/// server still decides.
pub fn preferring_aes128(
    provider: &rustls::crypto::CryptoProvider,
) -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let mut p = provider.clone();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    p
}

/// `config` presenting `ck` whatever its own resolver would: the same
/// trust, versions and provider, so a rotating credential's current value
/// can be pinned for the connections opened with it.
pub fn presenting(config: &ClientConfig, ck: Arc<CertifiedKey>) -> ClientConfig {
    let mut config = config.clone();
    config.client_auth_cert_resolver = Arc::new(Always(ck));
    config
}

/// Every signature scheme `config`'s provider knows: offered to
/// [`presented_by`], so any key it can sign with is found. Compute once.
pub fn offered_schemes(config: &ClientConfig) -> Vec<SignatureScheme> {
    config
        .crypto_provider()
        .signature_verification_algorithms
        .supported_schemes()
}

/// The credential `config` presents on its next handshake (its resolver's
/// current value), or `None` when it presents nothing; `schemes` from
/// [`offered_schemes`].
pub fn presented_by(
    config: &ClientConfig,
    schemes: &[SignatureScheme],
) -> Option<Arc<CertifiedKey>> {
    config.client_auth_cert_resolver.resolve(&[], schemes)
}

fn with_cert(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    cert: ClientCert,
) -> ClientConfig {
    match cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Always(ck) => builder.with_client_cert_resolver(Arc::new(Always(ck))),
        ClientCert::Live(live) => builder.with_client_cert_resolver(Arc::new(Current(live))),
    }
}

/// webpki verification of the server against a trust bundle that can be
/// rotated while connections flow, plus an optional SPIFFE ID the server
/// must present.
pub struct UpstreamVerifier {
    inner: Arc<Live<Arc<dyn ServerCertVerifier>>>,
    spiffe_id: Option<String>,
    schemes: Vec<SignatureScheme>,
}

impl UpstreamVerifier {
    pub fn new(inner: Arc<Live<Arc<dyn ServerCertVerifier>>>, spiffe_id: Option<String>) -> Self {
        let schemes = inner.current().supported_verify_schemes();
        UpstreamVerifier {
            inner,
            spiffe_id,
            schemes,
        }
    }
}

/// A webpki server verifier for `roots` (with CRLs, if any).
pub fn webpki_server_verifier(
    roots: RootCertStore,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ServerCertVerifier>, CredError> {
    let mut b = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider());
    if !crls.is_empty() {
        b = b.with_crls(crls);
    }
    Ok(b.build().map_err(|e| CredError::Tls(e.to_string()))?)
}

impl std::fmt::Debug for UpstreamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamVerifier")
            .field("spiffe_id", &self.spiffe_id)
            .finish()
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some(want) = &self.spiffe_id {
            if spiffe_id_of(end_entity).as_deref() != Some(want.as_str()) {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(verified)
    }

    handshake_signatures! { forward |v| v.inner.current() }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[derive(Debug)]
struct Current(Arc<Live<CertifiedKey>>);

impl ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let ck = self.0.current();
        ck.key.choose_scheme(sigschemes).map(|_| ck)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesClientCert for Always {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Present even when the hinted CAs do not match; only a key that
        // cannot sign any offered scheme makes presenting impossible.
        self.0.key.choose_scheme(sigschemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate (still checking the handshake signature,
/// so the peer holds the key it shows). For audits with `--insecure`: the
/// audit is about how the server treats *client* certificates, and a user
/// may not have the trust bundle for the server's own.
#[derive(Debug)]
pub struct AnyServerCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyServerCert {
    pub fn verifier() -> Arc<dyn ServerCertVerifier> {
        Arc::new(AnyServerCert {
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures! { algorithms |v| &v.algorithms }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client session store that remembers whether the server ever handed out
/// something to resume with (a TLS 1.3 ticket, a TLS 1.2 session id or
/// ticket). A resumption experiment needs to tell "the server refused to
/// resume" from "the server never offered resumption".
#[derive(Debug)]
pub struct SessionRecorder {
    inner: rustls::client::ClientSessionMemoryCache,
    tls13_tickets: std::sync::atomic::AtomicU32,
    tls12_sessions: std::sync::atomic::AtomicU32,
}

impl SessionRecorder {
    pub fn shared() -> Arc<SessionRecorder> {
        Arc::new(SessionRecorder {
            inner: rustls::client::ClientSessionMemoryCache::new(16),
            tls13_tickets: Default::default(),
            tls12_sessions: Default::default(),
        })
    }

    /// TLS 1.3 tickets received so far.
    pub fn tls13_tickets(&self) -> u32 {
        self.tls13_tickets
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TLS 1.2 sessions (id or ticket) stored so far.
    pub fn tls12_sessions(&self) -> u32 {
        self.tls12_sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Use this store for `config`'s resumption (TLS 1.2 tickets enabled).
    pub fn install(self: &Arc<Self>, config: &mut ClientConfig) {
        config.resumption = rustls::client::Resumption::store(self.clone())
            .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOrTickets);
    }
}

impl rustls::client::ClientSessionStore for SessionRecorder {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.tls12_sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.set_tls12_session(server_name, value)
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tls13_tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}
