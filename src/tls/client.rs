//! Client-side rustls configs: trust for the server, and the client
//! certificate to present (or none).

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};

use super::TlsVersions;
use crate::creds::{provider, CredError};

/// The certificate a client presents.
#[derive(Clone, Debug)]
pub enum ClientCert {
    None,
    /// Presented whatever the server's CertificateRequest hints: a test
    /// client must be able to present a certificate the server will refuse.
    Always(Arc<CertifiedKey>),
}

/// A client config trusting `roots` for the server, presenting `cert`.
pub fn client_config(
    roots: RootCertStore,
    cert: ClientCert,
    versions: &TlsVersions,
) -> Result<ClientConfig, CredError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions.rustls())
        .map_err(|e| CredError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Always(ck) => builder.with_client_cert_resolver(Arc::new(Always(ck))),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
