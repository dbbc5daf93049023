//! `certshift proxy --config FILE`: the proxy's settings as TOML, applied
//! under the command line.
//!
//! Owns: reading the file, turning each key into the flag of the same id
//! and parsing it with that flag's own clap parser (so a key takes exactly
//! its flag's syntax and there is no second list of settings), applying it
//! unless the command line gave that flag, and pointing errors that
//! `validate` finds later back at the key that caused them (file, line,
//! column, key, fix). Never: checks how settings combine (that is
//! `validate`, once, whatever the source) or reads the process's argv.
//!
//! # Schema
//!
//! One flat table. Every key is a `certshift proxy` flag without the leading
//! `--` and with `-` written `_`, and takes the flag's value syntax, so
//! `certshift proxy --help` documents the file too:
//!
//! - a string, or an integer for numbers (`max_connections = 4096`,
//!   `seed = 42`; seeds above 2^63−1 are written as strings);
//! - an array of strings for the repeatable flags (`upstream_ca`,
//!   `listen_client_ca`, `listen_crl`, `upstream_crl`), or one string;
//! - `true`/`false` for switches (`no_watch`); `false` is the default.
//!
//! Values of flags that take a path (`FILE`, `DIR`) resolve against the
//! directory of the file, not the working directory, so a file and its PKI
//! can move together. An unknown key is an error (a typo must not silently
//! fall back to a default). `configs/proxy-*.toml` are commented examples.
//!
//! Flat, not `[listen]`/`[upstream]` tables: one naming rule for flags, keys
//! and error messages, and a key can be found in `--help` by its name.
//!
//! # Flags override the file
//!
//! [`ConfigFile`](super::ConfigFile) records which flags the command line gave; a file key is
//! applied only when its flag was not given. Each applied key updates
//! [`ProxyArgs`] through clap's own `update_from_arg_matches`, as if only
//! that flag had been passed. (Re-running clap over "file flags, then argv",
//! as ripgrep does, was rejected: `into_config` has no argv, and repeatable
//! flags would append.)
//!
//! - A repeatable flag replaces the file's whole list; it never appends.
//! - Settings that only make sense together move together: if the command
//!   line gives either of `--present`/`--present-sequence`,
//!   `--client-cert`/`--client-key` or `--rotate-ca-cert`/`--rotate-ca-key`,
//!   the file's keys of that pair are ignored.
//! - `no_watch = true` cannot be undone by a flag (there is no `--watch`).
//! - Every value is parsed by its flag's parser even when a flag overrides
//!   its key; how settings combine is checked on what is finally used.
//! - `ProxyArgs` built by hand with [`ConfigFile::at`](super::ConfigFile::at) has no given flags:
//!   the file overrides every field it sets.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::builder::Resettable;
use clap::error::{ContextKind, ContextValue};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, Id, ValueHint};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::error::{ConfigError, FileError};
use super::flags::{ProxyArgs, PAIRS};

/// toml's error without the quoted source line when the file holds a secret
/// (`admin_token`, or anything named like a token): the quoted line may be
/// the secret itself, and errors end up in CI logs. The line and column
/// still point at the problem.
fn parse_detail(e: &toml::de::Error, text: &str) -> String {
    if !text.to_ascii_lowercase().contains("token") {
        return e.to_string();
    }
    let at = e.span().map(|s| position(text, s.start));
    let place = at.map_or(String::new(), |p| {
        format!("line {}, column {}: ", p.line, p.column)
    });
    format!(
        "TOML parse error at {place}{} (the line is not shown: this file holds a token)",
        e.message().trim_end()
    )
}

/// Where the applied settings came from: the keys the file set (and the
/// command line did not override), for pointing errors at them.
#[derive(Debug)]
pub(super) struct Origin {
    path: PathBuf,
    applied: BTreeMap<String, Position>,
}

/// Applies `args.config`'s file under the flags that were given. Without
/// `--config`, returns `args` unchanged.
pub(super) fn apply(mut args: ProxyArgs) -> Result<(ProxyArgs, Option<Origin>), ConfigError> {
    let Some(path) = args.config.path.clone() else {
        return Ok((args, None));
    };
    let text = std::fs::read_to_string(&path).map_err(|source| FileError::Read {
        path: path.clone(),
        source,
    })?;
    let mut cmd = key_command();
    let entries = toml::from_str::<Entries>(&text)
        .map_err(|e| FileError::Parse {
            path: path.clone(),
            detail: parse_detail(&e, &text),
        })?
        .0;
    let file = File {
        path: &path,
        dir: path.parent().unwrap_or(Path::new("")),
        text: &text,
    };
    file.check_pairs(&entries)?;
    let mut applied = BTreeMap::new();
    for (key, value) in &entries {
        let at = file.position(value.span().start);
        let matches = file.parse(&mut cmd, key, value.get_ref(), at)?;
        if args.config.given(key) {
            continue;
        }
        args.update_from_arg_matches(&matches)
            .map_err(|e| file.error(key, at, first_line(&e)))?;
        applied.insert(key.clone(), at);
    }
    // `--upstream` is optional on the command line only when a file is given.
    if args.upstream.is_empty() {
        return Err(ConfigError::Flag {
            flag: "--upstream",
            problem: format!(
                "required: pass --upstream HOST:PORT or set upstream = \"HOST:PORT\" in {}",
                path.display()
            ),
        });
    }
    Ok((args, Some(Origin { path, applied })))
}

impl Origin {
    /// Re-labels an error `validate` found in a setting the file made as an
    /// error at that key of the file.
    pub(super) fn blame(&self, e: ConfigError) -> ConfigError {
        let (key, problem) = match &e {
            ConfigError::Flag { flag, problem } => (
                flag.trim_start_matches('-').replace('-', "_"),
                problem.clone(),
            ),
            // Only one of the two can have come from the file.
            ConfigError::Plan(p) => {
                let key = ["present", "present_sequence"]
                    .into_iter()
                    .find(|k| self.applied.contains_key(*k));
                match key {
                    Some(k) => (k.to_string(), plan_problem(k, p)),
                    None => return e,
                }
            }
            ConfigError::Pki(p) => (
                "pki".to_string(),
                format!("{p} (make one with `certshift pki init --out DIR`; relative paths in this file resolve against its directory)"),
            ),
            ConfigError::File(_) => return e,
        };
        match self.applied.get(key.as_str()) {
            Some(at) => FileError::Value {
                path: self.path.clone(),
                key,
                line: at.line,
                column: at.column,
                problem,
            }
            .into(),
            None => e,
        }
    }
}

/// `plan.rs` names the flag in its messages; in a file the key is named
/// already, so drop the flag and keep the problem and its fix.
fn plan_problem(key: &str, e: &crate::plan::PlanError) -> String {
    let message = e.to_string();
    let flag = format!("--{}: ", key.replace('_', "-"));
    message.strip_prefix(&flag).unwrap_or(&message).to_string()
}

/// The proxy's flags as a command that parses one file key at a time: no
/// defaults, environment or requirements, so the matches hold exactly the
/// flag given (and switches, which clap always fills in).
fn key_command() -> Command {
    ProxyArgs::augment_args(Command::new("proxy")).mut_args(|a| {
        a.default_value(None)
            .env(None)
            .required(false)
            .required_unless_present(Resettable::<Id>::Reset)
            .requires(Resettable::<Id>::Reset)
    })
}

/// The ids a file may set: every flag's but `--config`'s.
fn keys(cmd: &Command) -> impl Iterator<Item = &str> {
    cmd.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| *id != "config")
}

/// One config file being applied.
struct File<'a> {
    path: &'a Path,
    /// Relative paths in the file resolve against this.
    dir: &'a Path,
    text: &'a str,
}

impl File<'_> {
    /// Parses `key = value` as its flag, alone; the matches hold only it.
    fn parse(
        &self,
        cmd: &mut Command,
        key: &str,
        value: &Value,
        at: Position,
    ) -> Result<ArgMatches, FileError> {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == key) else {
            // `Entries` admits only flags' ids.
            return Err(self.error(key, at, "not a setting".into()));
        };
        let argv = self
            .tokens(arg, value)
            .map_err(|problem| self.error(key, at, problem))?;
        let switches: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_id() != key)
            .filter(|a| matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse))
            .map(|a| a.get_id().to_string())
            .collect();
        let mut m = cmd
            .try_get_matches_from_mut(std::iter::once(OsString::from("proxy")).chain(argv))
            .map_err(|e| self.error(key, at, problem(&e, value)))?;
        // A switch is in every matches with its default: drop the others',
        // or applying this key would reset them.
        for id in switches {
            m.remove_one::<bool>(&id);
        }
        Ok(m)
    }

    /// `--flag=value` for each value; a problem says what to write instead.
    fn tokens(&self, arg: &Arg, value: &Value) -> Result<Vec<OsString>, String> {
        let long = arg.get_long().unwrap_or(arg.get_id().as_str());
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let values = match value {
            Value::Boolean(true) if switch => return Ok(vec![format!("--{long}").into()]),
            Value::Boolean(false) if switch => return Ok(Vec::new()),
            _ if switch => return Err("give true or false".into()),
            Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => items
                .iter()
                .map(|v| text(v).ok_or_else(|| "give an array of strings".to_string()))
                .collect::<Result<Vec<_>, _>>()?,
            Value::Array(_) => return Err("takes one value, not an array".into()),
            v => vec![text(v).ok_or_else(|| {
                format!(
                    "give a string or a whole number as for --{long} (see `certshift proxy --help`), not a {}",
                    v.type_str()
                )
            })?],
        };
        let is_path = matches!(
            arg.get_value_hint(),
            ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath
        );
        values
            .into_iter()
            .map(|v| {
                let mut token = OsString::from(format!("--{long}="));
                match v.trim() {
                    "" if is_path => return Err("is an empty path; give a file or directory, relative to this file's directory".to_string()),
                    "" => return Err("is empty; give a value or remove the key".to_string()),
                    // `join` keeps an absolute path as it is.
                    _ if is_path => token.push(self.dir.join(&v)),
                    _ => token.push(&v),
                }
                Ok(token)
            })
            .collect()
    }

    /// One of each of [`PAIRS`]'s first pair, both or neither of the others.
    fn check_pairs(&self, entries: &[(String, Spanned<Value>)]) -> Result<(), FileError> {
        let at = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| self.position(v.span().start))
        };
        let [[w, s], both @ ..] = PAIRS;
        if let (Some(_), Some(p)) = (at(w), at(s)) {
            let problem = format!("give {w} (weights) or {s} (a cycle), not both");
            return Err(self.error(s, p, problem));
        }
        for [cert, key] in both {
            let (k, p, missing) = match (at(cert), at(key)) {
                (Some(p), None) => (cert, p, key),
                (None, Some(p)) => (key, p, cert),
                _ => continue,
            };
            return Err(self.error(k, p, format!("needs {missing} too: give both or neither")));
        }
        Ok(())
    }

    fn position(&self, offset: usize) -> Position {
        position(self.text, offset)
    }

    fn error(&self, key: &str, at: Position, problem: String) -> FileError {
        FileError::Value {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            line: at.line,
            column: at.column,
            problem,
        }
    }
}

/// A TOML value as a flag's text: strings, and integers for numbers.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

/// clap's complaint about a file value, without clap's usage lines.
fn problem(e: &clap::Error, value: &Value) -> String {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    };
    // A value parser's own message (durations, --on-rotate, versions) says
    // how to write the value; clap's context lists an enum's values.
    if let Some(source) = std::error::Error::source(e) {
        return format!("{shown}: {source}");
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("{shown} is not one of its values; use {}", or_list(valid));
    }
    first_line(e)
}

/// `"a", "b" or "c"`.
fn or_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy)]
struct Position {
    line: usize,
    column: usize,
}

fn position(text: &str, offset: usize) -> Position {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// The file's keys and values in order; a key that is no flag's id is
/// refused while toml still knows where it is, so the message shows the
/// line and lists the valid keys.
#[derive(Debug)]
struct Entries(Vec<(String, Spanned<Value>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let cmd = ProxyArgs::augment_args(Command::new("proxy"));
        let known: Vec<String> = keys(&cmd).map(String::from).collect();
        d.deserialize_map(EntriesVisitor(known))
    }
}

struct EntriesVisitor(Vec<String>);

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of `certshift proxy` settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(Known(&self.0))? {
            entries.push((key, map.next_value()?));
        }
        Ok(Entries(entries))
    }
}

/// A key that must be one of these ids.
struct Known<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for Known<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        if self.0.contains(&key) {
            return Ok(key);
        }
        // serde's own wording for `deny_unknown_fields`.
        let valid: Vec<String> = self.0.iter().map(|k| format!("`{k}`")).collect();
        Err(de::Error::custom(format_args!(
            "unknown field `{key}`, expected one of {}",
            valid.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_flag_and_path_flags_resolve() {
        let cmd = ProxyArgs::augment_args(Command::new("proxy"));
        let e = toml::from_str::<Entries>("no_such_key = 1").unwrap_err();
        for id in keys(&cmd) {
            assert!(e.message().contains(&format!("`{id}`")), "{id}: {e}");
            toml::from_str::<Entries>(&format!("{id} = 1")).unwrap();
        }
        assert!(!e.message().contains("`config`"), "{e}");
        // Every FILE or DIR flag is a path the file resolves.
        for a in cmd.get_arguments() {
            let names = a.get_value_names().unwrap_or_default();
            if names.iter().any(|n| n == "FILE" || n == "DIR") {
                assert_ne!(a.get_value_hint(), ValueHint::Unknown, "--{}", a.get_id());
            }
        }
    }

    #[test]
    fn given_flags_are_recorded_and_pairs_move_together() {
        let a = ProxyArgs::from_flags([
            "--config",
            "x.toml",
            "--listen-tls",
            "off",
            "--present-sequence",
            "none",
            "--no-watch",
        ])
        .unwrap();
        assert_eq!(a.config.path.as_deref(), Some(Path::new("x.toml")));
        assert!(a.config.given("listen_tls"), "given with its default value");
        assert!(a.config.given("present"), "the pair of --present-sequence");
        assert!(!a.config.given("listen"), "a default is not given");
        assert!(!a.config.given("upstream"));
        // The last field too: `config` must stay first in `ProxyArgs`.
        assert!(a.config.given("no_watch"));
    }

    #[test]
    fn one_key_updates_only_its_field() {
        let mut a =
            ProxyArgs::from_flags(["--upstream", "h:1", "--no-watch", "--idle-timeout", "7s"])
                .unwrap();
        let file = File {
            path: Path::new("/etc/p.toml"),
            dir: Path::new("/etc"),
            text: "",
        };
        let at = position("", 0);
        let mut cmd = key_command();
        let m = file
            .parse(
                &mut cmd,
                "upstream_ca",
                &Value::try_from(["a.crt", "/b.crt"]).unwrap(),
                at,
            )
            .unwrap();
        a.update_from_arg_matches(&m).unwrap();
        assert_eq!(
            a.upstream_ca,
            [PathBuf::from("/etc/a.crt"), PathBuf::from("/b.crt")]
        );
        assert!(a.no_watch, "a switch the key did not name keeps its value");
        assert_eq!(a.idle_timeout, std::time::Duration::from_secs(7));
        assert_eq!(a.upstream, "h:1");
        assert_eq!(a.config.path, None);
    }

    #[test]
    fn a_parse_error_never_shows_a_token() {
        let secret = "tok-4f9a1c2e7b3d5a60";
        for text in [
            format!("admin = \"127.0.0.1:0\"\nadmin_token = \"{secret}\nlisten = 1\n"),
            format!("admin_token = {secret}\n"),
            format!("admin_token = \"\"\"\n{secret}\n"),
        ] {
            let e = toml::from_str::<Entries>(&text).unwrap_err();
            let shown = parse_detail(&e, &text);
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("line "), "{shown}");
        }
        // Without a token the line is quoted, as toml shows it.
        let e = toml::from_str::<Entries>("listen = \"x\nupstream = 1\n").unwrap_err();
        assert!(parse_detail(&e, "listen = \"x\nupstream = 1\n").contains("listen = \"x"));
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let p = position(text, text.find('"').unwrap());
        assert_eq!((p.line, p.column), (2, 6));
        let p = position(text, 0);
        assert_eq!((p.line, p.column), (1, 1));
    }

    #[test]
    fn plan_messages_lose_the_flag_but_keep_the_fix() {
        let e = crate::plan::Plan::parse_weights("valid=x", 0).unwrap_err();
        let p = plan_problem("present", &e);
        assert!(p.starts_with("item \"valid=x\""), "{p}");
        assert!(p.contains("NAME=WEIGHT"), "{p}");
    }
}
