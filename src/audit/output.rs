//! The audit's report: per target, one row per check. Rendered as a table
//! for people, JSON for scripts, JUnit XML for CI (one testsuite per target,
//! one testcase per check; INCONCLUSIVE and SKIP are `skipped`, so the
//! failure count is exactly the FAIL count).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::check::{checks, Defaults, Profile};
use super::experiment::Ctx;
use super::judge::{evidence, CheckResult, Verdict};
use super::target::Target;

/// Verdict counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub info: usize,
    pub inconclusive: usize,
    pub skip: usize,
}

impl Summary {
    fn of<'a>(checks: impl Iterator<Item = &'a CheckResult>) -> Self {
        let mut s = Summary::default();
        for c in checks {
            *match c.verdict {
                Verdict::Pass => &mut s.pass,
                Verdict::Fail => &mut s.fail,
                Verdict::Info => &mut s.info,
                Verdict::Inconclusive => &mut s.inconclusive,
                Verdict::Skip => &mut s.skip,
            } += 1;
        }
        s
    }

    fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} info, {} inconclusive, {} skipped",
            self.pass, self.fail, self.info, self.inconclusive, self.skip
        )
    }
}

/// One target's audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    pub target: String,
    pub address: String,
    pub server_name: String,
    pub path: String,
    pub profile: Profile,
    pub identity: String,
    pub other_identity: Option<String>,
    pub tls_versions: Vec<String>,
    pub duration_ms: u64,
    pub summary: Summary,
    pub checks: Vec<CheckResult>,
}

impl TargetReport {
    pub(super) fn new(
        t: &Target,
        ctx: &Ctx,
        profile: Profile,
        checks: Vec<CheckResult>,
        took: Duration,
    ) -> Self {
        TargetReport {
            target: t.label.clone(),
            address: ctx.addr.to_string(),
            server_name: server_name(ctx),
            path: ctx.path.clone(),
            profile,
            identity: ctx.identity.name.clone(),
            other_identity: ctx.other.as_ref().map(|o| o.name.clone()),
            tls_versions: ctx.versions.iter().map(|v| v.to_string()).collect(),
            duration_ms: took.as_millis() as u64,
            summary: Summary::of(checks.iter()),
            checks,
        }
    }
}

pub(super) fn server_name(ctx: &Ctx) -> String {
    match &ctx.server_name {
        rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_string(),
        rustls_pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The whole audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditReport {
    /// The JSON contract's version.
    pub certshift_audit: u32,
    pub passed: bool,
    pub summary: Summary,
    pub duration_ms: u64,
    pub targets: Vec<TargetReport>,
}

impl AuditReport {
    pub(super) fn new(targets: Vec<TargetReport>, took: Duration) -> Self {
        let summary = Summary::of(targets.iter().flat_map(|t| t.checks.iter()));
        AuditReport {
            certshift_audit: 1,
            passed: summary.fail == 0,
            summary,
            duration_ms: took.as_millis() as u64,
            targets,
        }
    }

    /// No check failed.
    pub fn passed(&self) -> bool {
        self.passed
    }
}

/// The table: check, expected, observed evidence, verdict; the hint, a
/// warning, notes or the reason for INCONCLUSIVE/SKIP on indented lines.
pub fn table(r: &AuditReport) -> String {
    let mut out = String::new();
    for t in &r.targets {
        out += &format!(
            "audit of {} ({}, server name {}, path {}, profile {}, TLS {}, identity {}{})\n",
            t.target,
            t.address,
            t.server_name,
            t.path,
            t.profile,
            t.tls_versions.join(", "),
            t.identity,
            t.other_identity
                .as_ref()
                .map(|o| format!(", other identity {o}"))
                .unwrap_or_default()
        );
        let rows: Vec<(&CheckResult, String)> = t
            .checks
            .iter()
            .map(|c| {
                let e = evidence(&c.observed);
                (c, if e.is_empty() { "-".into() } else { e })
            })
            .collect();
        let w_id = rows
            .iter()
            .map(|(c, _)| c.id.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let w_ev = rows
            .iter()
            .map(|(_, e)| e.chars().count())
            .max()
            .unwrap_or(8)
            .clamp(8, 72);
        out += &format!(
            "  {:<w_id$}  {:<8}  {:<w_ev$}  {}\n",
            "check", "expected", "observed", "verdict"
        );
        for (c, e) in rows {
            out += &format!(
                "  {:<w_id$}  {:<8}  {:<w_ev$}  {}\n",
                c.id,
                c.expected.to_string(),
                e,
                c.verdict_text()
            );
            let pad = " ".repeat(w_id + 4);
            if let Some(h) = c.hint {
                out += &format!("{pad}hint: {h}\n");
            }
            if let Some(w) = &c.warning {
                out += &format!("{pad}warning: {w}\n");
            }
            if let Some(why) = &c.reason {
                out += &format!("{pad}{}: {why}\n", c.verdict.to_string().to_lowercase());
            }
            for n in &c.notes {
                out += &format!("{pad}note: {n}\n");
            }
        }
        out += &format!(
            "  {} ({:.1} s)\n\n",
            t.summary.line(),
            t.duration_ms as f64 / 1000.0
        );
    }
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    out += &format!(
        "audit {verdict}: {} target(s), {}\n",
        r.targets.len(),
        r.summary.line()
    );
    out
}

/// `--list-checks`.
pub fn check_list() -> String {
    let spiffe = Defaults {
        profile: Profile::Spiffe,
        max_skew: false,
        strict: false,
    };
    let x509 = Defaults {
        profile: Profile::X509,
        ..spiffe
    };
    let w = checks().iter().map(|c| c.id.len()).max().unwrap_or(5);
    let mut out = format!(
        "{:<w$}  {:<12}  {:<8}  {:<8}  tests that\n",
        "check", "category", "spiffe", "x509"
    );
    for c in checks() {
        out += &format!(
            "{:<w$}  {:<12}  {:<8}  {:<8}  {}\n",
            c.id,
            c.category.name(),
            (c.default)(spiffe).to_string(),
            (c.default)(x509).to_string(),
            c.about
        );
    }
    out
}

/// Any of the audit's JSON documents (the report, `--fuzz`,
/// `--differential`) to `--json FILE`.
pub fn write_json(r: &impl serde::Serialize, path: &Path) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(r)?;
    std::fs::write(path, bytes).with_context(|| format!("--json: writing {}", path.display()))
}

/// The JUnit document.
pub fn junit(r: &AuditReport) -> Report {
    let mut report = Report::new("certshift audit");
    report.set_time(Duration::from_millis(r.duration_ms));
    for t in &r.targets {
        let mut suite = TestSuite::new(t.target.clone());
        suite.set_time(Duration::from_millis(t.duration_ms));
        for c in &t.checks {
            let detail = || {
                let mut d = c.evidence.clone();
                for (what, v) in [
                    ("hint", c.hint.map(str::to_string)),
                    ("warning", c.warning.clone()),
                    ("reason", c.reason.clone()),
                ] {
                    if let Some(v) = v {
                        d += &format!("\n{what}: {v}");
                    }
                }
                d
            };
            let status = match c.verdict {
                Verdict::Pass | Verdict::Info => TestCaseStatus::success(),
                Verdict::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!("expected {}, observed {}", c.expected, c.evidence));
                    s.set_type("enforcement");
                    s.set_description(detail());
                    s
                }
                Verdict::Inconclusive | Verdict::Skip => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(format!(
                        "{}: {}",
                        c.verdict.to_string().to_lowercase(),
                        c.reason.clone().unwrap_or_default()
                    ));
                    s
                }
            };
            let mut case = TestCase::new(c.id, status);
            case.set_classname(format!("certshift.audit.{}", c.category.name()));
            case.set_time(Duration::from_millis(c.duration_ms));
            case.set_system_out(format!("{}: {}", c.verdict, detail()));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report
}

pub fn write_junit(r: &AuditReport, path: &Path) -> anyhow::Result<()> {
    let xml = junit(r).to_string().context("serializing JUnit")?;
    std::fs::write(path, xml).with_context(|| format!("--junit: writing {}", path.display()))
}
