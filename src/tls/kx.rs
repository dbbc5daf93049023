//! Key-exchange groups: the names users write (`bench`'s `kx=` axis,
//! `proxy --upstream-kx`), the provider's implementation of each, and a
//! client session store that remembers only which group a server chose.
//!
//! Never: stores anything a handshake could resume with ([`KxHint`] keeps
//! the group, no ticket and no session), so a client using it still makes a
//! full handshake every time.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use rustls::client::{ClientSessionStore, Resumption, Tls12ClientSessionValue};
use rustls::client::{Tls12Resumption, Tls13ClientSessionValue};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::NamedGroup;
use rustls_pki_types::ServerName;

/// A key-exchange group (`kx=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kx {
    X25519,
    Secp256r1,
    Secp384r1,
    X25519Mlkem768,
}

impl Kx {
    pub const ALL: [Kx; 4] = [Kx::X25519, Kx::Secp256r1, Kx::Secp384r1, Kx::X25519Mlkem768];

    pub fn name(self) -> &'static str {
        match self {
            Kx::X25519 => "x25519",
            Kx::Secp256r1 => "secp256r1",
            Kx::Secp384r1 => "secp384r1",
            Kx::X25519Mlkem768 => "x25519mlkem768",
        }
    }

    /// The provider's implementation (aws-lc-rs, as everywhere in certshift).
    pub fn group(self) -> &'static dyn SupportedKxGroup {
        use rustls::crypto::aws_lc_rs::kx_group;
        match self {
            Kx::X25519 => kx_group::X25519,
            Kx::Secp256r1 => kx_group::SECP256R1,
            Kx::Secp384r1 => kx_group::SECP384R1,
            Kx::X25519Mlkem768 => kx_group::X25519MLKEM768,
        }
    }

    /// The `kx=` name of a negotiated group, if it is one of ours.
    pub fn of(group: NamedGroup) -> Option<Kx> {
        Kx::ALL.into_iter().find(|k| k.group().name() == group)
    }
}

impl FromStr for Kx {
    type Err = String;

    /// Case-insensitive: `X25519MLKEM768` as IANA spells it, `x25519mlkem768`
    /// as `bench` prints it; `P-256`/`P-384` for the NIST curves too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let alias = match s.as_str() {
            "p-256" | "p256" | "prime256v1" => "secp256r1",
            "p-384" | "p384" => "secp384r1",
            other => other,
        };
        Kx::ALL
            .into_iter()
            .find(|k| k.name() == alias)
            .ok_or_else(|| format!("unknown key-exchange group {s:?}; {ACCEPTED}"))
    }
}

const ACCEPTED: &str = "use a comma-separated list of x25519, secp256r1, secp384r1, X25519MLKEM768 (most preferred first)";

/// A non-empty, ordered list of key-exchange groups, most preferred first,
/// parsed from `x25519,secp256r1`. The first is the key share a client
/// sends before it knows what the server picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KxGroups(Vec<Kx>);

impl KxGroups {
    /// aws-lc-rs's own default order: the post-quantum hybrid first (its key
    /// share carries an X25519 share too), then the classical groups.
    pub fn provider_default() -> Self {
        KxGroups(vec![
            Kx::X25519Mlkem768,
            Kx::X25519,
            Kx::Secp256r1,
            Kx::Secp384r1,
        ])
    }

    pub fn iter(&self) -> impl Iterator<Item = Kx> + '_ {
        self.0.iter().copied()
    }

    /// The process's crypto provider offering exactly these groups, in this
    /// order.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut p = (*crate::creds::provider()).clone();
        p.kx_groups = self.iter().map(Kx::group).collect();
        Arc::new(p)
    }
}

impl Default for KxGroups {
    fn default() -> Self {
        Self::provider_default()
    }
}

impl FromStr for KxGroups {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut v: Vec<Kx> = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let k: Kx = part.parse()?;
            // The first mention keeps its place: the order is a preference.
            if !v.contains(&k) {
                v.push(k);
            }
        }
        if v.is_empty() {
            return Err(format!("no key-exchange group given; {ACCEPTED}"));
        }
        Ok(KxGroups(v))
    }
}

impl fmt::Display for KxGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.iter().map(Kx::name).collect();
        f.write_str(&parts.join(","))
    }
}

/// A client session store that keeps only the key-exchange group the
/// server chose last, and nothing to resume with.
///
/// Why: with no hint a TLS 1.3 client sends the key share of its first
/// group (with X25519MLKEM768 first: an ML-KEM-768 key generation and 1.2
/// KB of ClientHello) whatever the server supports. Remembering the group
/// the server picked makes every later handshake send just that share: a
/// post-quantum upstream keeps getting post-quantum key exchange, an
/// OpenSSL 3.0 one (no ML-KEM) gets X25519 alone, without a
/// HelloRetryRequest. A server that changes its mind answers with a
/// HelloRetryRequest once, and the hint follows.
///
/// One hint for every server name: a store serves the configs of one
/// upstream (one name), which is how the proxy uses it.
#[derive(Debug, Default)]
pub struct KxHint {
    /// The group's IANA code; 0 (no group has it) until a server chose.
    group: AtomicU16,
}

impl KxHint {
    /// Resumption for a client config: this store, no session resumption.
    pub fn resumption() -> Resumption {
        Resumption::store(Arc::new(KxHint::default())).tls12_resumption(Tls12Resumption::Disabled)
    }
}

impl ClientSessionStore for KxHint {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.group.store(u16::from(group), Ordering::Relaxed);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        match self.group.load(Ordering::Relaxed) {
            0 => None,
            g => Some(NamedGroup::from(g)),
        }
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, _: Tls13ClientSessionValue) {}

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_in_order_case_insensitively_and_reject_unknown() {
        let g: KxGroups = "x25519, X25519MLKEM768,P-256,x25519".parse().unwrap();
        assert_eq!(g.to_string(), "x25519,x25519mlkem768,secp256r1");
        let err = "x25519,ffdhe2048".parse::<KxGroups>().unwrap_err();
        assert!(
            err.contains("ffdhe2048") && err.contains("X25519MLKEM768"),
            "{err}"
        );
        assert!(",".parse::<KxGroups>().is_err());
    }

    #[test]
    fn the_hint_store_remembers_the_group_and_never_a_session() {
        let h = KxHint::default();
        let name = ServerName::try_from("localhost").unwrap();
        assert_eq!(h.kx_hint(&name), None);
        h.set_kx_hint(name.clone(), NamedGroup::X25519);
        assert_eq!(h.kx_hint(&name), Some(NamedGroup::X25519));
        assert!(h.take_tls13_ticket(&name).is_none() && h.tls12_session(&name).is_none());
    }
}
