//! Client-certificate verifiers beyond webpki's chain checks: a SPIFFE
//! trust-domain check (what Istio's strict mTLS adds on top of the chain),
//! and a deliberately broken accept-anything verifier for `any-ca` mode.

use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::spiffe::SpiffeId;

/// The SPIFFE ID of a certificate, as written in it (see
/// [`SpiffeId::from_uri_sans`] for which URI SAN counts).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    crate::x509::spiffe_id(cert).map(|id| id.to_string())
}

/// rustls asks every verifier for two handshake-signature checks, TLS 1.2's
/// and TLS 1.3's, with the same arguments, and each verifier here answers
/// both the same way; this writes the pair once. Inside an `impl` of
/// `ServerCertVerifier` or `ClientCertVerifier`:
/// - `handshake_signatures! { forward |v| v.inner }`: ask the verifier
///   `v.inner` (`v` is `self`);
/// - `handshake_signatures! { algorithms |v| &v.algorithms }`: verify with
///   these `WebPkiSupportedAlgorithms`;
/// - `handshake_signatures! { refuse |_v| error }`: fail with `error`.
macro_rules! handshake_signatures {
    ($how:ident |$v:ident| $with:expr) => {
        $crate::tls::handshake_signatures!(
            @methods $how |$v| $with; verify_tls12_signature verify_tls13_signature
        );
    };
    (@methods $how:ident |$v:ident| $with:expr; $($method:ident)+) => {
        $(
            fn $method(
                &self,
                message: &[u8],
                cert: &rustls_pki_types::CertificateDer<'_>,
                dss: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
                let $v = self;
                $crate::tls::handshake_signatures!(@check $how $method ($with) message cert dss)
            }
        )+
    };
    (@check forward $method:ident ($to:expr) $m:ident $c:ident $d:ident) => {
        $to.$method($m, $c, $d)
    };
    (@check algorithms $method:ident ($algs:expr) $m:ident $c:ident $d:ident) => {
        rustls::crypto::$method($m, $c, $d, $algs)
    };
    (@check refuse $method:ident ($error:expr) $m:ident $c:ident $d:ident) => {{
        let _ = ($m, $c, $d);
        Err($error)
    }};
}
pub(crate) use handshake_signatures;

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

    handshake_signatures! { forward |v| v.inner }

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

    handshake_signatures! { algorithms |v| &v.algorithms }

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
