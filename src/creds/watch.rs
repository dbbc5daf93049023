//! Reload triggers: a watch on the directories holding credential files, and
//! SIGHUP. Both only *ask* for a reload; the reload function decides whether
//! the files are good enough to publish.
//!
//! Directories, not files, are watched: a Kubernetes Secret update swaps the
//! `..data` symlink in the directory atomically, which a watch on the old
//! file would never see. Bursts of events (an editor writing a temp file and
//! renaming it, a Secret update touching several links) are debounced into
//! one reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

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

/// Call `reload` (debounced) whenever a file in the directories of `paths`
/// changes, and on SIGHUP when `sighup` is set. Must run inside a tokio runtime.
pub fn spawn_reloader(
    paths: &[PathBuf],
    debounce: Duration,
    sighup: bool,
    reload: impl Fn() + Send + Sync + 'static,
) -> Result<ReloaderHandle, notify::Error> {
    let wake = Arc::new(Notify::new());
    let watcher = if paths.is_empty() {
        None
    } else {
        let w = wake.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Access events (reads, including our own reload) are not changes.
                if let Ok(e) = event {
                    if !matches!(e.kind, notify::EventKind::Access(_)) {
                        w.notify_one();
                    }
                }
            })?;
        let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| parent_dir(p)).collect();
        for dir in dirs {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        Some(watcher)
    };
    let task = tokio::spawn(async move {
        let mut hup = match sighup {
            true => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
            false => None,
        };
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    tracing::info!("SIGHUP: reloading credentials");
                }
            }
            // Let the burst settle: keep waiting while events keep arriving.
            loop {
                tokio::select! {
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep(debounce) => break,
                }
            }
            reload();
        }
    });
    Ok(ReloaderHandle {
        _watcher: watcher,
        task,
    })
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
