//! `certshift proxy --config FILE`: the proxy's settings as TOML, merged
//! under the command line.
//!
//! Owns: the file's schema, reading it, checking every value in it (the
//! message names the file, line, column, key and the fix), merging it into
//! [`ProxyArgs`] under the flags, and pointing errors that `config.rs` finds
//! later back at the key that caused them. Never: validates what both
//! sources share (that happens once, in `config.rs`, whatever the source) or
//! reads the process's argv.
//!
//! # Schema
//!
//! One flat table. Every key is a `certshift proxy` flag without the leading
//! `--` and with `-` written `_`, and takes the flag's value syntax, so
//! `certshift proxy --help` documents the file too:
//!
//! | keys | TOML value |
//! |---|---|
//! | `listen`, `upstream`, `admin` | string: `"IP:PORT"`, `"HOST:PORT"`, `"IP:PORT"` or `"off"` |
//! | `listen_tls`, `upstream_tls` | string: `"off"`, `"tls"` or `"mtls"` |
//! | `listen_cert`, `listen_key`, `client_cert`, `client_key`, `pki`, `rotate_ca_cert`, `rotate_ca_key`, `json` | string: a path |
//! | `listen_client_ca`, `listen_crl`, `upstream_ca`, `upstream_crl` | a path or an array of paths |
//! | `upstream_name`, `upstream_spiffe_id`, `identity`, `admin_token` | string |
//! | `tls_versions` | string: `"1.2"`, `"1.3"` or `"1.2,1.3"` |
//! | `present` | string: `"valid=90,expired=5,none=5"` |
//! | `present_sequence` | string: `"valid,revoked,none"` |
//! | `seed` | integer, or a string for seeds above 2^63−1 |
//! | `rotate_every`, `rotate_jitter`, `handshake_timeout`, `connect_timeout`, `idle_timeout`, `drain_timeout` | string: a duration, `"500ms"`, `"5s"`, `"1m30s"` |
//! | `on_rotate` | string: `"keep"`, `"reset"` or `"drain:5s"` |
//! | `max_connections` | integer |
//! | `no_watch` | boolean |
//!
//! Relative paths resolve against the directory of the file, not the
//! working directory, so a file and its PKI can move together. An unknown
//! key is an error (a typo must not silently fall back to a default).
//! `configs/proxy-*.toml` are commented examples.
//!
//! Flat, not `[listen]`/`[upstream]` tables: one naming rule for flags, keys
//! and error messages, and a key can be found in `--help` by its name.
//!
//! # Flags override the file
//!
//! clap fills in defaults, so a parsed [`ProxyArgs`] cannot tell
//! `--listen-tls off` from no flag at all. [`ConfigFile`] is therefore the
//! first, flattened field of `ProxyArgs`: its [`clap::FromArgMatches`] runs
//! before the derived code removes values from the matches, and records
//! every argument whose value came from the command line or the
//! environment (`CERTSHIFT_ADMIN_TOKEN`). [`merge`] applies a file key only
//! when its flag was not given. This works wherever `ProxyArgs` is parsed by
//! clap (the binary, [`ProxyArgs::from_flags`]), needs no argv and no change
//! to `cli.rs`. (Re-running clap over "file flags, then argv" was rejected:
//! `into_config` has no argv, and repeatable flags would append.)
//!
//! - A repeatable flag (`--upstream-ca`, `--listen-client-ca`,
//!   `--listen-crl`) replaces the file's whole list; it never appends.
//! - Settings that only make sense together move together: if the command
//!   line gives either of `--present`/`--present-sequence`,
//!   `--client-cert`/`--client-key` or `--rotate-ca-cert`/`--rotate-ca-key`,
//!   the file's keys of that pair are ignored.
//! - `no_watch = true` cannot be undone by a flag (there is no `--watch`).
//! - A bad value is an error even when a flag overrides its key: the file
//!   is checked whole.
//! - `ProxyArgs` built by hand with [`ConfigFile::at`] has no given flags:
//!   the file overrides every field it sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, ValueEnum};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::config::{split_host_port, ConfigError, OnRotate, ProxyArgs, TlsMode};
use crate::plan::Plan;
use crate::tls::TlsVersions;

/// Two keys of which a file may give one, not both.
const EITHER: [&str; 2] = ["present", "present_sequence"];
/// Pairs of keys a file gives both or neither of.
const BOTH: [[&str; 2]; 2] = [
    ["client_cert", "client_key"],
    ["rotate_ca_cert", "rotate_ca_key"],
];
/// Each of these pairs is one setting: a flag for either key overrides both.
const PAIRS: [[&str; 2]; 3] = [EITHER, BOTH[0], BOTH[1]];

/// `--config FILE`, and which flags the command line gave. Flattened as the
/// first field of [`ProxyArgs`] so it sees every argument (module header).
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// The TOML file, if any.
    pub path: Option<PathBuf>,
    /// Argument ids (= file keys) whose value came from the command line or
    /// the environment.
    given: BTreeSet<String>,
}

/// Why a config file was refused. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read --config {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML, an unknown key (toml lists the valid ones), or a value of
    /// the wrong TOML type; `detail` shows the line, column and the key.
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// A well-typed value that is not a valid setting.
    #[error("{}:{line}:{column}: {key}: {problem}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        line: usize,
        column: usize,
        problem: String,
    },
}

/// Where the merged settings came from: the keys the file set (and the
/// command line did not override), for pointing errors at them.
#[derive(Debug)]
pub(crate) struct Origin {
    path: PathBuf,
    applied: BTreeMap<&'static str, Position>,
}

impl ConfigFile {
    /// `--config path` with no flag given: the file overrides every field
    /// it sets. For callers that build [`ProxyArgs`] by hand.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        ConfigFile {
            path: Some(path.into()),
            given: BTreeSet::new(),
        }
    }

    /// Did the command line give this key's setting (or its pair's)?
    fn given(&self, key: &str) -> bool {
        let pair = PAIRS.iter().find(|p| p.contains(&key));
        match pair {
            Some(p) => p.iter().any(|k| self.given.contains(*k)),
            None => self.given.contains(key),
        }
    }
}

impl Args for ConfigFile {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Read settings from this TOML file: keys are these flags' names with _ for -, e.g. listen_tls = \"mtls\" (examples: configs/proxy-*.toml); flags given here override it"),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ConfigFile {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = m
            .ids()
            .map(|id| id.as_str())
            .filter(|id| {
                matches!(
                    m.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(String::from)
            .collect();
        Ok(ConfigFile {
            path: m.get_one::<PathBuf>("config").cloned(),
            given,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl ProxyArgs {
    /// Parses `certshift proxy FLAGS...` exactly as the binary does (so
    /// flags given here override `--config`), for tests and embedders.
    pub fn from_flags<I, T>(flags: I) -> Result<ProxyArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let cmd = ProxyArgs::augment_args(Command::new("proxy"));
        let argv = std::iter::once(std::ffi::OsString::from("proxy"))
            .chain(flags.into_iter().map(Into::into));
        ProxyArgs::from_arg_matches(&cmd.try_get_matches_from(argv)?)
    }
}

impl Origin {
    /// Re-labels an error `config.rs` found in a setting the file made as
    /// an error at that key of the file.
    pub(crate) fn blame(&self, e: ConfigError) -> ConfigError {
        let (key, problem) = match &e {
            ConfigError::Flag { flag, problem } => (
                flag.trim_start_matches('-').replace('-', "_"),
                problem.clone(),
            ),
            ConfigError::Pki(p) => (
                "pki".to_string(),
                format!("{p} (make one with `certshift pki init --out DIR`; relative paths in this file resolve against its directory)"),
            ),
            _ => return e,
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

/// `apply!(loader, raw, args { key: check [=> Some], ... })`: checks the
/// file's value of each key with `check` and, unless the command line gave
/// that setting, stores it in the field of the same name (`=> Some` for the
/// fields that are `Option`s).
macro_rules! apply {
    ($l:ident, $raw:ident, $args:ident { $($key:ident: $check:expr $(=> $wrap:ident)?,)* }) => {
        $(
            if let Some(v) = $l.take(stringify!($key), $raw.$key, $check)? {
                $args.$key = $($wrap)?(v);
            }
        )*
    };
}

/// Applies `args.config`'s file under the flags that were given. Without
/// `--config`, returns `args` unchanged.
pub(crate) fn merge(mut args: ProxyArgs) -> Result<(ProxyArgs, Option<Origin>), ConfigError> {
    let Some(path) = args.config.path.clone() else {
        return Ok((args, None));
    };
    let text = std::fs::read_to_string(&path).map_err(|source| FileError::Read {
        path: path.clone(),
        source,
    })?;
    let raw: Raw = toml::from_str(&text).map_err(|e| FileError::Parse {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut l = Loader {
        path,
        text: &text,
        config: args.config.clone(),
        applied: BTreeMap::new(),
    };
    l.check_pairs(&raw)?;
    let path = |s: String| resolve(&dir, &s);
    let paths = |p: Paths| p.0.iter().map(|s| resolve(&dir, s)).collect();
    let seed = |s: Seed| Ok(s.0);
    let a = &mut args;
    apply!(l, raw, a {
        listen: socket_addr,
        listen_tls: tls_mode,
        listen_cert: &path => Some,
        listen_key: &path => Some,
        listen_client_ca: &paths,
        listen_crl: &paths,
        upstream: host_port,
        upstream_tls: tls_mode,
        upstream_ca: &paths,
        upstream_crl: &paths,
        upstream_name: text_value => Some,
        upstream_spiffe_id: text_value => Some,
        tls_versions: tls_versions,
        client_cert: &path => Some,
        client_key: &path => Some,
        pki: &path => Some,
        identity: text_value => Some,
        present: weights => Some,
        present_sequence: sequence => Some,
        seed: seed => Some,
        rotate_every: duration => Some,
        rotate_jitter: duration => Some,
        rotate_ca_cert: &path => Some,
        rotate_ca_key: &path => Some,
        on_rotate: on_rotate,
        admin: admin,
        admin_token: text_value => Some,
        max_connections: Ok,
        handshake_timeout: duration,
        connect_timeout: duration,
        idle_timeout: duration,
        drain_timeout: duration,
        json: &path => Some,
        no_watch: Ok,
    });

    // `--upstream` is optional on the command line only when a file is given.
    if args.upstream.is_empty() {
        return Err(ConfigError::Flag {
            flag: "--upstream",
            problem: format!(
                "required: pass --upstream HOST:PORT or set upstream = \"HOST:PORT\" in {}",
                l.path.display()
            ),
        });
    }
    let origin = Origin {
        path: l.path,
        applied: l.applied,
    };
    Ok((args, Some(origin)))
}

/// The file as written: TOML types only; [`merge`] checks the values.
/// Field names are the schema (module header) and must stay the flags' ids;
/// a unit test holds them equal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<Spanned<String>>,
    listen_tls: Option<Spanned<String>>,
    listen_cert: Option<Spanned<String>>,
    listen_key: Option<Spanned<String>>,
    listen_client_ca: Option<Spanned<Paths>>,
    listen_crl: Option<Spanned<Paths>>,
    upstream: Option<Spanned<String>>,
    upstream_tls: Option<Spanned<String>>,
    upstream_ca: Option<Spanned<Paths>>,
    upstream_crl: Option<Spanned<Paths>>,
    upstream_name: Option<Spanned<String>>,
    upstream_spiffe_id: Option<Spanned<String>>,
    tls_versions: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    pki: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    present: Option<Spanned<String>>,
    present_sequence: Option<Spanned<String>>,
    seed: Option<Spanned<Seed>>,
    rotate_every: Option<Spanned<String>>,
    rotate_jitter: Option<Spanned<String>>,
    rotate_ca_cert: Option<Spanned<String>>,
    rotate_ca_key: Option<Spanned<String>>,
    on_rotate: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    admin_token: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    handshake_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    json: Option<Spanned<String>>,
    no_watch: Option<Spanned<bool>>,
}

impl Raw {
    /// Where a key of [`PAIRS`] is in the file, if it is set.
    fn span_of(&self, key: &str) -> Option<std::ops::Range<usize>> {
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
        match key {
            "present" => s(&self.present),
            "present_sequence" => s(&self.present_sequence),
            "client_cert" => s(&self.client_cert),
            "client_key" => s(&self.client_key),
            "rotate_ca_cert" => s(&self.rotate_ca_cert),
            "rotate_ca_key" => s(&self.rotate_ca_key),
            _ => None,
        }
    }
}

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy)]
struct Position {
    line: usize,
    column: usize,
}

/// Checks and converts the values of one file.
struct Loader<'a> {
    path: PathBuf,
    text: &'a str,
    config: ConfigFile,
    applied: BTreeMap<&'static str, Position>,
}

impl Loader<'_> {
    /// Checks `raw`'s value for `key` with `parse` (whose error is the
    /// problem and its fix); the value, if the command line did not give
    /// this setting.
    fn take<R, T>(
        &mut self,
        key: &'static str,
        raw: Option<Spanned<R>>,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) -> Result<Option<T>, FileError> {
        let Some(raw) = raw else { return Ok(None) };
        let at = position(self.text, raw.span().start);
        let value = parse(raw.into_inner()).map_err(|problem| self.error(key, at, problem))?;
        if self.config.given(key) {
            return Ok(None);
        }
        self.applied.insert(key, at);
        Ok(Some(value))
    }

    /// One of [`EITHER`], both or neither of each of [`BOTH`].
    fn check_pairs(&self, raw: &Raw) -> Result<(), FileError> {
        let [w, s] = EITHER;
        if let (Some(_), Some(span)) = (raw.span_of(w), raw.span_of(s)) {
            let problem = format!("give {w} (weights) or {s} (a cycle), not both");
            return Err(self.error(s, position(self.text, span.start), problem));
        }
        for [cert, key] in BOTH {
            let (k, span, missing) = match (raw.span_of(cert), raw.span_of(key)) {
                (Some(span), None) => (cert, span, key),
                (None, Some(span)) => (key, span, cert),
                _ => continue,
            };
            let problem = format!("needs {missing} too: give both or neither");
            return Err(self.error(k, position(self.text, span.start), problem));
        }
        Ok(())
    }

    fn error(&self, key: &str, at: Position, problem: String) -> FileError {
        FileError::Value {
            path: self.path.clone(),
            key: key.to_string(),
            line: at.line,
            column: at.column,
            problem,
        }
    }
}

fn position(text: &str, offset: usize) -> Position {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

// Value checks. Each error is the problem and how to write it instead.

fn text_value(s: String) -> Result<String, String> {
    match s.trim() {
        "" => Err("is empty; give a value or remove the key".into()),
        _ => Ok(s),
    }
}

fn resolve(dir: &Path, s: &str) -> Result<PathBuf, String> {
    match s.trim() {
        "" => Err(
            "is an empty path; give a file or directory, relative to this file's directory".into(),
        ),
        // `join` keeps an absolute path as it is.
        _ => Ok(dir.join(s)),
    }
}

fn socket_addr(s: String) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not IP:PORT; write e.g. \"127.0.0.1:15001\" (port 0 picks a free port)")
    })
}

fn host_port(s: String) -> Result<String, String> {
    match split_host_port(&s) {
        Some(_) => Ok(s),
        None => Err(format!(
            "{s:?} is not HOST:PORT; write e.g. \"127.0.0.1:9443\""
        )),
    }
}

fn tls_mode(s: String) -> Result<TlsMode, String> {
    TlsMode::from_str(&s, false)
        .map_err(|_| format!("{s:?} is not a TLS mode; use \"off\", \"tls\" or \"mtls\""))
}

fn tls_versions(s: String) -> Result<TlsVersions, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn duration(s: String) -> Result<Duration, String> {
    humantime::parse_duration(&s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write e.g. \"500ms\", \"5s\" or \"1m30s\"")
    })
}

fn on_rotate(s: String) -> Result<OnRotate, String> {
    s.parse::<OnRotate>()
}

fn admin(s: String) -> Result<String, String> {
    match s.as_str() {
        "off" => Ok(s),
        a => match a.parse::<SocketAddr>() {
            Ok(_) => Ok(s),
            Err(_) => Err(format!(
                "{s:?} is neither IP:PORT nor \"off\"; write e.g. \"127.0.0.1:15000\""
            )),
        },
    }
}

/// `plan.rs` names the flag in its messages; in a file the key is named
/// already, so drop the flag and keep the problem and its fix.
fn plan_problem(flag: &str, e: crate::plan::PlanError) -> String {
    let message = e.to_string();
    message
        .strip_prefix(flag)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(&message)
        .to_string()
}

fn weights(s: String) -> Result<String, String> {
    // The seed does not affect parsing; the real one is drawn in `config.rs`.
    Plan::parse_weights(&s, 0)
        .map(|_| s)
        .map_err(|e| plan_problem("--present", e))
}

fn sequence(s: String) -> Result<String, String> {
    Plan::parse_sequence(&s)
        .map(|_| s)
        .map_err(|e| plan_problem("--present-sequence", e))
}

/// A path or an array of paths, for the repeatable flags.
#[derive(Debug)]
struct Paths(Vec<String>);

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Paths;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or an array of paths, e.g. \"./pki/ca/ca.crt\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Paths, E> {
                Ok(Paths(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Paths, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Paths(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `--seed`: TOML integers stop at 2^63−1, but a printed seed can be any
/// u64, so a string is accepted too.
#[derive(Debug)]
struct Seed(u64);

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Seed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number from 0 to 18446744073709551615 (quoted above 9223372036854775807)")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Seed, E> {
                u64::try_from(n)
                    .map(Seed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Seed, E> {
                Ok(Seed(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Seed, E> {
                s.trim()
                    .parse()
                    .map(Seed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clap_ids() -> BTreeSet<String> {
        ProxyArgs::augment_args(Command::new("proxy"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "config")
            .collect()
    }

    #[test]
    fn the_file_has_a_key_for_every_flag_and_no_other() {
        for id in clap_ids() {
            // A known key with a value of the wrong type is a type error,
            // never an unknown field.
            let e = toml::from_str::<Raw>(&format!("{id} = {{}}")).unwrap_err();
            assert!(
                !e.message().contains("unknown field"),
                "flag --{id} has no file key: {e}"
            );
        }
        // And the other way round: every key toml lists is a flag's id.
        let e = toml::from_str::<Raw>("no_such_key = 1").unwrap_err();
        let listed: BTreeSet<String> = e
            .message()
            .split('`')
            .skip(3)
            .step_by(2)
            .map(String::from)
            .collect();
        assert_eq!(listed, clap_ids(), "{e}");
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
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let p = position(text, text.find('"').unwrap());
        assert_eq!((p.line, p.column), (2, 6));
        let p = position(text, 0);
        assert_eq!((p.line, p.column), (1, 1));
    }

    #[test]
    fn plan_messages_lose_the_flag_but_keep_the_fix() {
        let p = weights("valid=x".into()).unwrap_err();
        assert!(p.starts_with("item \"valid=x\""), "{p}");
        assert!(p.contains("NAME=WEIGHT"), "{p}");
    }
}
