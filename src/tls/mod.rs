//! rustls configuration builders, peer identity checks, and the
//! classification of every handshake or I/O failure into an [`Outcome`].
//!
//! Never: reads files (credentials arrive checked, from `creds`) or keeps
//! state between handshakes.

mod client;
mod kx;
mod outcome;
mod server;
mod verify;

use std::fmt;
use std::str::FromStr;

pub use client::{
    client_config, client_config_verified_by, client_config_verified_with, client_config_with,
    offered_schemes, preferring_aes128, presented_by, presenting, webpki_server_verifier,
    AnyServerCert, ClientCert, SessionRecorder, UpstreamVerifier,
};
pub use kx::{Kx, KxGroups, KxHint};
pub use outcome::{alert_name, classify_io, classify_rustls, fd_exhausted, Outcome, Verdict};
pub use server::{server_config, ClientAuth};
pub(crate) use verify::handshake_signatures;
pub use verify::{
    spiffe_id_of, AnyCaClientVerifier, CrlSlices, LeafRefusal, RevocationReach,
    SpiffeClientVerifier, WellFormedChain,
};

/// TLS on one side of a connection: the proxy's listener and upstream, the
/// load generator's target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext TCP.
    Off,
    /// TLS, no client certificate.
    Tls,
    /// TLS with client certificates.
    Mtls,
}

/// A TLS protocol version certshift can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    pub const ALL: [TlsVersion; 2] = [TlsVersion::Tls12, TlsVersion::Tls13];

    pub fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    pub fn of(v: rustls::ProtocolVersion) -> Option<Self> {
        match v {
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .trim_start_matches("TLS")
            .trim_start_matches("tls")
            .trim_start_matches('v')
        {
            "1.2" | "12" => Ok(TlsVersion::Tls12),
            "1.3" | "13" => Ok(TlsVersion::Tls13),
            other => Err(format!(
                "unsupported TLS version {other:?}; use 1.2, 1.3 or 1.2,1.3"
            )),
        }
    }
}

/// A non-empty set of TLS versions, parsed from `1.2,1.3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsVersions(Vec<TlsVersion>);

impl TlsVersions {
    pub fn all() -> Self {
        TlsVersions(TlsVersion::ALL.to_vec())
    }

    pub fn only(v: TlsVersion) -> Self {
        TlsVersions(vec![v])
    }

    pub fn rustls(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        self.0.iter().map(|v| v.rustls()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = TlsVersion> + '_ {
        self.0.iter().copied()
    }
}

impl Default for TlsVersions {
    fn default() -> Self {
        Self::all()
    }
}

impl FromStr for TlsVersions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut v = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<TlsVersion>, _>>()?;
        v.sort();
        v.dedup();
        if v.is_empty() {
            return Err("no TLS version given; use 1.2, 1.3 or 1.2,1.3".into());
        }
        Ok(TlsVersions(v))
    }
}

impl fmt::Display for TlsVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_sorted_and_reject_unknown() {
        assert_eq!(
            "1.3,1.2".parse::<TlsVersions>().unwrap(),
            TlsVersions::all()
        );
        assert_eq!(
            "TLSv1.3".parse::<TlsVersions>().unwrap(),
            TlsVersions::only(TlsVersion::Tls13)
        );
        assert!("1.1".parse::<TlsVersions>().unwrap_err().contains("1.1"));
        assert!("".parse::<TlsVersions>().is_err());
    }
}
