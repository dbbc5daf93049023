//! The catalogue of client credentials a test PKI carries: the valid identity
//! and every bad variant, each with the verdict a strict server must give.
//!
//! Variant names are a contract (directory names under `variants/`, `--present`
//! weights, report rows); never rename one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a correctly configured strict mTLS server must do with a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Accept,
    Reject,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Accept => "accept",
            Expect::Reject => "reject",
        })
    }
}

/// A client credential variant. `Valid` is the identity's own credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    Valid,
    Expired,
    NotYetValid,
    UntrustedCa,
    SelfSigned,
    Revoked,
    WrongEku,
    WrongTrustDomain,
    NoSpiffeId,
    CaAsLeaf,
    MissingIntermediate,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 11] = [
        Variant::Valid,
        Variant::Expired,
        Variant::NotYetValid,
        Variant::UntrustedCa,
        Variant::SelfSigned,
        Variant::Revoked,
        Variant::WrongEku,
        Variant::WrongTrustDomain,
        Variant::NoSpiffeId,
        Variant::CaAsLeaf,
        Variant::MissingIntermediate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Valid => "valid",
            Variant::Expired => "expired",
            Variant::NotYetValid => "not-yet-valid",
            Variant::UntrustedCa => "untrusted-ca",
            Variant::SelfSigned => "self-signed",
            Variant::Revoked => "revoked",
            Variant::WrongEku => "wrong-eku",
            Variant::WrongTrustDomain => "wrong-trust-domain",
            Variant::NoSpiffeId => "no-spiffe-id",
            Variant::CaAsLeaf => "ca-as-leaf",
            Variant::MissingIntermediate => "missing-intermediate",
        }
    }

    /// The verdict a strict server must give this credential: only the
    /// identity's own valid credential is accepted. (Not `expect`: that reads
    /// like `Option::expect`.)
    pub fn expected(self) -> Expect {
        match self {
            Variant::Valid => Expect::Accept,
            _ => Expect::Reject,
        }
    }

    /// Why a strict server gives `expect()`: the line a report prints next to
    /// a wrong verdict, so it has to name the check the server skipped.
    pub fn why(self) -> &'static str {
        match self {
            Variant::Valid => "chains to the trusted root, within validity, clientAuth EKU, SPIFFE ID in the trust domain",
            Variant::Expired => "notAfter is in the past: validity period must be checked",
            Variant::NotYetValid => "notBefore is in the future: validity period must be checked",
            Variant::UntrustedCa => "issued by a CA that is not in the trust bundle",
            Variant::SelfSigned => "self-signed leaf: no chain to the trusted root",
            Variant::Revoked => "serial is listed in ca/crl.pem: revocation must be checked",
            Variant::WrongEku => "extendedKeyUsage is serverAuth only: clientAuth is required of a client",
            Variant::WrongTrustDomain => "SPIFFE ID is in a foreign trust domain (spiffe://evil.example/...)",
            Variant::NoSpiffeId => "no URI SAN: the peer has no workload identity",
            Variant::CaAsLeaf => "basicConstraints CA:TRUE presented as an end-entity certificate",
            Variant::MissingIntermediate => "leaf sent without its intermediate: no path to the trusted root",
        }
    }

    /// Only meaningful when leaves are issued by an intermediate.
    pub fn needs_intermediate(self) -> bool {
        self == Variant::MissingIntermediate
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of the catalogue's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant {0:?}; known variants: {known}", known = Variant::ALL.map(Variant::name).join(", "))]
pub struct UnknownVariant(pub String);

impl FromStr for Variant {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| UnknownVariant(s.to_string()))
    }
}

impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_valid_is_accepted() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>(), Ok(v));
            assert_eq!(v.expected() == Expect::Accept, v == Variant::Valid, "{v}");
        }
        let err = "expird".parse::<Variant>().unwrap_err().to_string();
        assert!(
            err.contains("\"expird\"") && err.contains("not-yet-valid"),
            "{err}"
        );
    }
}
