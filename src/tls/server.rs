//! Server-side rustls configs: which client certificates a server asks for
//! and how it judges them.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientCertVerifierBuilder, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use rustls_pki_types::CertificateRevocationListDer;

use super::{
    preferring_aes128, AnyCaClientVerifier, CrlSlices, RevocationReach, SpiffeClientVerifier,
    TlsVersions, WellFormedChain,
};
use crate::creds::{provider, CredError, ServerTlsMaterial};
use crate::x509::CrlFacts;

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
    let builder = ServerConfig::builder_with_provider(Arc::new(preferring_aes128(&provider)))
        .with_protocol_versions(&versions.rustls())
        .map_err(|e| tls(&e))?;
    // Every verifier checks the chain's entries first, then the trust domain.
    let spiffe = |inner: Arc<dyn ClientCertVerifier>| -> Arc<dyn ClientCertVerifier> {
        let spiffe = Arc::new(SpiffeClientVerifier::new(inner, m.trust_domains.clone()));
        Arc::new(WellFormedChain::new(spiffe))
    };
    let verifying = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, CredError> {
        if m.client_roots.is_empty() {
            return Err(CredError::Tls(
                "no client CA given: pass --client-ca FILE (or --pki DIR)".into(),
            ));
        }
        let roots = Arc::new(m.client_roots.clone());
        let webpki =
            |crls: &[Crl],
             tune: &dyn Fn(ClientCertVerifierBuilder) -> ClientCertVerifierBuilder| {
                let mut b =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                if !crls.is_empty() {
                    b = tune(b.with_crls(crls.to_vec()));
                }
                if optional {
                    b = b.allow_unauthenticated();
                }
                b.build().map_err(|e| tls(&e))
            };
        let reach = |crls: &[Crl]| -> Result<Arc<dyn ClientCertVerifier>, CredError> {
            if crls.is_empty() {
                return webpki(crls, &|b| b);
            }
            Ok(Arc::new(RevocationReach::new(
                webpki(crls, &|b| b.only_check_end_entity_revocation())?,
                webpki(crls, &|b| b.allow_unknown_revocation_status())?,
            )))
        };
        let mut slices = crl_slices(&m.crls).into_iter();
        let first = reach(&slices.next().unwrap_or_default())?;
        let rest = slices.map(|s| reach(&s)).collect::<Result<Vec<_>, _>>()?;
        let inner: Arc<dyn ClientCertVerifier> = match rest.is_empty() {
            true => first,
            false => Arc::new(CrlSlices::new(first, rest)),
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
    // The server picks the suite, AES-128-GCM first, as BoringSSL and Go
    // servers do: OpenSSL, curl, Python and rustls clients list
    // AES-256-GCM-SHA384 first, whose key schedule and transcript run
    // SHA-512 in software on x86 (see `preferring_aes128`). Any suite the
    // client offers is still taken when it offers no AES-128 one.
    config.ignore_client_order = true;
    Ok(config)
}

type Crl = CertificateRevocationListDer<'static>;

/// The CRLs split so that no set holds two with the same issuer name (see
/// [`CrlSlices`]): the `i`th set holds the `i`th CRL of each name, and a
/// name with one CRL is in every set. Usually there is one set: all of them.
fn crl_slices(crls: &[Crl]) -> Vec<Vec<Crl>> {
    let mut by_issuer: Vec<(Vec<u8>, Vec<Crl>)> = Vec::new();
    for crl in crls {
        // Checked when loaded; an unreadable name is a name of its own.
        let issuer = CrlFacts::from_der(crl).map_or_else(|_| crl.to_vec(), |f| f.issuer_der);
        match by_issuer.iter_mut().find(|(i, _)| *i == issuer) {
            Some((_, group)) => group.push(crl.clone()),
            None => by_issuer.push((issuer, vec![crl.clone()])),
        }
    }
    let n = by_issuer.iter().map(|(_, g)| g.len()).max().unwrap_or(1);
    (0..n)
        .map(|i| {
            by_issuer
                .iter()
                .filter_map(|(_, g)| match g.len() {
                    1 => g.first().cloned(),
                    _ => g.get(i).cloned(),
                })
                .collect()
        })
        .collect()
}

/// One identity for every SNI.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
