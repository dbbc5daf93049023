//! Events marked on a run's timeline: rotations, posted by the credential
//! publishers while the load runs. Rare, so a plain mutex is fine here; it
//! is never touched per operation.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::creds::{RotationKind, RotationLog};

/// A rotation (or any event) to mark on the run's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at: Instant,
    pub kind: String,
    pub serial: Option<String>,
}

/// Where rotation sources post their events during a run.
#[derive(Debug, Clone, Default)]
pub struct Marks(Arc<Mutex<Vec<Mark>>>);

impl Marks {
    pub fn mark(&self, kind: RotationKind, serial: Option<String>) {
        self.mark_at(Instant::now(), kind, serial);
    }

    pub fn mark_at(&self, at: Instant, kind: RotationKind, serial: Option<String>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(Mark {
                at,
                kind: kind.name().to_string(),
                serial,
            });
        }
    }

    pub fn all(&self) -> Vec<Mark> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A run's timeline: every publication of the rotating credential. A
/// refused reload is logged and counted by the publisher; the run's
/// timeline shows what the service was presented.
impl RotationLog for Marks {
    fn published(&self, kind: RotationKind, serial: Option<&str>) {
        self.mark(kind, serial.map(str::to_string));
    }

    fn refused(&self, _: RotationKind, _: &str) {}
}
