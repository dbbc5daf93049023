//! The check registry: every check the audit runs is one entry here, with
//! its id (a contract: JSON, JUnit and `--expect` name checks by it), what
//! it tests, the expectation a correctly enforcing service meets, the hint
//! printed when it fails, and the experiment that gathers the evidence.
//! The runner only walks this table: the experiments written here come
//! first, then one `mutation:<name>` check per entry of the PKI's mutation
//! catalogue ([`crate::pki::MUTATIONS`]), generated once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::LazyLock;

use super::experiment::{Ctx, Observation};
use super::experiments as x;
use crate::pki::{Expect, Mandate, Mutation, MUTATIONS};

/// What the user expects of the service for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    Accept,
    Reject,
    /// Run and report, never fail (`--profile x509` for the SPIFFE checks,
    /// clock skew and weak crypto without `--strict`).
    Info,
    /// Do not run.
    Skip,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Accept => "accept",
            Expected::Reject => "reject",
            Expected::Info => "info",
            Expected::Skip => "skip",
        })
    }
}

impl FromStr for Expected {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "accept" => Ok(Expected::Accept),
            "reject" => Ok(Expected::Reject),
            "info" => Ok(Expected::Info),
            "skip" => Ok(Expected::Skip),
            other => Err(format!(
                "unknown expectation {other:?}; use accept, reject, info or skip"
            )),
        }
    }
}

/// Which kind of enforcement a check is about; the table groups by it and
/// `any-ca`-style findings read off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Sanity,
    Presence,
    Trust,
    Validity,
    Revocation,
    Usage,
    Identity,
    Transport,
    Session,
    Crypto,
    /// A mutated certificate of the identity (`pki::mutate`).
    Mutation,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Sanity => "sanity",
            Category::Presence => "presence",
            Category::Trust => "trust",
            Category::Validity => "validity",
            Category::Revocation => "revocation",
            Category::Usage => "usage",
            Category::Identity => "identity",
            Category::Transport => "transport",
            Category::Session => "session",
            Category::Crypto => "crypto",
            Category::Mutation => "mutation",
        }
    }
}

/// Does workload identity (SPIFFE) matter for this audit?
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Workload identity is checked: a wrong trust domain or a missing
    /// SPIFFE ID must be refused.
    Spiffe,
    /// Plain CA-based authentication: the SPIFFE checks are information.
    X509,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Spiffe => "spiffe",
            Profile::X509 => "x509",
        })
    }
}

/// The settings a check's default expectation depends on.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub profile: Profile,
    /// `--max-skew` was given: clock skew beyond it fails.
    pub max_skew: bool,
    /// `--strict`: weak crypto must be refused.
    pub strict: bool,
}

pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Observation> + Send + 'a>>;

/// How a check gathers its evidence.
#[derive(Clone, Copy)]
pub enum Run {
    /// An experiment of its own (`audit::experiments`).
    Experiment(for<'a> fn(&'a Ctx) -> RunFuture<'a>),
    /// Present this mutated certificate of the identity.
    Mutation(&'static Mutation),
}

impl Run {
    pub fn start<'a>(&self, ctx: &'a Ctx) -> RunFuture<'a> {
        match *self {
            Run::Experiment(run) => run(ctx),
            Run::Mutation(m) => Box::pin(x::mutation(ctx, m)),
        }
    }
}

/// One entry of the registry.
#[derive(Clone, Copy)]
pub struct Check {
    /// A contract: never rename.
    pub id: &'static str,
    pub category: Category,
    /// One line: what a correctly enforcing service does.
    pub about: &'static str,
    /// What to change when the check fails.
    pub hint: &'static str,
    /// TLS alerts that name this check's cause. A refusal by another alert
    /// that names a *different* cause (e.g. `expired` refused with
    /// `unknown_ca`) is a warning: the service refused, but not for the
    /// reason under test, so the check proves less than it seems.
    pub cause_alerts: &'static [&'static str],
    pub default: fn(Defaults) -> Expected,
    pub run: Run,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check").field("id", &self.id).finish()
    }
}

/// The id of the sanity check: when it fails, nothing else is judged.
pub const SANITY: &str = "valid-identity-accepted";

/// Alerts that name a specific cause of refusal; see `Check::cause_alerts`.
pub const CAUSE_NAMING_ALERTS: &[&str] = &[
    "unknown_ca",
    "certificate_expired",
    "certificate_revoked",
    "unsupported_certificate",
];

fn accept(_: Defaults) -> Expected {
    Expected::Accept
}

fn reject(_: Defaults) -> Expected {
    Expected::Reject
}

fn within_max_skew(d: Defaults) -> Expected {
    if d.max_skew {
        Expected::Reject
    } else {
        Expected::Info
    }
}

fn strict_only(d: Defaults) -> Expected {
    if d.strict {
        Expected::Reject
    } else {
        Expected::Info
    }
}

fn spiffe_only(d: Defaults) -> Expected {
    match d.profile {
        Profile::Spiffe => Expected::Reject,
        Profile::X509 => Expected::Info,
    }
}

fn accept_under_spiffe(d: Defaults) -> Expected {
    match d.profile {
        Profile::Spiffe => Expected::Accept,
        Profile::X509 => Expected::Info,
    }
}

macro_rules! run {
    ($f:path) => {
        Run::Experiment(|ctx| Box::pin($f(ctx)))
    };
}

/// Every check, in report order: the sanity check first, the mutations
/// last.
pub fn checks() -> &'static [Check] {
    static ALL: LazyLock<Vec<Check>> = LazyLock::new(|| {
        EXPERIMENTS
            .iter()
            .copied()
            .chain(MUTATIONS.iter().map(mutation_check))
            .collect()
    });
    &ALL
}

/// The check of one mutation. How hard a service is held to the verdict
/// follows who the rule binds: every validator (always), SPIFFE validators
/// (`--profile spiffe`), or the issuer and algorithm policy (`--strict`, as
/// the weak-crypto checks).
fn mutation_check(m: &'static Mutation) -> Check {
    let default: fn(Defaults) -> Expected = match (m.mandate, m.expect) {
        (Mandate::Validator, Expect::Accept) => accept,
        (Mandate::Validator, Expect::Reject) => reject,
        (Mandate::Svid, Expect::Accept) => accept_under_spiffe,
        (Mandate::Svid, Expect::Reject) => spiffe_only,
        (Mandate::Issuer | Mandate::Crypto, Expect::Accept) => accept,
        (Mandate::Issuer | Mandate::Crypto, Expect::Reject) => strict_only,
    };
    Check {
        id: m.check_id,
        category: Category::Mutation,
        about: m.changes,
        hint: m.rule,
        cause_alerts: &[],
        default,
        run: Run::Mutation(m),
    }
}

/// The checks with experiments of their own, in report order.
static EXPERIMENTS: &[Check] = &[
    Check {
        id: SANITY,
        category: Category::Sanity,
        about: "the valid identity gets a non-refusal HTTP response",
        hint: "the service must trust the PKI's CA (ca/ca.crt) and accept this identity on this path; every other check is inconclusive until it does",
        cause_alerts: &[],
        default: accept,
        run: run!(x::valid_identity),
    },
    Check {
        id: "no-client-cert",
        category: Category::Presence,
        about: "a TLS client that presents no certificate is refused",
        hint: "require a client certificate (nginx: ssl_verify_client on; Istio: PeerAuthentication mode STRICT)",
        cause_alerts: &[],
        default: reject,
        run: run!(x::no_client_cert),
    },
    Check {
        id: "untrusted-ca",
        category: Category::Trust,
        about: "a certificate issued by a CA outside the trust bundle is refused",
        hint: "verify client certificates against your CA only (nginx: ssl_client_certificate + ssl_verify_client on, not optional_no_ca)",
        cause_alerts: &["unknown_ca"],
        default: reject,
        run: run!(x::untrusted_ca),
    },
    Check {
        id: "self-signed",
        category: Category::Trust,
        about: "a self-signed client certificate is refused",
        hint: "verify the client chain up to your CA; never accept self-signed client certificates",
        cause_alerts: &["unknown_ca"],
        default: reject,
        run: run!(x::self_signed),
    },
    Check {
        id: "expired",
        category: Category::Validity,
        about: "a certificate past its notAfter is refused",
        hint: "check the validity period of client certificates (and the service's clock)",
        cause_alerts: &["certificate_expired"],
        default: reject,
        run: run!(x::expired),
    },
    Check {
        id: "not-yet-valid",
        category: Category::Validity,
        about: "a certificate before its notBefore is refused",
        hint: "check the validity period of client certificates (and the service's clock)",
        cause_alerts: &["certificate_expired"],
        default: reject,
        run: run!(x::not_yet_valid),
    },
    Check {
        id: "revoked",
        category: Category::Revocation,
        about: "a certificate listed in the CA's CRL is refused",
        hint: "the service checks no CRL/OCSP; install ca/crl.pem (nginx: ssl_crl; haproxy: crl-file)",
        cause_alerts: &["certificate_revoked"],
        default: reject,
        run: run!(x::revoked),
    },
    Check {
        id: "wrong-eku",
        category: Category::Usage,
        about: "a certificate whose extendedKeyUsage lacks clientAuth is refused",
        hint: "require the clientAuth extended key usage of client certificates",
        cause_alerts: &["unsupported_certificate"],
        default: reject,
        run: run!(x::wrong_eku),
    },
    Check {
        id: "ca-as-leaf",
        category: Category::Usage,
        about: "a CA certificate (basicConstraints CA:TRUE) presented as a client is refused",
        hint: "refuse CA certificates as end entities (X.509-SVID: a leaf MUST NOT set cA; webpki refuses, OpenSSL does not)",
        cause_alerts: &["unsupported_certificate"],
        // The X.509-SVID standard forbids cA=true on a leaf and requires
        // validators to refuse one; plain RFC 5280 path validation (OpenSSL:
        // nginx, haproxy) does not, so under x509 it is information.
        default: spiffe_only,
        run: run!(x::ca_as_leaf),
    },
    Check {
        id: "missing-intermediate",
        category: Category::Trust,
        about: "a leaf sent without the intermediate that issued it is refused",
        hint: "trust only the root: an intermediate in the trust bundle lets chains shortcut; do not fetch missing intermediates (AIA)",
        cause_alerts: &["unknown_ca"],
        default: reject,
        run: run!(x::missing_intermediate),
    },
    Check {
        id: "wrong-trust-domain",
        category: Category::Identity,
        about: "a SPIFFE ID from a foreign trust domain is refused",
        hint: "check the SPIFFE ID's trust domain (Istio: AuthorizationPolicy principals; Envoy: match_typed_subject_alt_names)",
        cause_alerts: &[],
        default: spiffe_only,
        run: run!(x::wrong_trust_domain),
    },
    Check {
        id: "no-spiffe-id",
        category: Category::Identity,
        about: "a certificate without a SPIFFE ID is refused",
        hint: "require a spiffe:// URI SAN of client certificates",
        cause_alerts: &[],
        default: spiffe_only,
        run: run!(x::no_spiffe_id),
    },
    Check {
        id: "other-identity",
        category: Category::Identity,
        about: "a valid certificate of another workload is refused on this endpoint (TLS or 403)",
        hint: "authorize by identity on this path (Istio AuthorizationPolicy; serve --policy), not only by CA",
        cause_alerts: &[],
        default: reject,
        run: run!(x::other_identity),
    },
    Check {
        id: "plaintext",
        category: Category::Transport,
        about: "plain HTTP to the mTLS port (and --plaintext-port) is not served",
        hint: "serve only mTLS (Istio: PeerAuthentication STRICT instead of PERMISSIVE)",
        cause_alerts: &[],
        default: reject,
        run: run!(x::plaintext),
    },
    Check {
        id: "resumption-after-expiry",
        category: Category::Session,
        about: "a session resumed after its client certificate expired is refused",
        hint: "re-check the client certificate's validity on resumption, or bound session/ticket lifetime by the certificate's notAfter",
        cause_alerts: &[],
        default: reject,
        run: run!(x::resumption_after_expiry),
    },
    Check {
        id: "clock-skew",
        category: Category::Validity,
        about: "how far past notAfter (or before notBefore) a certificate is still accepted",
        hint: "the service accepts certificates further outside their validity than --max-skew allows",
        cause_alerts: &[],
        default: within_max_skew,
        run: run!(x::clock_skew),
    },
    Check {
        id: "weak-signature",
        category: Category::Crypto,
        about: "a client certificate signed with SHA-1 by the trusted CA is refused",
        hint: "refuse SHA-1 certificate signatures (OpenSSL: security level 1 or higher, the default)",
        cause_alerts: &[],
        default: strict_only,
        run: run!(x::weak_signature),
    },
    Check {
        id: "weak-key",
        category: Category::Crypto,
        about: "a client certificate with an RSA-1024 key is refused",
        hint: "require client keys of at least RSA-2048 or ECDSA P-256 (OpenSSL: security level 2)",
        cause_alerts: &[],
        default: strict_only,
        run: run!(x::weak_key),
    },
];

/// The check with this id.
pub fn find(id: &str) -> Option<&'static Check> {
    checks().iter().find(|c| c.id == id)
}

/// Every id, for messages.
pub fn ids() -> String {
    checks().iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
}
