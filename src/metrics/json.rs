//! JSON views of a [`Snapshot`]: `GET /stats` and `GET /timeline`, also
//! written into the final `--json` summary.
//!
//! Owns the JSON shapes (a contract with dashboards and CI scripts: add
//! fields, never rename one). Never computes anything the snapshot does not
//! hold; every number here is read, not derived from other exports.

use serde_json::{json, Value};

use super::snapshot::Snapshot;
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
                    "expect": v.expected_label(),
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
            // The downstream listener: open and in-handshake connections now,
            // and how many it closed itself, by reason.
            "listener": self.listener,
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
}

fn mark_json(m: &RotationMark, detail_key: &str) -> Value {
    let mut v = json!({ "t_ms": m.t_ms, "kind": m.kind });
    v[detail_key] = json!(m.detail);
    v
}

fn ms(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Tests, and the snapshot fixture `summary.rs`'s tests share.
#[cfg(test)]
pub(super) mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metrics::{ConnReport, Phases};
    use crate::pki::Expect;
    use crate::tls::Outcome;

    pub(in crate::metrics) fn sample() -> Snapshot {
        let start = Instant::now();
        let mut s = Snapshot::new(start, 1_700_000_000_000);
        for ms in 1..=1000u64 {
            s.record_conn(ConnReport {
                at: start + Duration::from_millis(ms),
                variant: "valid".into(),
                expect: Expect::Accept,
                outcome: Outcome::Http(200),
                responses: crate::metrics::Statuses::one(200),
                phases: Phases::default().with(Phase::UpstreamHandshake, Duration::from_millis(ms)),
            });
        }
        s.record_conn(ConnReport {
            at: start,
            variant: "expired".into(),
            expect: Expect::Reject,
            outcome: Outcome::Alert("certificate_expired".into()),
            responses: crate::metrics::Statuses::default(),
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
}
