//! Lazy plugins: checked at load (file, ABI, manifest, dependencies) but
//! started only when first needed: a message their action triggers match
//! (or any message, for an action without triggers), a call to one of their
//! services, or an event matching a pattern their manifest subscribes to.
//!
//! A plugin waits here, pending, with the means to start it (made by the
//! loader). Starting takes it out of the pending list and runs the same
//! steps as an eager start (its pending dependencies first, then create,
//! `on_load`, services, provider subscriptions), so it happens exactly once
//! however many callers need it at the same time. Starts run one at a time,
//! under the `starting` lock, which a thread may take again while it holds
//! it: a plugin's `on_load` may call a service of another lazy plugin,
//! which starts it on the same thread. A failure to start is logged like an
//! eager one and leaves the other plugins as they were.

use super::{LivePlugin, Registry};
use crate::permissions::matches;
use crate::triggers::{PluginTriggers, TriggerIndex};
use agent_host_plugin_sdk::manifest::{Dependency, Manifest};
use semver::Version;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

/// Starts a pending plugin: everything an eager start does (the lifecycle
/// makes it). On failure, the error that names the file, the plugin and
/// the cause.
pub(crate) type Starter = Box<
    dyn Fn(&Arc<Registry>) -> Result<Arc<LivePlugin>, Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync,
>;

/// Why a pending plugin did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LazyStartError {
    /// Asked again by its own start (its `on_load` calling its own service,
    /// or an event it emits).
    #[error("plugin '{plugin}' is still starting")]
    StillStarting {
        /// The plugin.
        plugin: String,
    },
    /// The host is shutting down.
    #[error("plugin '{plugin}' not started: the host is shutting down")]
    ShuttingDown {
        /// The plugin.
        plugin: String,
    },
    /// Its start failed: the line naming the file, the plugin and the cause.
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A plugin checked and waiting to be started.
pub(crate) struct PendingPlugin {
    /// Its checked manifest.
    pub manifest: Arc<Manifest>,
    /// Its parsed version.
    pub version: Version,
    /// Its parsed dependencies.
    pub dependencies: Vec<Dependency>,
    /// The file it comes from.
    pub file: PathBuf,
    /// Bytes of the library image its file keeps mapped.
    pub image_bytes: u64,
    /// The SHA-256 of the bytes its file was loaded from.
    pub sha256: String,
    /// Its place in the load order, kept when it starts.
    pub load_order: usize,
    /// The permissions it will hold (requested and granted).
    pub permissions: Vec<String>,
    /// Its action triggers, compiled.
    pub triggers: Arc<PluginTriggers>,
    /// What starts it.
    pub start: Starter,
}

impl PendingPlugin {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    fn provides(&self, service: &str) -> bool {
        self.manifest.services.iter().any(|s| s.name == service)
    }

    fn subscribes_to(&self, event: &str) -> bool {
        self.manifest
            .subscribes_to
            .iter()
            .any(|pattern| matches(pattern, event))
    }
}

/// The pending plugins and their triggers, for one scan per message.
struct PendingIndex {
    plugins: Vec<Arc<PendingPlugin>>,
    triggers: TriggerIndex,
}

/// The lazy plugins not started yet.
#[derive(Default)]
pub(crate) struct LazyPlugins {
    pending: RwLock<Vec<Arc<PendingPlugin>>>,
    /// How many are pending: the per-message and per-event checks cost one
    /// atomic load while none is.
    count: AtomicUsize,
    /// Built from `pending` when first needed after a change.
    index: Mutex<Option<Arc<PendingIndex>>>,
    /// One start at a time (re-entrant on the thread that holds it).
    starting: Mutex<()>,
    /// The plugins being started (by the thread holding `starting`): a
    /// plugin stays pending until its start is over, so that a caller on
    /// another thread waits for it rather than missing it.
    in_progress: Mutex<Vec<String>>,
}

thread_local! {
    /// Whether this thread holds `starting`.
    static STARTING: Cell<bool> = const { Cell::new(false) };
}

/// `starting`, held (or already held by this thread).
struct StartGuard<'a> {
    lock: Option<MutexGuard<'a, ()>>,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            STARTING.with(|s| s.set(false));
        }
    }
}

/// Whether this thread holds `starting` (it is starting a lazy plugin).
pub(crate) fn start_held_here() -> bool {
    STARTING.with(Cell::get)
}

/// Runs `work` as part of the start that the thread it was handed over by
/// holds, when `held`: a step of a lazy plugin's life runs on a thread of
/// its own while its starter waits for it (`registry/step.rs`), and a
/// lazy plugin that step needs starts on that thread as it would have on
/// the starter's, without taking `starting` again.
pub(crate) fn as_part_of_start<T>(held: bool, work: impl FnOnce() -> T) -> T {
    if !held {
        return work();
    }
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            STARTING.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(STARTING.with(|s| s.replace(true)));
    work()
}

impl LazyPlugins {
    fn start_guard(&self) -> StartGuard<'_> {
        if STARTING.with(Cell::get) {
            return StartGuard { lock: None };
        }
        let lock = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        STARTING.with(|s| s.set(true));
        StartGuard { lock: Some(lock) }
    }

    fn changed(&self, pending: &[Arc<PendingPlugin>]) {
        self.count.store(pending.len(), Ordering::Release);
        *self.index.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn index(&self) -> Arc<PendingIndex> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = index.as_ref() {
            return Arc::clone(index);
        }
        let plugins = self
            .pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let triggers = TriggerIndex::new(plugins.iter().map(|p| &*p.triggers));
        let fresh = Arc::new(PendingIndex { plugins, triggers });
        *index = Some(Arc::clone(&fresh));
        fresh
    }

    fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }
}

impl Registry {
    /// Adds plugins that start when first needed.
    pub(crate) fn add_pending(&self, plugins: Vec<PendingPlugin>) {
        if plugins.is_empty() {
            return;
        }
        let mut pending = self
            .lazy
            .pending
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        pending.extend(plugins.into_iter().map(Arc::new));
        pending.sort_by_key(|p| p.load_order);
        self.lazy.changed(&pending);
    }

    /// The plugins waiting to be started, in load order.
    pub(crate) fn pending(&self) -> Vec<Arc<PendingPlugin>> {
        self.lazy
            .pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The pending plugin named `name`.
    pub(crate) fn pending_named(&self, name: &str) -> Option<Arc<PendingPlugin>> {
        if !self.lazy.any() {
            return None;
        }
        self.lazy
            .pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// Takes `name` out of the pending list (without starting it); returns it.
    pub(crate) fn remove_pending(&self, name: &str) -> Option<Arc<PendingPlugin>> {
        let mut pending = self
            .lazy
            .pending
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let position = pending.iter().position(|p| p.name() == name)?;
        let removed = pending.remove(position);
        self.lazy.changed(&pending);
        Some(removed)
    }

    /// Starts the pending plugin `name`, exactly once: a caller that finds
    /// it started already (or failed already) returns at once, one that
    /// finds it starting on another thread waits for the end of that start.
    /// A failed start is also logged. Callers are inside an admitted entry.
    pub(crate) fn start_pending(&self, name: &str) -> Result<(), LazyStartError> {
        let _one_at_a_time = self.lazy.start_guard();
        let Some(plugin) = self.pending_named(name) else {
            return Ok(());
        };
        {
            let mut in_progress = self
                .lazy
                .in_progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if in_progress.iter().any(|n| n == name) {
                // Asked again by its own start (its `on_load` calling its
                // own service, or an event it emits): not started yet.
                return Err(LazyStartError::StillStarting {
                    plugin: name.to_string(),
                });
            }
            in_progress.push(name.to_string());
        }
        let outcome = match self.me.upgrade() {
            None => Err(LazyStartError::ShuttingDown {
                plugin: name.to_string(),
            }),
            Some(core) => {
                tracing::info!(plugin = name, "starting lazy plugin");
                (plugin.start)(&core).map(drop).map_err(|failure| {
                    tracing::error!("{failure}");
                    LazyStartError::Failed(failure)
                })
            }
        };
        self.lazy
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n| n != name);
        self.remove_pending(name);
        outcome
    }

    /// Starts every pending plugin a message with this text needs: one
    /// whose action triggers match it, or with an action that declares
    /// none. Returns the start failures. Costs one atomic load when no
    /// plugin is pending.
    pub(crate) fn start_pending_for_message(&self, text: &str) -> Vec<LazyStartError> {
        if !self.lazy.any() {
            return Vec::new();
        }
        let index = self.lazy.index();
        let hits = index.triggers.hits(text);
        let wanted: Vec<&Arc<PendingPlugin>> = index
            .plugins
            .iter()
            .enumerate()
            .filter(|(slot, _)| index.triggers.wants(*slot, &hits))
            .map(|(_, plugin)| plugin)
            .collect();
        wanted
            .into_iter()
            .filter_map(|plugin| self.start_pending(plugin.name()).err())
            .collect()
    }

    /// Starts the pending plugin that provides `service`, if one does;
    /// returns whether one did (and started).
    pub(crate) fn start_pending_for_service(&self, service: &str) -> bool {
        if !self.lazy.any() {
            return false;
        }
        let provider = self.pending().into_iter().find(|p| p.provides(service));
        provider.is_some_and(|plugin| self.start_pending(plugin.name()).is_ok())
    }

    /// Whether some pending plugin subscribes to events named `event`.
    pub(crate) fn pending_subscribes_to(&self, event: &str) -> bool {
        self.lazy.any() && self.pending().iter().any(|p| p.subscribes_to(event))
    }

    /// Starts every pending plugin whose manifest subscribes to `event`, so
    /// that the subscriptions its `on_load` makes receive it.
    pub(crate) fn start_pending_for_event(&self, event: &str) {
        if !self.lazy.any() {
            return;
        }
        for plugin in self.pending() {
            if plugin.subscribes_to(event) {
                // A failure is logged by the start; the event goes to the others.
                let _ = self.start_pending(plugin.name());
            }
        }
    }
}

#[cfg(test)]
#[path = "lazy_tests.rs"]
mod tests;
