//! The Prometheus exposition of a [`Snapshot`] for `GET /metrics`, encoded
//! by the `prometheus-client` crate in text format 0.0.4.
//!
//! Owns the `certshift_*` family names, their help, labels and histogram
//! bucket bounds: a contract with dashboards and alerts, never rename one.
//! Every family is declared (`# HELP`, `# TYPE`) even before its first
//! sample, so a scrape at start-up already shows what will exist. Output is
//! deterministic: families in a fixed order, samples sorted by label values.
//!
//! Never records anything and is never on the connection path: the
//! aggregator's snapshot is turned into constant families once per scrape
//! (a `prometheus-client` [`Collector`]), so the hot path keeps its
//! per-connection reports and no metric lives behind a shared lock.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::hist::PhaseHist;
use super::snapshot::{Snapshot, VariantStats};
use super::Phase;
use crate::accept::ConnCounts;

/// The `Content-Type` of [`Snapshot::to_prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Histogram bucket upper bounds in µs (the HdrHistograms' unit); exposed
/// in seconds, from 0.5 ms to 10 s. `prometheus-client` writes `le` the way
/// Go clients do (`0.0005`, `1`, `2.5`), so series match other exporters'.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

impl Snapshot {
    /// Prometheus text format 0.0.4 (see [`PROMETHEUS_CONTENT_TYPE`]).
    pub fn to_prometheus(&self) -> String {
        Families::of(self).encode()
    }
}

/// Every `certshift_*` family of one snapshot, in exposition order: a
/// constant copy, so encoding needs no access to the aggregator.
#[derive(Debug)]
pub(super) struct Families(pub(super) Vec<Family>);

#[derive(Debug)]
pub(super) struct Family {
    /// Without the `_total` (counters) and `_seconds` (unit) suffixes,
    /// which the encoder appends.
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    values: Values,
}

#[derive(Debug)]
pub(super) enum Values {
    Counters(Vec<(Labels, u64)>),
    Gauges(Vec<(Labels, u64)>),
    Histograms(Vec<(Labels, Buckets)>),
}

pub(super) type Labels = Vec<(&'static str, String)>;

/// A [`PhaseHist`] in Prometheus form: per-bucket (not cumulative) counts
/// by upper bound in seconds, the exact sum in seconds and the count. The
/// encoder accumulates the buckets and adds `+Inf` = count.
#[derive(Debug)]
pub(super) struct Buckets {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Families {
    /// Text format 0.0.4, one scrape's worth.
    pub(super) fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // The encoder fails only when its writer does, and a String never
        // does; the fmt::Result is always Ok.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }

    fn of(s: &Snapshot) -> Families {
        let mut conns: Vec<(Labels, u64)> = s
            .variants
            .iter()
            .flat_map(|(variant, v)| {
                v.outcomes.iter().map(move |(outcome, n)| {
                    let labels = vec![("outcome", outcome.clone()), ("variant", variant.clone())];
                    (labels, *n)
                })
            })
            .collect();
        // Sorted in label order (outcome, then variant), not storage order.
        conns.sort_unstable();
        let per_variant = |f: fn(&VariantStats) -> u64| -> Values {
            by_label(
                "variant",
                s.variants.iter().map(|(k, v)| (k.as_str(), f(v))),
            )
        };
        let handshake = [
            ("downstream", Phase::DownstreamHandshake),
            ("upstream", Phase::UpstreamHandshake),
        ]
        .into_iter()
        // "downstream" sorts before "upstream": samples stay in label order.
        .map(|(side, p)| (vec![("side", side.to_string())], Buckets::of(s.phase(p))))
        .collect();
        let unlabelled = |p: Phase| Values::Histograms(vec![(Vec::new(), Buckets::of(s.phase(p)))]);
        let mut families = vec![
            Family::counter(
                "certshift_connections",
                "Upstream connections by observed outcome and presented credential variant.",
                Values::Counters(conns),
            ),
            Family::counter(
                "certshift_unexpected_accept",
                "Connections the service accepted although the variant must be rejected (enforcement holes).",
                per_variant(|v| v.unexpected_accept),
            ),
            Family::counter(
                "certshift_unexpected_reject",
                "Connections with a variant that must be accepted that were not (availability failures).",
                per_variant(|v| v.unexpected_reject),
            ),
            rotations_family(s.rotations.iter().map(|(k, n)| (k.as_str(), *n))),
            rotation_failures_family(s.rotation_failures.iter().map(|(k, n)| (k.as_str(), *n))),
            Family::seconds(
                "certshift_handshake_duration",
                "TLS handshake duration, by side.",
                Values::Histograms(handshake),
            ),
            Family::seconds(
                "certshift_upstream_connect_duration",
                "TCP connect duration to the service.",
                unlabelled(Phase::UpstreamConnect),
            ),
            Family::seconds(
                "certshift_first_byte_duration",
                "Time from the start of the upstream connection to its first byte received.",
                unlabelled(Phase::FirstByte),
            ),
            Family::seconds(
                "certshift_connection_duration",
                "Connection lifetime, accept to close.",
                unlabelled(Phase::Lifetime),
            ),
            Family::counter(
                "certshift_metrics_dropped_events",
                "Reports and events lost because the metrics queue was full; non-zero means every other count is incomplete.",
                Values::Counters(vec![(Vec::new(), s.totals.dropped_events)]),
            ),
        ];
        families.extend(listener_families(s.listener.as_ref()));
        Families(families)
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = match f.values {
                Values::Counters(_) => MetricType::Counter,
                Values::Gauges(_) => MetricType::Gauge,
                Values::Histograms(_) => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), kind)?;
            match &f.values {
                Values::Counters(series) => {
                    for (labels, n) in series {
                        ConstCounter::new(*n).encode(family.encode_family(labels)?)?;
                    }
                }
                Values::Gauges(series) => {
                    for (labels, n) in series {
                        // Gauges of counts: far below 2^63.
                        let v = i64::try_from(*n).unwrap_or(i64::MAX);
                        ConstGauge::new(v).encode(family.encode_family(labels)?)?;
                    }
                }
                Values::Histograms(series) => {
                    for (labels, h) in series {
                        family
                            .encode_family(labels)?
                            .encode_histogram::<Labels>(h.sum, h.count, &h.buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Family {
    pub(super) fn counter(name: &'static str, help: &'static str, values: Values) -> Family {
        Family {
            name,
            help,
            unit: None,
            values,
        }
    }

    fn gauge(name: &'static str, help: &'static str, values: Values) -> Family {
        Family {
            name,
            help,
            unit: None,
            values,
        }
    }

    fn seconds(name: &'static str, help: &'static str, values: Values) -> Family {
        Family {
            name,
            help,
            unit: Some(Unit::Seconds),
            values,
        }
    }
}

impl Buckets {
    /// Bucket counts are read from the HdrHistogram (within its 3-digit
    /// precision); the sum is exact.
    fn of(h: &PhaseHist) -> Buckets {
        let mut below = 0;
        let buckets = BUCKETS_US
            .iter()
            .map(|&us| {
                let cumulative = h.count_le(us);
                let n = cumulative.saturating_sub(below);
                below = cumulative;
                (us as f64 / 1e6, n)
            })
            .collect();
        Buckets {
            sum: h.sum_us() as f64 / 1e6,
            count: h.count(),
            buckets,
        }
    }
}

/// `certshift_rotations_total{kind}`: publications by kind, in the order given.
pub(super) fn rotations_family<'a>(by_kind: impl Iterator<Item = (&'a str, u64)>) -> Family {
    Family::counter(
        "certshift_rotations",
        "Credentials published by rotation, by kind.",
        by_label("kind", by_kind),
    )
}

/// `certshift_rotation_failures_total{kind}`: refusals by kind, in the order given.
pub(super) fn rotation_failures_family<'a>(
    by_kind: impl Iterator<Item = (&'a str, u64)>,
) -> Family {
    Family::counter(
        "certshift_rotation_failures",
        "Rotations refused (the previous credential stayed in service), by kind.",
        by_label("kind", by_kind),
    )
}

/// The `certshift_listener_*` families of one listener (the proxy's
/// downstream one, `serve`'s): declared without samples when there is none.
pub(super) fn listener_families(l: Option<&ConnCounts>) -> [Family; 4] {
    let gauge = |f: fn(&ConnCounts) -> u64| {
        Values::Gauges(l.map(|l| vec![(Vec::new(), f(l))]).unwrap_or_default())
    };
    let closed = l.map(|l| {
        // In label order.
        [
            ("handshake_timeout", l.closed_handshake_timeout),
            ("header_timeout", l.closed_header_timeout),
            ("idle_timeout", l.closed_idle),
            ("shed_at_cap", l.shed_at_cap),
            ("shed_at_handshake_cap", l.shed_at_handshake_cap),
            ("shed_fd_exhausted", l.shed_fd_exhausted),
        ]
        .into_iter()
        .map(|(reason, n)| (vec![("reason", reason.to_string())], n))
        .collect()
    });
    let accept_errors = l.map(|l| {
        vec![
            (vec![("kind", "fd_exhausted".to_string())], l.fd_exhausted),
            (
                vec![("kind", "other".to_string())],
                l.accept_errors.saturating_sub(l.fd_exhausted),
            ),
        ]
    });
    [
        Family::gauge(
            "certshift_listener_open_connections",
            "Downstream connections open now.",
            gauge(|l| l.open),
        ),
        Family::gauge(
            "certshift_listener_handshaking_connections",
            "Downstream connections still in their TLS handshake now.",
            gauge(|l| l.in_handshake),
        ),
        Family::counter(
            "certshift_listener_closed",
            "Downstream connections the listener closed itself, by reason: a deadline (handshake_timeout, header_timeout, idle_timeout) or shed to make room (shed_at_cap: the longest idle; shed_at_handshake_cap: the oldest handshake; shed_fd_exhausted: out of file descriptors).",
            Values::Counters(closed.unwrap_or_default()),
        ),
        Family::counter(
            "certshift_listener_accept_errors",
            "accept() failures on the downstream listener; kind fd_exhausted: out of file descriptors (EMFILE, ENFILE).",
            Values::Counters(accept_errors.unwrap_or_default()),
        ),
    ]
}

/// A counter family with one label, in the order given (BTreeMap order).
fn by_label<'a>(label: &'static str, values: impl Iterator<Item = (&'a str, u64)>) -> Values {
    Values::Counters(
        values
            .map(|(value, n)| (vec![(label, value.to_string())], n))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use openmetrics_parser::prometheus::parse_prometheus;
    use openmetrics_parser::{HistogramValue, PrometheusType, PrometheusValue};

    use super::*;
    use crate::metrics::{ConnReport, Phases};
    use crate::pki::Expect;
    use crate::tls::Outcome;

    const CONTRACT: [(&str, PrometheusType); 9] = [
        ("certshift_connections_total", PrometheusType::Counter),
        ("certshift_unexpected_accept_total", PrometheusType::Counter),
        ("certshift_unexpected_reject_total", PrometheusType::Counter),
        ("certshift_rotations_total", PrometheusType::Counter),
        ("certshift_rotation_failures_total", PrometheusType::Counter),
        (
            "certshift_handshake_duration_seconds",
            PrometheusType::Histogram,
        ),
        (
            "certshift_upstream_connect_duration_seconds",
            PrometheusType::Histogram,
        ),
        (
            "certshift_first_byte_duration_seconds",
            PrometheusType::Histogram,
        ),
        (
            "certshift_connection_duration_seconds",
            PrometheusType::Histogram,
        ),
    ];

    /// One parsed sample: labels by name, and its value.
    struct Series {
        labels: Vec<(String, String)>,
        value: PrometheusValue,
    }

    impl Series {
        fn label(&self, key: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }

        fn counter(&self) -> f64 {
            match &self.value {
                PrometheusValue::Counter(c) => c.value.as_f64(),
                v => panic!("not a counter: {v:?}"),
            }
        }

        fn histogram(&self) -> &HistogramValue {
            match &self.value {
                PrometheusValue::Histogram(h) => h,
                v => panic!("not a histogram: {v:?}"),
            }
        }
    }

    /// Parses `text` with a real exposition parser and returns each family's
    /// type and series, in exposition order.
    fn parse(text: &str) -> Vec<(String, PrometheusType, Vec<Series>)> {
        let parsed = parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let mut families: Vec<_> = parsed
            .families
            .into_values()
            .map(|f| {
                let names = f.get_label_names().to_vec();
                let series = f
                    .iter_samples()
                    .map(|s| {
                        let set = s.get_labelset().unwrap();
                        let labels = names
                            .iter()
                            .map(|n| (n.clone(), set.get_label_value(n).unwrap().to_string()))
                            .collect();
                        Series {
                            labels,
                            value: s.value.clone(),
                        }
                    })
                    .collect();
                (f.family_name.clone(), f.family_type.clone(), series)
            })
            .collect();
        let at = |name: &str| text.find(&format!("# TYPE {name} ")).unwrap();
        families.sort_by_key(|(name, _, _)| at(name));
        families
    }

    fn family<'a>(
        families: &'a [(String, PrometheusType, Vec<Series>)],
        name: &str,
    ) -> &'a [Series] {
        families
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, s)| s.as_slice())
            .unwrap_or_else(|| panic!("no family {name}"))
    }

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
                responses: crate::metrics::Statuses::default(),
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
        let families = parse(&text);
        for (name, kind) in CONTRACT {
            let declared = families.iter().find(|(n, _, _)| n == name);
            assert_eq!(declared.map(|(_, k, _)| k), Some(&kind), "{name}");
        }
        // Labelled counters have no series yet; histograms show zeros.
        assert!(family(&families, "certshift_connections_total").is_empty());
        let hs = family(&families, "certshift_handshake_duration_seconds");
        assert_eq!(hs.len(), 2, "both sides declared");
        assert!(hs.iter().all(|s| s.histogram().count == Some(0)));
    }

    #[test]
    fn every_histogram_is_cumulative_with_inf_equal_to_count() {
        let reports: Vec<(&str, Expect, Outcome, u64)> =
            [200, 800, 3_000, 40_000, 700_000, 3_000_000]
                .into_iter()
                .map(|us| ("valid", Expect::Accept, Outcome::Http(200), us))
                .collect();
        let text = snapshot_with(&reports).to_prometheus();
        let families = parse(&text);
        let mut series = 0;
        for (name, _) in CONTRACT
            .iter()
            .filter(|(_, k)| *k == PrometheusType::Histogram)
        {
            for s in family(&families, name) {
                series += 1;
                let h = s.histogram();
                let counts: Vec<f64> = h.buckets.iter().map(|b| b.count.as_f64()).collect();
                assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{name} {counts:?}");
                let last = h.buckets.last().unwrap();
                assert_eq!(last.upper_bound, f64::INFINITY);
                let count = h.count.unwrap() as f64;
                assert_eq!(last.count.as_f64(), count, "{name} {:?}", s.labels);
                let expect = if s.label("side") == Some("downstream") {
                    0.0
                } else {
                    6.0
                };
                assert_eq!(count, expect, "{name} {:?}", s.labels);
            }
        }
        assert_eq!(series, 5, "4 families, handshake has 2 sides");
    }

    #[test]
    fn histogram_buckets_hold_the_phase_and_the_exact_sum() {
        let mut s = Snapshot::new(Instant::now(), 0);
        for us in [200, 800, 3_000, 40_000, 700_000, 30_000_000] {
            s.phases[Phase::Lifetime as usize].record(Duration::from_micros(us));
        }
        let text = s.to_prometheus();
        // Bounds are written as Go clients write them.
        for le in ["0.0005", "0.001", "0.05", "1", "10", "+Inf"] {
            let line = format!("certshift_connection_duration_seconds_bucket{{le=\"{le}\"}} ");
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        let families = parse(&text);
        let h = family(&families, "certshift_connection_duration_seconds")[0].histogram();
        let le = |bound: f64| {
            h.buckets
                .iter()
                .find(|b| b.upper_bound == bound)
                .unwrap()
                .count
                .as_f64()
        };
        assert_eq!(
            [
                le(0.0005),
                le(0.001),
                le(0.05),
                le(1.0),
                le(10.0),
                le(f64::INFINITY)
            ],
            [1.0, 2.0, 4.0, 5.0, 5.0, 6.0],
            "30 s is only in +Inf"
        );
        assert_eq!(h.count, Some(6));
        let sum = h.sum.unwrap().as_f64();
        assert!((sum - 30.744).abs() < 1e-9, "exact sum in seconds: {sum}");
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
        let families = parse(&text);
        let kinds = family(&families, "certshift_rotations_total");
        assert_eq!(kinds[0].label("kind"), Some("trust\"bundle"));
        assert_eq!(kinds[0].counter(), 1.0);
    }

    #[test]
    fn label_values_are_escaped_and_round_trip() {
        let nasty = "a\"b\\c\nd";
        let mut s = Snapshot::new(Instant::now(), 0);
        s.record_rotation(s.start, nasty, None);
        let text = s.to_prometheus();
        assert!(
            text.contains(r#"certshift_rotations_total{kind="a\"b\\c\nd"} 1"#),
            "{text}"
        );
        let families = parse(&text);
        let kinds = family(&families, "certshift_rotations_total");
        assert_eq!(kinds[0].label("kind"), Some(nasty));
        assert_eq!(kinds[0].counter(), 1.0);
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
        let families = parse(&text);
        let keys: Vec<Vec<(String, String)>> = family(&families, "certshift_connections_total")
            .iter()
            .map(|s| s.labels.clone())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!((keys.len(), &keys), (3, &sorted));
    }
}
