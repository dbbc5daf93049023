//! The human-readable summary of a [`Snapshot`], printed when a run ends:
//! latency table, verdicts per variant, rotations, plan changes.
//!
//! Owns the table layout (tests and users read rows by their first word).
//! Never computes anything the snapshot does not hold.

use std::fmt::Write as _;

use super::hist::PhaseHist;
use super::snapshot::Snapshot;
use super::Phase;

impl Snapshot {
    /// The human summary printed when a run ends: latency table, verdicts per
    /// variant, rotations.
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the fmt::Result is always Ok.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        let t = &self.totals;
        writeln!(
            out,
            "connections: {} (ok {}, failed {}) in {:.1} s",
            t.connections,
            t.ok,
            t.failed,
            self.elapsed.as_secs_f64()
        )?;
        if t.dropped_events > 0 {
            writeln!(
                out,
                "WARNING: {} events were dropped (metrics queue full); counts below are incomplete",
                t.dropped_events
            )?;
        }

        writeln!(out)?;
        writeln!(
            out,
            "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "phase", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for p in Phase::ALL {
            write_latency_row(out, p.name(), self.phase(p))?;
        }

        writeln!(out)?;
        let w = self
            .variants
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .max("variant".len());
        writeln!(
            out,
            "{:<w$}  {:<6} {:>9} {:>17} {:>17}  outcomes",
            "variant", "expect", "conns", "unexpected_accept", "unexpected_reject"
        )?;
        for (name, v) in &self.variants {
            let outcomes: Vec<String> =
                v.outcomes.iter().map(|(o, n)| format!("{o}={n}")).collect();
            writeln!(
                out,
                "{name:<w$}  {:<6} {:>9} {:>17} {:>17}  {}",
                v.expected_label(),
                v.connections,
                v.unexpected_accept,
                v.unexpected_reject,
                outcomes.join(" ")
            )?;
        }
        writeln!(
            out,
            "wrong verdicts: {} unexpected accepts (enforcement holes), {} unexpected rejects (availability)",
            t.unexpected_accept, t.unexpected_reject
        )?;

        writeln!(out)?;
        self.write_rotations(out)?;
        self.write_plan_changes(out)
    }

    /// Each plan change with its time, so a failure in the table above can
    /// be placed under the plan that was presenting then. Nothing when the
    /// plan never changed (most runs), to keep the summary as it was.
    fn write_plan_changes(&self, out: &mut String) -> std::fmt::Result {
        for m in self.timeline.plans() {
            let plan = m.detail.as_deref().unwrap_or("-");
            writeln!(out, "plan change at {}: {plan}", at_secs(m.t_ms))?;
        }
        Ok(())
    }

    fn write_rotations(&self, out: &mut String) -> std::fmt::Result {
        if self.rotations.is_empty() && self.rotation_failures.is_empty() {
            return writeln!(out, "rotations: none");
        }
        writeln!(
            out,
            "{:<14} {:>9} {:>9}",
            "rotation", "published", "refused"
        )?;
        let mut kinds: Vec<&String> = self
            .rotations
            .keys()
            .chain(self.rotation_failures.keys())
            .collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let ok = self.rotations.get(kind).copied().unwrap_or(0);
            let failed = self.rotation_failures.get(kind).copied().unwrap_or(0);
            writeln!(out, "{kind:<14} {ok:>9} {failed:>9}")?;
        }
        if let Some(m) = &self.last_rotation {
            let serial = m.detail.as_deref().unwrap_or("-");
            let at = at_secs(m.t_ms);
            writeln!(out, "last rotation: {} serial {serial} at {at}", m.kind)?;
        }
        if let Some(m) = &self.last_rotation_error {
            let error = m.detail.as_deref().unwrap_or("");
            let at = at_secs(m.t_ms);
            writeln!(out, "last rotation error: {} at {at}: {error}", m.kind)?;
        }
        Ok(())
    }
}

fn write_latency_row(out: &mut String, name: &str, h: &PhaseHist) -> std::fmt::Result {
    let p = h.percentiles();
    if p.count == 0 {
        return writeln!(
            out,
            "{name:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            0, "-", "-", "-", "-", "-"
        );
    }
    writeln!(
        out,
        "{name:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        p.count,
        human_us(p.p50),
        human_us(p.p90),
        human_us(p.p99),
        human_us(p.p999),
        human_us(p.max)
    )
}

/// Microseconds with a unit a reader does not have to convert.
fn human_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.3} s", us as f64 / 1e6),
    }
}

/// `+12.300 s`: a time since the start, as the timeline counts it.
fn at_secs(t_ms: u64) -> String {
    format!("+{:.3} s", t_ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::json::tests::sample;
    use crate::metrics::{ConnReport, Phases};
    use crate::pki::Expect;
    use crate::tls::Outcome;

    #[test]
    fn summary_shows_latency_verdicts_and_rotations() {
        let mut s = sample();
        s.record_conn(ConnReport {
            at: s.start,
            variant: "untrusted-ca".into(),
            expect: Expect::Reject,
            outcome: Outcome::Http(200),
            responses: crate::metrics::Statuses::one(200),
            phases: Phases::default(),
        });
        s.record_rotation_failure(s.start + Duration::from_secs(2), "server", "bad key".into());
        let text = s.summary_table();
        let row = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} row in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(row("upstream_handshake")[1], "1000");
        assert_eq!(row("upstream_handshake")[2..4], ["500.22", "ms"]);
        assert_eq!(row("first_byte")[1..3], ["0", "-"]);
        assert_eq!(row("untrusted-ca")[1..5], ["reject", "1", "1", "0"]);
        assert_eq!(row("valid")[5], "http:200=1000");
        assert!(
            text.contains("1 unexpected accepts (enforcement holes)"),
            "{text}"
        );
        assert_eq!(row("server")[1..], ["0", "1"]);
        assert!(
            text.contains("last rotation: client serial 0a at +0.500 s"),
            "{text}"
        );
        assert!(
            text.contains("last rotation error: server at +2.000 s: bad key"),
            "{text}"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human_us(999), "999 µs");
        assert_eq!(human_us(1_500), "1.50 ms");
        assert_eq!(human_us(2_500_000), "2.500 s");
    }
}
