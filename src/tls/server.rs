//! Server-side rustls configs: which client certificates a server asks for
//! and how it judges them.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientCertVerifierBuilder, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::{AnyCaClientVerifier, RevocationReach, SpiffeClientVerifier, TlsVersions};
use crate::creds::{provider, CredError, ServerTlsMaterial};

/// How a server treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Require one; verify chain, validity, CRLs, clientAuth EKU and SPIFFE trust domain.
    Required,
    /// Ask for one; verify it as `Required` does if sent, accept its absence.
    Optional,
    /// Require one and verify it as `Required` does, except whether it
    /// chains to a trusted CA (broken on purpose, see [`AnyCaClientVerifier`]).
    AnyCa,
    /// Do not ask.
    Off,
}

/// A server config for `auth`, offering HTTP/1.1 over ALPN.
pub fn server_config(
    m: ServerTlsMaterial,
    auth: ClientAuth,
    versions: &TlsVersions,
) -> Result<ServerConfig, CredError> {
    let provider = provider();
    let tls = |e: &dyn std::fmt::Display| CredError::Tls(e.to_string());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions.rustls())
        .map_err(|e| tls(&e))?;
    let spiffe = |inner: Arc<dyn ClientCertVerifier>| -> Arc<dyn ClientCertVerifier> {
        Arc::new(SpiffeClientVerifier::new(inner, m.trust_domains.clone()))
    };
    let verifying = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, CredError> {
        if m.client_roots.is_empty() {
            return Err(CredError::Tls(
                "no client CA given: pass --client-ca FILE (or --pki DIR)".into(),
            ));
        }
        let roots = Arc::new(m.client_roots.clone());
        let webpki = |tune: &dyn Fn(ClientCertVerifierBuilder) -> ClientCertVerifierBuilder| {
            let mut b =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            if !m.crls.is_empty() {
                b = tune(b.with_crls(m.crls.clone()));
            }
            if optional {
                b = b.allow_unauthenticated();
            }
            b.build().map_err(|e| tls(&e))
        };
        let inner: Arc<dyn ClientCertVerifier> = if m.crls.is_empty() {
            webpki(&|b| b)?
        } else {
            Arc::new(RevocationReach::new(
                webpki(&|b| b.only_check_end_entity_revocation())?,
                webpki(&|b| b.allow_unknown_revocation_status())?,
            ))
        };
        Ok(spiffe(inner))
    };
    let builder = match auth {
        ClientAuth::Required => builder.with_client_cert_verifier(verifying(false)?),
        ClientAuth::Optional => builder.with_client_cert_verifier(verifying(true)?),
        ClientAuth::AnyCa => {
            let any = AnyCaClientVerifier::new(&provider, &m.crls)
                .map_err(|e| CredError::Tls(format!("reading a CRL: {e}")))?;
            builder.with_client_cert_verifier(spiffe(Arc::new(any)))
        }
        ClientAuth::Off => builder.with_no_client_auth(),
    };
    // Resumption stays as rustls sets it up (a stateful session cache; two
    // TLS 1.3 tickets after each full handshake, TLS 1.2 session ids): a
    // resumed session is not verified again, so `serve` re-checks the
    // client certificate's validity on every request (see `serve::http`).
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(m.identity)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One identity for every SNI.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
