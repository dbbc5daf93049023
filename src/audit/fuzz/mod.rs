//! `certshift audit --fuzz N [--seed S]`: present N random DER mutations of
//! the identity ([`crate::pki::mutate::fuzz`]) to each target, instead of
//! the check registry. A case has no expected verdict, so nothing is judged
//! right or wrong; what is flagged is what a service must never do with any
//! certificate: close without an alert, reset, time out, or stop answering.
//!
//! ```text
//!  identity + CA ──generate (seed)──▶ cases ──sanity check per target──▶ each case once
//!     (newest TLS version the service spoke, bounded concurrency, the audit's timeouts)
//!     ──classify──▶ after a suspicious one: is the target still up? ──▶ counts, flagged
//!     cases ──▶ table, --json (certshift_fuzz:1), PEM + README under --fuzz-out
//! ```

pub mod report;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use super::check::{self, Expected};
use super::experiment::{Ctx, Decision};
use super::target::Target;
use super::{AuditArgs, Verdict};
use crate::pki::mutate::fuzz::{catalogue_fingerprints, identity_signature_algorithm, Fuzzer};
use crate::tls::{ClientCert, Outcome, TlsVersion};
pub use report::{CaseResult, Class, FuzzReport, FuzzTargetReport};

/// Cases of one target presented at once.
const CASE_CONCURRENCY: usize = 8;

/// How often, and how far apart, a target that looked down is asked again
/// before it counts as stopped answering (a restart by a supervisor is not
/// a crash the user can ignore, but one lost connection is not a crash).
const LIVENESS_TRIES: u32 = 3;
const LIVENESS_PAUSE: Duration = Duration::from_millis(300);

/// One case ready to present: the mutated leaf, then the identity's chain.
#[derive(Debug, Clone)]
pub struct PreparedCase {
    pub index: usize,
    pub description: String,
    pub chain: Vec<CertificateDer<'static>>,
}

/// `--fuzz` settings after validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cases: usize,
    pub seed: u64,
    pub out: std::path::PathBuf,
    /// The curl options that trust the server (`--cacert FILE` or `-k`).
    pub curl_trust: String,
}

impl Settings {
    pub fn from_args(args: &AuditArgs) -> Self {
        let curl_trust = if args.insecure {
            "-k".to_string()
        } else {
            match (&args.ca, &args.pki) {
                (Some(ca), _) => format!("--cacert {}", absolute(ca).display()),
                (None, Some(pki)) => {
                    format!("--cacert {}", absolute(&pki.join("ca/ca.crt")).display())
                }
                (None, None) => "-k".to_string(),
            }
        };
        Settings {
            cases: args.fuzz.unwrap_or(0) as usize,
            // Readable seeds: 32 random bits are plenty to tell runs apart.
            seed: args
                .seed
                .unwrap_or_else(|| u64::from(rand::random::<u32>())),
            out: args.fuzz_out.clone(),
            curl_trust,
        }
    }
}

/// `certshift audit --fuzz N`: `Ok(false)` when a case was flagged.
pub async fn command(args: &AuditArgs) -> anyhow::Result<bool> {
    if args.junit.is_some() {
        anyhow::bail!("--junit reports the check registry; with --fuzz use --json FILE");
    }
    let settings = Settings::from_args(args);
    println!(
        "fuzz: {} cases, seed {} (repeat with --fuzz {} --seed {})",
        settings.cases, settings.seed, settings.cases, settings.seed
    );
    let report = run(args, &settings).await?;
    print!("{}", report::table(&report));
    if let Some(path) = &args.json {
        super::output::write_json(&report, path)?;
        println!("report written to {}", path.display());
    }
    Ok(report.passed)
}

/// Set up every target, generate its cases, fuzz it. Errors are usage or
/// configuration errors; findings are in the report.
pub async fn run(args: &AuditArgs, settings: &Settings) -> anyhow::Result<FuzzReport> {
    let ctxs = super::contexts(args).await?;
    let started = Instant::now();
    let mut prepared = Vec::new();
    for (t, ctx) in ctxs {
        let cases = prepare(&ctx, settings.seed, settings.cases)
            .with_context(|| format!("target {}", t.label))?;
        prepared.push((t, ctx, cases));
    }
    let targets: Vec<FuzzTargetReport> = futures_util::stream::iter(prepared)
        .map(|(t, ctx, cases)| async move { fuzz_target(&t, ctx, &cases, settings).await })
        .buffered(args.concurrency as usize)
        .collect()
        .await;
    Ok(FuzzReport::new(settings, targets, started.elapsed()))
}

/// The cases of `seed` for this target's identity, signed by its issuing
/// CA.
pub fn prepare(ctx: &Ctx, seed: u64, n: usize) -> anyhow::Result<Vec<PreparedCase>> {
    let issuing = ctx.issuing.as_ref().map_err(|e| {
        anyhow::anyhow!("--fuzz re-signs every case with the identity's issuing CA: {e}")
    })?;
    let leaf = ctx
        .identity
        .key
        .cert
        .first()
        .context("the identity has no certificate")?;
    let excluded = catalogue_fingerprints(leaf, &issuing.authority, &issuing.chain);
    let fuzzer = Fuzzer::new(leaf, excluded).context("reading the identity's certificate")?;
    let algorithm = identity_signature_algorithm(leaf)?;
    fuzzer
        .cases(seed, n)?
        .into_iter()
        .map(|c| {
            let mut chain = vec![c.certificate(&issuing.authority, &algorithm)?];
            chain.extend(issuing.chain.iter().cloned());
            Ok(PreparedCase {
                index: c.index,
                description: c.description,
                chain,
            })
        })
        .collect()
}

/// Sanity check, every case, a last liveness probe; flagged cases written
/// out.
pub async fn fuzz_target(
    t: &Target,
    mut ctx: Ctx,
    cases: &[PreparedCase],
    settings: &Settings,
) -> FuzzTargetReport {
    let started = Instant::now();
    let Some(sanity_check) = check::find(check::SANITY) else {
        // The registry always holds the sanity check; a report beats a panic.
        let results = cases
            .iter()
            .map(|c| CaseResult::not_run(c, "no sanity check"))
            .collect();
        let why = Some("internal: the check registry has no sanity check".to_string());
        return FuzzTargetReport::new(t, &ctx, None, why, results, true, started.elapsed());
    };
    let sanity = super::sanity_first(&mut ctx, sanity_check, Expected::Accept).await;
    let version = ctx.versions.first().copied();
    let (Verdict::Pass, Some(version)) = (sanity.verdict, version) else {
        let why = format!(
            "the valid identity was not accepted ({}): fuzz outcomes would mean nothing",
            sanity.evidence
        );
        let results = cases
            .iter()
            .map(|c| CaseResult::not_run(c, "sanity check failed"))
            .collect();
        return FuzzTargetReport::new(t, &ctx, None, Some(why), results, true, started.elapsed());
    };
    let results = present_all(&ctx, cases, version).await;
    let still_answering = alive(&ctx, version).await;
    let mut report = FuzzTargetReport::new(
        t,
        &ctx,
        Some(version),
        None,
        results,
        still_answering,
        started.elapsed(),
    );
    if let Err(e) = report::write_flagged(&mut report, cases, &ctx, settings) {
        report.write_error = Some(format!("{e:#}"));
    }
    report
}

/// Every case once over `version`, at most [`CASE_CONCURRENCY`] at a time.
/// Once the target stopped answering, the remaining cases are not run.
pub async fn present_all(
    ctx: &Ctx,
    cases: &[PreparedCase],
    version: TlsVersion,
) -> Vec<CaseResult> {
    let down = AtomicBool::new(false);
    let down = &down;
    futures_util::stream::iter(cases)
        .map(|c| async move {
            if down.load(Ordering::Relaxed) {
                return CaseResult::not_run(c, "the target had stopped answering");
            }
            let key = Arc::new(CertifiedKey::new(
                c.chain.clone(),
                ctx.identity.key.key.clone(),
            ));
            let a = ctx
                .present_over(ClientCert::Always(key), version, version.to_string())
                .await;
            let mut class = Class::of(ctx, &a.outcome);
            if class.suspicious() && !alive(ctx, version).await {
                down.store(true, Ordering::Relaxed);
                class = Class::StoppedAnswering;
            }
            CaseResult::new(c, class, &a.outcome)
        })
        .buffered(CASE_CONCURRENCY)
        .collect()
        .await
}

/// Does the target still accept the valid identity? Asked a few times: one
/// lost connection is not a crash.
pub async fn alive(ctx: &Ctx, version: TlsVersion) -> bool {
    for attempt in 0..LIVENESS_TRIES {
        if attempt > 0 {
            tokio::time::sleep(LIVENESS_PAUSE).await;
        }
        let a = ctx
            .present_over(
                ClientCert::Always(ctx.identity.key.clone()),
                version,
                "liveness".into(),
            )
            .await;
        if ctx.decide(&a) == Decision::Accepted {
            return true;
        }
    }
    false
}

fn absolute(p: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Class {
    /// What one attempt's outcome says, by the audit's refusal statuses.
    pub fn of(ctx: &Ctx, o: &Outcome) -> Class {
        match o {
            Outcome::Http(s) if ctx.reject_status.contains(s) => Class::RefusedHttp { status: *s },
            Outcome::Http(s) => Class::Accepted { status: Some(*s) },
            Outcome::Ok => Class::Accepted { status: None },
            Outcome::Alert(a) => Class::RefusedAlert { alert: a.clone() },
            Outcome::ClosedEarly => Class::ClosedWithoutAlert,
            Outcome::Reset => Class::Reset,
            Outcome::HandshakeTimeout | Outcome::Timeout | Outcome::ConnectTimeout => {
                Class::Timeout
            }
            other => Class::Other {
                what: other.to_string(),
            },
        }
    }
}
