//! The example GitHub Actions workflow, configs/ci/github-actions-mtls-audit.yml,
//! as a platform team copies it: every `certshift` command in its `run:`
//! scripts (the commented examples too) parses with today's command line,
//! the file passes actionlint, and its core steps (pki init, serve, audit)
//! do what its comments say when run for real on loopback.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use certshift::audit::checks;
use certshift::cli::Cli;
use clap::error::ErrorKind;
use clap::Parser;
use common::*;
use quick_junit::Report;
use serde::Deserialize;

const WORKFLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/configs/ci/github-actions-mtls-audit.yml"
);

/// The parts of a workflow these tests read.
#[derive(Debug, Deserialize)]
struct Workflow {
    permissions: BTreeMap<String, String>,
    jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Deserialize)]
struct Job {
    #[serde(default)]
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    name: Option<String>,
    uses: Option<String>,
    run: Option<String>,
    shell: Option<String>,
}

impl Step {
    fn label(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.uses.clone())
            .unwrap_or_else(|| "(unnamed step)".into())
    }
}

/// A `certshift` command found in a step's script.
#[derive(Debug, Clone)]
struct Found {
    step: String,
    /// In a shell comment: an example the reader is told to use instead.
    commented: bool,
    /// The words as the shell passes them, the program first.
    words: Vec<String>,
}

impl Found {
    /// `certshift SUB...`, e.g. `is(&["pki", "init"])`.
    fn is(&self, sub: &[&str]) -> bool {
        self.words.len() > sub.len()
            && self.words[1..=sub.len()]
                .iter()
                .zip(sub)
                .all(|(w, s)| w == s)
    }

    fn has(&self, flag: &str) -> bool {
        self.words.iter().any(|w| w == flag)
    }
}

fn workflow() -> Workflow {
    let text = std::fs::read_to_string(WORKFLOW).expect("read the example workflow");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{WORKFLOW} is not a workflow: {e}"))
}

fn steps(w: &Workflow) -> impl Iterator<Item = &Step> {
    w.jobs.values().flat_map(|j| j.steps.iter())
}

/// Every `certshift` command of every `run:` script, in order.
fn certshift_commands(w: &Workflow) -> Vec<Found> {
    let mut out = Vec::new();
    for step in steps(w) {
        let Some(script) = &step.run else { continue };
        for (commented, words) in commands_in(script, &step.label()) {
            if is_certshift(&words[0]) {
                out.push(Found {
                    step: step.label(),
                    commented,
                    words,
                });
            }
        }
    }
    out
}

fn is_certshift(program: &str) -> bool {
    program == "certshift" || program.ends_with("/certshift")
}

/// The simple commands of a script with the shell's word splitting, each
/// flagged when it sits in a comment. Not a shell: `$(...)`, here-documents
/// and quotes spanning lines are out of scope (a script line that does not
/// split is a test failure, so the workflow keeps certshift out of them).
/// A comment line that starts with `certshift` is an example and must parse;
/// prose that does not split (an apostrophe) is skipped.
fn commands_in(script: &str, step: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    for (commented, line) in logical_lines(script) {
        let Some(words) = shlex::split(&line) else {
            assert!(
                commented,
                "step {step:?}: cannot split `{line}` into words (a quote spanning lines?)"
            );
            continue;
        };
        out.extend(simple_commands(words).into_iter().map(|c| (commented, c)));
    }
    out
}

/// The script's lines with continuations (`\` at the end) joined; a comment
/// line's text after its `#`, flagged as commented (so a commented example
/// may continue over several `#` lines).
fn logical_lines(script: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(bool, String)> = None;
    for raw in script.lines() {
        let t = raw.trim();
        let (commented, text) = match t.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, t),
        };
        let (commented, mut line) = pending.take().unwrap_or((commented, String::new()));
        match text.strip_suffix('\\') {
            Some(head) => {
                line.push_str(head);
                line.push(' ');
                pending = Some((commented, line));
            }
            None => {
                line.push_str(text);
                if !line.trim().is_empty() {
                    out.push((commented, line));
                }
            }
        }
    }
    out.extend(pending);
    out
}

/// Split a line's words at the control operators (`&&`, `||`, `;`, `|`,
/// `&`; a `;` may be glued to the word before it), and drop redirections,
/// leading keywords (`if`, `!`, `then`, ...) and variable assignments.
fn simple_commands(words: Vec<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut redirect_target = false;
    for w in words {
        if std::mem::take(&mut redirect_target) {
            continue;
        }
        let (w, ends) = match w.strip_suffix(';') {
            Some(head) if !head.is_empty() => (head.to_string(), true),
            _ => (w, false),
        };
        if matches!(w.as_str(), "&&" | "||" | ";" | "|" | "&") {
            flush(&mut cur, &mut out);
            continue;
        }
        let op = w.trim_start_matches(|c: char| c.is_ascii_digit());
        if op.starts_with('>') || op.starts_with('<') || op.starts_with("&>") {
            // `> file` takes the next word; `>file` and `2>&1` are whole.
            redirect_target = matches!(op, ">" | ">>" | "<" | "&>" | ">|");
            continue;
        }
        cur.push(w);
        if ends {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn flush(cur: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let words = std::mem::take(cur);
    let is_assignment = |w: &str| {
        w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let start = words
        .iter()
        .position(|w| {
            !matches!(
                w.as_str(),
                "if" | "then" | "elif" | "else" | "do" | "while" | "until" | "!" | "time" | "{"
            ) && !is_assignment(w)
        })
        .unwrap_or(words.len());
    if start < words.len() {
        out.push(words[start..].to_vec());
    }
}

/// clap accepts the command line (values included: value parsers run while
/// parsing). `certshift --version` is accepted; `--help` is not, because
/// clap stops at it and would accept whatever follows.
fn parse(words: &[String]) -> Result<(), clap::Error> {
    let argv = std::iter::once("certshift").chain(words[1..].iter().map(String::as_str));
    match Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::DisplayVersion => Ok(()),
        Err(e) => Err(e),
    }
}

#[test]
fn the_extractor_finds_commands_the_way_the_shell_splits_them() {
    let script = r#"set -euo pipefail
certshift pki init --out "my pki" \
  --service a --service b
certshift serve --listen 127.0.0.1:8443 > serve.log 2>&1 &
echo "$!" > serve.pid
if ! "$HOME/bin/certshift" audit --target x:1; then exit 1; fi
cargo install certshift && RUST_LOG=debug certshift --version | tee v
# Or, to use your own CA:
#   certshift pki init --out pki \
#     --ca-cert ca.crt --ca-key ca.key
# certshift's prose, where it's not a command
"#;
    let got: Vec<(bool, String)> = commands_in(script, "t")
        .into_iter()
        .filter(|(_, c)| is_certshift(&c[0]))
        .map(|(commented, c)| (commented, c.join("|")))
        .collect();
    let want = [
        (
            false,
            "certshift|pki|init|--out|my pki|--service|a|--service|b",
        ),
        (false, "certshift|serve|--listen|127.0.0.1:8443"),
        (false, "$HOME/bin/certshift|audit|--target|x:1"),
        (false, "certshift|--version"),
        (
            true,
            "certshift|pki|init|--out|pki|--ca-cert|ca.crt|--ca-key|ca.key",
        ),
    ];
    assert_eq!(
        got,
        want.map(|(c, s)| (c, s.to_string())).to_vec(),
        "{got:#?}"
    );
    // The parse check rejects what clap rejects.
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert!(parse(&words("certshift audit --target x:1 --pki pki")).is_ok());
    assert!(parse(&words("certshift audit --target x:1 --no-such-flag")).is_err());
    assert!(parse(&words("certshift audit --expect revokd=skip")).is_err());
    assert!(parse(&words("certshift serve --listen 127.0.0.1")).is_err());
    assert!(parse(&words("certshift --version")).is_ok());
    assert!(parse(&words("certshift audit --help --no-such-flag")).is_err());
}

#[test]
fn every_certshift_command_in_the_workflow_parses() {
    let w = workflow();
    let found = certshift_commands(&w);
    let mut bad = Vec::new();
    for f in &found {
        let shown = format!(
            "[{}]{} {}",
            f.step,
            if f.commented { " (comment)" } else { "" },
            f.words.join(" ")
        );
        println!("{shown}");
        if let Err(e) = parse(&f.words) {
            bad.push(format!("{shown}\n{e}"));
        }
    }
    assert!(
        bad.is_empty(),
        "the workflow's commands that certshift rejects:\n{}",
        bad.join("\n")
    );
    // The commands the workflow exists for, so this cannot pass vacuously.
    let find = |what: &str, ok: &dyn Fn(&Found) -> bool| {
        assert!(
            found.iter().any(ok),
            "the workflow has no {what}: {found:#?}"
        )
    };
    find("`certshift pki init`", &|f| {
        !f.commented && f.is(&["pki", "init"])
    });
    find("`certshift serve`", &|f| !f.commented && f.is(&["serve"]));
    find("`certshift audit --junit --json`", &|f| {
        !f.commented && f.is(&["audit"]) && f.has("--junit") && f.has("--json")
    });
    find(
        "commented `pki init --ca-cert --ca-key` (bring your own CA)",
        &|f| f.commented && f.is(&["pki", "init"]) && f.has("--ca-cert") && f.has("--ca-key"),
    );
    find("commented `audit --profile`", &|f| {
        f.commented && f.is(&["audit"]) && f.has("--profile")
    });
    find("commented `audit --expect`", &|f| {
        f.commented && f.is(&["audit"]) && f.has("--expect")
    });
}

#[test]
fn the_workflow_keeps_the_conventions_it_shows() {
    let w = workflow();
    let perms: Vec<(&str, &str)> = w
        .permissions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        perms,
        [("checks", "write"), ("contents", "read")],
        "least privilege: read the code, write the check run"
    );
    for step in steps(&w) {
        let label = step.label();
        if let Some(uses) = &step.uses {
            let (_, version) = uses
                .split_once('@')
                .unwrap_or_else(|| panic!("step {label:?}: `{uses}` is not pinned"));
            assert!(
                version.starts_with('v')
                    && version[1..].split('.').all(|p| p.parse::<u32>().is_ok())
                    || version.len() == 40 && version.chars().all(|c| c.is_ascii_hexdigit()),
                "step {label:?}: pin `{uses}` to a version (vN) or a commit"
            );
        }
        let Some(script) = &step.run else { continue };
        assert_eq!(
            step.shell.as_deref(),
            Some("bash"),
            "step {label:?}: say `shell: bash`"
        );
        let lines: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.len() > 1 {
            assert_eq!(
                lines[0], "set -euo pipefail",
                "step {label:?}: a multi-line script starts with `set -euo pipefail`"
            );
        }
    }
    // The wait step waits for the port the service listens on.
    let found = certshift_commands(&w);
    let serve = found
        .iter()
        .find(|f| !f.commented && f.is(&["serve"]))
        .expect("a serve step");
    let listen = flag(&serve.words, "--listen");
    let port = listen.rsplit(':').next().expect("--listen IP:PORT");
    let wait = steps(&w)
        .find(|s| s.name.as_deref().is_some_and(|n| n.starts_with("Wait")))
        .and_then(|s| s.run.as_deref())
        .expect("a `Wait ...` step");
    assert!(
        wait.contains(port),
        "the wait step does not wait for port {port}: {wait}"
    );
}

/// actionlint must pass in CI (.ci/run installs it and sets ACTIONLINT, CI
/// sets CI=true); elsewhere it runs when found (.ci/venv/bin/actionlint, then
/// PATH) and is skipped with a note otherwise.
#[test]
fn the_workflow_passes_actionlint() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let required =
        std::env::var_os("ACTIONLINT").is_some() || std::env::var("CI").as_deref() == Ok("true");
    let venv = manifest.join(".ci/venv/bin/actionlint");
    let bin = match std::env::var_os("ACTIONLINT") {
        Some(p) => p.into(),
        None if venv.exists() => venv,
        None => "actionlint".into(),
    };
    let out = match Command::new(&bin)
        .args(["-no-color", "-oneline", WORKFLOW])
        .current_dir(manifest)
        .output()
    {
        Ok(out) => out,
        Err(e) if !required => {
            eprintln!(
                "skipped the actionlint check: {} not found ({e}); .ci/run installs it, or set ACTIONLINT",
                bin.display()
            );
            return;
        }
        Err(e) => panic!(
            "actionlint is required here (ACTIONLINT or CI=true) but {} does not run: {e}",
            bin.display()
        ),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "actionlint ({}) on the example workflow: {}\n{said}",
        bin.display(),
        out.status
    );
}

/// The value after `flag`.
fn flag<'a>(words: &'a [String], flag: &str) -> &'a str {
    let i = words
        .iter()
        .position(|w| w == flag)
        .unwrap_or_else(|| panic!("`{}` has no {flag}", words.join(" ")));
    words
        .get(i + 1)
        .unwrap_or_else(|| panic!("`{}`: {flag} has no value", words.join(" ")))
}

/// Replace the value after `flag`; it must be there, so the test notices
/// when the workflow changes shape. Returns the workflow's value.
fn set_flag(words: &mut [String], flag_name: &str, value: &str) -> String {
    let old = flag(words, flag_name).to_string();
    let i = words
        .iter()
        .position(|w| w == flag_name)
        .expect("found above")
        + 1;
    words[i] = value.to_string();
    old
}

/// A finished `certshift audit`: its exit code and both reports.
struct Audit {
    code: Option<i32>,
    stdout: String,
    junit: Report,
    json: serde_json::Value,
}

impl Audit {
    fn run(words: &[String], junit: &Path, json: &Path) -> Audit {
        let _ = std::fs::remove_file(junit);
        let _ = std::fs::remove_file(json);
        let out = certshift().args(&words[1..]).output().expect("run audit");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let context = format!(
            "`{}`\n{stdout}{}",
            words.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let xml = std::fs::read_to_string(junit)
            .unwrap_or_else(|e| panic!("no JUnit file ({e}): {context}"));
        let junit = Report::deserialize_from_str(&xml)
            .unwrap_or_else(|e| panic!("the JUnit does not parse ({e}): {xml}"));
        let json = std::fs::read(json).unwrap_or_else(|e| panic!("no JSON file ({e}): {context}"));
        let json: serde_json::Value = serde_json::from_slice(&json).expect("the JSON parses");
        Audit {
            code: out.status.code(),
            stdout,
            junit,
            json,
        }
    }

    /// `(id, expected, verdict)` of each check of the one target.
    fn checks(&self) -> Vec<(String, String, String)> {
        let targets = self.json["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 1, "{}", self.json);
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        targets[0]["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| (s(&c["id"]), s(&c["expected"]), s(&c["verdict"])))
            .collect()
    }

    fn with_verdict(&self, verdict: &str) -> Vec<String> {
        self.checks()
            .into_iter()
            .filter(|(_, _, v)| v == verdict)
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Both reports describe the same audit of `target`: one suite, one
    /// case per registered check in registry order, the same failures.
    fn assert_consistent(&self, target: &str) {
        let registry: Vec<&str> = checks().iter().map(|c| c.id).collect();
        let ids: Vec<String> = self.checks().into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids, registry, "JSON checks in registry order");
        assert_eq!(self.junit.test_suites.len(), 1, "one testsuite per target");
        let suite = &self.junit.test_suites[0];
        assert_eq!(suite.name.as_str(), target);
        let cases: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cases, registry, "one testcase per check, in registry order");
        let failed_cases = common::junit_failures(suite);
        let fails = self.with_verdict("fail");
        assert_eq!(failed_cases, fails, "JUnit failures are the FAIL verdicts");
        assert_eq!(suite.failures, fails.len());
        assert_eq!(self.junit.failures, fails.len());
        assert_eq!(self.json["passed"], fails.is_empty());
        assert_eq!(
            self.code,
            Some(if fails.is_empty() { 0 } else { 1 }),
            "exit 0 when nothing failed, 1 when a check failed:\n{}",
            self.stdout
        );
    }
}

#[test]
fn the_workflows_steps_on_loopback_report_what_its_comments_say() {
    let w = workflow();
    let found = certshift_commands(&w);
    let step = |sub: &[&str]| {
        found
            .iter()
            .find(|f| !f.commented && f.is(sub))
            .unwrap_or_else(|| panic!("the workflow runs no `certshift {}`", sub.join(" ")))
            .words
            .clone()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| {
        dir.path()
            .join(name)
            .to_str()
            .expect("a UTF-8 temp dir")
            .to_string()
    };
    let pki = path("pki");

    let mut init = step(&["pki", "init"]);
    set_flag(&mut init, "--out", &pki);
    let out = certshift().args(&init[1..]).output().expect("run pki init");
    assert!(
        out.status.success(),
        "`{}`: {}",
        init.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut serve = step(&["serve"]);
    set_flag(&mut serve, "--pki", &pki);
    let listen = set_flag(&mut serve, "--listen", "127.0.0.1:0");
    let service = spawn_certshift(&serve[1..], |_| true);
    assert!(
        service.lines[0].starts_with("listening on "),
        "first stdout line must be `listening on IP:PORT`: {:?}",
        service.lines
    );
    let target = format!("https://{}/", service.addr());

    let mut audit = step(&["audit"]);
    let written = set_flag(&mut audit, "--target", &target);
    assert_eq!(
        written,
        format!("https://{listen}/"),
        "the workflow audits another address than its service listens on"
    );
    set_flag(&mut audit, "--pki", &pki);
    let (junit, json) = (dir.path().join("audit.xml"), dir.path().join("audit.json"));
    set_flag(&mut audit, "--junit", &path("audit.xml"));
    set_flag(&mut audit, "--json", &path("audit.json"));

    // As written, against the stand-in: the header says it passes every
    // check (serve refuses a session resumed after the client certificate
    // expired), so the job succeeds.
    let as_written = Audit::run(&audit, &junit, &json);
    as_written.assert_consistent(&target);
    assert_eq!(
        as_written.with_verdict("fail"),
        Vec::<String>::new(),
        "{}",
        as_written.stdout
    );
    assert_eq!(as_written.code, Some(0), "{}", as_written.stdout);
    assert!(
        [
            "stand-in that passes every check",
            "resumption-after-expiry"
        ]
        .iter()
        .all(|s| std::fs::read_to_string(WORKFLOW)
            .unwrap_or_default()
            .contains(s)),
        "the workflow's header must say what the stand-in does"
    );

    // With the known gaps skipped, every enforcement check passes against
    // `serve --mode strict` (the default).
    audit.extend(
        [
            "--expect",
            "resumption-after-expiry=skip",
            "--expect",
            "other-identity=skip",
        ]
        .map(String::from),
    );
    let skipped = Audit::run(&audit, &junit, &json);
    skipped.assert_consistent(&target);
    assert_eq!(skipped.code, Some(0), "{}", skipped.stdout);
    for (id, expected, verdict) in skipped.checks() {
        let ok = match verdict.as_str() {
            "pass" => true,
            // Not judged: skipped or information by expectation, or a
            // check this PKI cannot run (it has no intermediate to leave out).
            "skip" | "info" => expected == verdict || id == "missing-intermediate",
            _ => false,
        };
        assert!(
            ok,
            "{id}: expected {expected}, verdict {verdict}\n{}",
            skipped.stdout
        );
    }
}
