//! The bench matrix: its axes, `--filter AXIS=V1,V2 …`, the default
//! subset, and which combinations cannot run (and why).

use std::fmt;

use crate::pki::KeyType;
use crate::report::bench::Axes;
use crate::tls::TlsVersion;

/// Every key type the matrix measures, in table order.
pub const KEYS: [KeyType; 6] = [
    KeyType::EcdsaP256,
    KeyType::EcdsaP384,
    KeyType::Ed25519,
    KeyType::Rsa2048,
    KeyType::Rsa3072,
    KeyType::Rsa4096,
];

/// A key-exchange group (`kx=`); `tls` owns it, so `proxy --upstream-kx`
/// spells groups the same way.
pub use crate::tls::Kx;

/// One cell's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellSpec {
    pub key: KeyType,
    pub tls: TlsVersion,
    pub resumed: bool,
    pub kx: Kx,
    pub auth: bool,
    /// With an intermediate: leaf+intermediate+root (3), else leaf+root (2).
    pub intermediate: bool,
}

impl CellSpec {
    pub fn axes(&self) -> Axes {
        Axes {
            key: self.key.name().into(),
            tls: self.tls.to_string(),
            resume: resume_name(self.resumed).into(),
            kx: self.kx.name().into(),
            auth: on_off(self.auth).into(),
            chain: chain_name(self.intermediate).into(),
        }
    }

    /// Why this combination cannot run, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.tls == TlsVersion::Tls12
            && !self
                .kx
                .group()
                .usable_for_version(rustls::ProtocolVersion::TLSv1_2)
        {
            return Some(format!(
                "{} is a TLS 1.3 key exchange (rustls does not offer it in TLS 1.2)",
                self.kx.name()
            ));
        }
        None
    }
}

fn resume_name(resumed: bool) -> &'static str {
    if resumed {
        "resumed"
    } else {
        "full"
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn chain_name(intermediate: bool) -> &'static str {
    if intermediate {
        "3"
    } else {
        "2"
    }
}

/// The values kept on each axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub keys: Vec<KeyType>,
    pub tls: Vec<TlsVersion>,
    pub resume: Vec<bool>,
    pub kx: Vec<Kx>,
    pub auth: Vec<bool>,
    pub intermediate: Vec<bool>,
}

/// A `--filter` word that names no axis or no value of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("--filter {word:?}: give AXIS=VALUE[,VALUE…], e.g. key=ecdsa-p256,rsa-2048 tls=1.3 kx=x25519; axes: {AXES}")]
    Shape { word: String },
    #[error("--filter {word:?}: unknown axis {axis:?}; the axes are {AXES}")]
    Axis { word: String, axis: String },
    #[error("--filter {axis}={value}: {value:?} is not a value of {axis}; accepted: {accepted}")]
    Value {
        axis: &'static str,
        value: String,
        accepted: String,
    },
}

const AXES: &str = "key, tls, resume, kx, auth, chain";

impl Default for Filter {
    /// The whole matrix.
    fn default() -> Self {
        Filter {
            keys: KEYS.to_vec(),
            tls: TlsVersion::ALL.to_vec(),
            resume: vec![false, true],
            kx: Kx::ALL.to_vec(),
            auth: vec![true, false],
            intermediate: vec![false, true],
        }
    }
}

impl Filter {
    /// Parse `--filter` words (`AXIS=V1,V2`): a named axis keeps only the
    /// values given (an axis named twice keeps both lists), the others keep
    /// every value.
    pub fn parse(words: &[String]) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        let mut named: Vec<&str> = Vec::new();
        for word in words {
            let (axis, values) = word
                .split_once('=')
                .ok_or_else(|| FilterError::Shape { word: word.clone() })?;
            let axis = axis.trim().to_ascii_lowercase();
            let values: Vec<String> = values
                .split(',')
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err(FilterError::Shape { word: word.clone() });
            }
            macro_rules! axis {
                ($field:ident, $name:literal, $parse:expr, $accepted:expr) => {{
                    if !named.contains(&$name) {
                        f.$field.clear();
                        named.push($name);
                    }
                    for v in &values {
                        let parsed = $parse(v.as_str()).ok_or_else(|| FilterError::Value {
                            axis: $name,
                            value: v.clone(),
                            accepted: $accepted,
                        })?;
                        if !f.$field.contains(&parsed) {
                            f.$field.push(parsed);
                        }
                    }
                }};
            }
            match axis.as_str() {
                "key" => axis!(
                    keys,
                    "key",
                    |v: &str| KEYS.into_iter().find(|k| k.name() == v),
                    KEYS.map(KeyType::name).join(", ")
                ),
                "tls" => axis!(
                    tls,
                    "tls",
                    |v: &str| match v {
                        "1.2" => Some(TlsVersion::Tls12),
                        "1.3" => Some(TlsVersion::Tls13),
                        _ => None,
                    },
                    "1.2, 1.3".to_string()
                ),
                "resume" => axis!(
                    resume,
                    "resume",
                    |v: &str| match v {
                        "full" => Some(false),
                        "resumed" => Some(true),
                        _ => None,
                    },
                    "full, resumed".to_string()
                ),
                "kx" => axis!(
                    kx,
                    "kx",
                    |v: &str| Kx::ALL.into_iter().find(|k| k.name() == v),
                    Kx::ALL.map(Kx::name).join(", ")
                ),
                "auth" => axis!(
                    auth,
                    "auth",
                    |v: &str| match v {
                        "on" => Some(true),
                        "off" => Some(false),
                        _ => None,
                    },
                    "on, off".to_string()
                ),
                "chain" => axis!(
                    intermediate,
                    "chain",
                    |v: &str| match v {
                        "2" | "leaf+root" => Some(false),
                        "3" | "leaf+intermediate+root" => Some(true),
                        _ => None,
                    },
                    "2 (leaf+root), 3 (leaf+intermediate+root)".to_string()
                ),
                _ => {
                    return Err(FilterError::Axis {
                        word: word.clone(),
                        axis,
                    })
                }
            }
        }
        Ok(f)
    }

    /// Every combination the filter keeps, in table order.
    pub fn cells(&self) -> Vec<CellSpec> {
        let mut out = Vec::new();
        for &key in &self.keys {
            for &tls in &self.tls {
                for &resumed in &self.resume {
                    for &kx in &self.kx {
                        for &auth in &self.auth {
                            for &intermediate in &self.intermediate {
                                out.push(CellSpec {
                                    key,
                                    tls,
                                    resumed,
                                    kx,
                                    auth,
                                    intermediate,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// The default run: one axis varied at a time around a common base
/// (ecdsa-p256, TLS 1.3, full, x25519, auth on, leaf+root).
pub fn default_subset() -> Vec<CellSpec> {
    let base = CellSpec {
        key: KeyType::EcdsaP256,
        tls: TlsVersion::Tls13,
        resumed: false,
        kx: Kx::X25519,
        auth: true,
        intermediate: false,
    };
    let mut out: Vec<CellSpec> = KEYS.iter().map(|&key| CellSpec { key, ..base }).collect();
    out.push(CellSpec {
        tls: TlsVersion::Tls12,
        ..base
    });
    out.push(CellSpec {
        resumed: true,
        ..base
    });
    out.push(CellSpec {
        tls: TlsVersion::Tls12,
        resumed: true,
        ..base
    });
    for kx in [Kx::Secp256r1, Kx::Secp384r1, Kx::X25519Mlkem768] {
        out.push(CellSpec { kx, ..base });
    }
    out.push(CellSpec {
        auth: false,
        ..base
    });
    out.push(CellSpec {
        intermediate: true,
        ..base
    });
    out
}

/// The default subset, in words, for the report's header.
pub const DEFAULT_SELECTION: &str = "default subset (14 cells, about 30 s): every key type at \
TLS 1.3 / full / x25519 / auth=on / chain=2, then one axis at a time around ecdsa-p256 (TLS 1.2, \
resumed 1.3 and 1.2, secp256r1, secp384r1, x25519mlkem768, auth=off, chain=3). The full matrix \
(384 combinations): --all; any part of it: --filter AXIS=V1,V2 …";

impl fmt::Display for CellSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.axes().label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_issue_filter_parses_as_written() {
        let f = Filter::parse(&words("key=ecdsa-p256,rsa-2048 tls=1.3 kx=x25519")).unwrap();
        assert_eq!(f.keys, vec![KeyType::EcdsaP256, KeyType::Rsa2048]);
        assert_eq!(f.tls, vec![TlsVersion::Tls13]);
        assert_eq!(f.kx, vec![Kx::X25519]);
        // Unnamed axes keep every value: 2 keys × 2 resume × 2 auth × 2 chain.
        assert_eq!(f.cells().len(), 16);
    }

    #[test]
    fn bad_words_name_the_axis_and_the_accepted_values() {
        let e = Filter::parse(&words("kx=x448")).unwrap_err();
        assert!(matches!(e, FilterError::Value { axis: "kx", .. }));
        assert!(e.to_string().contains("x25519mlkem768"), "{e}");
        assert!(matches!(
            Filter::parse(&words("cipher=aes")).unwrap_err(),
            FilterError::Axis { .. }
        ));
        assert!(matches!(
            Filter::parse(&words("tls")).unwrap_err(),
            FilterError::Shape { .. }
        ));
    }

    #[test]
    fn the_full_matrix_and_the_default_subset() {
        assert_eq!(Filter::default().cells().len(), 384);
        let d = default_subset();
        assert_eq!(d.len(), 14);
        assert!(d.iter().all(|c| c.unsupported().is_none()));
        let mlkem12 = CellSpec {
            tls: TlsVersion::Tls12,
            kx: Kx::X25519Mlkem768,
            ..d[0]
        };
        assert!(mlkem12.unsupported().unwrap().contains("TLS 1.3"));
    }
}
