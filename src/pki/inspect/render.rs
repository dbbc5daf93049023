//! The terminal rendering of `pki inspect`: one aligned block per
//! certificate, then the chain verdict. `--json` serialises the same report.

use std::fmt::Write as _;

use super::{CertReport, FileReport, ValidityState};

/// What the certificate is, judged from its own fields rather than its position,
/// so a misordered bundle is not mislabelled.
fn role(c: &CertReport) -> &'static str {
    match (c.is_ca, c.self_signed) {
        (true, true) => "root CA",
        (true, false) => "intermediate CA",
        (false, true) => "self-signed leaf",
        (false, false) => "leaf",
    }
}

/// Terminal rendering: one aligned block per certificate, then the chain verdict.
pub fn render_text(report: &FileReport) -> String {
    let total = report.certificates.len();
    let plural = if total == 1 { "" } else { "s" };
    let mut out = format!("{}: {total} certificate{plural}\n", report.file);
    if let Some(m) = &report.mutation {
        let _ = writeln!(
            out,
            "  {:<16}{} (a conforming validator must {} it): {}\n  {:<16}{}",
            "mutation:", m.name, m.expect, m.changes, "rule:", m.rule
        );
    }
    let join = |items: &[String]| (!items.is_empty()).then(|| items.join(", "));
    for (i, c) in report.certificates.iter().enumerate() {
        let _ = writeln!(out, "\ncertificate {} of {total} ({})", i + 1, role(c));
        let state = match c.validity.state {
            ValidityState::Valid => "OK",
            ValidityState::Expired => "EXPIRED",
            ValidityState::NotYetValid => "NOT YET VALID",
        };
        let s = &c.sans;
        let no_sans = [&s.dns, &s.ip, &s.uri, &s.email]
            .iter()
            .all(|v| v.is_empty());
        let ca = match (c.is_ca, c.path_len) {
            (false, _) => "no".to_string(),
            (true, Some(n)) => format!("yes (path length {n})"),
            (true, None) => "yes (path length unlimited)".to_string(),
        };
        let curve = c.key.curve.as_ref().map(|n| format!(" ({n})"));
        let key = format!(
            "{} {} bits{}",
            c.key.algorithm,
            c.key.size_bits,
            curve.unwrap_or_default()
        );
        // An absent EKU extension permits every purpose, which matters for mTLS.
        let any_purpose = "(not present, any purpose)".to_string();
        // Optional rows are skipped when empty so the eye lands on what is there.
        let rows: [(&str, Option<String>); 19] = [
            ("subject", Some(c.subject.clone())),
            ("issuer", Some(c.issuer.clone())),
            ("spiffe id", c.spiffe_id.clone()),
            ("status", Some(format!("{state}, {}", c.validity.hint))),
            ("not before", Some(c.not_before.clone())),
            ("not after", Some(c.not_after.clone())),
            ("sans", no_sans.then(|| "(none)".to_string())),
            ("dns names", join(&s.dns)),
            ("ip addresses", join(&s.ip)),
            ("uris", join(&s.uri)),
            ("emails", join(&s.email)),
            ("ca", Some(ca)),
            ("key", Some(key)),
            (
                "key usage",
                join(&c.key_usage).or(Some("(not present)".into())),
            ),
            (
                "ext key usage",
                join(&c.extended_key_usage).or(Some(any_purpose)),
            ),
            ("signature", Some(c.signature_algorithm.clone())),
            ("serial", Some(c.serial.clone())),
            ("sha256", Some(c.sha256_fingerprint.clone())),
            (
                "self-signed",
                Some(if c.self_signed { "yes" } else { "no" }.to_string()),
            ),
        ];
        for (label, value) in rows {
            if let Some(value) = value {
                let _ = writeln!(out, "  {:<16}{value}", format!("{label}:"));
            }
        }
    }
    if let Some(chain) = &report.chain {
        let verdict = if chain.leaf_to_root {
            "leaf-to-root"
        } else {
            "NOT leaf-to-root"
        };
        let _ = writeln!(out, "\n  {:<16}{verdict}: {}", "chain order:", chain.detail);
    }
    out
}
