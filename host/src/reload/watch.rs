//! `--watch`: reload plugins when their files change, load new files, stop
//! plugins whose files are removed.
//!
//! File events are debounced (`notify-debouncer-full`), so a build that
//! writes a file in many steps, or renames it into place, produces one
//! reload. For each changed plugin file: if plugins were loaded from it,
//! each is reloaded (a refused build leaves the old generation serving; a
//! file caught half-written is retried a few times); if it is new, the
//! folder is rescanned, which also loads plugins that were waiting for it
//! as a dependency; if it is gone, its plugins and their dependents stop.
//! A changed signature (`libx.so.minisig`) counts as a change of the
//! library it signs, so a signature that lands after its library still
//! gets the library loaded.

use crate::lifecycle::report::LoadReport;
use crate::load::discovery::is_plugin_file;
use crate::reload::{ReloadFailure, Reloaded};
use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The debounce applied when none is configured.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// How many times a half-written file is retried, and how far apart.
const RETRIES: u32 = 10;
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
pub struct Watch {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Dropping the debouncer closes the channel; the worker then ends.
        drop(self.debouncer.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Whether an event changes a file's content or presence. Reads (the host's
/// own, when it copies a file to load it) and metadata changes are not, or
/// every reload would trigger the next one.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// The plugin file a changed path concerns: the path itself, or, for a
/// signature, the library it signs.
fn plugin_file_of(path: &Path) -> Option<PathBuf> {
    if is_plugin_file(path) {
        return Some(path.to_path_buf());
    }
    let name = path.file_name()?.to_str()?;
    let signed = name.strip_suffix(&format!(
        ".{}",
        crate::trust::signature::SIGNATURE_EXTENSION
    ))?;
    let library = path.with_file_name(signed);
    is_plugin_file(&library).then_some(library)
}

/// Why a folder cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The folder cannot be found (or its path resolved).
    #[error("cannot watch {}: {cause}", dir.display())]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The operating system's error.
        #[source]
        cause: std::io::Error,
    },
    /// The system's file watcher refused it.
    #[error("cannot watch {}: {cause}", dir.display())]
    Watcher {
        /// The folder.
        dir: PathBuf,
        /// The watcher's error.
        #[source]
        cause: notify_debouncer_full::notify::Error,
    },
    /// The thread that acts on the changes could not be started.
    #[error("cannot start the watch thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What a watch asks of the host whose folder it watches. The facade
/// implements it, so that the watcher reports up without naming it.
pub(crate) trait WatchedHost: Send + Sync + 'static {
    /// The plugins (started or pending) loaded from `file`.
    fn plugins_from(&self, file: &Path) -> Vec<String>;
    /// Reloads `plugin` from its changed file, as the watcher's reload: a
    /// byte-identical file is skipped.
    fn reload_changed(&self, plugin: &str) -> Result<Reloaded, ReloadFailure>;
    /// Stops the plugins of a removed file and their dependents.
    fn remove_file(&self, file: &Path) -> Vec<String>;
    /// Loads the files of `dir` that no loaded plugin came from.
    fn rescan(&self, dir: &Path) -> std::io::Result<LoadReport>;
}

/// Starts watching `dir` for `host`.
pub(crate) fn watch(
    host: Arc<dyn WatchedHost>,
    dir: &Path,
    debounce: Duration,
) -> Result<Watch, WatchError> {
    let dir = dir.canonicalize().map_err(|cause| WatchError::Folder {
        dir: dir.to_path_buf(),
        cause,
    })?;
    let watcher_error = |cause| WatchError::Watcher {
        dir: dir.clone(),
        cause,
    };
    let (sender, receiver) = channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(debounce, None, sender).map_err(watcher_error)?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(watcher_error)?;
    tracing::info!(dir = %dir.display(), debounce_ms = debounce.as_millis() as u64, "watching for plugin changes");
    let worker = std::thread::Builder::new()
        .name("agent-host-watch".into())
        .spawn(move || {
            let mut retries: HashMap<PathBuf, (u32, Instant)> = HashMap::new();
            loop {
                let changed: BTreeSet<PathBuf> = match receiver.recv_timeout(RETRY_AFTER / 2) {
                                        Ok(Ok(events)) => events
                        .iter()
                        .filter(|e| is_change(&e.kind))
                        .flat_map(|e| e.paths.iter())
                        .filter_map(|p| plugin_file_of(p))
                        .collect(),
                    Ok(Err(errors)) => {
                        for error in errors {
                            tracing::warn!("file watch error: {error}");
                        }
                        BTreeSet::new()
                    }
                    Err(RecvTimeoutError::Timeout) => BTreeSet::new(),
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let now = Instant::now();
                let due: Vec<PathBuf> = retries
                    .iter()
                    .filter(|(path, (_, at))| *at <= now && !changed.contains(*path))
                    .map(|(path, _)| path.clone())
                    .collect();
                if changed.is_empty() && due.is_empty() {
                    continue;
                }
                let mut rescan = false;
                for path in changed.iter().chain(&due) {
                    let attempt = retries.remove(path).map_or(1, |(n, _)| n + 1);
                    if !path.exists() {
                        let stopped = host.remove_file(path);
                        if !stopped.is_empty() {
                            tracing::info!(file = %path.display(), "removed; stopped: {}", stopped.join(", "));
                        }
                        continue;
                    }
                    let names = host.plugins_from(path);
                    if names.is_empty() {
                        rescan = true;
                    }
                    for name in names {
                        if let Err(failure) = host.reload_changed(&name) {
                            if failure.error.is_transient() && attempt < RETRIES {
                                retries.insert(path.clone(), (attempt, Instant::now() + RETRY_AFTER));
                            }
                        }
                    }
                }
                if rescan {
                    match host.rescan(&dir) {
                        Ok(report) => {
                            for plugin in &report.loaded {
                                tracing::info!(plugin = %plugin.name, file = %plugin.file.display(), "loaded");
                            }
                        }
                        Err(error) => tracing::warn!("cannot rescan {}: {error}", dir.display()),
                    }
                }
            }
        })
        .map_err(WatchError::Thread)?;
    Ok(Watch {
        debouncer: Some(debouncer),
        worker: Some(worker),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::discovery::LIBRARY_EXTENSION;

    #[test]
    fn a_signature_stands_for_the_library_it_signs() {
        let library = PathBuf::from(format!("/p/libx.{LIBRARY_EXTENSION}"));
        let signature = PathBuf::from(format!("/p/libx.{LIBRARY_EXTENSION}.minisig"));
        assert_eq!(plugin_file_of(&library), Some(library.clone()));
        assert_eq!(plugin_file_of(&signature), Some(library));
        assert_eq!(plugin_file_of(Path::new("/p/notes.txt.minisig")), None);
        assert_eq!(plugin_file_of(Path::new("/p/plugins.lock")), None);
    }
}
