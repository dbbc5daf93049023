//! Client-certificate verifiers beyond webpki's chain checks: a SPIFFE
//! trust-domain check (what Istio's strict mTLS adds on top of the chain),
//! and a deliberately broken accept-anything verifier for `any-ca` mode.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::spiffe::SpiffeId;

/// The SPIFFE ID of a certificate, as written in it (see
/// [`SpiffeId::from_uri_sans`] for which URI SAN counts).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    crate::x509::spiffe_id(cert).map(|id| id.to_string())
}

/// Chain verification by `inner`, then a SPIFFE ID in one of `trust_domains`.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domains: Vec<String>,
}

impl SpiffeClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, trust_domains: Vec<String>) -> Self {
        SpiffeClientVerifier {
            inner,
            trust_domains,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = crate::x509::spiffe_id(end_entity);
        let ok = id
            .as_ref()
            .map(SpiffeId::trust_domain)
            .is_some_and(|td| self.trust_domains.iter().any(|t| t == td));
        if !ok {
            tracing::debug!(spiffe_id = ?id, trust_domains = ?self.trust_domains, "client certificate refused: identity");
            // access_denied: the chain is fine, the identity is not one we serve.
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Requires a client certificate and accepts any: no chain, validity,
/// revocation, EKU or identity check. The client must still prove it holds
/// the key (the handshake signature is verified), as nginx's `optional_no_ca`
/// does. It exists so that audits have a broken server to catch.
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> Self {
        AnyClientCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_is_the_authority_part() {
        let trust_domain = |id: &str| {
            SpiffeId::parse(id)
                .ok()
                .map(|i| i.trust_domain().to_string())
        };
        assert_eq!(
            trust_domain("spiffe://cluster.local/ns/a/sa/b").as_deref(),
            Some("cluster.local")
        );
        assert_eq!(trust_domain("https://cluster.local/ns/a"), None);
    }
}
