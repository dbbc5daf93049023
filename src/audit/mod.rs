//! `certshift audit`: does this endpoint really enforce mTLS? Each check of
//! the [`check::checks`] registry is one connection experiment (or a few)
//! with an expected verdict; the evidence decides PASS / FAIL / INFO /
//! INCONCLUSIVE / SKIP. Output: a table, `--json`, `--junit`; exit 0 when
//! nothing failed, 1 when a check failed, 2 on usage or configuration
//! errors.
//!
//! ```text
//!  targets ──resolve──▶ Ctx per target (trust, identity, PKI, issuing CA)
//!     └──▶ sanity check (valid identity) ──narrows TLS versions──▶ every other
//!          check, concurrently (bounded) ──judge──▶ CheckResult ──▶ table/JSON/JUnit
//! ```

pub mod check;
pub mod differential;
pub mod experiment;
mod experiments;
pub mod fuzz;
pub mod judge;
pub mod output;
pub mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::ServerName;

pub use check::{checks, Category, Check, Expected, Profile};
use experiment::{Ctx, Decision, Identity, Issuing, Limits, Observation};
pub use judge::{CheckResult, Verdict};
pub use output::{AuditReport, Summary, TargetReport};
use target::Target;

use crate::creds;
use crate::pki::{Authority, PkiDir};
use crate::tls::{webpki_server_verifier, AnyServerCert, TlsVersion, TlsVersions};

/// `certshift audit` options.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit status: 0 every check passed (INFO, SKIP and INCONCLUSIVE do not fail), 1 a check failed, 2 usage or configuration error.\n\
With --fuzz N the check registry does not run: N random DER mutations of the identity are presented instead; exit 1 when one was flagged (closed without alert, reset, timeout, target stopped answering).\n\
With --differential (two or more targets) the checks (and --fuzz cases) run against every target and only the rows where the targets decide differently are printed (refusals at different layers, e.g. alert vs HTTP 400, are listed as minor); exit 1 when any row disagrees, 0 when none does."
)]
pub struct AuditArgs {
    /// Print every check (id, category, default expectation, what it tests) and exit.
    #[arg(long)]
    pub list_checks: bool,
    /// Endpoint to audit: https://host:port/path or host:port; repeatable
    /// (several targets run concurrently).
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,
    /// File of targets: one per line, or TOML `[[target]]` tables with
    /// url, server_name, path, method, plaintext_port, identity,
    /// other_identity and expect = { CHECK = "skip" }.
    #[arg(long = "targets", value_name = "FILE")]
    pub targets_file: Option<PathBuf>,
    /// Trust for the server's certificate (PEM). Default: the PKI's CA.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Name to verify the server certificate against (and send as SNI).
    /// Default: the target's host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Do not verify the server's certificate: the audit is about how the
    /// server treats client certificates.
    #[arg(long)]
    pub insecure: bool,
    /// TLS versions to test, e.g. 1.3 or 1.2,1.3. Versions the service does
    /// not speak with the valid identity are dropped after the sanity check.
    #[arg(long, default_value = "1.2,1.3")]
    pub tls_versions: TlsVersions,
    /// A certshift PKI the target trusts (`certshift pki init`, also under
    /// your own CA with --ca-cert/--ca-key): the identities, every bad
    /// variant, and the CA that mints short-lived certificates.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// The PKI service whose valid identity must be accepted. Default: the
    /// PKI's first service.
    #[arg(long, value_name = "SERVICE")]
    pub identity: Option<String>,
    /// The identity that must be accepted, as files (instead of --identity).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// A valid identity of another workload (a PKI service) that must be
    /// refused on this endpoint: the isolation check.
    #[arg(long, value_name = "SERVICE")]
    pub other_identity: Option<String>,
    /// The other workload's identity as files (instead of --other-identity).
    #[arg(long, value_name = "FILE", requires = "other_key")]
    pub other_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "other_cert")]
    pub other_key: Option<PathBuf>,
    /// spiffe: wrong trust domain and a missing SPIFFE ID must be refused;
    /// x509: those two are information. Default: spiffe when the identity
    /// carries a SPIFFE ID.
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Override one check's expectation: CHECK=accept|reject|info|skip;
    /// repeatable.
    #[arg(long, value_name = "CHECK=EXPECT", value_parser = target::parse_expect)]
    pub expect: Vec<(String, Expected)>,
    /// HTTP statuses that count as a refusal.
    #[arg(long, value_name = "CODES", default_value = "400,401,403,495,496", value_parser = target::parse_statuses)]
    pub reject_status: std::vec::Vec<u16>,
    /// Request path (default: the target URL's path, else /).
    #[arg(long)]
    pub path: Option<String>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Another port where the service may answer plain HTTP (an Istio
    /// PERMISSIVE sidecar answers both); must not serve either.
    #[arg(long, value_name = "PORT")]
    pub plaintext_port: Option<u16>,
    /// clock-skew fails when a certificate further outside its validity
    /// than this is accepted (e.g. 5m). Without it, clock-skew is information.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_skew: Option<Duration>,
    /// Weak crypto (weak-signature, weak-key) must be refused; without it
    /// those checks are information.
    #[arg(long)]
    pub strict: bool,
    /// Lifetime of the short-lived certificate resumption-after-expiry waits
    /// out.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub short_lived: Duration,
    /// Per-phase timeout of every attempt (connect, handshake, response).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Targets audited at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report: one testsuite per target, one testcase per check.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Fuzz INSTEAD of running the checks: present N random DER mutations of
    /// the identity's TBSCertificate (length, tag and value changes,
    /// re-signed by the issuing CA; none from the catalogue), count the
    /// outcomes, and flag what no service may do with any certificate:
    /// close without an alert, reset, time out, stop answering. Flagged
    /// cases are written as PEM under --fuzz-out. Needs the issuing CA's key
    /// (--pki).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub fuzz: Option<u32>,
    /// The seed of --fuzz: the same seed and identity give the same cases.
    /// Default: random, printed so the run can be repeated.
    #[arg(long, value_name = "S", requires = "fuzz")]
    pub seed: Option<u64>,
    /// Where --fuzz writes flagged cases: DIR/<host_port>/case-<i>.pem and a
    /// README with the curl command that replays each.
    #[arg(
        long,
        value_name = "DIR",
        requires = "fuzz",
        default_value = "certshift-fuzz"
    )]
    pub fuzz_out: PathBuf,
    /// Present the same certificates to every target (two or more) and
    /// print only the checks (and --fuzz cases) where they disagree: one
    /// accepts what another refuses. Refusals at different layers (alert vs
    /// HTTP 400) are listed as minor and do not fail. --json writes the rows.
    #[arg(long)]
    pub differential: bool,
}

/// Checks of one target run at once (after the sanity check).
const CHECK_CONCURRENCY: usize = 8;

/// `certshift audit`: `Ok(false)` when a check failed.
pub async fn command(args: AuditArgs) -> anyhow::Result<bool> {
    if args.list_checks {
        print!("{}", output::check_list());
        return Ok(true);
    }
    if args.differential {
        return differential::command(&args).await;
    }
    if args.fuzz.is_some() {
        return fuzz::command(&args).await;
    }
    let report = run(&args).await?;
    print!("{}", output::table(&report));
    if let Some(path) = &args.json {
        output::write_json(&report, path)?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &args.junit {
        output::write_junit(&report, path)?;
        println!("JUnit written to {}", path.display());
    }
    Ok(report.passed())
}

/// Resolve, set up and audit every target. Errors are usage or
/// configuration errors; findings are in the report.
pub async fn run(args: &AuditArgs) -> anyhow::Result<AuditReport> {
    Ok(run_on(args, contexts(args).await?).await)
}

/// Audit targets already set up.
async fn run_on(args: &AuditArgs, ctxs: Vec<(Target, Ctx)>) -> AuditReport {
    let started = Instant::now();
    let reports: Vec<TargetReport> = futures_util::stream::iter(ctxs)
        .map(|(t, ctx)| audit_target(args, t, ctx))
        .buffered(args.concurrency as usize)
        .collect()
        .await;
    AuditReport::new(reports, started.elapsed())
}

/// Every target resolved and set up, in order; errors are usage or
/// configuration errors.
async fn contexts(args: &AuditArgs) -> anyhow::Result<Vec<(Target, Ctx)>> {
    let mut targets: Vec<Target> = args
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<anyhow::Result<_>>()?;
    if let Some(f) = &args.targets_file {
        targets.extend(target::read_file(f)?);
    }
    if targets.is_empty() {
        bail!("no target: give --target https://host:port/path (repeatable) or --targets FILE");
    }
    let pki = match &args.pki {
        Some(dir) => Some(
            PkiDir::open(dir)
                .with_context(|| format!("--pki {}: not a certshift PKI", dir.display()))?,
        ),
        None => None,
    };
    let verifier = server_verifier(args, pki.as_ref())?;
    let mut ctxs = Vec::new();
    for t in &targets {
        let ctx = setup(args, t, pki.clone(), verifier.clone())
            .await
            .with_context(|| format!("target {}", t.label))?;
        ctxs.push((t.clone(), ctx));
    }
    Ok(ctxs)
}

fn server_verifier(
    args: &AuditArgs,
    pki: Option<&PkiDir>,
) -> anyhow::Result<Arc<dyn ServerCertVerifier>> {
    if args.insecure {
        return Ok(AnyServerCert::verifier());
    }
    let ca = match (&args.ca, pki) {
        (Some(ca), _) => ca.clone(),
        (None, Some(p)) => p.ca_cert(),
        (None, None) => bail!(
            "how should the server's certificate be verified? give --ca FILE, --pki DIR, or --insecure"
        ),
    };
    let roots = creds::load_roots(std::slice::from_ref(&ca))
        .with_context(|| format!("--ca {}", ca.display()))?;
    Ok(webpki_server_verifier(roots, Vec::new())?)
}

/// Everything one target's checks need, or a configuration error.
async fn setup(
    args: &AuditArgs,
    t: &Target,
    pki: Option<PkiDir>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> anyhow::Result<Ctx> {
    let addr: SocketAddr = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("cannot resolve {}", t.host))?
        .next()
        .with_context(|| format!("{} resolves to no address", t.host))?;
    let name = t
        .server_name
        .clone()
        .or_else(|| args.server_name.clone())
        .unwrap_or_else(|| t.host.clone());
    let server_name = ServerName::try_from(name.clone())
        .with_context(|| format!("--server-name {name:?} is not a DNS name or IP address"))?;
    let identity = identity(args, t, pki.as_ref())?;
    let other = other_identity(args, t, pki.as_ref())?;
    let issuing = match &pki {
        Some(p) => issuing(p, &identity),
        None => Err("needs --pki DIR".to_string()),
    };
    let method = t.method.as_deref().unwrap_or(&args.method);
    let method = hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| anyhow::anyhow!("--method {method:?} is not an HTTP method"))?;
    Ok(Ctx {
        addr,
        server_name,
        path: t
            .path
            .clone()
            .or_else(|| args.path.clone())
            .unwrap_or_else(|| "/".into()),
        method,
        plaintext_port: t.plaintext_port.or(args.plaintext_port),
        verifier,
        // Newest first: the table reads 1.3 before 1.2.
        versions: {
            let mut v: Vec<TlsVersion> = args.tls_versions.iter().collect();
            v.reverse();
            v
        },
        identity,
        other,
        pki,
        issuing,
        limits: Limits {
            connect: args.timeout,
            handshake: args.timeout,
            response: args.timeout,
        },
        max_skew: args.max_skew,
        short_lived: args.short_lived,
        reject_status: args.reject_status.clone(),
    })
}

fn load_identity(name: String, cert: &Path, key_file: &Path) -> anyhow::Result<Identity> {
    let key = creds::load_certified_key(cert, key_file)
        .with_context(|| format!("loading the identity {name}"))?;
    Ok(Identity {
        name,
        key,
        key_file: Some(key_file.to_path_buf()),
    })
}

fn pki_service(pki: &PkiDir, service: &str, flag: &str) -> anyhow::Result<Identity> {
    let files = pki.client(service).with_context(|| {
        format!(
            "{flag}: {service:?} is not a service of the PKI at {}; it has {}",
            pki.dir().display(),
            pki.manifest().services.join(", ")
        )
    })?;
    load_identity(service.to_string(), &files.cert, &files.key)
}

fn identity(args: &AuditArgs, t: &Target, pki: Option<&PkiDir>) -> anyhow::Result<Identity> {
    if let (Some(c), Some(k)) = (&args.cert, &args.key) {
        return load_identity(c.display().to_string(), c, k);
    }
    let Some(pki) = pki else {
        bail!("which identity must be accepted? give --pki DIR (and --identity SERVICE) or --cert FILE --key FILE");
    };
    let service = t
        .identity
        .clone()
        .or_else(|| args.identity.clone())
        .or_else(|| pki.manifest().services.first().cloned())
        .context("the PKI has no service identity")?;
    pki_service(pki, &service, "--identity")
}

fn other_identity(
    args: &AuditArgs,
    t: &Target,
    pki: Option<&PkiDir>,
) -> anyhow::Result<Option<Identity>> {
    if let (Some(c), Some(k)) = (&args.other_cert, &args.other_key) {
        return load_identity(c.display().to_string(), c, k).map(Some);
    }
    let Some(service) = t.other_identity.as_ref().or(args.other_identity.as_ref()) else {
        return Ok(None);
    };
    let pki = pki.context("--other-identity names a PKI service: give --pki DIR")?;
    pki_service(pki, service, "--other-identity").map(Some)
}

/// The PKI's issuing CA, with the identity's chain above its leaf to send
/// after minted leaves. An error is a reason to skip the checks that mint,
/// not a configuration error: the user's CA key may live elsewhere.
fn issuing(pki: &PkiDir, identity: &Identity) -> Result<Issuing, String> {
    let files = pki.issuing_ca().unwrap_or_else(|| pki.ca());
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read the issuing CA's {}: {e}", p.display()))
    };
    let authority = Authority::from_pem(&read(&files.cert)?, &read(&files.key)?)
        .map_err(|e| format!("the issuing CA: {e}"))?;
    Ok(Issuing {
        authority,
        chain: identity.key.cert.iter().skip(1).cloned().collect(),
    })
}

/// The expectation of each check for this target: `--expect` (the target's
/// own first), else the check's default for the profile.
fn expectations(
    args: &AuditArgs,
    t: &Target,
    ctx: &Ctx,
) -> (Profile, Vec<(&'static Check, Expected)>) {
    let profile = args.profile.unwrap_or_else(|| {
        let spiffe = ctx.identity_facts().is_some_and(|f| f.spiffe_id.is_some());
        if spiffe {
            Profile::Spiffe
        } else {
            Profile::X509
        }
    });
    let defaults = check::Defaults {
        profile,
        max_skew: args.max_skew.is_some(),
        strict: args.strict,
    };
    let plan = checks()
        .iter()
        .map(|c| {
            let over = t
                .expect
                .iter()
                .chain(args.expect.iter())
                .find(|(id, _)| id == c.id)
                .map(|(_, e)| *e);
            (c, over.unwrap_or((c.default)(defaults)))
        })
        .collect();
    (profile, plan)
}

async fn audit_target(args: &AuditArgs, t: Target, mut ctx: Ctx) -> TargetReport {
    let started = Instant::now();
    let (profile, plan) = expectations(args, &t, &ctx);
    let mut results = Vec::with_capacity(plan.len());
    let mut rest = plan.iter();
    // The sanity check first, over every version asked for.
    let Some((sanity, sanity_expected)) = rest.next() else {
        return TargetReport::new(&t, &ctx, profile, results, started.elapsed());
    };
    let result = sanity_first(&mut ctx, sanity, *sanity_expected).await;
    let sanity_failed = result.verdict != Verdict::Pass;
    results.push(result);
    let ctx = &ctx;
    let others: Vec<CheckResult> = futures_util::stream::iter(rest)
        .map(|(c, e)| async move {
            let t0 = Instant::now();
            let obs = if *e == Expected::Skip {
                Observation::default()
            } else {
                c.run.start(ctx).await
            };
            judge::judge(ctx, c, *e, obs, sanity_failed, t0.elapsed())
        })
        .buffered(CHECK_CONCURRENCY)
        .collect()
        .await;
    results.extend(others);
    TargetReport::new(&t, ctx, profile, results, started.elapsed())
}

/// The sanity check over every version asked for; `ctx.versions` narrows to
/// the versions the service accepted the valid identity over.
async fn sanity_first(ctx: &mut Ctx, sanity: &Check, expected: Expected) -> CheckResult {
    let t0 = Instant::now();
    let obs = sanity.run.start(ctx).await;
    let spoken: Vec<TlsVersion> = ctx
        .versions
        .iter()
        .zip(&obs.attempts)
        .filter(|(_, a)| ctx.decide(a) == Decision::Accepted)
        .map(|(v, _)| *v)
        .collect();
    let mut result = judge::judge(ctx, sanity, expected, obs, false, t0.elapsed());
    let sanity_failed = result.verdict != Verdict::Pass;
    if !sanity_failed && spoken.len() < ctx.versions.len() {
        let dropped: Vec<String> = ctx
            .versions
            .iter()
            .filter(|v| !spoken.contains(v))
            .map(|v| v.to_string())
            .collect();
        result.warning = Some(format!(
            "the valid identity was not accepted over TLS {}: the other checks use TLS {} only",
            dropped.join(", "),
            spoken
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ctx.versions = spoken;
    }
    result
}

#[cfg(test)]
mod tests;
