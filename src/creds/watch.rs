//! Reload triggers: a watch on the directories holding credential files,
//! a periodic fingerprint poll, and SIGHUP. All of them only *ask* for a
//! reload; the reload function decides whether the files are good enough
//! to publish.
//!
//! Directories, not files, are watched: a Kubernetes Secret update swaps the
//! `..data` symlink in the directory atomically, which a watch on the old
//! file would never see. Each directory's parent is watched too, and after
//! every trigger each directory is resolved again (symlinks followed, inode
//! compared) and watched anew when it changed: a directory removed and
//! recreated, a new one `mv`ed into place, or a parent symlink swapped
//! (`current -> v1` to `v2`) would otherwise leave the watch on a directory
//! nobody writes to any more. A watch that cannot be re-established is
//! logged as a warning; the poll, which re-reads the files' bytes and asks
//! for a reload only when they changed, bounds what any missed event costs.
//!
//! Bursts of events (an editor writing a temp file and renaming it, a Secret
//! update touching several links) are debounced into one reload, but a
//! steady stream of events cannot postpone it forever.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::{Fingerprint, Sources};

/// A reload waits at most this many debounce periods after the first event.
const MAX_DEBOUNCES: u32 = 10;

/// The poll's period when watching and none was given (`--reload-poll`).
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Keeps the watcher alive; dropping it stops watching, polling and signal handling.
pub struct ReloaderHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloaderHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What asks for a reload.
#[derive(Debug, Clone, Copy)]
pub struct Triggers {
    /// Quiet time after the last file event before reloading.
    pub debounce: Duration,
    /// Watch the files' directories (and their parents) for changes.
    pub events: bool,
    /// Re-read the files this often and reload when their bytes changed.
    pub poll: Option<Duration>,
    /// Reload on SIGHUP.
    pub sighup: bool,
}

/// The poll period from a `--reload-poll` flag: `given` when set (`0`
/// disables it), else [`DEFAULT_POLL`] while watching. Without a watch and
/// without the flag nothing polls: `--no-watch` means no automatic reload
/// unless one is asked for.
pub fn poll_period(watching: bool, given: Option<Duration>) -> Option<Duration> {
    match given {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None if watching => Some(DEFAULT_POLL),
        None => None,
    }
}

/// Call `reload` (debounced) whenever one of `paths` changes (or the
/// `..data` link beside it is swapped), polled every [`DEFAULT_POLL`], and
/// on SIGHUP when `sighup` is set. See [`spawn_reloader_with`].
pub fn spawn_reloader(
    paths: &[PathBuf],
    debounce: Duration,
    sighup: bool,
    reload: impl Fn() + Send + Sync + 'static,
) -> Result<ReloaderHandle, notify::Error> {
    let triggers = Triggers {
        debounce,
        events: true,
        poll: poll_period(true, None),
        sighup,
    };
    spawn_reloader_with(paths, triggers, reload)
}

/// Call `reload` when `triggers` say so. The SIGHUP handler is installed
/// before this returns, so a signal sent as soon as the caller announces
/// itself is never fatal. Must run inside a tokio runtime.
pub fn spawn_reloader_with(
    paths: &[PathBuf],
    triggers: Triggers,
    reload: impl Fn() + Send + Sync + 'static,
) -> Result<ReloaderHandle, notify::Error> {
    let reload = Arc::new(reload);
    let wake = Arc::new(Notify::new());
    let watch = match triggers.events && !paths.is_empty() {
        true => Some(Watch::new(paths, wake.clone(), triggers.poll)?),
        false => None,
    };
    let poll = triggers.poll.filter(|_| !paths.is_empty());
    let files = Arc::new(Files {
        paths: paths.to_vec(),
        // Taken now, right after the caller's own first load, so a change
        // between that load and the first tick is still a change.
        last: Mutex::new(fingerprint(paths)),
        watch: Mutex::new(watch),
    });
    let mut hup = match triggers.sighup {
        true => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(notify::Error::io)?,
        ),
        false => None,
    };
    let debounce = triggers.debounce;
    let task = tokio::spawn(async move {
        let mut ticker = poll.map(|p| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let asked = tokio::select! {
                _ = wake.notified() => Asked::Event,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    tracing::info!("SIGHUP: reloading credentials");
                    Asked::Signal
                }
                _ = tick(&mut ticker) => Asked::Poll,
            };
            if asked != Asked::Poll {
                // Let the burst settle, within a bound.
                let deadline = tokio::time::Instant::now() + debounce * MAX_DEBOUNCES;
                loop {
                    tokio::select! {
                        _ = wake.notified() => continue,
                        _ = tokio::time::sleep(debounce) => break,
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
            // Reading files (and building configs from them) blocks: keep
            // it off the runtime's threads that serve connections.
            let (f, r) = (files.clone(), reload.clone());
            let job = move || {
                if f.changed(asked) {
                    r();
                }
            };
            if tokio::task::spawn_blocking(job).await.is_err() {
                tracing::error!("a credential reload panicked; the previous values keep serving");
            }
        }
    });
    Ok(ReloaderHandle { task })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Event,
    Signal,
    Poll,
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The watched files, the print of their bytes at the last reload, and the
/// watch on their directories.
struct Files {
    paths: Vec<PathBuf>,
    last: Mutex<Fingerprint>,
    watch: Mutex<Option<Watch>>,
}

impl Files {
    /// Re-establish the watch where a directory changed, then say whether
    /// to reload: always when asked by an event or a signal (the reload
    /// itself tells unchanged files apart), on a poll tick only when the
    /// bytes changed, so a bad file is refused (and counted) once, not once
    /// per tick. Blocking.
    fn changed(&self, asked: Asked) -> bool {
        if let Some(w) = lock(&self.watch).as_mut() {
            w.refresh(asked != Asked::Poll);
        }
        let now = fingerprint(&self.paths);
        let mut last = lock(&self.last);
        let changed = *last != now;
        *last = now;
        if changed && asked == Asked::Poll {
            tracing::info!("credential files changed with no file event seen; reloading");
        }
        changed || asked != Asked::Poll
    }
}

/// The bytes of every file, a missing or unreadable one included as such.
fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut src = Sources::default();
    for p in paths {
        if let Err(e) = src.read(p) {
            src.add(format!("\0unreadable: {e}").as_bytes());
        }
    }
    src.fingerprint()
}

/// A directory as last watched: where its path led, which inode it was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    target: PathBuf,
    dev: u64,
    ino: u64,
}

fn resolve(dir: &Path) -> std::io::Result<Resolved> {
    let target = std::fs::canonicalize(dir)?;
    let meta = std::fs::metadata(&target)?;
    Ok(Resolved {
        target,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The watch on the credential directories and on their parents.
struct Watch {
    watcher: RecommendedWatcher,
    /// Each directory holding a watched file, and what it resolved to when
    /// it was last watched (`None`: it could not be watched).
    dirs: BTreeMap<PathBuf, Option<Resolved>>,
    poll: Option<Duration>,
}

impl Watch {
    fn new(paths: &[PathBuf], wake: Arc<Notify>, poll: Option<Duration>) -> notify::Result<Self> {
        let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| parent_dir(p)).collect();
        // Only the watched names, the Secret's `..data` link and the
        // directories themselves (seen from their parents) matter: other
        // files nearby must not trigger or postpone reloads.
        let mut names: BTreeSet<OsString> = paths
            .iter()
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect();
        names.extend(
            dirs.iter()
                .filter_map(|d| d.file_name().map(OsString::from)),
        );
        names.insert("..data".into());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(e) => {
                    let relevant = !matches!(e.kind, notify::EventKind::Access(_))
                        && (e.need_rescan()
                            || e.paths
                                .iter()
                                .any(|p| p.file_name().is_some_and(|n| names.contains(n))));
                    if relevant {
                        wake.notify_one();
                    }
                }
                // Events may have been lost: re-reading is always safe.
                Err(e) => {
                    tracing::warn!(error = %e, "credential file watch reported an error; reloading to be safe");
                    wake.notify_one();
                }
            }
        })?;
        let mut w = Watch {
            watcher,
            dirs: dirs.into_iter().map(|d| (d, None)).collect(),
            poll,
        };
        // The parents are watched once: they are what sees a directory
        // replaced. Missing parents are not an error: the poll covers them.
        let parents: BTreeSet<PathBuf> = w.dirs.keys().map(|d| parent_dir(d)).collect();
        for p in parents.iter().filter(|p| !w.dirs.contains_key(*p)) {
            if let Err(e) = w.watcher.watch(p, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %p.display(), error = %e, "not watching a credential directory's parent");
            }
        }
        // At startup a directory that cannot be watched is the caller's
        // error (a typo in a path), not something to poll for.
        let dirs: Vec<PathBuf> = w.dirs.keys().cloned().collect();
        for d in dirs {
            w.watcher.watch(&d, RecursiveMode::NonRecursive)?;
            let resolved = resolve(&d).ok();
            w.dirs.insert(d, resolved);
        }
        Ok(w)
    }

    /// Watch again each directory that no longer is what was watched, or
    /// every directory when `all`: after an event or a signal, since a
    /// directory removed and recreated may come back with the same inode
    /// number, which no comparison can tell from the old one. Re-adding a
    /// watch is cheap, and the files are read only after it, so a write
    /// that races it is still seen.
    fn refresh(&mut self, all: bool) {
        let poll = self
            .poll
            .map_or("never (the poll is off)".to_string(), |p| {
                format!("every {}", humantime::format_duration(p))
            });
        for (dir, was) in self.dirs.iter_mut() {
            let now = resolve(dir).ok();
            let replaced = now != *was;
            if !replaced && !all {
                continue;
            }
            // Drops the watch on the old inode, if the kernel still has one.
            let _ = self.watcher.unwatch(dir);
            match (now, self.watcher.watch(dir, RecursiveMode::NonRecursive)) {
                (Some(now), Ok(())) => {
                    if replaced {
                        tracing::warn!(dir = %dir.display(), now = %now.target.display(), "credential directory was replaced; watching the new one");
                    }
                    *was = Some(now);
                }
                (_, Err(e)) => {
                    if was.is_some() {
                        tracing::warn!(dir = %dir.display(), error = %e, "lost the watch on a credential directory; re-reading the files {poll} until it is back");
                    }
                    *was = None;
                }
                (None, Ok(())) => *was = None,
            }
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data (a print, a watcher); a panicked reload leaves it usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn the_poll_flag_and_the_watch_switch_combine() {
        let s = Duration::from_secs(1);
        assert_eq!(poll_period(true, None), Some(DEFAULT_POLL));
        assert_eq!(poll_period(false, None), None);
        assert_eq!(poll_period(false, Some(s)), Some(s));
        assert_eq!(poll_period(true, Some(Duration::ZERO)), None);
    }

    /// Wait up to 5 s for `n` reloads.
    async fn reloads_reach(count: &AtomicU64, n: u64) -> bool {
        for _ in 0..250 {
            if count.load(Ordering::SeqCst) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn the_poll_alone_sees_a_changed_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tls.crt");
        std::fs::write(&file, "1").unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let triggers = Triggers {
            debounce: Duration::from_millis(10),
            events: false,
            poll: Some(Duration::from_millis(50)),
            sighup: false,
        };
        let _h = spawn_reloader_with(std::slice::from_ref(&file), triggers, move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "unchanged bytes: no reload"
        );
        std::fs::write(&file, "2").unwrap();
        assert!(reloads_reach(&count, 1).await, "the poll saw the change");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "one change, one reload");
    }

    #[tokio::test]
    async fn a_directory_recreated_under_the_watch_is_watched_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("creds");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("tls.crt");
        std::fs::write(&file, "1").unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let triggers = Triggers {
            debounce: Duration::from_millis(10),
            events: true,
            poll: None,
            sighup: false,
        };
        let _h = spawn_reloader_with(std::slice::from_ref(&file), triggers, move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, "2").unwrap();
        assert!(
            reloads_reach(&count, 1).await,
            "the parent saw the new directory"
        );
        let seen = count.load(Ordering::SeqCst);
        // A write into the new directory, with no poll to fall back on.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&file, "3").unwrap();
        assert!(
            reloads_reach(&count, seen + 1).await,
            "a later write in the recreated directory is seen"
        );
    }
}
