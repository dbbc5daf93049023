//! Writing the Prometheus text exposition format 0.0.4: family headers,
//! samples, label escaping, and a [`PhaseHist`] as a Prometheus histogram.
//!
//! Owns the format's rules and the bucket boundaries; which families exist is
//! `prom.rs`'s business. Writes to a `String` only, so nothing here can fail
//! except through `fmt::Result`, which a `String` never returns.

use std::fmt::Write as _;

use super::hist::PhaseHist;

/// Histogram bucket upper bounds: the `le` label text and the bound in µs.
/// The text is written out rather than formatted from a float so `le` values
/// stay byte-identical across platforms and releases (dashboards match on
/// them).
pub(super) const BUCKETS: [(&str, u64); 14] = [
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
];

/// `# HELP` and `# TYPE`; written for every family, samples or not.
pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

pub(super) fn sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: u64,
) -> std::fmt::Result {
    out.push_str(name);
    write_labels(out, labels);
    writeln!(out, " {value}")
}

/// Cumulative `_bucket`s read from the HdrHistogram (within its 3-digit
/// precision), then `_sum` (exact, in seconds) and `_count`. `+Inf` is the
/// count itself, so it always equals `_count`.
pub(super) fn histogram(
    out: &mut String,
    name: &str,
    label: Option<(&str, &str)>,
    h: &PhaseHist,
) -> std::fmt::Result {
    let base: Vec<(&str, &str)> = label.into_iter().collect();
    let bucket = format!("{name}_bucket");
    for (le, us) in BUCKETS {
        let labels = [base.as_slice(), &[("le", le)]].concat();
        sample(out, &bucket, &labels, h.count_le(us))?;
    }
    let labels = [base.as_slice(), &[("le", "+Inf")]].concat();
    sample(out, &bucket, &labels, h.count())?;
    out.push_str(name);
    out.push_str("_sum");
    write_labels(out, &base);
    writeln!(out, " {}", h.sum_us() as f64 / 1e6)?;
    sample(out, &format!("{name}_count"), &base, h.count())
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    out.push('}');
}

/// The three escapes the format defines for label values. Variant and kind
/// names come from config files and the admin API, so they can hold anything.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A strict reader of the subset of format 0.0.4 we emit, shared with the
/// tests of `prom.rs`.
#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    /// HELP then TYPE once per family, and every sample belongs to a family
    /// declared before it. Returns the declared types and the samples, or
    /// the offending line.
    pub fn parse(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
        let mut types = BTreeMap::new();
        let mut helped = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            let bad = || format!("bad line: {line:?}");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').ok_or_else(bad)?;
                if !valid_name(name) || help.is_empty() || helped.insert(name, ()).is_some() {
                    return Err(bad());
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(bad)?;
                let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !helped.contains_key(name) || !known.contains(&kind) {
                    return Err(bad());
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(bad());
                }
            } else {
                let s = parse_sample(line).ok_or_else(bad)?;
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|sfx| s.name.strip_suffix(sfx))
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                    .unwrap_or(&s.name);
                if !types.contains_key(family) {
                    return Err(format!("sample before its TYPE: {line:?}"));
                }
                samples.push(s);
            }
        }
        Ok((types, samples))
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// `name{k="v",...} value`, unescaping label values.
    pub fn parse_sample(line: &str) -> Option<Sample> {
        let end = line.find(['{', ' '])?;
        let name = &line[..end];
        if !valid_name(name) {
            return None;
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(mut body) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = body.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after_key) = body.split_once("=\"")?;
                if !valid_name(key) || key.contains(':') {
                    return None;
                }
                let mut value = String::new();
                let mut chars = after_key.char_indices();
                let close = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next()?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            _ => return None,
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_string(), value));
                body = &after_key[close + 1..];
                if let Some(after) = body.strip_prefix(',') {
                    body = after;
                } else if !body.starts_with('}') {
                    return None;
                }
            }
        }
        let value: f64 = match rest.strip_prefix(' ')? {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        Some(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    pub fn label<'a>(s: &'a Sample, key: &str) -> Option<&'a str> {
        s.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn declared(name: &str, kind: &str, body: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        header(&mut out, name, kind, "help").unwrap();
        body(&mut out);
        out
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_equals_count() {
        let mut h = PhaseHist::new();
        for us in [200, 800, 3_000, 40_000, 700_000, 30_000_000] {
            h.record(Duration::from_micros(us));
        }
        let text = declared("h", "histogram", |out| {
            histogram(out, "h", Some(("side", "up")), &h).unwrap()
        });
        let (_, samples) = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let buckets: Vec<&Sample> = samples.iter().filter(|s| s.name == "h_bucket").collect();
        assert!(buckets.iter().all(|s| label(s, "side") == Some("up")));
        let counts: Vec<f64> = buckets.iter().map(|s| s.value).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let le = |bound: &str| {
            buckets
                .iter()
                .find(|s| label(s, "le") == Some(bound))
                .unwrap()
                .value
        };
        assert_eq!(
            [
                le("0.0005"),
                le("0.001"),
                le("0.05"),
                le("1"),
                le("10"),
                le("+Inf")
            ],
            [1.0, 2.0, 4.0, 5.0, 5.0, 6.0],
            "30 s is only in +Inf"
        );
        let find = |n: &str| samples.iter().find(|s| s.name == n).unwrap().value;
        assert_eq!(find("h_count"), 6.0);
        assert!(
            (find("h_sum") - 30.744).abs() < 1e-9,
            "exact sum in seconds"
        );
    }

    #[test]
    fn label_values_are_escaped_and_round_trip() {
        let nasty = "a\"b\\c\nd";
        let text = declared("c", "counter", |out| {
            sample(out, "c", &[("k", nasty), ("z", "plain")], 3).unwrap()
        });
        assert!(text.contains(r#"c{k="a\"b\\c\nd",z="plain"} 3"#), "{text}");
        let (_, samples) = parse(&text).unwrap();
        assert_eq!(label(&samples[0], "k"), Some(nasty));
        assert_eq!(samples[0].value, 3.0);
    }

    #[test]
    fn the_parser_rejects_malformed_lines() {
        for bad in [
            "1bad_name 1",
            "m{k=\"v} 1",
            "m{k=\"v\\x\"} 1",
            "m{k=v} 1",
            "m 1.2.3",
            "m{k=\"v\"}1",
        ] {
            assert_eq!(parse_sample(bad), None, "{bad}");
        }
        assert!(parse_sample("m{k=\"v\",} 1").is_some());
        assert!(parse("# TYPE m counter").is_err(), "TYPE without HELP");
        assert!(parse("# HELP m x\n# TYPE m counter\nother 1").is_err());
        assert!(parse("# HELP m x\n# TYPE m counter\nm 1").is_ok());
    }
}
