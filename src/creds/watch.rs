//! Reload triggers: a watch on the directories holding credential files, and
//! SIGHUP. Both only *ask* for a reload; the reload function decides whether
//! the files are good enough to publish.
//!
//! Directories, not files, are watched: a Kubernetes Secret update swaps the
//! `..data` symlink in the directory atomically, which a watch on the old
//! file would never see. Bursts of events (an editor writing a temp file and
//! renaming it, a Secret update touching several links) are debounced into
//! one reload, but a steady stream of events cannot postpone it forever.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// A reload waits at most this many debounce periods after the first event.
const MAX_DEBOUNCES: u32 = 10;

/// Keeps the watcher alive; dropping it stops watching and signal handling.
pub struct ReloaderHandle {
    _watcher: Option<RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloaderHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Call `reload` (debounced) whenever one of `paths` changes (or the
/// `..data` link beside it is swapped), and on SIGHUP when `sighup` is set.
/// The SIGHUP handler is installed before this returns, so a signal sent as
/// soon as the caller announces itself is never fatal. Must run inside a
/// tokio runtime.
pub fn spawn_reloader(
    paths: &[PathBuf],
    debounce: Duration,
    sighup: bool,
    reload: impl Fn() + Send + Sync + 'static,
) -> Result<ReloaderHandle, notify::Error> {
    let reload = Arc::new(reload);
    let wake = Arc::new(Notify::new());
    let watcher = if paths.is_empty() {
        None
    } else {
        Some(watch_dirs(paths, wake.clone())?)
    };
    let mut hup = match sighup {
        true => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(notify::Error::io)?,
        ),
        false => None,
    };
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    tracing::info!("SIGHUP: reloading credentials");
                }
            }
            // Let the burst settle, within a bound.
            let deadline = tokio::time::Instant::now() + debounce * MAX_DEBOUNCES;
            loop {
                tokio::select! {
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep(debounce) => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            // Reading files (and building configs from them) blocks: keep
            // it off the runtime's threads that serve connections.
            let r = reload.clone();
            if tokio::task::spawn_blocking(move || r()).await.is_err() {
                tracing::error!("a credential reload panicked; the previous values keep serving");
            }
        }
    });
    Ok(ReloaderHandle {
        _watcher: watcher,
        task,
    })
}

fn watch_dirs(paths: &[PathBuf], wake: Arc<Notify>) -> Result<RecommendedWatcher, notify::Error> {
    // Only the watched names (and the Secret's `..data` link) matter: other
    // files in the same directory must not trigger or postpone reloads.
    let mut names: BTreeSet<OsString> = paths
        .iter()
        .filter_map(|p| p.file_name().map(OsString::from))
        .collect();
    names.insert("..data".into());
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
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
            Err(_) => wake.notify_one(),
        })?;
    let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| parent_dir(p)).collect();
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
