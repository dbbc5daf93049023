//! `certshift audit --target A --target B --differential` (the Frankencerts
//! idea): present the same certificates to every target and keep only the
//! rows where they disagree. No expectation is needed: two validators that
//! decide differently about one certificate cannot both be right.
//!
//! A row **disagrees** when the decision differs: one target accepted what
//! another refused (or one decided and another did not answer), overall or
//! on any attempt the targets both made (same label: TLS version, `expired
//! 1h`, ...). These rows are the table, and exit 1.
//!
//! When every target refused, but at different **layers** (a TLS alert
//! here, an HTTP 400 after the handshake or a silent close there), the row
//! is **minor**: listed by id under the table and in the JSON, never exit 1.
//! That is how a refusal is expressed, not whether the certificate was
//! validated: a rustls service (alert) against nginx (400) differs in it on
//! every refused check, and gating on it would hide the rows that matter.
//! Refusals at the same layer in other words (`bad_certificate` vs
//! `unknown_ca`, 400 vs 403) agree. A check skipped on any target (no
//! `--other-identity`, no CA key) is not compared.
//!
//! Never: judges a target against an expectation (that is `judge`).

use anyhow::{bail, Context};
use futures_util::StreamExt;

use super::experiment::Decision;
use super::fuzz::{self, Class, FuzzTargetReport, Settings};
use super::judge::{CheckResult, Verdict};
use super::AuditArgs;
use crate::tls::Outcome;

/// How two or more targets differ on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One accepted what another refused (or did not answer).
    Decision,
    /// All refused, at different layers: minor.
    Layer,
}

/// What one target did with one row's certificate(s).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Did {
    /// `200`, `alert:unknown_ca`, `403`, `closed`; per attempt when the
    /// attempts differ (`1.3 200, 1.2 400`).
    pub did: String,
    pub decision: Decision,
    /// Per attempt: label, decision, layer (`tls`, `http`, `reset`, `close`,
    /// `none`).
    #[serde(skip)]
    attempts: Vec<(String, Decision, &'static str)>,
}

/// One row: a check (or a fuzz case) and what each target did with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// A check id, or `fuzz:<case>`.
    pub id: String,
    pub about: String,
    /// `None`: the targets agree.
    pub kind: Option<Kind>,
    /// In `targets` order.
    pub did: Vec<Did>,
}

/// The comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DifferentialReport {
    /// The JSON contract's version.
    pub certshift_differential: u32,
    pub targets: Vec<String>,
    /// Rows compared (checks run on every target, fuzz cases).
    pub compared: usize,
    /// Rows whose decisions differ (`rows.len()`).
    pub disagree: usize,
    /// Checks skipped on some target, so not compared.
    pub skipped: Vec<String>,
    /// `--fuzz` seed, when cases were compared.
    pub seed: Option<u64>,
    /// The rows whose decisions differ.
    pub rows: Vec<Row>,
    /// The rows every target refused, at different layers.
    pub minor: Vec<Row>,
}

impl DifferentialReport {
    pub fn passed(&self) -> bool {
        self.disagree == 0
    }
}

/// `certshift audit --differential`: `Ok(false)` when the targets disagree.
pub async fn command(args: &AuditArgs) -> anyhow::Result<bool> {
    if args.junit.is_some() {
        bail!("--junit reports the check registry; with --differential use --json FILE");
    }
    let settings = args.fuzz.map(|_| Settings::from_args(args));
    if let Some(s) = &settings {
        println!(
            "fuzz: {} cases, seed {} (repeat with --fuzz {} --seed {})",
            s.cases, s.seed, s.cases, s.seed
        );
    }
    let report = run(args, settings.as_ref()).await?;
    print!("{}", table(&report));
    if let Some(path) = &args.json {
        super::output::write_json(&report, path)?;
        println!("report written to {}", path.display());
    }
    Ok(report.passed())
}

/// Run the registry (and the fuzz cases of `fuzz`) against every target;
/// compare. Fewer than two targets is a usage error.
pub async fn run(args: &AuditArgs, fuzz: Option<&Settings>) -> anyhow::Result<DifferentialReport> {
    let ctxs = super::contexts(args).await?;
    if ctxs.len() < 2 {
        bail!(
            "--differential compares targets: give two or more (--target A --target B, or --targets FILE); got {}",
            ctxs.len()
        );
    }
    let labels: Vec<String> = ctxs.iter().map(|(t, _)| t.label.clone()).collect();
    let audit = super::run_on(args, ctxs).await;
    let per_target: Vec<&[CheckResult]> = audit.targets.iter().map(|t| &t.checks[..]).collect();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    if let Some(first) = per_target.first() {
        for (i, c) in first.iter().enumerate() {
            let results: Vec<&CheckResult> = per_target.iter().filter_map(|t| t.get(i)).collect();
            if results.len() < per_target.len()
                || results.iter().any(|r| r.verdict == Verdict::Skip)
            {
                skipped.push(c.id.to_string());
                continue;
            }
            let did: Vec<Did> = results.iter().map(|r| did_check(r)).collect();
            rows.push(row(c.id.to_string(), c.about.to_string(), did));
        }
    }
    if let Some(settings) = fuzz {
        rows.extend(fuzz_rows(args, settings).await?);
    }
    let compared = rows.len();
    let (minor, rows): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .filter(|r| r.kind.is_some())
        .partition(|r| r.kind == Some(Kind::Layer));
    Ok(DifferentialReport {
        certshift_differential: 1,
        targets: labels,
        compared,
        disagree: rows.len(),
        skipped,
        seed: fuzz.map(|s| s.seed),
        rows,
        minor,
    })
}

/// The same fuzz cases (made from the first target's identity) against
/// every target, one row per case.
async fn fuzz_rows(args: &AuditArgs, settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let ctxs = super::contexts(args).await?;
    let Some((first_target, first)) = ctxs.first() else {
        return Ok(Vec::new());
    };
    let cases = fuzz::prepare(first, settings.seed, settings.cases)
        .with_context(|| format!("target {}", first_target.label))?;
    let leaf = |c: &super::experiment::Ctx| c.identity.key.cert.first().cloned();
    if let Some((t, _)) = ctxs.iter().find(|(_, c)| leaf(c) != leaf(first)) {
        bail!(
            "--differential --fuzz presents the same certificates to every target: {} uses another identity than {}",
            t.label,
            first_target.label
        );
    }
    let cases = &cases;
    let reports: Vec<FuzzTargetReport> = futures_util::stream::iter(ctxs)
        .map(|(t, ctx)| async move { fuzz::fuzz_target(&t, ctx, cases, settings).await })
        .buffered(args.concurrency as usize)
        .collect()
        .await;
    Ok(cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let did = reports
                .iter()
                .filter_map(|r| r.cases.get(i))
                .map(|c| did_class(&c.class))
                .collect();
            row(
                format!("fuzz:{}", case.index),
                case.description.clone(),
                did,
            )
        })
        .collect())
}

fn row(id: String, about: String, did: Vec<Did>) -> Row {
    Row {
        kind: disagreement(&did),
        id,
        about,
        did,
    }
}

/// How the targets' results differ, if they do.
fn disagreement(did: &[Did]) -> Option<Kind> {
    let first = did.first()?;
    let decisions_differ = did.iter().any(|d| {
        d.decision != first.decision
            || d.attempts.iter().any(|(label, decision, _)| {
                first
                    .attempts
                    .iter()
                    .any(|(l, f, _)| l == label && f != decision)
            })
    });
    if decisions_differ {
        return Some(Kind::Decision);
    }
    let layers = |d: &Did| {
        let mut l: Vec<&str> = d
            .attempts
            .iter()
            .filter(|(_, decision, _)| *decision == Decision::Refused)
            .map(|(_, _, layer)| *layer)
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let refused = first.decision == Decision::Refused;
    (refused && did.iter().any(|d| layers(d) != layers(first))).then_some(Kind::Layer)
}

/// What a target did in one check.
fn did_check(r: &CheckResult) -> Did {
    let shorts: Vec<String> = r.observed.iter().map(|s| short(&s.outcome)).collect();
    let did = match shorts.first() {
        None => r.verdict.to_string().to_lowercase(),
        Some(f) if shorts.iter().all(|s| s == f) => f.clone(),
        Some(_) => r
            .observed
            .iter()
            .zip(&shorts)
            .map(|(s, o)| format!("{} {o}", s.label))
            .collect::<Vec<_>>()
            .join(", "),
    };
    Did {
        did,
        decision: r.decision,
        attempts: r
            .observed
            .iter()
            .map(|s| (s.label.clone(), s.decision, s.layer))
            .collect(),
    }
}

/// What a target did with one fuzz case.
fn did_class(c: &Class) -> Did {
    let (decision, layer) = match c {
        Class::Accepted { .. } => (Decision::Accepted, "http"),
        Class::RefusedAlert { .. } => (Decision::Refused, "tls"),
        Class::RefusedHttp { .. } => (Decision::Refused, "http"),
        Class::ClosedWithoutAlert => (Decision::Refused, "close"),
        Class::Reset => (Decision::Refused, "reset"),
        _ => (Decision::Unknown, "none"),
    };
    Did {
        did: c.short(),
        decision,
        attempts: vec![("case".into(), decision, layer)],
    }
}

/// `200`, `alert:unknown_ca`, `closed`, `reset`, `timeout`.
fn short(o: &Outcome) -> String {
    match o {
        Outcome::Http(s) => s.to_string(),
        Outcome::Alert(a) => format!("alert:{a}"),
        Outcome::ClosedEarly => "closed".into(),
        Outcome::Reset => "reset".into(),
        Outcome::HandshakeTimeout | Outcome::Timeout | Outcome::ConnectTimeout => "timeout".into(),
        other => other.to_string(),
    }
}

/// The rows that disagree, one column per target (A, B, ... with a
/// legend), then the footer.
pub fn table(r: &DifferentialReport) -> String {
    let mut out = format!("differential audit of {} targets:\n", r.targets.len());
    let names: Vec<String> = (0..r.targets.len()).map(column_name).collect();
    for (n, t) in names.iter().zip(&r.targets) {
        out += &format!("  {n} = {t}\n");
    }
    if !r.rows.is_empty() {
        let w_id = r.rows.iter().map(|x| x.id.len()).max().unwrap_or(5).max(5);
        let w: Vec<usize> = (0..r.targets.len())
            .map(|i| {
                r.rows
                    .iter()
                    .filter_map(|x| x.did.get(i).map(|d| d.did.chars().count()))
                    .max()
                    .unwrap_or(1)
                    .clamp(names[i].len(), 40)
            })
            .collect();
        let mut line = format!("  {:<w_id$}", "check");
        for (n, w) in names.iter().zip(&w) {
            line += &format!("  {n:<w$}");
        }
        out += line.trim_end();
        out += "\n";
        for row in &r.rows {
            let mut line = format!("  {:<w_id$}", row.id);
            for (d, w) in row.did.iter().zip(&w) {
                line += &format!("  {:<w$}", d.did);
            }
            out += line.trim_end();
            out += "\n";
            if row.id.starts_with("fuzz:") {
                out += &format!("  {:<w_id$}  {}\n", "", row.about);
            }
        }
    }
    if !r.minor.is_empty() {
        let ids: Vec<&str> = r.minor.iter().map(|x| x.id.as_str()).collect();
        out += &format!(
            "  refused by every target, at different layers (minor; --json has what each did): {}\n",
            ids.join(", ")
        );
    }
    if !r.skipped.is_empty() {
        out += &format!(
            "  not compared (skipped on a target): {}\n",
            r.skipped.join(", ")
        );
    }
    out += &format!(
        "differential {}: {} checks compared, {} disagree ({} minor: refused at another layer)\n",
        if r.passed() { "AGREE" } else { "DISAGREE" },
        r.compared,
        r.disagree,
        r.minor.len()
    );
    out
}

/// `A`, `B`, ..., `Z`, `T27`, ...
fn column_name(i: usize) -> String {
    match u8::try_from(i) {
        Ok(n) if n < 26 => char::from(b'A' + n).to_string(),
        _ => format!("T{}", i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn did(decision: Decision, attempts: &[(&str, Decision, &'static str)]) -> Did {
        Did {
            did: String::new(),
            decision,
            attempts: attempts
                .iter()
                .map(|(l, d, y)| (l.to_string(), *d, *y))
                .collect(),
        }
    }

    use Decision::{Accepted as A, Refused as R, Unknown as U};

    #[test]
    fn a_different_decision_is_major_a_different_layer_minor_different_words_agree() {
        let alert = did(R, &[("1.3", R, "tls"), ("1.2", R, "tls")]);
        let http = did(R, &[("1.3", R, "http"), ("1.2", R, "http")]);
        let ok = did(A, &[("1.3", A, "http"), ("1.2", A, "http")]);
        assert_eq!(
            disagreement(&[alert.clone(), ok.clone()]),
            Some(Kind::Decision)
        );
        assert_eq!(
            disagreement(&[alert.clone(), http.clone()]),
            Some(Kind::Layer)
        );
        assert_eq!(disagreement(&[alert.clone(), alert.clone()]), None);
        assert_eq!(disagreement(&[ok.clone(), ok.clone()]), None);
        let silent = did(U, &[("1.3", U, "none")]);
        assert_eq!(disagreement(&[alert, silent]), Some(Kind::Decision));
    }

    #[test]
    fn attempts_that_differ_under_the_same_overall_decision_disagree() {
        // clock-skew: both "refused" overall, one tolerates expired 1m.
        let strict = did(R, &[("expired 1m", R, "tls"), ("expired 1h", R, "tls")]);
        let lenient = did(R, &[("expired 1m", A, "http"), ("expired 1h", R, "tls")]);
        assert_eq!(disagreement(&[strict, lenient]), Some(Kind::Decision));
    }

    #[test]
    fn columns_are_letters_then_numbers() {
        assert_eq!(column_name(0), "A");
        assert_eq!(column_name(25), "Z");
        assert_eq!(column_name(26), "T27");
    }
}
