//! `certshift proxy` settings: flags and `--config FILE` in, a validated
//! [`ProxyConfig`] out, once, before the proxy binds.
//!
//! Imports run one way, bottom to top: `error` and `flags` (what clap
//! parses); `settings` (the validated shape); `schedule` (the
//! `--plan-schedule` file); `file` (a TOML file applied to the flags);
//! `validate` (flags into settings, in named steps); this
//! module, which joins them. Never: opens credentials or sockets.

mod error;
mod file;
mod flags;
mod schedule;
mod settings;
mod validate;

pub use error::{ConfigError, FileError};
pub use flags::{ConfigFile, OnRotate, ProxyArgs, TlsMode};
pub use settings::{ClientFiles, PlanPhase, ProxyConfig};

impl ProxyArgs {
    /// Applies `--config FILE` under the given flags, then validates the
    /// result once, whichever source each setting came from; an error in a
    /// setting the file made names the file's key and line.
    pub fn into_config(self) -> Result<ProxyConfig, ConfigError> {
        let (args, origin) = file::apply(self)?;
        validate::validate(args).map_err(|e| match &origin {
            Some(o) => o.blame(e),
            None => e,
        })
    }
}
