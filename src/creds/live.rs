//! A published credential value and its reload bookkeeping.
//!
//! Rotation publishes a new immutable value; readers take the current one
//! once per handshake with a lock-free load. The status mutex is touched
//! only by reloads and by `/stats`, never on the handshake path.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::Fingerprint;

/// What reloading has done so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Successful reloads that published a new value.
    pub reloads: u64,
    /// Reloads refused because a file was bad; the old value kept serving.
    pub failures: u64,
    pub last_error: Option<String>,
    #[serde(with = "time_opt")]
    pub last_reload: Option<SystemTime>,
    #[serde(with = "time_opt")]
    pub last_failure: Option<SystemTime>,
    /// For a value that verifies peers: where it learns of revoked
    /// certificates (`"none"` or the CRL files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<super::Revocation>,
}

/// The current value of a rotating credential.
pub struct Live<T> {
    current: ArcSwap<T>,
    /// Identifies the published value's source bytes, so that a watcher
    /// firing on unchanged files does not count as a rotation.
    fingerprint: Mutex<Fingerprint>,
    status: Mutex<ReloadStatus>,
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<T> Live<T> {
    pub fn new(value: T, fingerprint: Fingerprint) -> Self {
        Live {
            current: ArcSwap::from_pointee(value),
            fingerprint: Mutex::new(fingerprint),
            status: Mutex::new(ReloadStatus::default()),
        }
    }

    /// The value to use for one handshake.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Publish `value` unless its source is unchanged; returns whether it was published.
    pub fn publish(&self, value: T, fingerprint: Fingerprint) -> bool {
        let mut fp = lock(&self.fingerprint);
        if *fp == fingerprint {
            return false;
        }
        self.current.store(Arc::new(value));
        *fp = fingerprint;
        let mut status = lock(&self.status);
        status.reloads += 1;
        status.last_reload = Some(SystemTime::now());
        true
    }

    /// Publish a value that has no source file (minted in memory), keeping
    /// the files' fingerprint: a later reload of unchanged files must not
    /// put the old on-disk credential back.
    pub fn publish_minted(&self, value: T) {
        let _fp = lock(&self.fingerprint);
        self.current.store(Arc::new(value));
        let mut status = lock(&self.status);
        status.reloads += 1;
        status.last_reload = Some(SystemTime::now());
    }

    /// A reload was refused; the current value stays.
    pub fn record_failure(&self, error: String) {
        let mut status = lock(&self.status);
        status.failures += 1;
        status.last_error = Some(error);
        status.last_failure = Some(SystemTime::now());
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    /// Say where this value learns of revocations (shown with its status).
    pub fn set_revocation(&self, revocation: super::Revocation) {
        lock(&self.status).revocation = Some(revocation);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

mod time_opt {
    use std::time::SystemTime;

    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(
                &OffsetDateTime::from(*t)
                    .format(&Rfc3339)
                    .unwrap_or_default(),
            ),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_source_is_not_a_rotation_and_failures_keep_the_value() {
        let print = |b: &[u8]| {
            let mut s = crate::creds::Sources::default();
            s.add(b);
            s.fingerprint()
        };
        let live = Live::new(1, print(b"1"));
        assert!(!live.publish(2, print(b"1")));
        assert_eq!(*live.current(), 1);
        assert!(live.publish(3, print(b"2")));
        live.record_failure("bad file".into());
        assert_eq!(*live.current(), 3);
        let s = live.status();
        assert_eq!(
            (s.reloads, s.failures, s.last_error.as_deref()),
            (1, 1, Some("bad file"))
        );
    }
}
