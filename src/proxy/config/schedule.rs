//! `--plan-schedule FILE`: the plan's phases, read and checked once at
//! startup, so a typo fails before traffic instead of half-way through a run.
//!
//! ```toml
//! [[phase]]
//! after = "30s"                 # since the previous phase (the first: since start)
//! present = "valid=80,expired=20"
//! seed = 7                      # optional, with `present`
//!
//! [[phase]]
//! after = "30s"
//! present_sequence = "valid,self-signed"
//! ```
//!
//! Owns: the file's shape and the messages naming a phase and its field.
//! Never: applies a phase (the proxy does, through the `PUT /plan` path) or
//! checks that the proxy can present it (that is `validate`, with the PKI).

use std::path::Path;

use serde::Deserialize;

use super::error::{flag, ConfigError};
use super::settings::PlanPhase;
use crate::plan::{PlanError, PlanSpec};

const FLAG: &str = "--plan-schedule";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default)]
    phase: Vec<RawPhase>,
}

/// A phase as written; the plan fields are [`PlanSpec`]'s, spelled out
/// because serde's `flatten` cannot refuse unknown keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    after: String,
    present: Option<String>,
    present_sequence: Option<String>,
    seed: Option<u64>,
    swap: Option<String>,
    swap_every: Option<u32>,
}

/// Reads and checks the schedule; `default_seed` serves weighted phases
/// that give no seed (drawn once by the caller and shown in each phase's
/// description, so the run stays reproducible).
pub(super) fn read(path: &Path, default_seed: u64) -> Result<Vec<PlanPhase>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| flag(FLAG, format!("cannot read {}: {e}", path.display())))?;
    parse(&text, default_seed)
        .map_err(|problem| flag(FLAG, format!("{}: {problem}", path.display())))
}

/// The file's text into phases; the error names the phase (1-based, as a
/// reader counts `[[phase]]` tables) and the field.
fn parse(text: &str, default_seed: u64) -> Result<Vec<PlanPhase>, String> {
    let file: ScheduleFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.phase.is_empty() {
        return Err("no [[phase]] tables; write e.g. [[phase]] after = \"30s\" present = \"valid=80,expired=20\"".into());
    }
    file.phase
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let n = i + 1;
            let after = humantime::parse_duration(raw.after.trim()).map_err(|e| {
                format!(
                    "phase {n}: after: {:?} is not a duration ({e}); write e.g. after = \"30s\"",
                    raw.after
                )
            })?;
            let spec = PlanSpec {
                present: raw.present,
                present_sequence: raw.present_sequence,
                seed: raw.seed,
                swap: raw.swap,
                swap_every: raw.swap_every,
            };
            let problem = |e: PlanError| format!("phase {n}: {}: {}", field(&e), strip_flag(&e));
            let plan = spec.build(default_seed).map_err(problem)?;
            let swap = spec.swap().map_err(problem)?;
            Ok(PlanPhase { after, plan, swap })
        })
        .collect()
}

/// The key of a phase that `e` is about.
fn field(e: &PlanError) -> &'static str {
    match e {
        PlanError::UnknownName { flag, .. }
        | PlanError::Malformed { flag, .. }
        | PlanError::Empty { flag } => {
            if *flag == "--present-sequence" {
                "present_sequence"
            } else {
                "present"
            }
        }
        PlanError::Duplicate { .. } | PlanError::InGroup { .. } | PlanError::ZeroTotal => "present",
        PlanError::BothGiven | PlanError::NoneGiven => "present/present_sequence",
        PlanError::Swap(_) => "swap",
        PlanError::SwapEvery(_) => "swap_every",
    }
}

/// `plan` names the flag in its messages; here the key is named already.
fn strip_flag(e: &PlanError) -> String {
    let message = e.to_string();
    ["--present-sequence: ", "--present: "]
        .iter()
        .find_map(|f| message.strip_prefix(f))
        .unwrap_or(&message)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phases_in_order_with_their_plans() {
        let phases = parse(
            "[[phase]]\nafter = \"0s\"\npresent_sequence = \"valid\"\n\n[[phase]]\nafter = \"300ms\"\npresent = \"expired=1\"\nseed = 3\n",
            9,
        )
        .unwrap();
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[0].after, Duration::ZERO);
        assert_eq!(phases[0].plan.describe(), "always valid");
        assert_eq!(phases[1].after, Duration::from_millis(300));
        assert_eq!(phases[1].plan.describe(), "weights expired=1, seed 3");
    }

    #[test]
    fn phases_may_present_mutations_by_name_or_as_the_group() {
        let phases = parse(
            "[[phase]]\nafter = \"1s\"\npresent = \"valid=80,mutations=20\"\nseed = 5\n[[phase]]\nafter = \"1s\"\npresent_sequence = \"valid,mutation:bad-signature\"\n",
            0,
        )
        .unwrap();
        assert_eq!(
            phases[0].plan.describe(),
            "weights valid=80 mutations=20, seed 5"
        );
        assert_eq!(
            phases[1].plan.describe(),
            "sequence valid,mutation:bad-signature (cycled)"
        );
        let e = parse(
            "[[phase]]\nafter = \"1s\"\npresent_sequence = \"mutation:nope\"\n",
            0,
        )
        .unwrap_err();
        assert!(
            e.starts_with("phase 1: present_sequence: unknown credential \"mutation:nope\"")
                && e.contains("mutation:<name>"),
            "{e}"
        );
    }

    #[test]
    fn the_example_schedule_parses() {
        let phases = parse(include_str!("../../../configs/plan-schedule.toml"), 0).unwrap();
        assert_eq!(phases.len(), 3);
        assert_eq!(phases[2].after, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_phase_and_the_field() {
        let e = parse(
            "[[phase]]\nafter = \"1s\"\npresent = \"valid=1\"\n[[phase]]\nafter = \"1s\"\npresent = \"valid=1,bogus=2\"\n",
            0,
        )
        .unwrap_err();
        assert!(
            e.starts_with("phase 2: present: unknown credential \"bogus\""),
            "{e}"
        );
        let e = parse("[[phase]]\nafter = \"soon\"\npresent = \"valid=1\"\n", 0).unwrap_err();
        assert!(e.starts_with("phase 1: after:"), "{e}");
        let e = parse("[[phase]]\nafter = \"1s\"\n", 0).unwrap_err();
        assert!(e.starts_with("phase 1: present/present_sequence:"), "{e}");
        let e = parse("[[phase]]\nafter = \"1s\"\npresent = \"valid=0\"\n", 0).unwrap_err();
        assert!(e.starts_with("phase 1: present: every weight is 0"), "{e}");
        let e = parse("[[phase]]\nafter = \"1s\"\npresnt = \"valid=1\"\n", 0).unwrap_err();
        assert!(e.contains("presnt"), "{e}");
        assert!(parse("", 0).unwrap_err().contains("no [[phase]]"));
    }
}
