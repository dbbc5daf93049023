//! [`Presented`]: what one connection presents, by its contract name
//! (`none`, a variant's name, `mutation:<name>`), and the verdict a strict
//! service must give it.
//!
//! Owns: the names and their parsing. Never: knows where a credential's
//! files are (the caller asks `pki::PkiDir`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pki::{Expect, Mutation, Variant, MUTATIONS};

/// The prefix of a mutation's contract name, `mutation:<name>`.
pub const MUTATION_PREFIX: &str = "mutation:";

/// The client certificate one upstream connection presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presented {
    /// No client certificate at all.
    None,
    /// A credential of the PKI. `Variant::Valid` is the identity's own
    /// current (possibly rotated) credential; the others are the bad ones.
    Variant(Variant),
    /// The identity's certificate with one thing changed, from the
    /// catalogue (`pki::mutate`), as `pki init` wrote it in `mutations/`.
    Mutation(MutationId),
}

/// One mutation of the catalogue, by its place in [`MUTATIONS`]: `Copy`,
/// and ordered as the catalogue is (report order). Only this module makes
/// one, from a position in the catalogue, so it always names an entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MutationId(u16);

impl MutationId {
    /// Every mutation, in catalogue order.
    pub fn all() -> impl Iterator<Item = MutationId> {
        (0..MUTATIONS.len()).filter_map(|i| u16::try_from(i).ok().map(MutationId))
    }

    /// The mutation whose catalogue name (without `mutation:`) is `name`.
    pub fn find(name: &str) -> Option<MutationId> {
        MutationId::all().find(|m| m.mutation().name == name)
    }

    pub fn mutation(self) -> &'static Mutation {
        // In range: built only by `all()`, from positions in the catalogue.
        &MUTATIONS[usize::from(self.0)]
    }

    /// The catalogue name, `bad-signature` (the `mutations/<name>/` directory).
    pub fn name(self) -> &'static str {
        self.mutation().name
    }
}

impl fmt::Debug for MutationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mutation().check_id)
    }
}

impl Presented {
    /// Every choice: `none` first, then the variants in report order, then
    /// the mutations in catalogue order.
    pub fn all() -> impl Iterator<Item = Presented> {
        std::iter::once(Presented::None)
            .chain(Variant::ALL.map(Presented::Variant))
            .chain(MutationId::all().map(Presented::Mutation))
    }

    /// The contract name: `none`, the variant's name, or `mutation:<name>`
    /// (the audit's check id, so reports of both line up).
    pub fn name(self) -> &'static str {
        match self {
            Presented::None => "none",
            Presented::Variant(v) => v.name(),
            Presented::Mutation(m) => m.mutation().check_id,
        }
    }

    /// The verdict a strict service must give: only the identity's own
    /// credential may be accepted, and of the mutations only the catalogue's
    /// controls (e.g. `mutation:serial-20-bytes`).
    pub fn expected(self) -> Expect {
        match self {
            Presented::None => Expect::Reject,
            Presented::Variant(v) => v.expected(),
            Presented::Mutation(m) => m.mutation().expect,
        }
    }
}

impl fmt::Display for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is neither `none`, a variant's, nor a catalogue mutation's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown credential {0:?}; {hint}", hint = known_hint(.0))]
pub struct UnknownPresented(pub String);

impl FromStr for Presented {
    type Err = UnknownPresented;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix(MUTATION_PREFIX) {
            return MutationId::find(name)
                .map(Presented::Mutation)
                .ok_or_else(|| UnknownPresented(s.to_string()));
        }
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

/// `none` and the variants' names: what `known names` lists one by one.
pub(super) fn known_names() -> Vec<&'static str> {
    std::iter::once(Presented::None)
        .chain(Variant::ALL.map(Presented::Variant))
        .map(Presented::name)
        .collect()
}

/// What to write instead of `unknown`. A `mutation:` name lists the
/// catalogue (that is the list to pick from); any other lists `none` and the
/// variants and says how mutations are named, rather than 26 more names.
pub(super) fn known_hint(unknown: &str) -> String {
    if unknown.starts_with(MUTATION_PREFIX) {
        let names: Vec<&str> = MutationId::all().map(MutationId::name).collect();
        format!(
            "the catalogue's mutations are mutation:<name> for <name> one of {} (`certshift audit --list-checks` describes each)",
            names.join(", ")
        )
    } else {
        format!(
            "known names: {}, or mutation:<name> for any of the {} catalogue mutations (e.g. mutation:bad-signature; `certshift audit --list-checks` lists them)",
            known_names().join(", "),
            MUTATIONS.len()
        )
    }
}
