//! What a service that keeps no aggregator (`serve`) shows on `GET /metrics`:
//! its counters read at scrape time, in the same families the proxy uses
//! for the same things (`certshift_listener_*`, `certshift_rotations_total`,
//! `certshift_rotation_failures_total`), plus `certshift_serve_*` for what
//! only a service knows (its requests by status).
//!
//! Owns the `certshift_serve_*` family names (a contract, like every
//! `certshift_*` name). Never reads the service itself: the admin API fills
//! a [`ServiceMetrics`] from the service's atomics, so this layer stays
//! below the engines.

use super::prometheus::{
    listener_families, rotation_failures_family, rotations_family, Families, Family, Labels, Values,
};
use crate::accept::ConnCounts;

/// A service's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct ServiceMetrics {
    pub listener: ConnCounts,
    /// Per rotating value, in the order shown: (kind, published, refused).
    pub reloads: Vec<(&'static str, u64, u64)>,
    /// Connections handed to the service (TLS or, permissive, plaintext).
    pub connections: u64,
    /// TLS handshakes the service refused (deadlines are the listener's).
    pub handshake_failures: u64,
    pub plaintext_connections: u64,
    /// Requests answered, by HTTP status, in status order.
    pub requests_by_status: Vec<(u16, u64)>,
}

impl ServiceMetrics {
    /// Prometheus text format 0.0.4 (see [`super::PROMETHEUS_CONTENT_TYPE`]).
    pub fn to_prometheus(&self) -> String {
        let unlabelled = |n: u64| Values::Counters(vec![(Labels::new(), n)]);
        let mut families = vec![
            rotations_family(self.reloads.iter().map(|(k, n, _)| (*k, *n))),
            rotation_failures_family(self.reloads.iter().map(|(k, _, n)| (*k, *n))),
            Family::counter(
                "certshift_serve_connections",
                "Connections the service took on (TLS, or plaintext in permissive mode).",
                unlabelled(self.connections),
            ),
            Family::counter(
                "certshift_serve_handshake_failures",
                "TLS handshakes the service refused (a bad or missing client certificate, a protocol error); handshakes closed at their deadline are certshift_listener_closed_total{reason=\"handshake_timeout\"}.",
                unlabelled(self.handshake_failures),
            ),
            Family::counter(
                "certshift_serve_plaintext_connections",
                "Plaintext connections served in permissive mode.",
                unlabelled(self.plaintext_connections),
            ),
            Family::counter(
                "certshift_serve_requests",
                "Requests answered, by HTTP status: 200 served, 403 denied by the policy, 495 a client certificate outside its validity at request time.",
                Values::Counters(
                    self.requests_by_status
                        .iter()
                        .map(|(status, n)| (vec![("status", status.to_string())], *n))
                        .collect(),
                ),
            ),
        ];
        families.extend(listener_families(Some(&self.listener)));
        Families(families).encode()
    }
}

#[cfg(test)]
mod tests {
    use openmetrics_parser::prometheus::parse_prometheus;
    use openmetrics_parser::PrometheusValue;

    use super::*;

    /// The value of the sample of `family` whose labels include `label`.
    fn value(text: &str, family: &str, label: Option<(&str, &str)>) -> f64 {
        let parsed = parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let f = parsed
            .families
            .get(family)
            .unwrap_or_else(|| panic!("no {family} in\n{text}"));
        let names = f.get_label_names().to_vec();
        let sample = f
            .iter_samples()
            .find(|s| {
                label.is_none_or(|(k, v)| {
                    names.iter().any(|n| n == k)
                        && s.get_labelset().unwrap().get_label_value(k) == Some(v)
                })
            })
            .unwrap_or_else(|| panic!("no {family} {label:?} in\n{text}"));
        match &sample.value {
            PrometheusValue::Counter(c) => c.value.as_f64(),
            PrometheusValue::Gauge(g) => g.as_f64(),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_service_is_exposed_in_the_proxys_families_and_its_own() {
        let m = ServiceMetrics {
            listener: ConnCounts {
                open: 3,
                in_handshake: 1,
                closed_handshake_timeout: 7,
                accept_errors: 5,
                fd_exhausted: 2,
                ..ConnCounts::default()
            },
            reloads: vec![("server", 2, 1), ("policy", 0, 4)],
            connections: 11,
            handshake_failures: 1,
            plaintext_connections: 0,
            requests_by_status: vec![(200, 9), (403, 2), (495, 0)],
        };
        let text = m.to_prometheus();
        let v = |f, l| value(&text, f, l);
        assert_eq!(v("certshift_listener_open_connections", None), 3.0);
        assert_eq!(v("certshift_listener_handshaking_connections", None), 1.0);
        let closed = "certshift_listener_closed_total";
        assert_eq!(v(closed, Some(("reason", "handshake_timeout"))), 7.0);
        assert_eq!(v(closed, Some(("reason", "header_timeout"))), 0.0);
        let errors = "certshift_listener_accept_errors_total";
        assert_eq!(v(errors, Some(("kind", "other"))), 3.0);
        assert_eq!(
            v("certshift_rotations_total", Some(("kind", "server"))),
            2.0
        );
        let failures = "certshift_rotation_failures_total";
        assert_eq!(v(failures, Some(("kind", "policy"))), 4.0);
        assert_eq!(v("certshift_serve_connections_total", None), 11.0);
        let requests = "certshift_serve_requests_total";
        assert_eq!(v(requests, Some(("status", "403"))), 2.0);
    }
}
