//! Which client certificate each upstream connection presents, and the
//! verdict a correctly configured service must give it.
//!
//! Owns: the `--present` plan (weighted, seeded) and the `--present-sequence`
//! plan (cycled), their parsing, and [`Plan::pick`], the choice for
//! connection number `n`. `pick` is a pure function of (plan, n), so workers
//! may pick in any order on any thread, and a re-run with the logged seed
//! presents the same credential to the same connection number.
//!
//! Never: does I/O, reads a clock, or keeps state between picks (no shared
//! RNG, hence no lock on the connection path). It never loads credentials
//! either: [`Plan::needs`] tells the caller which ones to load at startup.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pki::{Expect, Variant};

mod swap;
pub use swap::Swap;

const WEIGHTS_FLAG: &str = "--present";
const SEQUENCE_FLAG: &str = "--present-sequence";

/// The client certificate one upstream connection presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presented {
    /// No client certificate at all.
    None,
    /// A credential of the PKI. `Variant::Valid` is the identity's own
    /// current (possibly rotated) credential; the others are the bad ones.
    Variant(Variant),
}

impl Presented {
    /// Every choice: `none` first, then the variants in report order.
    pub fn all() -> impl Iterator<Item = Presented> {
        std::iter::once(Presented::None).chain(Variant::ALL.map(Presented::Variant))
    }

    /// The contract name: `none` or the variant's name.
    pub fn name(self) -> &'static str {
        match self {
            Presented::None => "none",
            Presented::Variant(v) => v.name(),
        }
    }

    /// The verdict a strict service must give: only the identity's own
    /// credential may be accepted.
    pub fn expected(self) -> Expect {
        match self {
            Presented::None => Expect::Reject,
            Presented::Variant(v) => v.expected(),
        }
    }
}

impl fmt::Display for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is neither `none` nor a variant's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown credential {0:?}; known names: {known}", known = known_names().join(", "))]
pub struct UnknownPresented(pub String);

impl FromStr for Presented {
    type Err = UnknownPresented;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Presented::all()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPresented(s.to_string()))
    }
}

impl Serialize for Presented {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Presented {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a `--present` or `--present-sequence` value was refused. `flag` names
/// the flag the value came from, so the message points at what to edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{flag}: unknown credential {name:?}; known names: {}", .known.join(", "))]
    UnknownName {
        flag: &'static str,
        name: String,
        known: Vec<&'static str>,
    },
    #[error(
        "{flag}: item {item:?} is not of the form {expected}; write e.g. {}",
        example(flag)
    )]
    Malformed {
        flag: &'static str,
        item: String,
        expected: &'static str,
    },
    #[error("--present: {name:?} is given more than once; give each name a single weight, e.g. --present valid=90,expired=10")]
    Duplicate { name: String },
    #[error("--present: every weight is 0, so nothing could be presented; give at least one name a positive weight, e.g. --present valid=90,expired=10")]
    ZeroTotal,
    #[error("{flag}: no credentials listed; write e.g. {}", example(flag))]
    Empty { flag: &'static str },
    #[error("give either present (weights) or present_sequence, not both")]
    BothGiven,
    #[error("no plan given; write e.g. {{\"present\": \"valid=80,expired=20\", \"seed\": 7}} or {{\"present_sequence\": \"valid,expired\"}}")]
    NoneGiven,
    #[error("swap {0:?}: use \"connection\" (each downstream connection is one experiment) or \"request\" (each HTTP request is one)")]
    Swap(String),
    #[error("swap_every {0}")]
    SwapEvery(String),
}

/// A plan as the user writes it outside the command line: the body of
/// `PUT /plan` (JSON) and each phase of `--plan-schedule` (TOML). The
/// strings are the flags' values and go through the flags' parsers, so
/// every syntax and every message is the same as `--present`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// As `--present`: `valid=80,expired=20`.
    pub present: Option<String>,
    /// As `--present-sequence`: `valid,expired`.
    pub present_sequence: Option<String>,
    /// As `--seed`; only with `present`. Absent: the caller's seed.
    pub seed: Option<u64>,
    /// As `--swap`: `connection` or `request`. Absent: the mode in force.
    pub swap: Option<String>,
    /// As `--swap-every`; only with `swap` `request`.
    pub swap_every: Option<u32>,
}

impl PlanSpec {
    /// The plan this spec describes; `default_seed` serves a weighted plan
    /// given no seed (the caller draws it, since this module reads no RNG).
    pub fn build(&self, default_seed: u64) -> Result<Plan, PlanError> {
        self.swap()?;
        match (&self.present, &self.present_sequence) {
            (Some(_), Some(_)) => Err(PlanError::BothGiven),
            (Some(w), None) => Plan::parse_weights(w, self.seed.unwrap_or(default_seed)),
            (None, Some(s)) => Plan::parse_sequence(s),
            (None, None) => Err(PlanError::NoneGiven),
        }
    }
}

impl PlanSpec {
    /// The swap mode this spec asks for; `None` keeps the one in force.
    pub fn swap(&self) -> Result<Option<Swap>, PlanError> {
        match (&self.swap, self.swap_every) {
            (None, None) => Ok(None),
            (None, Some(n)) => Swap::parse("request", Some(n)).map(Some),
            (Some(mode), every) => Swap::parse(mode, every).map(Some),
        }
    }
}

/// Which credential each connection presents. Immutable once built: a
/// worker holds a clone (or an `Arc`) and calls [`Plan::pick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Weights {
        seed: u64,
        /// As given, in the user's order, zero weights included.
        items: Vec<(Presented, u32)>,
        /// `cumulative[i]` is the sum of the weights of `items[..=i]`.
        cumulative: Vec<u64>,
        /// The last cumulative sum; never 0 (parsing refuses it).
        total: u64,
    },
    /// Never empty (parsing refuses it).
    Sequence(Vec<Presented>),
}

impl Plan {
    /// Every connection presents the identity's own credential: the default,
    /// a plain proxy that only measures.
    pub fn valid_only() -> Plan {
        Plan {
            kind: Kind::Sequence(vec![Presented::Variant(Variant::Valid)]),
        }
    }

    /// Parses `--present valid=90,expired=5,untrusted-ca=5`: each connection
    /// draws a name with probability weight/total, reproducibly from `seed`.
    pub fn parse_weights(spec: &str, seed: u64) -> Result<Plan, PlanError> {
        let mut items: Vec<(Presented, u32)> = Vec::new();
        for item in split_items(spec, WEIGHTS_FLAG)? {
            let malformed = || PlanError::Malformed {
                flag: WEIGHTS_FLAG,
                item: item.to_string(),
                expected: "NAME=WEIGHT",
            };
            let (name, weight) = item
                .split_once('=')
                .filter(|(name, _)| !name.trim().is_empty())
                .ok_or_else(malformed)?;
            let presented = parse_name(name.trim(), WEIGHTS_FLAG)?;
            // u32 refuses signs other than `+`, fractions and overflow alike.
            let weight: u32 = weight.trim().parse().map_err(|_| malformed())?;
            if items.iter().any(|&(p, _)| p == presented) {
                return Err(PlanError::Duplicate {
                    name: presented.name().to_string(),
                });
            }
            items.push((presented, weight));
        }
        // Duplicates are refused, so at most 12 u32 weights: no u64 overflow.
        let cumulative: Vec<u64> = items
            .iter()
            .scan(0u64, |sum, &(_, w)| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let total = cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return Err(PlanError::ZeroTotal);
        }
        Ok(Plan {
            kind: Kind::Weights {
                seed,
                items,
                cumulative,
                total,
            },
        })
    }

    /// Parses `--present-sequence valid,revoked,none`: connection `n`
    /// presents item `n % len`, so a short list is cycled for the whole run.
    pub fn parse_sequence(spec: &str) -> Result<Plan, PlanError> {
        let mut sequence = Vec::new();
        for item in split_items(spec, SEQUENCE_FLAG)? {
            // `valid=90` here is almost surely a `--present` spec given to
            // the wrong flag; say "malformed", not "unknown name".
            if item.is_empty() || item.contains('=') {
                return Err(PlanError::Malformed {
                    flag: SEQUENCE_FLAG,
                    item: item.to_string(),
                    expected: "NAME",
                });
            }
            sequence.push(parse_name(item, SEQUENCE_FLAG)?);
        }
        Ok(Plan {
            kind: Kind::Sequence(sequence),
        })
    }

    /// The choice for connection number `n` (0-based).
    ///
    /// Weights: the value for `n` is output `n` (0-based) of the standard
    /// SplitMix64 generator seeded with `seed`, i.e. `mix(seed + (n+1)·φ)`,
    /// so it needs no shared state and anyone can reproduce a run's choices
    /// from the logged seed. It is scaled to `[0, total)` by multiply-high
    /// (bias below total/2^64) and its bucket found in the cumulative table.
    /// Sequence: item `n % len`.
    pub fn pick(&self, n: u64) -> Presented {
        match &self.kind {
            Kind::Weights {
                seed,
                items,
                cumulative,
                total,
            } => {
                let r = scale(splitmix64_nth(*seed, n), *total);
                // r < total == the last cumulative sum, so the bucket index
                // is always in range.
                items[bucket(cumulative, r)].0
            }
            // The remainder is below `len`, so it fits back into usize.
            Kind::Sequence(sequence) => sequence[(n % sequence.len() as u64) as usize],
        }
    }

    /// The distinct choices with their weights. Weights: as given, in the
    /// given order, zero weights included. Sequence: each distinct item in
    /// order of first appearance with its count in one cycle.
    pub fn items(&self) -> Vec<(Presented, u32)> {
        match &self.kind {
            Kind::Weights { items, .. } => items.clone(),
            Kind::Sequence(sequence) => {
                let mut counts: Vec<(Presented, u32)> = Vec::new();
                for &p in sequence {
                    match counts.iter_mut().find(|(q, _)| *q == p) {
                        Some((_, count)) => *count = count.saturating_add(1),
                        None => counts.push((p, 1)),
                    }
                }
                counts
            }
        }
    }

    /// The seed of a weighted plan; a sequence has none.
    pub fn seed(&self) -> Option<u64> {
        match &self.kind {
            Kind::Weights { seed, .. } => Some(*seed),
            Kind::Sequence(_) => None,
        }
    }

    /// One line for the startup log, with everything needed to reproduce the
    /// run: `weights valid=90 expired=5, seed 42` or
    /// `sequence valid,revoked,none (cycled)`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Weights { seed, items, .. } => {
                let weights: Vec<String> = items.iter().map(|(p, w)| format!("{p}={w}")).collect();
                format!("weights {}, seed {seed}", weights.join(" "))
            }
            Kind::Sequence(sequence) => match sequence.as_slice() {
                [only] => format!("always {only}"),
                _ => {
                    let names: Vec<&str> = sequence.iter().map(|p| p.name()).collect();
                    format!("sequence {} (cycled)", names.join(","))
                }
            },
        }
    }

    /// The bad variants this plan can present, in report order, so the
    /// caller loads exactly those at startup and fails before traffic if the
    /// PKI lacks one. Excludes `valid` (the live, rotating credential),
    /// `none` (nothing to load) and zero weights (never picked).
    pub fn needs(&self) -> Vec<Variant> {
        let mut needs: Vec<Variant> = self
            .items()
            .into_iter()
            .filter_map(|(p, weight)| match p {
                Presented::Variant(v) if v != Variant::Valid && weight > 0 => Some(v),
                _ => None,
            })
            .collect();
        // `items()` is already distinct; sorting gives report order.
        needs.sort();
        needs
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan::valid_only()
    }
}

fn known_names() -> Vec<&'static str> {
    Presented::all().map(Presented::name).collect()
}

fn example(flag: &str) -> &'static str {
    if flag == SEQUENCE_FLAG {
        "--present-sequence valid,revoked,none (weights go to --present)"
    } else {
        "--present valid=90,expired=5,none=5 (weights are whole numbers from 0 to 4294967295)"
    }
}

/// Splits on commas and trims each item; refuses a spec with no items at all.
fn split_items<'a>(spec: &'a str, flag: &'static str) -> Result<Vec<&'a str>, PlanError> {
    match spec.trim() {
        "" => Err(PlanError::Empty { flag }),
        _ => Ok(spec.split(',').map(str::trim).collect()),
    }
}

fn parse_name(name: &str, flag: &'static str) -> Result<Presented, PlanError> {
    name.parse()
        .map_err(|e: UnknownPresented| PlanError::UnknownName {
            flag,
            name: e.0,
            known: known_names(),
        })
}

/// 2^64 / φ, SplitMix64's increment.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Output `n` (0-based) of SplitMix64 seeded with `seed` (Steele, Lea and
/// Flood 2014; Vigna's reference `splitmix64.c`): the state after n+1 steps,
/// through the finaliser. Random access, so no generator is shared.
fn splitmix64_nth(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a uniform 64-bit value to `[0, total)` by multiply-high. Unlike
/// `x % total` it uses the high bits; its bias (< total/2^64, with total at
/// most 12·2^32) is far below anything a run of connections could show.
fn scale(x: u64, total: u64) -> u64 {
    ((u128::from(x) * u128::from(total)) >> 64) as u64
}

/// The index of the first item whose cumulative sum exceeds `r`: the item
/// owning `r`. Zero-weight items own no value, so they are never returned.
fn bucket(cumulative: &[u64], r: u64) -> usize {
    cumulative.partition_point(|&c| c <= r)
}

#[cfg(test)]
mod tests;
