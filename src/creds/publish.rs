//! The one way a rotated value is published: read its files (once, the
//! fingerprint taken from the very bytes parsed), check, publish when they
//! changed, count, log, mark the timeline, and bump a generation that
//! connections established with the old value can watch. A refusal keeps
//! the old value serving, and is counted, logged and marked too.
//!
//! Every rotating thing goes through [`Publisher`]: the proxy's client
//! identity, downstream server material and upstream trust bundle, `serve`'s
//! TLS material and policy, `load`'s client credential, and the values
//! `rotation-test` mints in memory.
//!
//! Never: runs on the async runtime's threads when it reads files or mints
//! keys (RSA key generation takes up to a second): callers in async code
//! go through `spawn_blocking` (the file watcher, `POST /rotate`, the mint
//! schedule and rotation-test's steps all do).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{read, CredError, Live, ReloadStatus};

/// What rotated. Names are a contract: timeline marks, `/stats`, reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RotationKind {
    /// A client identity presented to a service.
    Client,
    /// A server's own certificate (and the client CAs/CRLs it checks).
    Server,
    /// The roots (and CRLs) a client verifies a service against.
    TrustBundle,
    /// An authorization policy.
    Policy,
    /// CA rotation, step 1: the new root joins every trust bundle.
    CaAddRoot,
    /// CA rotation, step 2: issuance switches to the new root.
    CaIssue,
    /// CA rotation, step 3: the old root leaves the trust bundles.
    CaDropRoot,
}

impl RotationKind {
    pub fn name(self) -> &'static str {
        match self {
            RotationKind::Client => "client",
            RotationKind::Server => "server",
            RotationKind::TrustBundle => "trust-bundle",
            RotationKind::Policy => "policy",
            RotationKind::CaAddRoot => "ca-bundle:add-root",
            RotationKind::CaIssue => "ca-bundle:issue",
            RotationKind::CaDropRoot => "ca-bundle:drop-root",
        }
    }
}

impl fmt::Display for RotationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where publications and refusals are marked: the proxy's metrics
/// timeline, a load run's marks, or nowhere.
pub trait RotationLog: Send + Sync {
    fn published(&self, kind: RotationKind, serial: Option<&str>);
    fn refused(&self, kind: RotationKind, error: &str);
}

/// Marks nothing (a service with no timeline).
impl RotationLog for () {
    fn published(&self, _: RotationKind, _: Option<&str>) {}
    fn refused(&self, _: RotationKind, _: &str) {}
}

/// Identifies the source bytes of a published value, so that a watcher
/// firing on unchanged files is not a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<u8>);

/// Reads a value's files and fingerprints exactly the bytes it returns:
/// one rule for every source, and no second read that could race a writer.
#[derive(Default)]
pub struct Sources {
    hash: Sha256,
}

impl Sources {
    pub fn read(&mut self, path: &Path) -> Result<Vec<u8>, CredError> {
        let bytes = read(path)?;
        self.add(&bytes);
        Ok(bytes)
    }

    /// Count bytes that did not come from a file (e.g. a setting the value
    /// depends on).
    pub fn add(&mut self, bytes: &[u8]) {
        // Length-prefixed, so moving bytes between files changes the print.
        self.hash.update((bytes.len() as u64).to_be_bytes());
        self.hash.update(bytes);
    }

    pub fn fingerprint(self) -> Fingerprint {
        Fingerprint(self.hash.finalize().to_vec())
    }
}

/// A value read and checked, ready to publish.
pub struct Loaded<T> {
    pub value: T,
    pub fingerprint: Fingerprint,
    /// The leaf serial (hex) when the value holds a certificate.
    pub serial: Option<String>,
}

type Loader<T, E> = Box<dyn Fn() -> Result<Loaded<T>, E> + Send + Sync>;

/// A live value and the one way it changes.
pub struct Publisher<T, E = CredError> {
    kind: RotationKind,
    live: Arc<Live<T>>,
    /// `None` for values that only change in memory (minted).
    loader: Option<Loader<T, E>>,
    log: Arc<dyn RotationLog>,
    generation: watch::Sender<u64>,
    /// One publication at a time: two racing reloads could otherwise
    /// publish the older files last. Never taken on a handshake.
    lock: Mutex<()>,
}

impl<T, E: fmt::Display> Publisher<T, E> {
    /// Load the value once; a bad file here is the caller's startup error.
    pub fn load(
        kind: RotationKind,
        loader: impl Fn() -> Result<Loaded<T>, E> + Send + Sync + 'static,
        log: Arc<dyn RotationLog>,
    ) -> Result<Self, E> {
        let first = loader()?;
        Ok(Publisher {
            kind,
            live: Arc::new(Live::new(first.value, first.fingerprint)),
            loader: Some(Box::new(loader)),
            log,
            generation: watch::channel(0).0,
            lock: Mutex::new(()),
        })
    }

    /// A value with no files behind it; it changes only by [`Publisher::publish_with`].
    pub fn fixed(kind: RotationKind, value: T, log: Arc<dyn RotationLog>) -> Self {
        Publisher {
            kind,
            live: Arc::new(Live::new(value, Fingerprint::default())),
            loader: None,
            log,
            generation: watch::channel(0).0,
            lock: Mutex::new(()),
        }
    }

    pub fn kind(&self) -> RotationKind {
        self.kind
    }

    /// The read side, for TLS configs and resolvers.
    pub fn live(&self) -> &Arc<Live<T>> {
        &self.live
    }

    pub fn current(&self) -> Arc<T> {
        self.live.current()
    }

    pub fn status(&self) -> ReloadStatus {
        self.live.status()
    }

    /// Bumped on every publication; connections watch it (`--on-rotate`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-read the files and publish them when they changed and are good:
    /// `Ok(true)` when a new value went out. A bad file keeps the current
    /// value. Blocks on file reads: call it off the async runtime.
    pub fn reload(&self) -> Result<bool, E> {
        let Some(loader) = &self.loader else {
            return Ok(false);
        };
        let _one_at_a_time = lock(&self.lock);
        match loader() {
            Ok(l) => {
                let published = self.live.publish(l.value, l.fingerprint);
                if published {
                    self.announce(l.serial.as_deref());
                }
                Ok(published)
            }
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// Publish what `make` produces (a minted credential, a bundle built in
    /// memory), keeping the files' fingerprint so a later reload of
    /// unchanged files does not put the old value back. A failure is
    /// refused like a bad file. Returns the serial published.
    pub fn publish_with<F: fmt::Display>(
        &self,
        make: impl FnOnce() -> Result<(T, Option<String>), F>,
    ) -> Result<Option<String>, F> {
        let _one_at_a_time = lock(&self.lock);
        match make() {
            Ok((value, serial)) => {
                self.live.publish_minted(value);
                self.announce(serial.as_deref());
                Ok(serial)
            }
            Err(e) => Err(self.refuse(e)),
        }
    }

    fn announce(&self, serial: Option<&str>) {
        tracing::info!(kind = %self.kind, serial = serial.unwrap_or("-"), "rotated");
        self.log.published(self.kind, serial);
        self.generation.send_modify(|g| *g += 1);
    }

    fn refuse<F: fmt::Display>(&self, e: F) -> F {
        let text = e.to_string();
        tracing::error!(kind = %self.kind, error = %text, "rotation refused; the previous value keeps serving");
        self.live.record_failure(text.clone());
        self.log.refused(self.kind, &text);
        e
    }
}

fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    // The guarded data is `()`: a panic elsewhere leaves nothing torn.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl RotationLog for Log {
        fn published(&self, kind: RotationKind, serial: Option<&str>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{kind} {}", serial.unwrap_or("-")));
        }
        fn refused(&self, kind: RotationKind, error: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{kind} refused: {error}"));
        }
    }

    #[test]
    fn only_changed_good_files_are_published_and_everything_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value.txt");
        std::fs::write(&path, "1").unwrap();
        let log = Arc::new(Log::default());
        let p = path.clone();
        let publisher: Publisher<u64> = Publisher::load(
            RotationKind::Policy,
            move || {
                let mut src = Sources::default();
                let text = String::from_utf8(src.read(&p)?).unwrap_or_default();
                let value: u64 = text
                    .trim()
                    .parse()
                    .map_err(|_| CredError::Tls(format!("not a number: {text:?}")))?;
                Ok(Loaded {
                    value,
                    fingerprint: src.fingerprint(),
                    serial: Some(format!("{value:02x}")),
                })
            },
            log.clone(),
        )
        .unwrap();
        let generation = publisher.subscribe();
        assert!(
            !publisher.reload().unwrap(),
            "unchanged files are no rotation"
        );
        std::fs::write(&path, "2").unwrap();
        assert!(publisher.reload().unwrap());
        std::fs::write(&path, "garbage").unwrap();
        assert!(publisher.reload().is_err());
        assert_eq!(*publisher.current(), 2, "a bad file keeps the old value");
        let minted = publisher.publish_with(|| Ok::<_, CredError>((7, Some("07".into()))));
        assert_eq!(minted.unwrap(), Some("07".into()));
        std::fs::write(&path, "2").unwrap();
        assert!(
            !publisher.reload().unwrap(),
            "the files did not change since the last load"
        );
        assert_eq!(
            *publisher.current(),
            7,
            "a minted value is not undone by unchanged files"
        );
        assert_eq!(*generation.borrow(), 2);
        let status = publisher.status();
        assert_eq!((status.reloads, status.failures), (2, 1));
        let marks = log.0.lock().unwrap().clone();
        assert_eq!(marks[0], "policy 02");
        assert!(marks[1].starts_with("policy refused: "), "{marks:?}");
        assert_eq!(marks[2], "policy 07");
    }

    #[test]
    fn one_fingerprint_rule_sees_bytes_moved_between_files() {
        let mut a = Sources::default();
        a.add(b"ab");
        a.add(b"c");
        let mut b = Sources::default();
        b.add(b"a");
        b.add(b"bc");
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
