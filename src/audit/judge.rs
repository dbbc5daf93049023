//! From evidence to verdict. Accepted needs an HTTP response with a
//! non-refusal status; a refusal names its layer; a failed sanity check makes
//! every other check inconclusive, never passed.

use std::fmt;
use std::time::Duration;

use super::check::{Category, Check, Expected, CAUSE_NAMING_ALERTS};
use super::experiment::{Attempt, Ctx, Decision, Observation};
use crate::tls::Outcome;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Info,
    Inconclusive,
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "INFO",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Skip => "SKIP",
        })
    }
}

/// One attempt as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub label: String,
    pub outcome: Outcome,
    /// Which layer answered: `tls` (an alert), `http` (a status), `reset`,
    /// `close`, or `none` when nothing came back.
    pub layer: &'static str,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
}

impl CheckResult {
    /// The verdict as the table shows it: INFO says what the service did.
    pub fn verdict_text(&self) -> String {
        match (self.verdict, self.decision) {
            (Verdict::Info, Decision::Accepted) => "INFO: accepted".into(),
            (Verdict::Info, Decision::Refused) => "INFO: refused".into(),
            (v, _) => v.to_string(),
        }
    }
}

/// A check's result: the contract of the JSON, JUnit and table rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub category: Category,
    pub about: &'static str,
    pub expected: Expected,
    pub verdict: Verdict,
    /// What the service did overall: accepted if any attempt was accepted.
    pub decision: Decision,
    /// One line: what was observed.
    pub evidence: String,
    pub observed: Vec<Seen>,
    /// Evidence in words (tolerances, "did not resume").
    pub notes: Vec<String>,
    /// Refused, but for another reason than the one under test.
    pub warning: Option<String>,
    /// What to change; on FAIL only.
    pub hint: Option<&'static str>,
    /// Why the verdict is INCONCLUSIVE or SKIP.
    pub reason: Option<String>,
    pub duration_ms: u64,
}

/// The layer that produced an outcome.
pub fn layer(o: &Outcome) -> &'static str {
    match o {
        Outcome::Http(_) | Outcome::Ok => "http",
        Outcome::Alert(_) => "tls",
        Outcome::Reset => "reset",
        Outcome::ClosedEarly => "close",
        _ => "none",
    }
}

/// The service's overall decision over the attempts: a single acceptance is
/// an acceptance (a hole on one TLS version is a hole); refused only when
/// every attempt was refused.
pub fn overall(ctx: &Ctx, obs: &Observation) -> Decision {
    if let Some(d) = obs.decision {
        return d;
    }
    let ds: Vec<Decision> = obs.attempts.iter().map(|a| ctx.decide(a)).collect();
    if ds.contains(&Decision::Accepted) {
        Decision::Accepted
    } else if !ds.is_empty() && ds.iter().all(|d| *d == Decision::Refused) {
        Decision::Refused
    } else {
        Decision::Unknown
    }
}

/// Judge one check. `sanity_failed`: the valid identity was not accepted,
/// so nothing else can pass.
pub fn judge(
    ctx: &Ctx,
    check: &Check,
    expected: Expected,
    obs: Observation,
    sanity_failed: bool,
    took: Duration,
) -> CheckResult {
    let observed: Vec<Seen> = obs.attempts.iter().map(|a| seen(ctx, a)).collect();
    let mut evidence = evidence(&observed);
    for n in &obs.notes {
        if !evidence.is_empty() {
            evidence.push_str("; ");
        }
        evidence.push_str(n);
    }
    let decision = overall(ctx, &obs);
    let notes = obs.notes.clone();
    let (verdict, reason) = if expected == Expected::Skip {
        (Verdict::Skip, Some("skipped by --expect".to_string()))
    } else if let Some(why) = obs.skipped {
        (Verdict::Skip, Some(why))
    } else if sanity_failed {
        (
            Verdict::Inconclusive,
            Some("valid-identity-accepted failed: a refusal proves nothing".to_string()),
        )
    } else if let Some(why) = obs.inconclusive {
        (Verdict::Inconclusive, Some(why))
    } else {
        match (expected, decision) {
            (Expected::Info, _) => (Verdict::Info, None),
            (Expected::Accept, Decision::Accepted) | (Expected::Reject, Decision::Refused) => {
                (Verdict::Pass, None)
            }
            (Expected::Accept, Decision::Refused) | (Expected::Reject, Decision::Accepted) => {
                (Verdict::Fail, None)
            }
            (_, Decision::Unknown) => (
                // The sanity check cannot be inconclusive: a service that
                // does not answer the valid identity fails it.
                if check.id == super::check::SANITY {
                    Verdict::Fail
                } else {
                    Verdict::Inconclusive
                },
                Some("no decision observed (timeout, unreachable, or our own side failed)".into()),
            ),
            (Expected::Skip, _) => (Verdict::Skip, None),
        }
    };
    let warning = if matches!(verdict, Verdict::Pass | Verdict::Info) {
        wrong_cause(check, &observed)
    } else {
        None
    };
    CheckResult {
        id: check.id,
        category: check.category,
        about: check.about,
        expected,
        verdict,
        decision,
        evidence,
        observed,
        notes,
        warning,
        hint: (verdict == Verdict::Fail).then_some(check.hint),
        reason,
        duration_ms: took.as_millis() as u64,
    }
}

fn seen(ctx: &Ctx, a: &Attempt) -> Seen {
    Seen {
        label: a.label.clone(),
        outcome: a.outcome.clone(),
        layer: layer(&a.outcome),
        decision: ctx.decide(a),
        resumed: a.resumed,
    }
}

/// `alert:unknown_ca (tls) on 1.2, 1.3` when the attempts agree, else one
/// `label: outcome (layer)` per attempt.
pub fn evidence(seen: &[Seen]) -> String {
    let Some(first) = seen.first() else {
        return String::new();
    };
    let describe = |s: &Seen| format!("{} ({})", s.outcome, s.layer);
    if seen.iter().all(|s| s.outcome == first.outcome) {
        let labels: Vec<&str> = seen.iter().map(|s| s.label.as_str()).collect();
        format!("{} on {}", describe(first), labels.join(", "))
    } else {
        seen.iter()
            .map(|s| format!("{}: {}", s.label, describe(s)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A refusal by an alert that names another cause than the check's.
pub(super) fn wrong_cause(check: &Check, seen: &[Seen]) -> Option<String> {
    if check.cause_alerts.is_empty() {
        return None;
    }
    seen.iter().find_map(|s| match &s.outcome {
        Outcome::Alert(a)
            if s.decision == Decision::Refused
                && CAUSE_NAMING_ALERTS.contains(&a.as_str())
                && !check.cause_alerts.contains(&a.as_str()) =>
        {
            Some(format!(
                "refused with {a}, not {}: the service refused for another reason than the one under test",
                check.cause_alerts.join(" or ")
            ))
        }
        _ => None,
    })
}
