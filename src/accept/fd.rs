//! Running out of file descriptors (EMFILE, ENFILE) without going deaf:
//! a reserve descriptor freed the moment accept() fails so the loop can
//! still take the waiting connection, a lowered connection ceiling so the
//! listener leaves descriptors for the admin API and upstream dials, and a
//! warning at most every [`WARN_EVERY`] that names the limit, how many
//! descriptors are open and how many failures it did not repeat.
//!
//! Owns only descriptor bookkeeping; the loop decides whom to shed.

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

pub use crate::tls::fd_exhausted as exhausted;

/// At most one descriptor warning per this period; the rest are counted.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(5);

/// Connections a listener gives up below its count at the moment it ran
/// out, so that the admin API, an upstream dial or a log file can still get
/// a descriptor.
pub(super) const HEADROOM: u64 = 16;

/// How long a lowered ceiling holds after the last exhaustion: then the
/// configured cap applies again (the limit may have been raised, or the
/// descriptors were held by something that has let go).
const CEILING_HOLDS: Duration = Duration::from_secs(60);

/// One listener's descriptor state.
#[derive(Debug)]
pub(super) struct Descriptors {
    reserve: Option<File>,
    ceiling: Option<(u64, Instant)>,
    last_warning: Option<Instant>,
    suppressed: u64,
}

impl Descriptors {
    pub(super) fn new() -> Self {
        Descriptors {
            reserve: open_reserve(),
            ceiling: None,
            last_warning: None,
            suppressed: 0,
        }
    }

    /// The connection cap in force: `configured`, or lower for a while
    /// after the process ran out of descriptors.
    pub(super) fn cap(&mut self, configured: u64) -> u64 {
        match self.ceiling {
            Some((c, since)) if since.elapsed() < CEILING_HOLDS => c.min(configured),
            Some(_) => {
                self.ceiling = None;
                configured
            }
            None => configured,
        }
    }

    /// accept() failed for want of descriptors with `open` connections on
    /// this listener: release the reserve (the next accept() can take the
    /// waiting connection), lower the ceiling, and warn unless warned
    /// recently. Returns the new ceiling: shed down to it.
    pub(super) fn on_exhausted(&mut self, e: &io::Error, open: u64, listener: &str) -> u64 {
        let had_reserve = self.reserve.take().is_some();
        // Lowered at most once a second: connections just shed are still
        // closing, and counting them again would shed the next HEADROOM too.
        let ceiling = match self.ceiling {
            Some((c, since)) if since.elapsed() < Duration::from_secs(1) => c,
            _ => {
                let c = open.saturating_sub(HEADROOM).max(1);
                self.ceiling = Some((c, Instant::now()));
                c
            }
        };
        let due = self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if !due {
            self.suppressed += 1;
            return ceiling;
        }
        self.last_warning = Some(Instant::now());
        let suppressed = std::mem::take(&mut self.suppressed);
        // Counted with the reserve's descriptor free, so the count itself can open /proc/self/fd.
        let (soft, hard) = limit();
        tracing::warn!(
            %listener,
            error = %e,
            limit = %soft,
            hard_limit = %hard,
            open_descriptors = %open_descriptors(),
            connections = open,
            shedding_to = ceiling,
            suppressed,
            had_reserve,
            "out of file descriptors: closing the longest-idle connections to free some; raise `ulimit -n` (RLIMIT_NOFILE) or lower --max-connections \
             (this warning repeats at most every {}s; `suppressed` counts the failures since the last one)",
            WARN_EVERY.as_secs(),
        );
        ceiling
    }

    /// Any other accept() failure: warned about on the same schedule.
    pub(super) fn other_error(&mut self, e: &io::Error, listener: &str) {
        if self.last_warning.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        self.last_warning = Some(Instant::now());
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::warn!(%listener, error = %e, suppressed, "accept failed (this warning repeats at most every {}s)", WARN_EVERY.as_secs());
    }

    /// Re-take the reserve once a descriptor is free again.
    pub(super) fn restore(&mut self) {
        if self.reserve.is_none() {
            self.reserve = open_reserve();
        }
    }
}

fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

/// RLIMIT_NOFILE as (soft, hard), for people: a number or "unlimited".
pub(super) fn limit() -> (String, String) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    (show(l.current), show(l.maximum))
}

/// Descriptors the process has open, or "unknown" where /proc is missing.
fn open_descriptors() -> String {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
