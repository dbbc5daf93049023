//! Which client certificate each upstream connection presents, and the
//! verdict a correctly configured service must give it.
//!
//! Owns: the `--present` plan (weighted, seeded) and the `--present-sequence`
//! plan (cycled), their parsing (names are [`Presented`]'s, plus the group
//! `mutations` for every catalogue mutation), and [`Plan::pick`], the
//! choice for connection number `n`. `pick` is a pure function of
//! (plan, n), so workers may pick in any order on any thread, and a re-run
//! with the logged seed presents the same credential to the same
//! connection number.
//!
//! Never: does I/O, reads a clock, or keeps state between picks (no shared
//! RNG, hence no lock on the connection path). It never loads credentials
//! either: [`Plan::needs`] tells the caller which ones to load at startup.

mod presented;

use serde::Deserialize;

use crate::pki::{Variant, MUTATIONS};

use presented::{known_hint, known_names};
pub use presented::{MutationId, Presented, UnknownPresented, MUTATION_PREFIX};

mod swap;
pub use swap::Swap;

const WEIGHTS_FLAG: &str = "--present";
const SEQUENCE_FLAG: &str = "--present-sequence";

/// The group name that stands for every catalogue mutation.
pub const MUTATIONS_GROUP: &str = "mutations";

/// Why a `--present` or `--present-sequence` value was refused. `flag` names
/// the flag the value came from, so the message points at what to edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{flag}: unknown credential {name:?}; {}; the group `mutations` names every mutation at once", known_hint(.name))]
    UnknownName {
        flag: &'static str,
        name: String,
        /// `none` and the variants; the message also says how mutations
        /// are named, rather than listing 26 more names.
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
    #[error("--present: {name:?} is in the group `mutations` given too; weigh it alone or through the group, not both, e.g. --present valid=90,mutations=10")]
    InGroup { name: String },
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
        /// As given, in the user's order, zero weights included: what
        /// [`Plan::describe`] shows.
        given: Vec<(Given, u32)>,
        /// `given` with the group expanded, in units (see
        /// [`Plan::parse_weights`]): what is picked from.
        items: Vec<(Presented, u64)>,
        /// `cumulative[i]` is the sum of the weights of `items[..=i]`.
        cumulative: Vec<u64>,
        /// The last cumulative sum; never 0 (parsing refuses it).
        total: u64,
    },
    Sequence {
        /// As given, for [`Plan::describe`].
        given: Vec<Given>,
        /// `given` with the group expanded; never empty (parsing refuses it).
        sequence: Vec<Presented>,
    },
}

/// One item as the user wrote it: a name, or the group `mutations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Given {
    One(Presented),
    Mutations,
}

impl Given {
    fn name(self) -> &'static str {
        match self {
            Given::One(p) => p.name(),
            Given::Mutations => MUTATIONS_GROUP,
        }
    }

    /// What it stands for: itself, or every mutation in catalogue order.
    fn expand(self) -> Vec<Presented> {
        match self {
            Given::One(p) => vec![p],
            Given::Mutations => MutationId::all().map(Presented::Mutation).collect(),
        }
    }
}

impl Plan {
    /// Every connection presents the identity's own credential: the default,
    /// a plain proxy that only measures.
    pub fn valid_only() -> Plan {
        let valid = Presented::Variant(Variant::Valid);
        Plan {
            kind: Kind::Sequence {
                given: vec![Given::One(valid)],
                sequence: vec![valid],
            },
        }
    }

    /// Parses `--present valid=90,expired=5,untrusted-ca=5`: each connection
    /// draws a name with probability weight/total, reproducibly from `seed`.
    ///
    /// `mutations=W` spreads W evenly and exactly over the N catalogue
    /// mutations: each is drawn with probability (W/N)/total. So that no
    /// remainder is lost to integer division, a plan that names the group
    /// counts in units of 1/N: every named item weighs `weight·N` units and
    /// each mutation `W` units. A plan without the group keeps units of 1,
    /// so its picks are those of earlier releases for the same seed.
    pub fn parse_weights(spec: &str, seed: u64) -> Result<Plan, PlanError> {
        let mut given: Vec<(Given, u32)> = Vec::new();
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
            let named = parse_given(name.trim(), WEIGHTS_FLAG)?;
            // u32 refuses signs other than `+`, fractions and overflow alike.
            let weight: u32 = weight.trim().parse().map_err(|_| malformed())?;
            if given.iter().any(|&(g, _)| g == named) {
                return Err(PlanError::Duplicate {
                    name: named.name().to_string(),
                });
            }
            given.push((named, weight));
        }
        let grouped = given.iter().any(|&(g, _)| g == Given::Mutations);
        if let Some((g, _)) = given
            .iter()
            .find(|(g, _)| grouped && matches!(g, Given::One(Presented::Mutation(_))))
        {
            return Err(PlanError::InGroup {
                name: g.name().to_string(),
            });
        }
        // The catalogue has a few dozen entries, so the cast is lossless.
        let unit = if grouped { MUTATIONS.len() as u64 } else { 1 };
        let items: Vec<(Presented, u64)> = given
            .iter()
            .flat_map(|&(g, w)| {
                let units = match g {
                    Given::One(_) => u64::from(w) * unit,
                    Given::Mutations => u64::from(w),
                };
                g.expand().into_iter().map(move |p| (p, units))
            })
            .collect();
        // Names are distinct (duplicates and overlaps with the group are
        // refused), so at most a few dozen items below 2^32·N: no overflow.
        let cumulative: Vec<u64> = items
            .iter()
            .scan(0u64, |sum, &(_, w)| {
                *sum += w;
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
                given,
                items,
                cumulative,
                total,
            },
        })
    }

    /// Parses `--present-sequence valid,revoked,none`: connection `n`
    /// presents item `n % len`, so a short list is cycled for the whole run.
    /// `mutations` stands for every catalogue mutation, in catalogue order.
    pub fn parse_sequence(spec: &str) -> Result<Plan, PlanError> {
        let mut given = Vec::new();
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
            given.push(parse_given(item, SEQUENCE_FLAG)?);
        }
        let sequence = given.iter().flat_map(|g| g.expand()).collect();
        Ok(Plan {
            kind: Kind::Sequence { given, sequence },
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
                ..
            } => {
                let r = scale(splitmix64_nth(*seed, n), *total);
                // r < total == the last cumulative sum, so the bucket index
                // is always in range.
                items[bucket(cumulative, r)].0
            }
            // The remainder is below `len`, so it fits back into usize.
            Kind::Sequence { sequence, .. } => sequence[(n % sequence.len() as u64) as usize],
        }
    }

    /// The distinct choices with their weights. Weights: in the given order,
    /// zero weights included, the group `mutations` expanded and every
    /// weight in the plan's units (as given unless the plan names the
    /// group, see [`Plan::parse_weights`]). Sequence: each distinct item in
    /// order of first appearance with its count in one cycle.
    pub fn items(&self) -> Vec<(Presented, u64)> {
        match &self.kind {
            Kind::Weights { items, .. } => items.clone(),
            Kind::Sequence { sequence, .. } => {
                let mut counts: Vec<(Presented, u64)> = Vec::new();
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
            Kind::Sequence { .. } => None,
        }
    }

    /// One line for the startup log, with everything needed to reproduce the
    /// run: `weights valid=90 expired=5, seed 42` or
    /// `sequence valid,revoked,none (cycled)`. The group stays one item
    /// (`mutations=20`), as written.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Weights { seed, given, .. } => {
                let weights: Vec<String> = given
                    .iter()
                    .map(|(g, w)| format!("{}={w}", g.name()))
                    .collect();
                format!("weights {}, seed {seed}", weights.join(" "))
            }
            Kind::Sequence { given, .. } => match given.as_slice() {
                [Given::One(only)] => format!("always {only}"),
                _ => {
                    let names: Vec<&str> = given.iter().map(|g| g.name()).collect();
                    format!("sequence {} (cycled)", names.join(","))
                }
            },
        }
    }

    /// The bad variants and the mutations this plan can present, in report
    /// order (variants, then mutations), so the caller checks the PKI has
    /// them and fails before traffic if not. Excludes `valid` (the live,
    /// rotating credential), `none` (nothing to load) and zero weights
    /// (never picked).
    pub fn needs(&self) -> Vec<Presented> {
        let mut needs: Vec<Presented> = self
            .items()
            .into_iter()
            .filter(|&(p, weight)| {
                weight > 0 && !matches!(p, Presented::None | Presented::Variant(Variant::Valid))
            })
            .map(|(p, _)| p)
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

/// A name, or the group `mutations`.
fn parse_given(name: &str, flag: &'static str) -> Result<Given, PlanError> {
    if name == MUTATIONS_GROUP {
        return Ok(Given::Mutations);
    }
    name.parse()
        .map(Given::One)
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
/// `x % total` it uses the high bits; its bias (< total/2^64, with total
/// below 2^48) is far below anything a run of connections could show.
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
