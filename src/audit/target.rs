//! Targets as users write them: `https://host:port/path` or `host:port`, on
//! the command line or in a file (one per line, or TOML with per-target
//! settings).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::check::{self, Expected};

/// One endpoint to audit and its own settings (unset: the command line's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// As the user wrote it; names the JUnit suite and the report section.
    pub label: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub server_name: Option<String>,
    pub method: Option<String>,
    pub plaintext_port: Option<u16>,
    pub identity: Option<String>,
    pub other_identity: Option<String>,
    pub expect: Vec<(String, Expected)>,
}

impl Target {
    /// `https://host[:port][/path]` (port 443 by default) or `host:port`.
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        let s = s.trim();
        let bad = || {
            format!("target {s:?}: expected https://host:port/path or host:port (e.g. https://127.0.0.1:8443/api or 127.0.0.1:8443)")
        };
        let (rest, default_port) = if let Some(r) = s.strip_prefix("https://") {
            (r, Some(443))
        } else if s.starts_with("http://") {
            bail!("target {s:?}: the audit tests an mTLS endpoint; use https:// (plain HTTP on another port: --plaintext-port)");
        } else if s.contains("://") {
            bail!("{}", bad());
        } else {
            (s, None)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let (host, port) = match crate::net::split_host_port(authority) {
            Some((h, p)) => (h.to_string(), p),
            None => match default_port {
                Some(p) if !authority.is_empty() && !authority.ends_with(':') => {
                    let h = authority.trim_start_matches('[').trim_end_matches(']');
                    (h.to_string(), p)
                }
                _ => bail!("{}", bad()),
            },
        };
        Ok(Target {
            label: s.to_string(),
            host,
            port,
            path,
            ..Default::default()
        })
    }
}

/// `CHECK=accept|reject|info|skip`.
pub fn parse_expect(s: &str) -> Result<(String, Expected), String> {
    let (id, e) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected CHECK=accept|reject|info|skip"))?;
    if check::find(id).is_none() {
        return Err(format!("unknown check {id:?}; checks: {}", check::ids()));
    }
    Ok((id.to_string(), e.parse()?))
}

/// `400,401,403`.
pub fn parse_statuses(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| format!("{p:?} is not an HTTP status (100-599)"))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    #[serde(rename = "target")]
    targets: Vec<TargetEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    url: String,
    server_name: Option<String>,
    path: Option<String>,
    method: Option<String>,
    plaintext_port: Option<u16>,
    identity: Option<String>,
    other_identity: Option<String>,
    #[serde(default)]
    expect: BTreeMap<String, String>,
}

/// Read `--targets FILE`: TOML with `[[target]]` tables, or one target per
/// line (`#` starts a comment).
pub fn read_file(path: &Path) -> anyhow::Result<Vec<Target>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--targets: cannot read {}", path.display()))?;
    let ctx = |what: String| format!("--targets {}: {what}", path.display());
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("[[target]]"))
    {
        let file: TargetsFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!(ctx(e.to_string())))?;
        return file
            .targets
            .into_iter()
            .enumerate()
            .map(|(i, e)| entry(e).with_context(|| ctx(format!("target #{}", i + 1))))
            .collect();
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(Target::parse(line).with_context(|| ctx(format!("line {}", n + 1)))?);
    }
    if out.is_empty() {
        bail!(ctx(
            "no target in it (one per line, or [[target]] tables with url = ...)".into()
        ));
    }
    Ok(out)
}

fn entry(e: TargetEntry) -> anyhow::Result<Target> {
    let mut t = Target::parse(&e.url)?;
    if e.path.is_some() {
        t.path = e.path;
    }
    t.server_name = e.server_name;
    t.method = e.method;
    t.plaintext_port = e.plaintext_port;
    t.identity = e.identity;
    t.other_identity = e.other_identity;
    for (id, v) in e.expect {
        t.expect
            .push(parse_expect(&format!("{id}={v}")).map_err(|m| anyhow::anyhow!("expect: {m}"))?);
    }
    Ok(t)
}
