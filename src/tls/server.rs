//! Server-side rustls configs: which client certificates a server asks for
//! and how it judges them.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::{AnyClientCert, SpiffeClientVerifier, TlsVersions};
use crate::creds::{provider, CredError, ServerTlsMaterial};

/// How a server treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Require one; verify chain, validity, CRLs, clientAuth EKU and SPIFFE trust domain.
    Required,
    /// Ask for one; verify it as `Required` does if sent, accept its absence.
    Optional,
    /// Require one but verify nothing about it (broken on purpose).
    AnyCert,
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
    let verifying =
        |optional: bool| -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, CredError> {
            if m.client_roots.is_empty() {
                return Err(CredError::Tls(
                    "no client CA given: pass --client-ca FILE (or --pki DIR)".into(),
                ));
            }
            let mut b = WebPkiClientVerifier::builder_with_provider(
                Arc::new(m.client_roots.clone()),
                provider.clone(),
            );
            if !m.crls.is_empty() {
                b = b.with_crls(m.crls.clone());
            }
            if optional {
                b = b.allow_unauthenticated();
            }
            let inner = b.build().map_err(|e| tls(&e))?;
            Ok(Arc::new(SpiffeClientVerifier::new(
                inner,
                m.trust_domains.clone(),
            )))
        };
    let builder = match auth {
        ClientAuth::Required => builder.with_client_cert_verifier(verifying(false)?),
        ClientAuth::Optional => builder.with_client_cert_verifier(verifying(true)?),
        ClientAuth::AnyCert => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert::new(&provider)))
        }
        ClientAuth::Off => builder.with_no_client_auth(),
    };
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
