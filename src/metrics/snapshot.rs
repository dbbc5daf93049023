//! The aggregated state: what the aggregator task owns and mutates, and what
//! a snapshot hands out as an immutable copy.
//!
//! Owns the counting rules: ok vs failed (the outcome's verdict), and the two
//! wrong verdicts — an unexpected accept is an enforcement hole, an
//! unexpected reject an availability bug. Never touched by two tasks at once:
//! only the aggregator mutates it, and snapshots are clones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::accept::ConnCounts;
use crate::pki::Expect;
use crate::tls::Verdict;

use super::hist::PhaseHist;
use super::timeline::{mark, since, RotationMark, Timeline};
use super::{ConnReport, Phase};

/// All metrics at one moment. Its views live in `json.rs`, `summary.rs`
/// and `prometheus.rs`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(super) start: Instant,
    pub(super) started_unix_ms: u64,
    /// How long after the start the snapshot was taken.
    pub(super) elapsed: Duration,
    pub(super) totals: Totals,
    pub(super) variants: BTreeMap<String, VariantStats>,
    pub(super) http_statuses: BTreeMap<u16, u64>,
    pub(super) phases: [PhaseHist; Phase::ALL.len()],
    pub(super) rotations: BTreeMap<String, u64>,
    pub(super) rotation_failures: BTreeMap<String, u64>,
    pub(super) last_rotation: Option<RotationMark>,
    pub(super) last_rotation_error: Option<RotationMark>,
    pub(super) timeline: Timeline,
    /// The downstream listener's gauges and close counters when the
    /// snapshot was taken, if a listener is attached (the proxy's).
    pub(super) listener: Option<ConnCounts>,
}

/// Run-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub connections: u64,
    /// Verdict `Accepted`.
    pub ok: u64,
    /// Every other verdict, refused or inconclusive.
    pub failed: u64,
    /// Expected reject, got accepted: the service let a bad credential in.
    pub unexpected_accept: u64,
    /// Expected accept, got anything else: the service turned away (or could
    /// not serve) a good credential.
    pub unexpected_reject: u64,
    /// Reports and events lost because the aggregator's queue was full.
    pub dropped_events: u64,
}

/// Counters for one presented variant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariantStats {
    pub connections: u64,
    /// Outcome display string (`http:200`, `alert:unknown_ca`) → count.
    pub outcomes: BTreeMap<String, u64>,
    /// Connections whose plan expected acceptance / rejection; normally one
    /// of the two is zero, both are kept so a mixed plan is visible.
    pub expected_accept: u64,
    pub expected_reject: u64,
    pub unexpected_accept: u64,
    pub unexpected_reject: u64,
}

impl Snapshot {
    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn variant(&self, name: &str) -> Option<&VariantStats> {
        self.variants.get(name)
    }

    /// Variants in name order.
    pub fn variants(&self) -> impl Iterator<Item = (&str, &VariantStats)> {
        self.variants.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// HTTP responses served, by status (each response of a kept-alive
    /// connection, each request in `--swap request`).
    pub fn http_statuses(&self) -> &BTreeMap<u16, u64> {
        &self.http_statuses
    }

    pub fn phase(&self, phase: Phase) -> &PhaseHist {
        &self.phases[phase as usize]
    }

    /// Time from the `Metrics` start to this snapshot.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Adds `other` into this snapshot: counters and histograms add, the
    /// later of the two "last" rotations wins, timelines add bucket by bucket.
    /// Times are relative to each snapshot's own start, so merging instances
    /// lines up their starts (what `report merge` of parallel pods wants).
    pub fn merge(&mut self, other: &Snapshot) {
        let (a, b) = (&mut self.totals, &other.totals);
        a.connections += b.connections;
        a.ok += b.ok;
        a.failed += b.failed;
        a.unexpected_accept += b.unexpected_accept;
        a.unexpected_reject += b.unexpected_reject;
        a.dropped_events += b.dropped_events;
        for (name, v) in &other.variants {
            self.variants.entry(name.clone()).or_default().add(v);
        }
        add_counts(&mut self.http_statuses, &other.http_statuses);
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            mine.merge(theirs);
        }
        add_counts(&mut self.rotations, &other.rotations);
        add_counts(&mut self.rotation_failures, &other.rotation_failures);
        if let Some(m) = &other.last_rotation {
            keep_later(&mut self.last_rotation, m);
        }
        if let Some(m) = &other.last_rotation_error {
            keep_later(&mut self.last_rotation_error, m);
        }
        self.timeline.merge(&other.timeline);
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    pub(super) fn new(start: Instant, started_unix_ms: u64) -> Self {
        Snapshot {
            start,
            started_unix_ms,
            elapsed: Duration::ZERO,
            totals: Totals::default(),
            variants: BTreeMap::new(),
            http_statuses: BTreeMap::new(),
            phases: Default::default(),
            rotations: BTreeMap::new(),
            rotation_failures: BTreeMap::new(),
            last_rotation: None,
            last_rotation_error: None,
            timeline: Timeline::default(),
            listener: None,
        }
    }

    pub(super) fn set_taken(&mut self, now: Instant, dropped_events: u64) {
        self.elapsed = since(self.start, now);
        self.totals.dropped_events = dropped_events;
    }

    pub(super) fn record_conn(&mut self, r: ConnReport) {
        let accepted = r.outcome.verdict() == Verdict::Accepted;
        let unexpected_accept = r.expect == Expect::Reject && accepted;
        // A connection the client abandoned, or we cancelled, asked the
        // service nothing: it is no availability failure.
        let unexpected_reject = r.expect == Expect::Accept && !accepted && !r.outcome.not_judged();
        let outcome = r.outcome.to_string();

        let t = &mut self.totals;
        t.connections += 1;
        t.ok += u64::from(accepted);
        t.failed += u64::from(!accepted);
        t.unexpected_accept += u64::from(unexpected_accept);
        t.unexpected_reject += u64::from(unexpected_reject);

        self.timeline
            .record_conn(since(self.start, r.at), &outcome, accepted);

        let v = self.variants.entry(r.variant).or_default();
        v.connections += 1;
        v.expected_accept += u64::from(r.expect == Expect::Accept);
        v.expected_reject += u64::from(r.expect == Expect::Reject);
        v.unexpected_accept += u64::from(unexpected_accept);
        v.unexpected_reject += u64::from(unexpected_reject);
        *v.outcomes.entry(outcome).or_default() += 1;

        for (status, n) in r.responses.iter() {
            *self.http_statuses.entry(status).or_default() += n;
        }
        for phase in Phase::ALL {
            if let Some(d) = r.phases.get(phase) {
                self.phases[phase as usize].record(d);
            }
        }
    }

    pub(super) fn record_rotation(&mut self, at: Instant, kind: &str, serial: Option<String>) {
        *self.rotations.entry(kind.to_string()).or_default() += 1;
        let m = mark(since(self.start, at), kind, serial);
        keep_later(&mut self.last_rotation, &m);
        self.timeline.record_rotation(m);
    }

    pub(super) fn record_rotation_failure(&mut self, at: Instant, kind: &str, error: String) {
        *self.rotation_failures.entry(kind.to_string()).or_default() += 1;
        let m = mark(since(self.start, at), kind, Some(error));
        keep_later(&mut self.last_rotation_error, &m);
        self.timeline.record_failure(m);
    }
}

impl Snapshot {
    pub(super) fn record_plan_change(&mut self, at: Instant, plan: String) {
        let m = mark(since(self.start, at), "plan", Some(plan));
        self.timeline.record_plan(m);
    }
}

impl VariantStats {
    /// The expected verdict, or `None` when the plan expected both.
    pub fn expected(&self) -> Option<Expect> {
        match (self.expected_accept, self.expected_reject) {
            (_, 0) => Some(Expect::Accept),
            (0, _) => Some(Expect::Reject),
            _ => None,
        }
    }

    /// [`VariantStats::expected`] as the JSON and the summary show it:
    /// `accept`, `reject`, or `mixed`.
    pub fn expected_label(&self) -> String {
        self.expected()
            .map_or_else(|| "mixed".to_string(), |e| e.to_string())
    }

    fn add(&mut self, other: &VariantStats) {
        self.connections += other.connections;
        add_counts(&mut self.outcomes, &other.outcomes);
        self.expected_accept += other.expected_accept;
        self.expected_reject += other.expected_reject;
        self.unexpected_accept += other.unexpected_accept;
        self.unexpected_reject += other.unexpected_reject;
    }
}

/// Add `from`'s counts into `into`, key by key.
pub fn add_counts<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

/// Events can arrive out of order (rotation sources stamp `at` themselves),
/// so "last" means latest in time, not latest to arrive; ties go to arrival.
fn keep_later(slot: &mut Option<RotationMark>, candidate: &RotationMark) {
    if slot.as_ref().is_none_or(|s| candidate.t_ms >= s.t_ms) {
        *slot = Some(candidate.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Phases;
    use crate::tls::Outcome;

    fn conn(s: &mut Snapshot, variant: &str, expect: Expect, outcome: Outcome) {
        s.record_conn(ConnReport {
            at: s.start,
            variant: variant.into(),
            expect,
            outcome,
            responses: crate::metrics::Statuses::default(),
            phases: Phases::default(),
        });
    }

    #[test]
    fn wrong_verdicts_are_counted_for_the_right_variant_only() {
        let mut s = Snapshot::new(Instant::now(), 0);
        conn(&mut s, "valid", Expect::Accept, Outcome::Http(200));
        conn(
            &mut s,
            "valid",
            Expect::Accept,
            Outcome::Alert("unknown_ca".into()),
        );
        conn(&mut s, "valid", Expect::Accept, Outcome::ConnectTimeout);
        conn(&mut s, "expired", Expect::Reject, Outcome::Http(200)); // hole
        conn(&mut s, "expired", Expect::Reject, Outcome::Http(403));
        conn(
            &mut s,
            "none",
            Expect::Reject,
            Outcome::Alert("certificate_required".into()),
        );

        let valid = s.variant("valid").unwrap();
        assert_eq!((valid.unexpected_accept, valid.unexpected_reject), (0, 2));
        let expired = s.variant("expired").unwrap();
        assert_eq!(
            (expired.unexpected_accept, expired.unexpected_reject),
            (1, 0)
        );
        let none = s.variant("none").unwrap();
        assert_eq!((none.unexpected_accept, none.unexpected_reject), (0, 0));
        assert_eq!(expired.outcomes["http:200"], 1);
        assert_eq!(expired.outcomes["http:403"], 1);

        let t = s.totals();
        assert_eq!((t.connections, t.ok, t.failed), (6, 2, 4));
        assert_eq!((t.unexpected_accept, t.unexpected_reject), (1, 2));
        assert_eq!(expired.expected(), Some(Expect::Reject));
    }

    #[test]
    fn last_rotation_is_the_latest_in_time_not_in_arrival() {
        let start = Instant::now();
        let mut s = Snapshot::new(start, 0);
        s.record_rotation(start + Duration::from_secs(5), "server", Some("05".into()));
        s.record_rotation(start + Duration::from_secs(2), "client", Some("02".into()));
        let last = s.last_rotation.clone().unwrap();
        assert_eq!((last.t_ms, last.kind.as_str()), (5_000, "server"));
        assert_eq!(s.rotations["client"], 1);
        assert_eq!(s.rotations["server"], 1);
    }

    #[test]
    fn merge_adds_counts() {
        let start = Instant::now();
        let mut a = Snapshot::new(start, 0);
        let mut b = Snapshot::new(start, 0);
        conn(&mut a, "valid", Expect::Accept, Outcome::Http(200));
        conn(&mut b, "valid", Expect::Accept, Outcome::Http(200));
        conn(&mut b, "revoked", Expect::Reject, Outcome::Ok);
        b.record_rotation(start, "client", None);
        b.record_rotation_failure(start, "server", "bad pem".into());
        b.phases[Phase::Lifetime as usize].record(Duration::from_millis(10));
        a.merge(&b);

        assert_eq!(a.totals().connections, 3);
        assert_eq!(a.totals().unexpected_accept, 1);
        assert_eq!(a.variant("valid").unwrap().outcomes["http:200"], 2);
        assert_eq!(a.variant("revoked").unwrap().connections, 1);
        assert_eq!(a.phase(Phase::Lifetime).count(), 1);
        assert_eq!(a.rotations["client"], 1);
        assert_eq!(a.rotation_failures["server"], 1);
        assert!(a.last_rotation.is_some() && a.last_rotation_error.is_some());
        assert_eq!(a.timeline_json()["buckets"][0]["ok"], 3);
    }
}
