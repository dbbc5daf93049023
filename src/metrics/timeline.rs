//! What happened when: connection verdicts in 100 ms buckets and rotation
//! events, both relative to the `Metrics` start, so a rotation can be lined up
//! with the failures around it.
//!
//! Memory is bounded: at most [`MAX_BUCKETS`] buckets that saw traffic (one
//! hour of continuous traffic) and [`MAX_ROTATION_EVENTS`] rotation events;
//! the oldest go first and `truncated_before_ms` says where the kept part
//! starts. A bucket is two counters and a short list of (interned outcome,
//! count) pairs, about 100 bytes, so the cap costs a few MB at most.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The width of a bucket.
pub const BUCKET_MS: u64 = 100;
/// Buckets kept: one hour at 100 ms. Long soak runs keep their last hour.
pub const MAX_BUCKETS: usize = 36_000;
/// Rotation events (successes and failures, each) kept.
pub const MAX_ROTATION_EVENTS: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub(super) struct Timeline {
    /// Bucket index (t_ms / BUCKET_MS) → counts; ordered, so export and
    /// eviction of the oldest are cheap. Only buckets with traffic exist.
    buckets: BTreeMap<u64, Bucket>,
    /// Outcome strings are interned: a bucket stores 4-byte ids, not Strings.
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// Index of the first bucket still kept once the cap has evicted some;
    /// late reports for older buckets are left out of the timeline (they are
    /// still in every counter and histogram).
    truncated_before: Option<u64>,
    rotations: Vec<RotationMark>,
    failures: Vec<RotationMark>,
    /// Plan changes (kind `plan`, detail = the new plan's description), so a
    /// failure can be lined up with the plan that was presenting then.
    plans: Vec<RotationMark>,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    ok: u32,
    failed: u32,
    /// (outcome id, count); a handful of entries, so a Vec beats a map.
    outcomes: Vec<(u32, u32)>,
}

/// A rotation (detail = serial) or a rotation failure (detail = error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RotationMark {
    pub t_ms: u64,
    pub kind: String,
    pub detail: Option<String>,
}

impl Timeline {
    pub(super) fn record_conn(&mut self, since_start: Duration, outcome: &str, ok: bool) {
        let idx = bucket_index(since_start);
        self.add_counts(idx, u32::from(ok), u32::from(!ok));
        self.add_outcome(idx, outcome, 1);
    }

    /// A rotation; `detail` is the new serial.
    pub(super) fn record_rotation(&mut self, m: RotationMark) {
        push_mark(&mut self.rotations, m);
    }

    /// A rotation failure; `detail` is the error.
    pub(super) fn record_failure(&mut self, m: RotationMark) {
        push_mark(&mut self.failures, m);
    }

    /// A plan change; `detail` is the new plan's description.
    pub(super) fn record_plan(&mut self, m: RotationMark) {
        push_mark(&mut self.plans, m);
    }

    /// The plan changes kept, oldest first.
    pub(super) fn plans(&self) -> &[RotationMark] {
        &self.plans
    }

    /// Adds `other`'s buckets and events to this one. Both must share a time
    /// origin (t_ms is relative to each one's start).
    pub(super) fn merge(&mut self, other: &Timeline) {
        for (&idx, b) in &other.buckets {
            self.add_counts(idx, b.ok, b.failed);
            for &(id, n) in &b.outcomes {
                let name = &other.names[id as usize]; // ids index `names` by construction
                self.add_outcome(idx, name, n);
            }
        }
        // The merged timeline is only complete from the later of the two
        // truncation points on; showing older buckets would understate them.
        if let Some(t) = other.truncated_before {
            if self.truncated_before.is_none_or(|mine| t > mine) {
                self.truncated_before = Some(t);
                self.buckets = self.buckets.split_off(&t);
            }
        }
        for m in &other.rotations {
            push_mark(&mut self.rotations, m.clone());
        }
        for m in &other.failures {
            push_mark(&mut self.failures, m.clone());
        }
        for m in &other.plans {
            push_mark(&mut self.plans, m.clone());
        }
    }

    /// `GET /timeline`: buckets with activity, in time order, and events.
    pub(super) fn to_json(&self) -> Value {
        let buckets: Vec<Value> = self
            .buckets
            .iter()
            .map(|(idx, b)| {
                let outcomes: BTreeMap<&str, u32> = b
                    .outcomes
                    .iter()
                    .map(|&(id, n)| (self.names[id as usize].as_str(), n))
                    .collect();
                json!({ "t_ms": idx.saturating_mul(BUCKET_MS), "ok": b.ok, "failed": b.failed, "outcomes": outcomes })
            })
            .collect();
        let rotations: Vec<Value> = self
            .rotations
            .iter()
            .map(|m| json!({ "t_ms": m.t_ms, "kind": m.kind, "serial": m.detail }))
            .collect();
        let failures: Vec<Value> = self
            .failures
            .iter()
            .map(|m| json!({ "t_ms": m.t_ms, "kind": m.kind, "error": m.detail }))
            .collect();
        let plans: Vec<Value> = self
            .plans
            .iter()
            .map(|m| json!({ "t_ms": m.t_ms, "kind": m.kind, "plan": m.detail }))
            .collect();
        json!({
            "bucket_ms": BUCKET_MS,
            "max_buckets": MAX_BUCKETS,
            "truncated_before_ms": self.truncated_before.map(|i| i.saturating_mul(BUCKET_MS)),
            "buckets": buckets,
            "rotations": rotations,
            "rotation_failures": failures,
            "plans": plans,
        })
    }

    fn add_counts(&mut self, idx: u64, ok: u32, failed: u32) {
        if self.truncated_before.is_some_and(|t| idx < t) {
            return;
        }
        let b = self.buckets.entry(idx).or_default();
        b.ok = b.ok.saturating_add(ok);
        b.failed = b.failed.saturating_add(failed);
        while self.buckets.len() > MAX_BUCKETS {
            if let Some((oldest, _)) = self.buckets.pop_first() {
                self.truncated_before = Some(oldest.saturating_add(1));
            }
        }
    }

    fn add_outcome(&mut self, idx: u64, outcome: &str, n: u32) {
        let Some(b) = self.buckets.get_mut(&idx) else {
            return; // evicted or truncated: counters above already left it out
        };
        let id = match self.ids.get(outcome) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
                self.names.push(outcome.to_string());
                self.ids.insert(outcome.to_string(), id);
                id
            }
        };
        match b.outcomes.iter_mut().find(|(i, _)| *i == id) {
            Some((_, c)) => *c = c.saturating_add(n),
            None => b.outcomes.push((id, n)),
        }
    }
}

/// Which bucket an event `since_start` after the start falls in: [0, 100) ms
/// is bucket 0, 250 ms is bucket 2 (t_ms 200).
pub(super) fn bucket_index(since_start: Duration) -> u64 {
    u64::try_from(since_start.as_millis() / u128::from(BUCKET_MS)).unwrap_or(u64::MAX)
}

pub(super) fn mark(since_start: Duration, kind: &str, detail: Option<String>) -> RotationMark {
    RotationMark {
        t_ms: u64::try_from(since_start.as_millis()).unwrap_or(u64::MAX),
        kind: kind.to_string(),
        detail,
    }
}

/// Keeps marks in time order (events usually arrive in order, so this is an
/// append) and drops the oldest past the cap.
fn push_mark(marks: &mut Vec<RotationMark>, m: RotationMark) {
    let at = marks.partition_point(|x| x.t_ms <= m.t_ms);
    marks.insert(at, m);
    if marks.len() > MAX_ROTATION_EVENTS {
        marks.remove(0);
    }
}

/// `at` relative to `start`; an event stamped before the start counts as 0.
pub(super) fn since(start: Instant, at: Instant) -> Duration {
    at.saturating_duration_since(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn buckets_are_placed_by_their_start_time() {
        let mut t = Timeline::default();
        t.record_conn(ms(250), "http:200", true);
        t.record_conn(ms(299), "reset", false);
        t.record_conn(ms(300), "http:200", true);
        t.record_conn(ms(0), "alert:unknown_ca", false);
        let v = t.to_json();
        assert_eq!(v["bucket_ms"], 100);
        let b = v["buckets"].as_array().unwrap();
        let t_ms: Vec<u64> = b.iter().map(|b| b["t_ms"].as_u64().unwrap()).collect();
        assert_eq!(t_ms, [0, 200, 300], "only active buckets, in time order");
        assert_eq!(b[1]["ok"], 1);
        assert_eq!(b[1]["failed"], 1);
        assert_eq!(b[1]["outcomes"], json!({"http:200": 1, "reset": 1}));
        assert_eq!(b[0]["outcomes"], json!({"alert:unknown_ca": 1}));
    }

    #[test]
    fn an_event_before_the_start_lands_in_the_first_bucket() {
        let start = Instant::now();
        let before = start.checked_sub(ms(5)).unwrap_or(start);
        assert_eq!(bucket_index(since(start, before)), 0);
        assert_eq!(bucket_index(since(start, start + ms(250))), 2);
    }

    #[test]
    fn rotations_keep_time_order_and_their_detail() {
        let mut t = Timeline::default();
        t.record_rotation(mark(ms(1_500), "server", Some("0b".into())));
        t.record_rotation(mark(ms(1_000), "client", None));
        t.record_failure(mark(
            ms(1_200),
            "trust-bundle",
            Some("no certificates in ca.crt".into()),
        ));
        let v = t.to_json();
        assert_eq!(
            v["rotations"],
            json!([
                {"t_ms": 1000, "kind": "client", "serial": null},
                {"t_ms": 1500, "kind": "server", "serial": "0b"},
            ])
        );
        assert_eq!(
            v["rotation_failures"],
            json!([{"t_ms": 1200, "kind": "trust-bundle", "error": "no certificates in ca.crt"}])
        );
    }

    #[test]
    fn memory_is_capped_by_evicting_the_oldest_buckets() {
        let mut t = Timeline::default();
        let n = MAX_BUCKETS as u64 + 10;
        for i in 0..n {
            t.record_conn(ms(i * BUCKET_MS), "ok", true);
        }
        assert_eq!(t.buckets.len(), MAX_BUCKETS);
        let v = t.to_json();
        assert_eq!(v["truncated_before_ms"], 10 * BUCKET_MS);
        assert_eq!(v["buckets"][0]["t_ms"], 10 * BUCKET_MS);
        // A late report for an evicted bucket does not resurrect it.
        t.record_conn(ms(0), "reset", false);
        assert_eq!(t.buckets.len(), MAX_BUCKETS);
        assert_eq!(t.to_json()["buckets"][0]["t_ms"], 10 * BUCKET_MS);
    }

    #[test]
    fn merge_keeps_only_what_both_sides_cover() {
        let mut a = Timeline::default();
        a.record_conn(ms(0), "ok", true);
        let mut b = Timeline::default();
        for i in 0..=MAX_BUCKETS as u64 {
            b.record_conn(ms(i * BUCKET_MS), "ok", true);
        }
        a.merge(&b);
        let v = a.to_json();
        assert_eq!(v["truncated_before_ms"], BUCKET_MS);
        assert_eq!(
            v["buckets"][0]["t_ms"], BUCKET_MS,
            "a's bucket 0 is dropped"
        );
    }

    #[test]
    fn merge_adds_bucket_counts_across_interned_names() {
        let mut a = Timeline::default();
        a.record_conn(ms(100), "http:200", true);
        let mut b = Timeline::default();
        b.record_conn(ms(150), "reset", false); // interned as id 0 in b
        b.record_conn(ms(120), "http:200", true);
        b.record_rotation(mark(ms(130), "client", Some("01".into())));
        a.merge(&b);
        let v = a.to_json();
        assert_eq!(
            v["buckets"],
            json!([{"t_ms": 100, "ok": 2, "failed": 1, "outcomes": {"http:200": 2, "reset": 1}}])
        );
        assert_eq!(v["rotations"][0]["serial"], "01");
    }
}
