//! Client-certificate verifiers beyond webpki's chain checks: a SPIFFE
//! trust-domain check (what Istio's strict mTLS adds on top of the chain),
//! revocation checked as far as the loaded CRLs reach, and the `any-ca`
//! verifier, broken on purpose in exactly one way: it checks the leaf but
//! not whether a trusted CA issued it.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use time::OffsetDateTime;

use crate::spiffe::SpiffeId;
use crate::x509::{CertFacts, CrlFacts, FactsError};

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

/// A `ClientCertVerifier` that wraps another to add to its verdict asks the
/// wrapped one everything else: whether to ask for a certificate, the CA
/// hints, the signature schemes and checks. Inside the `impl`,
/// `delegate_client_auth! { |v| v.inner }` writes those methods once.
macro_rules! delegate_client_auth {
    (|$v:ident| $to:expr) => {
        fn offer_client_auth(&self) -> bool {
            let $v = self;
            $to.offer_client_auth()
        }

        fn client_auth_mandatory(&self) -> bool {
            let $v = self;
            $to.client_auth_mandatory()
        }

        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            let $v = self;
            $to.root_hint_subjects()
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            let $v = self;
            $to.supported_verify_schemes()
        }

        handshake_signatures! { forward |$v| $to }
    };
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
    delegate_client_auth! { |v| v.inner }

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
}

/// Revocation checked as far as the loaded CRLs reach. `leaf` checks only
/// the end entity and refuses it when no CRL covers it; `chain` checks every
/// certificate on the path and lets one no CRL covers through. Both must
/// pass, so the leaf's status must be known, and a CA certificate on the
/// path is refused when a CRL from its issuer revokes it.
///
/// Why not webpki's default (the whole chain, unknown status refused): an
/// intermediate's status comes from a CRL its issuer signs. A PKI issued
/// under the user's own intermediate holds no such CRL, since only the
/// user's root, whose key certshift never sees, could sign it; that default
/// would then refuse every client with unknown_ca. Why not the end entity
/// alone: when the CRLs do cover the path (certshift's own root and
/// intermediate, or a user's full set via `--crl`), a revoked intermediate
/// must still be caught, as servers that check the whole chain (nginx's
/// `ssl_crl`, Envoy by default) catch it. The price is a second path build
/// for a client that sends intermediates.
#[derive(Debug)]
pub struct RevocationReach {
    leaf: Arc<dyn ClientCertVerifier>,
    chain: Arc<dyn ClientCertVerifier>,
}

impl RevocationReach {
    /// `leaf` built with `only_check_end_entity_revocation()`, `chain` with
    /// `allow_unknown_revocation_status()`, from the same roots and CRLs.
    pub fn new(leaf: Arc<dyn ClientCertVerifier>, chain: Arc<dyn ClientCertVerifier>) -> Self {
        RevocationReach { leaf, chain }
    }
}

impl ClientCertVerifier for RevocationReach {
    delegate_client_auth! { |v| v.leaf }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .leaf
            .verify_client_cert(end_entity, intermediates, now)?;
        // Without intermediates the path is leaf and anchor, and anchors
        // are never revocation-checked: the first pass said everything.
        if !intermediates.is_empty() {
            self.chain
                .verify_client_cert(end_entity, intermediates, now)?;
        }
        Ok(verified)
    }
}

/// Accepts what one of its verifiers accepts. Each is built from the same
/// roots and a different set of CRLs ([`crate::tls::server`] makes them):
/// webpki takes the first CRL whose issuer *name* matches and refuses the
/// client when that CRL's signature does not verify with the issuer's key,
/// so with two CAs of the same name, each with its own CRL, one verifier
/// would refuse every client of the second CA. One verifier per CRL of a
/// shared name means each client meets its own issuer's CRL in one of them.
#[derive(Debug)]
pub struct CrlSlices {
    first: Arc<dyn ClientCertVerifier>,
    rest: Vec<Arc<dyn ClientCertVerifier>>,
}

impl CrlSlices {
    pub fn new(first: Arc<dyn ClientCertVerifier>, rest: Vec<Arc<dyn ClientCertVerifier>>) -> Self {
        CrlSlices { first, rest }
    }
}

impl ClientCertVerifier for CrlSlices {
    delegate_client_auth! { |v| v.first }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let mut refusal: Option<Error> = None;
        for v in std::iter::once(&self.first).chain(&self.rest) {
            match v.verify_client_cert(end_entity, intermediates, now) {
                Ok(verified) => return Ok(verified),
                Err(e) if refusal.as_ref().is_none_or(|r| weight(&e) < weight(r)) => {
                    refusal = Some(e)
                }
                Err(_) => {}
            }
        }
        // `first` always answers, so there is at least one refusal here.
        Err(refusal.unwrap_or(Error::InvalidCertificate(CertificateError::UnknownIssuer)))
    }
}

/// Which refusal of [`CrlSlices`] speaks for the client (lowest first): a
/// CRL of another CA with the same name fails its signature check, which
/// webpki reports as a bad CRL or, having tried every path, as a bad
/// signature; that says nothing about this client, while "revoked" by the
/// CRL that does verify, or any other refusal, does.
fn weight(e: &Error) -> u8 {
    match e {
        Error::InvalidCertificate(CertificateError::Revoked) => 0,
        #[allow(deprecated)]
        Error::InvalidCertificate(CertificateError::BadSignature) => 2,
        Error::InvalidCertRevocationList(_) => 3,
        _ => 1,
    }
}

/// Refuses a client Certificate message with an entry after the leaf that
/// is not a certificate (zero bytes, or bytes that do not parse as exactly
/// one X.509 certificate) before `inner` sees it, with bad_certificate, as
/// OpenSSL refuses it (decode_error). Path building skips an entry it
/// cannot use, so without this such a chain is accepted when the leaf
/// alone chains to a trusted CA.
#[derive(Debug)]
pub struct WellFormedChain {
    inner: Arc<dyn ClientCertVerifier>,
}

impl WellFormedChain {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        WellFormedChain { inner }
    }
}

impl ClientCertVerifier for WellFormedChain {
    delegate_client_auth! { |v| v.inner }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        for (i, der) in intermediates.iter().enumerate() {
            let whole = matches!(x509_parser::parse_x509_certificate(der), Ok((rest, _)) if rest.is_empty());
            if !whole {
                tracing::debug!(
                    entry = i + 2,
                    len = der.len(),
                    "client certificate refused: a chain entry is not a certificate"
                );
                return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
            }
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }
}

/// Requires a client certificate and checks everything about it except
/// whether it chains to a trusted CA: nginx's `ssl_verify_client
/// optional_no_ca`, which ignores only the "issuer unknown" and
/// "self-signed" errors, with a certificate required. Like webpki for
/// `strict`, and with the same errors (so the same alerts), it refuses a
/// leaf outside its validity window, a CA certificate, one whose EKU lacks
/// clientAuth, and one a loaded CRL revokes; the handshake signature is
/// verified, so the client holds the key. What is left is the hole audits
/// must find: anyone who can mint a certificate can claim any identity.
/// Wrap it in [`SpiffeClientVerifier`] for the trust-domain rule.
#[derive(Debug)]
pub struct AnyCaClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    crls: Vec<CrlFacts>,
}

/// Why [`AnyCaClientVerifier`] refused a certificate where rustls has no
/// [`CertificateError`] of its own (sent as certificate_unknown, as webpki's
/// own "CA used as end entity" is).
#[derive(Debug, thiserror::Error)]
pub enum LeafRefusal {
    #[error("basicConstraints CA:TRUE: a CA certificate presented as a client certificate")]
    CaAsLeaf,
}

impl AnyCaClientVerifier {
    /// `crls` are matched by issuer name and serial only (see
    /// `revocation`); they were checked when loaded, so an error here means
    /// bytes x509-parser cannot read.
    pub fn new(
        provider: &rustls::crypto::CryptoProvider,
        crls: &[CertificateRevocationListDer<'_>],
    ) -> Result<Self, FactsError> {
        Ok(AnyCaClientVerifier {
            algorithms: provider.signature_verification_algorithms,
            crls: crls
                .iter()
                .map(|c| CrlFacts::from_der(c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The checks webpki makes of an end entity before it looks for an
    /// issuer, in webpki's order: validity, basicConstraints, EKU.
    fn leaf(&self, facts: &CertFacts, now: UnixTime) -> Result<(), CertificateError> {
        let not_before = unix_time(facts.not_before);
        let not_after = unix_time(facts.not_after);
        if now < not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            });
        }
        if now > not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            });
        }
        if facts.is_ca {
            return Err(CertificateError::Other(rustls::OtherError(Arc::new(
                LeafRefusal::CaAsLeaf,
            ))));
        }
        // No EKU extension means any purpose (RFC 5280 4.2.1.12); webpki
        // does not take anyExtendedKeyUsage for clientAuth, nor does this.
        let eku = &facts.extended_key_usage;
        if !eku.is_empty() && !eku.iter().any(|p| p == "clientAuth") {
            tracing::debug!(presented = ?eku, "client certificate refused: no clientAuth EKU");
            return Err(CertificateError::InvalidPurpose);
        }
        self.revocation(facts)
    }

    /// A CRL is matched to the leaf by issuer name, as webpki does before
    /// it checks the CRL's signature with the issuer's key. Here there is no
    /// trusted issuer to check it with: the CRL files are the operator's
    /// configuration and trusted as such, and a forged leaf that copies a
    /// revoked serial under the same name can only be refused, never let in.
    /// A leaf no CRL speaks for passes: its issuer is unknown, and an
    /// unknown issuer is what this mode accepts.
    fn revocation(&self, facts: &CertFacts) -> Result<(), CertificateError> {
        let issuer = facts.link.issuer_der.as_slice();
        match self.crls.iter().find(|c| c.revokes(issuer, &facts.serial)) {
            Some(crl) => {
                tracing::debug!(serial = %facts.serial, crl_issuer = %crl.issuer, "client certificate refused: revoked");
                Err(CertificateError::Revoked)
            }
            None => Ok(()),
        }
    }
}

impl ClientCertVerifier for AnyCaClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let facts = CertFacts::from_der(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        self.leaf(&facts, now).map_err(Error::InvalidCertificate)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures! { algorithms |v| &v.algorithms }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A certificate time as rustls compares it; before 1970 is 0, which no
/// handshake's `now` precedes.
fn unix_time(t: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
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

    mod any_ca {
        use std::time::Duration;

        use rcgen::ExtendedKeyUsagePurpose;
        use rustls::AlertDescription;
        use rustls_pki_types::pem::PemObject;
        use time::macros::datetime;

        use super::*;
        use crate::pki::{self_signed_leaf, Authority, Issued, KeyType, LeafSpec, Usage};

        const START: OffsetDateTime = datetime!(2025-01-01 00:00 UTC);
        const DAY: Duration = Duration::from_secs(86_400);

        fn at(t: OffsetDateTime) -> UnixTime {
            unix_time(t)
        }

        fn spec(tweak: impl FnOnce(&mut LeafSpec)) -> LeafSpec {
            let mut spec = LeafSpec::new("a", Usage::Client, START, 30 * DAY);
            spec.not_before = START;
            tweak(&mut spec);
            spec
        }

        /// The verifier with `ca`'s CRL revoking `revoked`, judging `leaf` at `now`.
        fn judge(
            ca: &Authority,
            revoked: &[&Issued],
            leaf: &Issued,
            now: OffsetDateTime,
        ) -> Result<(), Error> {
            let serials: Vec<_> = revoked.iter().map(|i| i.serial.clone()).collect();
            let pem = ca.crl(&serials, START, DAY).unwrap();
            let crl = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
            let provider = crate::creds::provider();
            let v = AnyCaClientVerifier::new(&provider, &[crl]).unwrap();
            v.verify_client_cert(&leaf.cert, &[], at(now)).map(|_| ())
        }

        fn alert(r: Result<(), Error>) -> Option<AlertDescription> {
            match r {
                Ok(()) => None,
                Err(Error::InvalidCertificate(e)) => Some(e.into()),
                Err(other) => panic!("not a certificate error: {other:?}"),
            }
        }

        #[test]
        fn checks_the_leaf_as_webpki_does_but_not_its_issuer() {
            let ca = Authority::new_root("any-ca CA", KeyType::EcdsaP256, START, 90 * DAY).unwrap();
            let other = Authority::new_root("other", KeyType::EcdsaP256, START, 90 * DAY).unwrap();
            let issue = |by: &Authority, s: LeafSpec| by.issue(&s, KeyType::EcdsaP256).unwrap();
            let now = START + time::Duration::days(1);

            let good = issue(&ca, spec(|_| {}));
            assert_eq!(alert(judge(&ca, &[], &good, now)), None);
            // The point of the mode: no trusted issuer is needed at all.
            let stranger = issue(&other, spec(|_| {}));
            assert_eq!(alert(judge(&ca, &[], &stranger, now)), None);
            let own = self_signed_leaf(&spec(|_| {}), KeyType::EcdsaP256).unwrap();
            assert_eq!(alert(judge(&ca, &[], &own, now)), None);

            let expired = judge(&ca, &[], &good, START + time::Duration::days(31));
            assert!(matches!(
                expired,
                Err(Error::InvalidCertificate(
                    CertificateError::ExpiredContext { .. }
                ))
            ));
            assert_eq!(alert(expired), Some(AlertDescription::CertificateExpired));
            let early = judge(&ca, &[], &good, START - time::Duration::seconds(1));
            assert!(matches!(
                early,
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidYetContext { .. }
                ))
            ));
            assert_eq!(alert(early), Some(AlertDescription::CertificateExpired));

            let ca_leaf = issue(&ca, spec(|s| s.ca_flag = true));
            assert_eq!(
                alert(judge(&ca, &[], &ca_leaf, now)),
                Some(AlertDescription::CertificateUnknown)
            );
            let server_only = issue(
                &ca,
                spec(|s| s.eku_override = Some(vec![ExtendedKeyUsagePurpose::ServerAuth])),
            );
            assert_eq!(
                alert(judge(&ca, &[], &server_only, now)),
                Some(AlertDescription::UnsupportedCertificate)
            );
            // No EKU extension at all: any purpose, as RFC 5280 and webpki say.
            let no_eku = issue(&ca, spec(|s| s.eku_override = Some(Vec::new())));
            assert!(CertFacts::from_der(&no_eku.cert)
                .unwrap()
                .extended_key_usage
                .is_empty());
            assert_eq!(alert(judge(&ca, &[], &no_eku, now)), None);
        }

        #[test]
        fn revocation_is_by_the_crl_of_the_leafs_issuer_name() {
            let ca = Authority::new_root("any-ca CA", KeyType::EcdsaP256, START, 90 * DAY).unwrap();
            let other = Authority::new_root("other", KeyType::EcdsaP256, START, 90 * DAY).unwrap();
            let now = START + time::Duration::days(1);
            let leaf = ca.issue(&spec(|_| {}), KeyType::EcdsaP256).unwrap();
            assert_eq!(
                alert(judge(&ca, &[&leaf], &leaf, now)),
                Some(AlertDescription::CertificateRevoked)
            );
            // Another issuer's CRL does not speak for this leaf, whatever it lists.
            assert_eq!(alert(judge(&other, &[&leaf], &leaf, now)), None);
        }
    }
}
