//! When the proxy's presented credential changes: per downstream connection
//! (`--swap connection`) or per request (`--swap request`, optionally held
//! for `--swap-every N` requests of one connection).

use std::fmt;
use std::num::NonZeroU32;

use super::PlanError;

/// The unit of one experiment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Swap {
    /// One pick per downstream connection; its bytes are relayed as they are.
    #[default]
    Connection,
    /// The proxy speaks HTTP downstream and picks per request; `every`
    /// requests of one downstream connection share a pick.
    Request { every: NonZeroU32 },
}

impl Swap {
    pub const PER_REQUEST: Swap = Swap::Request {
        every: NonZeroU32::MIN,
    };

    /// `--swap MODE` with `--swap-every N` (or the JSON/TOML `swap` and
    /// `swap_every`). `every` only means something per request.
    pub fn parse(mode: &str, every: Option<u32>) -> Result<Swap, PlanError> {
        match (mode.trim(), every) {
            ("connection", None) => Ok(Swap::Connection),
            ("connection", Some(n)) => Err(PlanError::SwapEvery(format!(
                "{n} needs swap mode \"request\" (a connection presents one credential for its whole life in \"connection\" mode)"
            ))),
            ("request", None) => Ok(Swap::PER_REQUEST),
            ("request", Some(n)) => NonZeroU32::new(n)
                .map(|every| Swap::Request { every })
                .ok_or_else(|| {
                    PlanError::SwapEvery("0: give 1 or more requests per credential".into())
                }),
            (other, _) => Err(PlanError::Swap(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Swap::Connection => "connection",
            Swap::Request { .. } => "request",
        }
    }

    /// Requests per pick; 0 in connection mode (the connection is the unit).
    pub fn every(self) -> u32 {
        match self {
            Swap::Connection => 0,
            Swap::Request { every } => every.get(),
        }
    }
}

impl fmt::Display for Swap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Swap::Connection => f.write_str("per connection"),
            Swap::Request { every } if every.get() == 1 => f.write_str("per request"),
            Swap::Request { every } => write!(f, "every {every} requests of a connection"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_every_only_goes_with_request() {
        assert_eq!(Swap::parse("connection", None), Ok(Swap::Connection));
        assert_eq!(Swap::parse("request", None), Ok(Swap::PER_REQUEST));
        assert_eq!(Swap::parse("request", Some(3)).map(Swap::every), Ok(3));
        let e = Swap::parse("connection", Some(3)).unwrap_err().to_string();
        assert!(e.contains("needs swap mode \"request\""), "{e}");
        let e = Swap::parse("request", Some(0)).unwrap_err().to_string();
        assert!(e.contains("1 or more"), "{e}");
        let e = Swap::parse("stream", None).unwrap_err().to_string();
        assert!(
            e.contains("\"connection\"") && e.contains("\"request\""),
            "{e}"
        );
        assert_eq!(Swap::Connection.to_string(), "per connection");
        assert_eq!(Swap::PER_REQUEST.to_string(), "per request");
    }

    #[test]
    fn a_spec_without_swap_keeps_the_mode_and_swap_every_alone_means_request() {
        let spec = |swap: Option<&str>, every: Option<u32>| crate::plan::PlanSpec {
            present_sequence: Some("valid".into()),
            swap: swap.map(str::to_string),
            swap_every: every,
            ..Default::default()
        };
        assert_eq!(spec(None, None).swap(), Ok(None));
        assert_eq!(
            spec(None, Some(4)).swap().unwrap().map(Swap::every),
            Some(4)
        );
        assert_eq!(
            spec(Some("request"), None).swap(),
            Ok(Some(Swap::PER_REQUEST))
        );
        assert!(spec(Some("connection"), Some(2)).build(0).is_err());
    }
}
