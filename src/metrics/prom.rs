//! The Prometheus text exposition (format 0.0.4) of a [`Snapshot`], for
//! `GET /metrics`.
//!
//! Owns the `certshift_*` family names, their help and labels: a contract
//! with dashboards and alerts, never rename one. Every family is declared
//! (`# HELP`, `# TYPE`) even before its first sample, so a scrape at start-up
//! already shows what will exist. Output is deterministic: families in a
//! fixed order, samples sorted by their label values.

use std::collections::BTreeMap;

use super::expo::{header, histogram, sample};
use super::snapshot::Snapshot;
use super::Phase;

impl Snapshot {
    /// Prometheus text format 0.0.4 (`Content-Type: text/plain; version=0.0.4`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the fmt::Result is always Ok.
        let _ = self.write_prometheus(&mut out);
        out
    }

    fn write_prometheus(&self, out: &mut String) -> std::fmt::Result {
        let name = "certshift_connections_total";
        header(
            out,
            name,
            "counter",
            "Upstream connections by observed outcome and presented credential variant.",
        )?;
        let mut conns: Vec<(&str, &str, u64)> = self
            .variants
            .iter()
            .flat_map(|(variant, v)| {
                v.outcomes
                    .iter()
                    .map(move |(outcome, n)| (outcome.as_str(), variant.as_str(), *n))
            })
            .collect();
        // Sorted in label order (outcome, then variant), not storage order.
        conns.sort_unstable();
        for (outcome, variant, n) in conns {
            sample(out, name, &[("outcome", outcome), ("variant", variant)], n)?;
        }

        let per_variant = |f: fn(&super::VariantStats) -> u64| -> BTreeMap<&str, u64> {
            self.variants
                .iter()
                .map(|(k, v)| (k.as_str(), f(v)))
                .collect()
        };
        counter(
            out,
            "certshift_unexpected_accept_total",
            "Connections the service accepted although the variant must be rejected (enforcement holes).",
            "variant",
            &per_variant(|v| v.unexpected_accept),
        )?;
        counter(
            out,
            "certshift_unexpected_reject_total",
            "Connections with a variant that must be accepted that were not (availability failures).",
            "variant",
            &per_variant(|v| v.unexpected_reject),
        )?;
        counter(
            out,
            "certshift_rotations_total",
            "Credentials published by rotation, by kind.",
            "kind",
            &as_str_keys(&self.rotations),
        )?;
        counter(
            out,
            "certshift_rotation_failures_total",
            "Rotations refused (the previous credential stayed in service), by kind.",
            "kind",
            &as_str_keys(&self.rotation_failures),
        )?;

        let name = "certshift_handshake_duration_seconds";
        header(out, name, "histogram", "TLS handshake duration, by side.")?;
        // "downstream" sorts before "upstream": samples stay in label order.
        let down = self.phase(Phase::DownstreamHandshake);
        histogram(out, name, Some(("side", "downstream")), down)?;
        let up = self.phase(Phase::UpstreamHandshake);
        histogram(out, name, Some(("side", "upstream")), up)?;
        for (name, help, phase) in [
            (
                "certshift_upstream_connect_duration_seconds",
                "TCP connect duration to the service.",
                Phase::UpstreamConnect,
            ),
            (
                "certshift_first_byte_duration_seconds",
                "Time from the start of the upstream connection to its first byte received.",
                Phase::FirstByte,
            ),
            (
                "certshift_connection_duration_seconds",
                "Connection lifetime, accept to close.",
                Phase::Lifetime,
            ),
        ] {
            header(out, name, "histogram", help)?;
            histogram(out, name, None, self.phase(phase))?;
        }

        let name = "certshift_metrics_dropped_events_total";
        header(
            out,
            name,
            "counter",
            "Reports and events lost because the metrics queue was full; non-zero means every other count is incomplete.",
        )?;
        sample(out, name, &[], self.totals.dropped_events)
    }
}

/// A counter family with one label; the map's order is the sample order.
fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<&str, u64>,
) -> std::fmt::Result {
    header(out, name, "counter", help)?;
    for (value, n) in values {
        sample(out, name, &[(label, value)], *n)?;
    }
    Ok(())
}

fn as_str_keys(m: &BTreeMap<String, u64>) -> BTreeMap<&str, u64> {
    m.iter().map(|(k, n)| (k.as_str(), *n)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metrics::expo::tests::{label, parse, Sample};
    use crate::metrics::{ConnReport, Phases};
    use crate::pki::Expect;
    use crate::tls::Outcome;

    const CONTRACT: [(&str, &str); 9] = [
        ("certshift_connections_total", "counter"),
        ("certshift_unexpected_accept_total", "counter"),
        ("certshift_unexpected_reject_total", "counter"),
        ("certshift_rotations_total", "counter"),
        ("certshift_rotation_failures_total", "counter"),
        ("certshift_handshake_duration_seconds", "histogram"),
        ("certshift_upstream_connect_duration_seconds", "histogram"),
        ("certshift_first_byte_duration_seconds", "histogram"),
        ("certshift_connection_duration_seconds", "histogram"),
    ];

    fn snapshot_with(reports: &[(&str, Expect, Outcome, u64)]) -> Snapshot {
        let start = Instant::now();
        let mut s = Snapshot::new(start, 0);
        for (variant, expect, outcome, us) in reports {
            let d = Duration::from_micros(*us);
            s.record_conn(ConnReport {
                at: start,
                variant: variant.to_string(),
                expect: *expect,
                outcome: outcome.clone(),
                http_status: None,
                phases: Phases::default()
                    .with(Phase::UpstreamConnect, d / 4)
                    .with(Phase::UpstreamHandshake, d)
                    .with(Phase::FirstByte, d * 2)
                    .with(Phase::Lifetime, d * 10),
            });
        }
        s
    }

    #[test]
    fn every_contract_family_is_declared_before_any_sample() {
        let text = Snapshot::new(Instant::now(), 0).to_prometheus();
        let (types, samples) = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (family, kind) in CONTRACT {
            assert_eq!(
                types.get(family).map(String::as_str),
                Some(kind),
                "{family}"
            );
        }
        // Labelled counters have no series yet; histograms show zeros.
        assert!(!samples
            .iter()
            .any(|s| s.name == "certshift_connections_total"));
        let hs: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == "certshift_handshake_duration_seconds_count")
            .collect();
        assert_eq!(hs.len(), 2, "both sides declared");
        assert!(hs.iter().all(|s| s.value == 0.0));
    }

    #[test]
    fn every_histogram_is_cumulative_with_inf_equal_to_count() {
        let reports: Vec<(&str, Expect, Outcome, u64)> =
            [200, 800, 3_000, 40_000, 700_000, 3_000_000]
                .into_iter()
                .map(|us| ("valid", Expect::Accept, Outcome::Http(200), us))
                .collect();
        let text = snapshot_with(&reports).to_prometheus();
        let (_, samples) = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut series = 0;
        for (family, _) in CONTRACT.iter().filter(|(_, k)| *k == "histogram") {
            for side in [None, Some("downstream"), Some("upstream")] {
                let of = |suffix: &str| -> Vec<&Sample> {
                    samples
                        .iter()
                        .filter(|s| {
                            s.name == format!("{family}{suffix}") && label(s, "side") == side
                        })
                        .collect()
                };
                let buckets = of("_bucket");
                if buckets.is_empty() {
                    continue;
                }
                series += 1;
                let counts: Vec<f64> = buckets.iter().map(|s| s.value).collect();
                assert!(
                    counts.windows(2).all(|w| w[0] <= w[1]),
                    "{family} {counts:?}"
                );
                assert_eq!(label(buckets[buckets.len() - 1], "le"), Some("+Inf"));
                let count = of("_count")[0].value;
                assert_eq!(counts.last(), Some(&count), "{family} {side:?}");
                let expect = if side == Some("downstream") { 0.0 } else { 6.0 };
                assert_eq!(count, expect, "{family} {side:?}");
            }
        }
        assert_eq!(series, 5, "4 families, handshake has 2 sides");
    }

    #[test]
    fn counters_carry_outcome_and_variant_labels() {
        let mut s = snapshot_with(&[
            ("valid", Expect::Accept, Outcome::Http(200), 1),
            ("valid", Expect::Accept, Outcome::Reset, 1),
            ("expired", Expect::Reject, Outcome::Ok, 1),
        ]);
        s.record_rotation(s.start, "trust\"bundle", None);
        s.record_rotation_failure(s.start, "server", "bad pem".into());
        let text = s.to_prometheus();
        for line in [
            "certshift_connections_total{outcome=\"http:200\",variant=\"valid\"} 1",
            "certshift_connections_total{outcome=\"reset\",variant=\"valid\"} 1",
            "certshift_unexpected_accept_total{variant=\"expired\"} 1",
            "certshift_unexpected_accept_total{variant=\"valid\"} 0",
            "certshift_unexpected_reject_total{variant=\"valid\"} 1",
            r#"certshift_rotations_total{kind="trust\"bundle"} 1"#,
            "certshift_rotation_failures_total{kind=\"server\"} 1",
            "certshift_metrics_dropped_events_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn output_is_deterministic_and_sorted() {
        let a = [
            ("valid", Expect::Accept, Outcome::Http(200), 5),
            ("expired", Expect::Reject, Outcome::Reset, 5),
            (
                "none",
                Expect::Reject,
                Outcome::Alert("certificate_required".into()),
                5,
            ),
        ];
        let mut b = a.clone();
        b.reverse();
        let text = snapshot_with(&a).to_prometheus();
        assert_eq!(text, snapshot_with(&b).to_prometheus());
        let (_, samples) = parse(&text).unwrap();
        let keys: Vec<Vec<(String, String)>> = samples
            .iter()
            .filter(|s| s.name == "certshift_connections_total")
            .map(|s| s.labels.clone())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!((keys.len(), &keys), (3, &sorted));
    }
}
