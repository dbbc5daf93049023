//! The fuzz report: per target, how many cases ended each way and the
//! flagged ones. Rendered as a table, as JSON (`certshift_fuzz: 1`), and as
//! files a user replays a flagged case with.
//!
//! JSON shape, version 1 (fields are added, never renamed):
//!
//! ```text
//! { "certshift_fuzz": 1, "seed": 42, "cases": 200, "passed": false, "flagged": 3,
//!   "duration_ms": 1234,
//!   "targets": [ { "target": "https://...", "address": "127.0.0.1:8443",
//!       "tls_version": "1.3", "identity": "order-service",
//!       "sanity_failed": null,          // or why nothing was presented
//!       "still_answering": true,        // the valid identity after the last case
//!       "counts": [ { "outcome": "refused: alert bad_certificate", "flagged": false, "count": 190 }, ... ],
//!       "flagged": 3, "out_dir": "certshift-fuzz/127.0.0.1_8443",
//!       "cases": [ { "case": 17, "description": "extensions[2].value: length +1",
//!                    "class": { "class": "closed_without_alert" }, "outcome": "closed_early",
//!                    "flagged": true, "pem": "certshift-fuzz/127.0.0.1_8443/case-17.pem" }, ... ] } ] }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{absolute, PreparedCase, Settings};
use crate::audit::experiment::Ctx;
use crate::audit::target::Target;
use crate::tls::{Outcome, TlsVersion};

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Class {
    /// An HTTP answer with a non-refusal status (or data without one).
    Accepted {
        status: Option<u16>,
    },
    RefusedAlert {
        alert: String,
    },
    RefusedHttp {
        status: u16,
    },
    /// Flagged: the connection ended without an alert or a response.
    ClosedWithoutAlert,
    /// Flagged.
    Reset,
    /// Flagged: no answer within the audit's --timeout.
    Timeout,
    /// Flagged: after this case the valid identity was no longer accepted.
    StoppedAnswering,
    /// Anything else (our own side failed, connect refused while the target
    /// still answers): not the service's fault as far as we can tell.
    Other {
        what: String,
    },
    /// Not presented (the sanity check failed, or the target was down).
    NotRun {
        why: String,
    },
}

impl Class {
    /// What no service may do with any certificate.
    pub fn flagged(&self) -> bool {
        matches!(
            self,
            Class::ClosedWithoutAlert | Class::Reset | Class::Timeout | Class::StoppedAnswering
        )
    }

    /// Worth asking whether the target is still up.
    pub fn suspicious(&self) -> bool {
        self.flagged() || matches!(self, Class::Other { what } if what.starts_with("connect_"))
    }

    /// Short, for differential columns: `200`, `alert:bad_certificate`,
    /// `403`, `closed`, `reset`, `timeout`, `down`.
    pub fn short(&self) -> String {
        match self {
            Class::Accepted { status: Some(s) } => s.to_string(),
            Class::Accepted { status: None } => "accepted".into(),
            Class::RefusedAlert { alert } => format!("alert:{alert}"),
            Class::RefusedHttp { status } => status.to_string(),
            Class::ClosedWithoutAlert => "closed".into(),
            Class::Reset => "reset".into(),
            Class::Timeout => "timeout".into(),
            Class::StoppedAnswering => "down".into(),
            Class::Other { what } => what.clone(),
            Class::NotRun { .. } => "not-run".into(),
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Accepted { status: Some(s) } => write!(f, "accepted {s}"),
            Class::Accepted { status: None } => f.write_str("accepted"),
            Class::RefusedAlert { alert } => write!(f, "refused: alert {alert}"),
            Class::RefusedHttp { status } => write!(f, "refused: HTTP {status}"),
            Class::ClosedWithoutAlert => f.write_str("closed without alert"),
            Class::Reset => f.write_str("reset"),
            Class::Timeout => f.write_str("timeout"),
            Class::StoppedAnswering => f.write_str("target stopped answering"),
            Class::Other { what } => write!(f, "other: {what}"),
            Class::NotRun { why } => write!(f, "not run: {why}"),
        }
    }
}

/// One case against one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub case: usize,
    pub description: String,
    pub class: Class,
    /// The raw outcome (`alert:bad_certificate`, `closed_early`).
    pub outcome: String,
    pub flagged: bool,
    /// The chain written for a flagged case.
    pub pem: Option<PathBuf>,
}

impl CaseResult {
    pub fn new(c: &PreparedCase, class: Class, outcome: &Outcome) -> Self {
        CaseResult {
            case: c.index,
            description: c.description.clone(),
            flagged: class.flagged(),
            class,
            outcome: outcome.to_string(),
            pem: None,
        }
    }

    pub fn not_run(c: &PreparedCase, why: &str) -> Self {
        CaseResult {
            case: c.index,
            description: c.description.clone(),
            class: Class::NotRun { why: why.into() },
            outcome: "-".into(),
            flagged: false,
            pem: None,
        }
    }
}

/// How many cases ended one way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Count {
    pub outcome: String,
    pub flagged: bool,
    pub count: usize,
}

/// One target's fuzz run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FuzzTargetReport {
    pub target: String,
    pub address: String,
    pub tls_version: Option<String>,
    pub identity: String,
    /// Why no case was presented.
    pub sanity_failed: Option<String>,
    /// The valid identity was accepted after the last case.
    pub still_answering: bool,
    pub counts: Vec<Count>,
    pub flagged: usize,
    pub out_dir: Option<PathBuf>,
    /// Writing the flagged cases out failed.
    pub write_error: Option<String>,
    pub duration_ms: u64,
    pub cases: Vec<CaseResult>,
}

impl FuzzTargetReport {
    pub fn new(
        t: &Target,
        ctx: &Ctx,
        version: Option<TlsVersion>,
        sanity_failed: Option<String>,
        cases: Vec<CaseResult>,
        still_answering: bool,
        took: Duration,
    ) -> Self {
        let mut by: BTreeMap<&Class, usize> = BTreeMap::new();
        for c in &cases {
            *by.entry(&c.class).or_default() += 1;
        }
        let counts = by
            .into_iter()
            .map(|(class, count)| Count {
                outcome: class.to_string(),
                flagged: class.flagged(),
                count,
            })
            .collect();
        FuzzTargetReport {
            target: t.label.clone(),
            address: ctx.addr.to_string(),
            tls_version: version.map(|v| v.to_string()),
            identity: ctx.identity.name.clone(),
            sanity_failed,
            still_answering,
            counts,
            flagged: cases.iter().filter(|c| c.flagged).count(),
            out_dir: None,
            write_error: None,
            duration_ms: took.as_millis() as u64,
            cases,
        }
    }

    /// Nothing flagged, the sanity check passed, the target still answers.
    pub fn passed(&self) -> bool {
        self.flagged == 0
            && self.sanity_failed.is_none()
            && self.still_answering
            && self.write_error.is_none()
    }
}

/// The whole fuzz run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FuzzReport {
    /// The JSON contract's version.
    pub certshift_fuzz: u32,
    pub seed: u64,
    pub cases: usize,
    pub passed: bool,
    pub flagged: usize,
    pub duration_ms: u64,
    pub targets: Vec<FuzzTargetReport>,
}

impl FuzzReport {
    pub fn new(settings: &Settings, targets: Vec<FuzzTargetReport>, took: Duration) -> Self {
        FuzzReport {
            certshift_fuzz: 1,
            seed: settings.seed,
            cases: settings.cases,
            passed: targets.iter().all(FuzzTargetReport::passed),
            flagged: targets.iter().map(|t| t.flagged).sum(),
            duration_ms: took.as_millis() as u64,
            targets,
        }
    }
}

/// Counts, then the flagged cases with their number and description.
pub fn table(r: &FuzzReport) -> String {
    let mut out = String::new();
    for t in &r.targets {
        out += &format!(
            "fuzz of {} ({}, TLS {}, identity {}): {} cases, seed {}\n",
            t.target,
            t.address,
            t.tls_version.as_deref().unwrap_or("-"),
            t.identity,
            t.cases.len(),
            r.seed
        );
        if let Some(why) = &t.sanity_failed {
            out += &format!("  sanity check FAILED: {why}\n");
        }
        let w = t
            .counts
            .iter()
            .map(|c| c.outcome.len())
            .max()
            .unwrap_or(7)
            .max(7);
        out += &format!("  {:<w$}  {:>5}\n", "outcome", "cases");
        for c in &t.counts {
            let flag = if c.flagged { "  FLAGGED" } else { "" };
            out += &format!("  {:<w$}  {:>5}{flag}\n", c.outcome, c.count);
        }
        let flagged: Vec<&CaseResult> = t.cases.iter().filter(|c| c.flagged).collect();
        if !flagged.is_empty() {
            out += "  flagged cases:\n";
            out += &format!("    {:>5}  {:<26}  description\n", "case", "outcome");
            for c in flagged {
                out += &format!(
                    "    {:>5}  {:<26}  {}\n",
                    c.case,
                    c.class.to_string(),
                    c.description
                );
            }
        }
        if let Some(dir) = &t.out_dir {
            out += &format!(
                "  flagged certificates and curl commands: {}\n",
                dir.join("README").display()
            );
        }
        if let Some(e) = &t.write_error {
            out += &format!("  could not write the flagged cases: {e}\n");
        }
        if t.sanity_failed.is_none() {
            out += if t.still_answering {
                "  after the last case the target still accepts the valid identity\n"
            } else {
                "  FLAGGED: after the last case the target no longer accepts the valid identity (crashed?)\n"
            };
        }
        out += &format!("  ({:.1} s)\n\n", t.duration_ms as f64 / 1000.0);
    }
    out += &format!(
        "fuzz {}: {} target(s), {} cases each, {} flagged; repeat with --fuzz {} --seed {}\n",
        if r.passed { "PASS" } else { "FAIL" },
        r.targets.len(),
        r.cases,
        r.flagged,
        r.cases,
        r.seed
    );
    out
}

/// Write each flagged case of `report` as `<out>/<host_port>/case-<i>.pem`
/// (the chain presented) and a README line with the curl command that
/// presents it again with the identity's key.
pub fn write_flagged(
    report: &mut FuzzTargetReport,
    cases: &[PreparedCase],
    ctx: &Ctx,
    settings: &Settings,
) -> anyhow::Result<()> {
    if report.flagged == 0 {
        return Ok(());
    }
    let dir = settings.out.join(dir_name(&ctx.addr.to_string()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("--fuzz-out: creating {}", dir.display()))?;
    let key = match &ctx.identity.key_file {
        Some(k) => absolute(k).display().to_string(),
        None => "IDENTITY_KEY.pem".into(),
    };
    let name = crate::audit::output::server_name(ctx);
    let url = format!("https://{name}:{}{}", ctx.addr.port(), ctx.path);
    let resolve = format!("{name}:{}:{}", ctx.addr.port(), ctx.addr.ip());
    let mut readme = format!(
        "certshift audit --fuzz {} --seed {} against {}: flagged cases.\n\
         Replay one with curl (curl/OpenSSL refuses to load a certificate it cannot parse;\n\
         then present it with `certshift audit --fuzz {} --seed {}` again):\n\n",
        settings.cases, settings.seed, report.target, settings.cases, settings.seed
    );
    for r in report.cases.iter_mut().filter(|r| r.flagged) {
        let Some(case) = cases.iter().find(|c| c.index == r.case) else {
            continue;
        };
        let pem: String = case.chain.iter().map(crate::pki::pem_cert).collect();
        let file = dir.join(format!("case-{}.pem", r.case));
        std::fs::write(&file, pem)
            .with_context(|| format!("--fuzz-out: writing {}", file.display()))?;
        readme += &format!(
            "# case {} ({}): {}\ncurl -sv {} --resolve {resolve} --cert {} --key {key} {url}\n\n",
            r.case,
            r.description,
            r.class,
            settings.curl_trust,
            absolute(&file).display(),
        );
        r.pem = Some(file);
    }
    let path = dir.join("README");
    std::fs::write(&path, readme)
        .with_context(|| format!("--fuzz-out: writing {}", path.display()))?;
    report.out_dir = Some(dir);
    Ok(())
}

/// `127.0.0.1:8443` → `127.0.0.1_8443`: a directory name on every system.
fn dir_name(addr: &str) -> String {
    addr.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagged_classes_are_exactly_the_four_no_service_may_show() {
        let flagged: Vec<Class> = [
            Class::Accepted { status: Some(200) },
            Class::RefusedAlert {
                alert: "bad_certificate".into(),
            },
            Class::RefusedHttp { status: 400 },
            Class::ClosedWithoutAlert,
            Class::Reset,
            Class::Timeout,
            Class::StoppedAnswering,
            Class::Other {
                what: "connect_refused".into(),
            },
            Class::NotRun { why: "x".into() },
        ]
        .into_iter()
        .filter(Class::flagged)
        .collect();
        assert_eq!(
            flagged,
            [
                Class::ClosedWithoutAlert,
                Class::Reset,
                Class::Timeout,
                Class::StoppedAnswering
            ]
        );
    }

    #[test]
    fn directory_names_keep_host_and_port_readable() {
        assert_eq!(dir_name("127.0.0.1:8443"), "127.0.0.1_8443");
        assert_eq!(dir_name("[::1]:443"), "1__443");
    }
}
