//! The command line: clap definitions and dispatch. Each command's options
//! live beside the code that runs it; this file only routes and maps results
//! to exit codes (0 success, 1 the run found a failure, 2 usage or
//! configuration error).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::admin::Admin;
use crate::demo::DemoArgs;
use crate::metrics::Metrics;
use crate::net::shutdown_signal;
use crate::pki::cmd::{InitArgs, InspectArgs};
use crate::proxy::{Proxy, ProxyArgs};
use crate::serve::{ServeArgs, Service};

#[derive(Debug, Parser)]
#[command(
    name = "certshift",
    version,
    about = "Does your service really enforce client certificates, and does it survive rotation under load?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate and inspect test PKIs.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Run the reference mTLS HTTP service.
    Serve(ServeArgs),
    /// Run the intercepting proxy: present planned client certificates upstream, rotate, record.
    Proxy(Box<ProxyArgs>),
    /// Open-loop load with client certificates: latency corrected for coordinated omission.
    Load(Box<crate::load::LoadArgs>),
    /// Rotate client, server or CA-bundle credentials under load; exit 1 if anything was lost.
    RotationTest(Box<crate::rotation_test::RotationTestArgs>),
    /// Does an endpoint really enforce mTLS? One verdict per check; JSON and JUnit for CI; exit 1 on a failed check.
    Audit(Box<crate::audit::AuditArgs>),
    /// What a TLS handshake costs on each side, next to its cryptography alone.
    Bench(Box<crate::bench::BenchArgs>),
    /// Merge HdrHistogram logs from several load runs, or show a JSON report again.
    Report(crate::report::ReportArgs),
    /// The whole tool in 30 seconds: PKI, service, proxy, load, rotations, verdicts.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Write a complete test PKI: CAs, server, clients, bad variants, CRL, manifest.
    Init(InitArgs),
    /// Show what is in certificate files.
    Inspect(InspectArgs),
}

/// Exit codes, as the design fixes them.
pub const EXIT_FAILURE_FOUND: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    if let Err(e) = check_outputs(&outputs(&cli.command)) {
        eprintln!("error: {}", error_chain(&e));
        return ExitCode::from(EXIT_USAGE);
    }
    let result = match cli.command {
        Command::Pki(PkiCommand::Init(a)) => crate::pki::cmd::run_init(&a).map(|()| true),
        Command::Pki(PkiCommand::Inspect(a)) => crate::pki::cmd::run_inspect(&a).map(|()| true),
        Command::Serve(a) => control_runtime()
            .and_then(|rt| rt.block_on(serve(a)))
            .map(|()| true),
        Command::Proxy(a) => control_runtime().and_then(|rt| rt.block_on(proxy(*a))),
        Command::Load(a) => runtime().and_then(|rt| rt.block_on(crate::load::command(*a))),
        Command::RotationTest(a) => {
            runtime().and_then(|rt| rt.block_on(crate::rotation_test::command(*a)))
        }
        Command::Audit(a) => runtime().and_then(|rt| rt.block_on(crate::audit::command(*a))),
        Command::Bench(a) => crate::bench::command(&a),
        Command::Report(a) => crate::report::cmd::run(&a),
        Command::Demo(a) => runtime().and_then(|rt| rt.block_on(crate::demo::run(&a))),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE_FOUND),
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A path a command writes to, with the flag that named it.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// A file: its directory must exist and take new files.
    File(&'static str, &'a Path),
    /// A directory the command creates as needed: the nearest part of the
    /// path that exists must be a directory that takes new entries.
    Dir(&'static str, &'a Path),
}

/// Every path `command` will write when it is done, by flag. (The proxy's
/// `--json` may come from its config file: [`proxy`] checks it after
/// reading the file.)
fn outputs(command: &Command) -> Vec<Output<'_>> {
    fn files<'a>(list: &[(&'static str, Option<&'a std::path::PathBuf>)]) -> Vec<Output<'a>> {
        list.iter()
            .filter_map(|(flag, p)| p.map(|p| Output::File(flag, p.as_path())))
            .collect()
    }
    match command {
        Command::Load(a) => files(&[
            ("--json", a.json.as_ref()),
            ("--hdr-log", a.hdr_log.as_ref()),
            ("--plot", a.plot.as_ref()),
        ]),
        Command::RotationTest(a) => {
            files(&[("--json", a.json.as_ref()), ("--plot", a.plot.as_ref())])
        }
        // `--fuzz` writes no JUnit (audit refuses the pair, naming both
        // flags: that message is the useful one), but its cases.
        Command::Audit(a) if a.fuzz.is_some() => {
            let mut out = files(&[("--json", a.json.as_ref())]);
            out.push(Output::Dir("--fuzz-out", &a.fuzz_out));
            out
        }
        Command::Audit(a) => files(&[("--json", a.json.as_ref()), ("--junit", a.junit.as_ref())]),
        Command::Report(crate::report::ReportArgs {
            command: crate::report::ReportCommand::Merge { json, plot, .. },
        }) => files(&[("--json", json.as_ref()), ("--plot", plot.as_ref())]),
        Command::Bench(a) => files(&[("--json", a.json.as_ref()), ("--plot", a.plot.as_ref())]),
        Command::Demo(a) => vec![Output::Dir("--out", &a.out)],
        _ => Vec::new(),
    }
}

/// Refuse output paths that cannot be written before a run starts, not
/// after it: a ten-minute load must not end in "cannot write
/// /nonexistent/dir/x.json". Writing is tried for real (a temporary file
/// in the directory, removed at once), so permissions and read-only
/// mounts are caught too.
pub fn check_outputs(outputs: &[Output<'_>]) -> anyhow::Result<()> {
    for out in outputs {
        let (flag, path, dir) = match *out {
            Output::File(flag, path) => {
                if path.is_dir() {
                    anyhow::bail!(
                        "{flag} {}: is a directory; give a file name, e.g. {}",
                        path.display(),
                        path.join("report.json").display()
                    );
                }
                let parent = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                if !parent.is_dir() {
                    anyhow::bail!(
                        "{flag} {}: directory {} does not exist; create it (mkdir -p {}) or choose another path (checked before the run, so no run is wasted)",
                        path.display(),
                        parent.display(),
                        parent.display()
                    );
                }
                (flag, path, parent)
            }
            Output::Dir(flag, path) => {
                // The nearest part of the path that exists; "" is the
                // working directory.
                let existing = path
                    .ancestors()
                    .find(|a| a.as_os_str().is_empty() || a.exists())
                    .filter(|a| !a.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !existing.is_dir() {
                    anyhow::bail!(
                        "{flag} {}: {} exists and is not a directory; choose another path",
                        path.display(),
                        existing.display()
                    );
                }
                (flag, path, existing)
            }
        };
        tempfile::Builder::new()
            .prefix(".certshift-write-check")
            .tempfile_in(dir)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{flag} {}: cannot write in {}: {e}; choose a writable path",
                    path.display(),
                    dir.display()
                )
            })?;
    }
    Ok(())
}

/// An error and its causes for people: each cause once. Many messages
/// already name their cause (`cannot read F: No such file or directory`);
/// `{:#}` would then print the OS error twice.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `serve` and `proxy`: their connections run on worker threads, each with
/// its own runtime and socket (`--workers`, `accept::serve_workers`); this
/// one thread keeps the rest (signals, reloads, the admin API, the metrics'
/// aggregation), and with one worker the connections too. Against one
/// multi-thread runtime for everything: no work stealing, so no futex and
/// eventfd hand-offs between threads per connection or request (with two
/// workers, 1.48 against 1.85 for the proxy's p99 ratio in
/// benches/hostile_slots.py, same sitting; see `resolve_workers` for CPU).
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut cfg = args.into_config()?;
    let (mode, trust_domains, policy) = (cfg.mode, cfg.trust_domains.clone(), cfg.policy.is_some());
    let admin_bind = cfg.admin.take();
    // Signal handlers (SIGHUP inside bind, SIGINT/SIGTERM here) exist before
    // the first line announces us, so a script's immediate signal is handled.
    let service = Service::bind(cfg).await?;
    let admin = match admin_bind {
        Some(b) => Some(
            Admin::bind(b.addr, service.handle(), b.token)
                .await
                .with_context(|| format!("cannot bind the admin API on {}", b.addr))?,
        ),
        None => None,
    };
    let stop = shutdown_signal()?;
    // The first stdout line is a contract: scripts read the port from it.
    println!("listening on {}", service.local_addr());
    if let Some(a) = &admin {
        println!("admin on {}", a.local_addr()?);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(?mode, ?trust_domains, policy, "serving");
    // The admin API answers until the service has drained, then goes.
    let admin_task = admin.map(|a| tokio::spawn(a.run(std::future::pending())));
    service.run(stop, Duration::from_secs(10)).await;
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}

/// `certshift proxy`: Ok(false) when a connection got the wrong verdict.
async fn proxy(args: ProxyArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    use std::io::Write;
    let cfg = args.into_config()?;
    if let Some(json) = &cfg.json {
        check_outputs(&[Output::File("--json", json)])?;
    }
    let (admin_addr, token, json) = (cfg.admin, cfg.admin_token.clone(), cfg.json.clone());
    let phases = cfg.plan_schedule.len();
    let metrics = Metrics::start();
    let proxy = Proxy::bind(cfg, metrics.clone()).await?;
    let handle = proxy.handle();
    let plan = handle.plan().current().describe();
    let admin = match admin_addr {
        Some(a) => Some(
            Admin::bind(a, handle.clone(), token)
                .await
                .with_context(|| format!("cannot bind the admin API on {a}"))?,
        ),
        None => None,
    };
    let stop = shutdown_signal()?;
    // The first lines are a contract: scripts read the ports from them.
    println!("listening on {}", proxy.local_addr());
    if let Some(a) = &admin {
        println!("admin on {}", a.local_addr()?);
    }
    println!("presenting: {plan}");
    if phases > 0 {
        println!(
            "plan schedule: {phases} phases (PUT /plan on the admin API also changes the plan)"
        );
    }
    let _ = std::io::stdout().flush();
    let admin_task = admin.map(|a| tokio::spawn(a.run(std::future::pending())));
    proxy.run(stop).await;
    if let Some(t) = admin_task {
        t.abort();
    }
    let snap = metrics.snapshot().await?;
    print!("{}", snap.summary_table());
    let totals = snap.totals();
    if let Some(path) = json {
        // The plan at the end; every change is in the timeline's `plans`.
        let active = handle.plan().current();
        let out = serde_json::json!({
            "stats": snap.to_stats_json(),
            "timeline": snap.timeline_json(),
            "plan": {"active": active.plan.describe(), "swap": active.swap.name(), "changes": active.changes},
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("summary written to {}", path.display());
    }
    Ok(totals.unexpected_accept == 0 && totals.unexpected_reject == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_are_checked_before_anything_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = tmp.path().join("x.json");
        check_outputs(&[Output::File("--json", &ok)]).unwrap();
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the check leaves nothing behind"
        );
        let missing = Path::new("/nonexistent/dir/x.json");
        let e = check_outputs(&[Output::File("--json", missing)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "--json /nonexistent/dir/x.json: directory /nonexistent/dir does not exist"
            ),
            "{e}"
        );
        let e = check_outputs(&[Output::File("--plot", tmp.path())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--plot") && e.contains("is a directory"), "{e}");
        // A directory output may not exist yet, but must be creatable.
        check_outputs(&[Output::Dir("--fuzz-out", &tmp.path().join("a/b"))]).unwrap();
        std::fs::write(tmp.path().join("f"), "").unwrap();
        let e = check_outputs(&[Output::Dir("--out", &tmp.path().join("f/sub"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--out") && e.contains("not a directory"), "{e}");
        check_outputs(&[Output::File("--json", Path::new("relative.json"))]).unwrap();
        check_outputs(&[Output::Dir("--out", Path::new("relative-dir"))]).unwrap();
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let missing = std::path::Path::new("/nonexistent/certshift/tls.crt");
        let e = crate::creds::read(missing).unwrap_err();
        let e = anyhow::Error::new(e).context("loading the client certificate");
        let text = error_chain(&e);
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(
            text.starts_with("loading the client certificate: ") && text.contains("tls.crt"),
            "{text}"
        );
        // A cause the message does not name is still printed.
        let e = anyhow::anyhow!("inner detail").context("outer");
        assert_eq!(error_chain(&e), "outer: inner detail");
    }
}
