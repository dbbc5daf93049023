//! What every check works with: the target, the credentials, and one way to
//! present a certificate and record what came back.
//!
//! An attempt is one connection experiment through [`crate::probe`]:
//! connect, handshake presenting a certificate, one HTTP request. Whether
//! the service accepted is decided by the HTTP status only (TLS 1.3 refuses
//! client certificates after the client's side of the handshake is done).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;

use crate::pki::{Authority, KeyType, LeafSpec, PkiDir, Usage};
use crate::probe::{self, Probe, ProbeResult};
use crate::tls::{client_config_verified_by, ClientCert, Outcome, TlsVersion, TlsVersions};
use crate::x509::CertFacts;

/// A credential the audit presents as "the identity" (or the other one).
#[derive(Clone)]
pub struct Identity {
    /// Service name in the PKI, or the certificate file.
    pub name: String,
    pub key: Arc<CertifiedKey>,
    /// The private key's file, for the commands that replay a fuzz case.
    pub key_file: Option<std::path::PathBuf>,
}

/// The CA that issued the identity, able to mint more leaves like it.
pub struct Issuing {
    pub authority: Authority,
    /// Sent after a minted leaf: the identity's own chain above its leaf.
    pub chain: Vec<CertificateDer<'static>>,
}

/// The service's decision for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accepted,
    Refused,
    /// Nothing learned about the service's decision.
    Unknown,
}

/// One connection experiment and what came back.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What was tried: the TLS version, and more when a check tries several
    /// things (`1.3 resumed`, `expired 1h`, `plain :8080`).
    pub label: String,
    pub outcome: Outcome,
    pub resumed: Option<bool>,
    /// Set by checks that judge an outcome their own way (plaintext:
    /// anything but an HTTP answer means "not served").
    pub decision: Option<Decision>,
}

/// Everything a check observed.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub attempts: Vec<Attempt>,
    /// Extra evidence in words (tolerances, "did not resume").
    pub notes: Vec<String>,
    /// The experiment could not tell (e.g. the service issued no ticket).
    pub inconclusive: Option<String>,
    /// The check cannot run with what it was given (e.g. needs --pki).
    pub skipped: Option<String>,
    /// The check's own overall decision, when it is not "any attempt
    /// accepted" (clock skew against --max-skew).
    pub decision: Option<Decision>,
}

impl Observation {
    pub fn of(attempts: Vec<Attempt>) -> Self {
        Observation {
            attempts,
            ..Default::default()
        }
    }

    pub fn skipped(why: impl Into<String>) -> Self {
        Observation {
            skipped: Some(why.into()),
            ..Default::default()
        }
    }

    pub fn inconclusive(why: impl Into<String>) -> Self {
        Observation {
            inconclusive: Some(why.into()),
            ..Default::default()
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// Per-phase time limits of every attempt.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub handshake: Duration,
    pub response: Duration,
}

/// Everything the checks of one target share. Built once per target; the
/// sanity check narrows `versions` to the ones the service speaks.
pub struct Ctx {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    pub path: String,
    pub method: hyper::Method,
    pub plaintext_port: Option<u16>,
    pub verifier: Arc<dyn ServerCertVerifier>,
    pub versions: Vec<TlsVersion>,
    pub identity: Identity,
    pub other: Option<Identity>,
    pub pki: Option<PkiDir>,
    /// Why there is no issuing CA when there is none (for skip reasons).
    pub issuing: Result<Issuing, String>,
    pub limits: Limits,
    /// `--max-skew`: clock skew beyond it fails `clock-skew`.
    pub max_skew: Option<Duration>,
    /// Lifetime of the short-lived certificate `resumption-after-expiry`
    /// waits out.
    pub short_lived: Duration,
    pub reject_status: Vec<u16>,
}

impl Ctx {
    /// What the service decided, by the audit's refusal statuses.
    pub fn decide(&self, a: &Attempt) -> Decision {
        if let Some(d) = a.decision {
            return d;
        }
        match &a.outcome {
            Outcome::Http(s) if self.reject_status.contains(s) => Decision::Refused,
            Outcome::Http(_) | Outcome::Ok => Decision::Accepted,
            Outcome::Alert(_) | Outcome::Reset | Outcome::ClosedEarly => Decision::Refused,
            _ => Decision::Unknown,
        }
    }

    /// A client config presenting `cert` over `version` only.
    pub fn config(&self, cert: ClientCert, version: TlsVersion) -> anyhow::Result<ClientConfig> {
        let mut c =
            client_config_verified_by(self.verifier.clone(), cert, &TlsVersions::only(version))?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(c)
    }

    /// One probe with `config` (or plaintext to `addr` with `None`).
    pub async fn probe(&self, config: Option<Arc<ClientConfig>>, addr: SocketAddr) -> ProbeResult {
        let mut p = Probe::new(addr, config.map(|c| (c, self.server_name.clone())))
            .path(&self.path)
            .method(self.method.clone());
        p.connect_timeout = self.limits.connect;
        p.handshake_timeout = self.limits.handshake;
        p.response_timeout = self.limits.response;
        probe::run(&p).await
    }

    /// Present `cert` once over each TLS version under audit.
    pub async fn present(&self, cert: ClientCert) -> Vec<Attempt> {
        let mut out = Vec::new();
        for v in self.versions.iter().copied() {
            out.push(self.present_over(cert.clone(), v, v.to_string()).await);
        }
        out
    }

    /// Present `cert` over `version`, labelled `label`.
    pub async fn present_over(
        &self,
        cert: ClientCert,
        version: TlsVersion,
        label: String,
    ) -> Attempt {
        let (outcome, resumed) = match self.config(cert, version) {
            Ok(c) => {
                let r = self.probe(Some(Arc::new(c)), self.addr).await;
                (r.outcome, r.resumed)
            }
            // Our own side failed (e.g. the key cannot sign for this
            // version): says nothing about the service.
            Err(e) => (Outcome::Tls(format!("client config: {e}")), None),
        };
        Attempt {
            label,
            outcome,
            resumed,
            decision: None,
        }
    }

    /// The identity's facts (SPIFFE ID, key type) for minting look-alikes.
    pub fn identity_facts(&self) -> Option<CertFacts> {
        self.identity
            .key
            .cert
            .first()
            .and_then(|c| CertFacts::from_der(c).ok())
    }

    /// A client leaf like the identity's (same SPIFFE ID, same key type),
    /// valid from `not_before` to `not_after`, issued by the issuing CA.
    pub fn mint(
        &self,
        what: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Arc<CertifiedKey>, String> {
        let issuing = self.issuing.as_ref().map_err(Clone::clone)?;
        let (spec, key_type) = self.look_alike(what, not_before, not_after);
        let issued = issuing
            .authority
            .issue(&spec, key_type)
            .map_err(|e| format!("minting a {what} certificate: {e}"))?;
        certified(issued, &issuing.chain).map_err(|e| format!("minting a {what} certificate: {e}"))
    }

    /// The spec and key type of a leaf that looks like the identity.
    pub fn look_alike(
        &self,
        what: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (LeafSpec, KeyType) {
        let facts = self.identity_facts();
        let mut spec = LeafSpec::new(
            &format!("certshift audit {what}"),
            Usage::Client,
            not_before,
            Duration::ZERO,
        );
        spec.not_before = not_before;
        spec.not_after = not_after;
        spec.spiffe_id = facts
            .as_ref()
            .and_then(|f| f.spiffe_id.as_ref().map(|s| s.to_string()));
        let key_type = facts
            .as_ref()
            .map_or(KeyType::EcdsaP256, |f| KeyType::like(&f.key));
        (spec, key_type)
    }
}

/// A minted leaf, with `chain` after it, ready to present.
pub fn certified(
    issued: crate::pki::Issued,
    chain: &[CertificateDer<'static>],
) -> Result<Arc<CertifiedKey>, String> {
    let mut certs = vec![issued.cert];
    certs.extend(chain.iter().cloned());
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(issued.key.serialize_der());
    let minted = std::path::Path::new("<minted>");
    crate::creds::certified_key(minted, certs, minted, key.into()).map_err(|e| e.to_string())
}
