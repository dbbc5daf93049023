//! JSON and human-readable views of a [`Snapshot`]: `GET /stats`,
//! `GET /timeline` and the final summary printed at the end of a run.
//!
//! Owns the JSON shapes (a contract with dashboards and CI scripts: add
//! fields, never rename one). Never computes anything the snapshot does not
//! hold; every number here is read, not derived from other exports.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::hist::PhaseHist;
use super::snapshot::{Snapshot, VariantStats};
use super::timeline::RotationMark;
use super::Phase;

impl Snapshot {
    /// `GET /stats`. Latencies are microseconds; `t_ms` are milliseconds
    /// since the start, anchored by `started_unix_ms`.
    pub fn to_stats_json(&self) -> Value {
        let t = &self.totals;
        let outcomes: serde_json::Map<String, Value> = self
            .variants
            .iter()
            .map(|(name, v)| (name.clone(), json!(v.outcomes)))
            .collect();
        let variants: serde_json::Map<String, Value> = self
            .variants
            .iter()
            .map(|(name, v)| {
                let stats = json!({
                    "expect": expect_label(v),
                    "connections": v.connections,
                    "unexpected_accept": v.unexpected_accept,
                    "unexpected_reject": v.unexpected_reject,
                });
                (name.clone(), stats)
            })
            .collect();
        let latency: serde_json::Map<String, Value> = Phase::ALL
            .iter()
            .map(|&p| (p.name().to_string(), json!(self.phase(p).percentiles())))
            .collect();
        let statuses: serde_json::Map<String, Value> = self
            .http_statuses
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        json!({
            "started_unix_ms": self.started_unix_ms,
            "elapsed_ms": ms(self.elapsed.as_millis()),
            "connections": {
                "total": t.connections,
                "ok": t.ok,
                "failed": t.failed,
                "unexpected_accept": t.unexpected_accept,
                "unexpected_reject": t.unexpected_reject,
            },
            "dropped_events": t.dropped_events,
            "outcomes": outcomes,
            "variants": variants,
            "http_statuses": statuses,
            "latency_us": latency,
            "rotations": self.rotations,
            "rotation_failures": self.rotation_failures,
            "last_rotation": self.last_rotation.as_ref().map(|m| mark_json(m, "serial")),
            "last_rotation_error": self.last_rotation_error.as_ref().map(|m| mark_json(m, "error")),
        })
    }

    /// `GET /timeline`: `{bucket_ms, buckets: [{t_ms, ok, failed, outcomes}],
    /// rotations: [{t_ms, kind, serial}], rotation_failures: [{t_ms, kind,
    /// error}], ...}`; only buckets with traffic, in time order.
    pub fn timeline_json(&self) -> Value {
        let mut v = self.timeline.to_json();
        v["started_unix_ms"] = json!(self.started_unix_ms);
        v
    }

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
                expect_label(v),
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
        self.write_rotations(out)
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

fn expect_label(v: &VariantStats) -> String {
    v.expect()
        .map_or_else(|| "mixed".to_string(), |e| e.to_string())
}

fn mark_json(m: &RotationMark, detail_key: &str) -> Value {
    let mut v = json!({ "t_ms": m.t_ms, "kind": m.kind });
    v[detail_key] = json!(m.detail);
    v
}

fn ms(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metrics::{ConnReport, Phases};
    use crate::pki::Expect;
    use crate::tls::Outcome;

    fn sample() -> Snapshot {
        let start = Instant::now();
        let mut s = Snapshot::new(start, 1_700_000_000_000);
        for ms in 1..=1000u64 {
            s.record_conn(ConnReport {
                at: start + Duration::from_millis(ms),
                variant: "valid".into(),
                expect: Expect::Accept,
                outcome: Outcome::Http(200),
                http_status: Some(200),
                phases: Phases::default().with(Phase::UpstreamHandshake, Duration::from_millis(ms)),
            });
        }
        s.record_conn(ConnReport {
            at: start,
            variant: "expired".into(),
            expect: Expect::Reject,
            outcome: Outcome::Alert("certificate_expired".into()),
            http_status: None,
            phases: Phases::default(),
        });
        s.record_rotation(
            start + Duration::from_millis(500),
            "client",
            Some("0a".into()),
        );
        s
    }

    #[test]
    fn stats_json_has_the_contract_fields() {
        let v = sample().to_stats_json();
        assert_eq!(
            v["connections"],
            json!({"total": 1001, "ok": 1000, "failed": 1, "unexpected_accept": 0, "unexpected_reject": 0})
        );
        assert_eq!(v["outcomes"]["valid"], json!({"http:200": 1000}));
        assert_eq!(
            v["outcomes"]["expired"],
            json!({"alert:certificate_expired": 1})
        );
        assert_eq!(v["variants"]["expired"]["expect"], "reject");
        assert_eq!(v["http_statuses"]["200"], 1000);
        let hs = &v["latency_us"]["upstream_handshake"];
        assert_eq!(hs["count"], 1000);
        let p50 = hs["p50"].as_u64().unwrap();
        assert!(p50.abs_diff(500_000) <= 501, "p50 {p50}");
        for key in ["p90", "p99", "p999", "max"] {
            assert!(hs[key].is_u64(), "{key}");
        }
        assert_eq!(v["latency_us"]["first_byte"]["count"], 0);
        assert_eq!(v["rotations"], json!({"client": 1}));
        assert_eq!(v["rotation_failures"], json!({}));
        assert_eq!(
            v["last_rotation"],
            json!({"t_ms": 500, "kind": "client", "serial": "0a"})
        );
        assert!(v["last_rotation_error"].is_null());
        assert_eq!(v["started_unix_ms"], 1_700_000_000_000u64);
    }

    #[test]
    fn timeline_json_lists_active_buckets_and_rotations() {
        let v = sample().timeline_json();
        assert_eq!(v["bucket_ms"], 100);
        let buckets = v["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 11, "buckets 0..=1000 ms");
        assert_eq!(buckets[0]["t_ms"], 0);
        assert_eq!(buckets[0]["failed"], 1);
        assert_eq!(buckets[0]["ok"], 99, "1..=99 ms");
        assert_eq!(buckets[10]["t_ms"], 1000);
        assert_eq!(
            v["rotations"][0],
            json!({"t_ms": 500, "kind": "client", "serial": "0a"})
        );
    }

    #[test]
    fn summary_shows_latency_verdicts_and_rotations() {
        let mut s = sample();
        s.record_conn(ConnReport {
            at: s.start,
            variant: "untrusted-ca".into(),
            expect: Expect::Reject,
            outcome: Outcome::Http(200),
            http_status: Some(200),
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
