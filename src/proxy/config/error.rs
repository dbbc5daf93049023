//! Why proxy settings were refused: [`ConfigError`] names the flag (or the
//! file, line and key) and the fix.
//!
//! Owns: the error types of `proxy::config`. Never: decides what is wrong.

use std::path::PathBuf;

use crate::plan::PlanError;

/// A configuration error: the flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag}: {problem}")]
    Flag { flag: &'static str, problem: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Why a config file was refused. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read --config {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML, or an unknown key (toml lists the valid ones); `detail`
    /// shows the line, column and the key.
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// A value that is not a valid setting, of the wrong TOML type, or
    /// refused when validated with the rest.
    #[error("{}:{line}:{column}: {key}: {problem}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        line: usize,
        column: usize,
        problem: String,
    },
}

/// An error in the setting of `flag`.
pub(super) fn flag(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Flag {
        flag,
        problem: problem.into(),
    }
}
