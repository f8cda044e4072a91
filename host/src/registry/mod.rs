//! The live registry every part of the host shares: loaded plugins and
//! their generations, services, the event bus, timers, quarantine, mapped
//! images, metrics and limits. Each concern has a file of its own; this one
//! holds the plugin list and what changes it.
//!
//! Locks here guard maps only; they are always released before any call into
//! a plugin, because the plugin may call back into the host.

pub(crate) mod admission;
pub(crate) mod call_chain;
pub(crate) mod callbacks;
mod error;
pub(crate) mod events;
mod failed_loads;
pub(crate) mod faults;
mod images;
pub(crate) mod inflight;
pub(crate) mod lazy;
mod live;
mod quarantine;
mod services;
pub(crate) mod step;
mod timers;

pub use error::HostError;
pub use failed_loads::FailedLoad;
pub use images::MappedImages;
pub use live::LivePlugin;
pub use services::ServiceStartError;

use crate::config::HostSettings;
use crate::current_call;
use crate::metrics::Metrics;
use crate::permissions::Permissions;
use crate::plugin::CallError;
use crate::registry::events::{BusEvent, DeliveryFailure, EventBus};
use agent_host_plugin_sdk::ErrorKind;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use tokio::task::JoinHandle;

pub(super) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The shared registry.
pub struct Registry {
    plugins: RwLock<Vec<Arc<LivePlugin>>>,
    services: RwLock<HashMap<String, services::ServiceSlot>>,
    /// The event bus.
    pub bus: EventBus,
    runtime: tokio::runtime::Handle,
    timers: Mutex<HashMap<(String, u64, u64), JoinHandle<()>>>,
    next_generation: AtomicU64,
    mapped: Mutex<HashMap<String, MappedImages>>,
    /// The gate every top-level entry into plugin code passes.
    pub admission: crate::registry::admission::Admission,
    /// Bumped whenever the set of serving plugins changes (a plugin
    /// registered, swapped, unregistered or quarantined), so that what is
    /// worked out from it (the pipeline's serving plan) can tell it is
    /// current with one atomic load.
    plugin_set: AtomicU64,
    /// Where the values providers push go (the pipeline's provider slots).
    pushed_values: std::sync::OnceLock<Arc<dyn PushedValues>>,
    /// Host settings from the config file.
    pub settings: HostSettings,
    /// Metrics.
    pub metrics: Metrics,
    /// The clock and thread that bound calls into plugins.
    pub(crate) watchdog: crate::watchdog::Watchdog,
    /// The lazy plugins not started yet (`lazy.rs`).
    lazy: lazy::LazyPlugins,
    /// The named groups of workers (`[isolation.groups]`) and the files
    /// offered for their members.
    pub(crate) worker_places: crate::plugin::WorkerPlaces,
    /// The plugin faults said in the log, and those left out.
    fault_log: crate::fault_log::FaultLog,
    /// The plugin files that failed to load, and why (`failed_loads.rs`).
    failed_loads: Mutex<Vec<FailedLoad>>,
    /// This registry, for what it starts from `&self` (a lazy plugin needs
    /// the `Arc` its callbacks hold weakly).
    me: Weak<Registry>,
}

impl Registry {
    /// An empty registry whose timers and blocking calls run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle, settings: HostSettings) -> Arc<Self> {
        let core = Arc::new_cyclic(|me| Self {
            plugins: RwLock::new(Vec::new()),
            services: RwLock::new(HashMap::new()),
            bus: EventBus::new(),
            runtime,
            timers: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            mapped: Mutex::new(HashMap::new()),
            admission: crate::registry::admission::Admission::default(),
            plugin_set: AtomicU64::new(0),
            pushed_values: std::sync::OnceLock::new(),
            settings,
            metrics: Metrics::new(),
            watchdog: crate::watchdog::Watchdog::start(),
            lazy: lazy::LazyPlugins::default(),
            worker_places: crate::plugin::WorkerPlaces::default(),
            fault_log: crate::fault_log::FaultLog::default(),
            failed_loads: Mutex::default(),
            me: me.clone(),
        });
        core.summarize_faults_periodically(Arc::downgrade(&core));
        core
    }

    /// The tokio runtime the host uses for timers and blocking calls.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Loaded plugins in load order.
    pub fn plugins(&self) -> Vec<Arc<LivePlugin>> {
        read(&self.plugins).clone()
    }

    /// The loaded plugins as the dependency rules see them, in load order:
    /// those started and the lazy ones not started yet.
    pub fn candidates(&self) -> Vec<crate::dependencies::Candidate> {
        let mut candidates: Vec<(usize, crate::dependencies::Candidate)> = read(&self.plugins)
            .iter()
            .map(|p| {
                let candidate = crate::dependencies::Candidate {
                    name: p.name().to_string(),
                    version: p.instance.version.clone(),
                    dependencies: p.instance.dependencies.clone(),
                };
                (p.load_order, candidate)
            })
            .collect();
        candidates.extend(self.pending().iter().map(|p| {
            let candidate = crate::dependencies::Candidate {
                name: p.name().to_string(),
                version: p.version.clone(),
                dependencies: p.dependencies.clone(),
            };
            (p.load_order, candidate)
        }));
        candidates.sort_by_key(|(order, _)| *order);
        candidates.into_iter().map(|(_, c)| c).collect()
    }

    /// A loaded plugin by name.
    pub fn plugin(&self, name: &str) -> Option<Arc<LivePlugin>> {
        read(&self.plugins)
            .iter()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// Adds a plugin (before its `on_load`, so that events and timers it sets
    /// up there can reach it).
    pub fn register(&self, plugin: Arc<LivePlugin>) {
        let mut plugins = write(&self.plugins);
        plugins.push(plugin);
        plugins.sort_by_key(|p| p.load_order);
        drop(plugins);
        self.plugin_set_changed();
    }

    pub(super) fn plugin_set_changed(&self) {
        self.plugin_set.fetch_add(1, Ordering::AcqRel);
    }

    /// The version of the set of serving plugins: it changes with every
    /// load, swap, unload and quarantine.
    pub fn plugin_set_version(&self) -> u64 {
        self.plugin_set.load(Ordering::Acquire)
    }

    /// Removes a plugin with its services, subscriptions, timers and cached values.
    pub fn unregister(&self, name: &str) {
        let mut plugins = write(&self.plugins);
        if let Some(plugin) = plugins.iter().find(|p| p.name() == name) {
            if plugin.is_quarantined() {
                self.metrics.plugins_quarantined.dec();
            }
        }
        plugins.retain(|p| p.name() != name);
        drop(plugins);
        write(&self.services).retain(|_, slot| slot.plugin.name() != name);
        self.bus.unsubscribe_plugin(name);
        let mut timers = self.timers.lock().unwrap_or_else(PoisonError::into_inner);
        timers.retain(|(plugin, _, _), task| {
            if plugin == name {
                task.abort();
                false
            } else {
                true
            }
        });
        drop(timers);
        self.plugin_set_changed();
    }

    /// A new generation number.
    pub fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts a new generation in the place of the plugin of the same name:
    /// its position, its services (running). Callers must hold the
    /// admission gate closed.
    pub fn swap(&self, new: Arc<LivePlugin>) {
        let mut plugins = write(&self.plugins);
        if let Some(slot) = plugins.iter_mut().find(|p| p.name() == new.name()) {
            *slot = Arc::clone(&new);
        }
        drop(plugins);
        let mut services = write(&self.services);
        services.retain(|_, slot| slot.plugin.name() != new.name());
        for (index, spec) in new.instance.manifest.services.iter().enumerate() {
            services.insert(
                spec.name.clone(),
                services::ServiceSlot {
                    plugin: Arc::clone(&new),
                    index: index as u32,
                    running: true,
                },
            );
        }
        drop(services);
        self.plugin_set_changed();
    }

    /// Removes what one retired generation set up: its subscriptions and timers.
    pub fn drop_generation(&self, plugin: &str, generation: u64) {
        self.bus.unsubscribe_generation(plugin, generation);
        self.timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(name, gen, _), task| {
                if name == plugin && *gen == generation {
                    task.abort();
                    false
                } else {
                    true
                }
            });
    }

    /// Emits an event whose payload is built only if someone observes it
    /// (a subscriber, a stream, or a lazy plugin that subscribes to it).
    pub fn emit_lazy(
        &self,
        source: &str,
        name: &str,
        payload: impl FnOnce() -> Value,
    ) -> Vec<DeliveryFailure> {
        if self.bus.is_observed(name) || self.pending_subscribes_to(name) {
            self.emit(source, name, payload())
        } else {
            Vec::new()
        }
    }

    /// Where a place that runs plugins announces their life outside any
    /// call (a worker's crash, restart, quarantine): an event from the host,
    /// and nothing once the host is gone.
    pub(crate) fn announcer(self: &Arc<Self>) -> crate::plugin::Announce {
        let core = Arc::downgrade(self);
        Arc::new(move |name: &str, payload: Value| {
            if let Some(core) = core.upgrade() {
                core.count_worker_fault(name, &payload);
                core.emit("host", name, payload);
            }
        })
    }

    /// Counts a worker's crash, restart or quarantine that its supervisor
    /// announces (`name`, with the plugin in `payload`): the supervisor's
    /// own line says it, once per worker.
    fn count_worker_fault(&self, name: &str, payload: &Value) {
        let cause = match name {
            "plugin:crashed" => faults::FaultCause::Crashed,
            "plugin:restarted" => faults::FaultCause::Restarted,
            "plugin:quarantined" => faults::FaultCause::Quarantined,
            _ => return,
        };
        if let Some(plugin) = payload["plugin"].as_str() {
            self.count_fault(plugin, faults::FaultEntry::Worker, cause);
        }
    }

    /// Emits an event to every matching subscriber, after starting the lazy
    /// plugins whose manifest subscribes to it (their `on_load` makes the
    /// subscriptions that then receive it).
    pub fn emit(&self, source: &str, name: &str, payload: Value) -> Vec<DeliveryFailure> {
        let event = BusEvent {
            name: name.to_string(),
            source: source.to_string(),
            payload,
        };
        // The other hosts first: sending does not wait for them.
        self.bus.relay_out(&event);
        self.emit_here(event)
    }

    /// Delivers an event to this host's subscribers only (an event from
    /// another host of the cluster, which is not relayed again).
    pub fn emit_here(&self, event: BusEvent) -> Vec<DeliveryFailure> {
        self.start_pending_for_event(&event.name);
        let payload_json = event.payload.to_string();
        let failures = self
            .bus
            .emit(&event, |plugin, generation, subscription, event| {
                let Some(target) = self.plugin(plugin).filter(|p| p.generation == generation)
                else {
                    return Ok(());
                };
                self.deliver(&target, subscription, event, &payload_json)
            });
        if let Some(cut) = failures.iter().find(|f| f.cut) {
            self.metrics.events_cut.inc();
            self.fault(
                &event.source,
                faults::FaultEntry::Event,
                faults::FaultCause::EventsCut,
                &format_args!("{} (emitted by '{}')", cut.error, event.source),
            );
        }
        failures
    }

    /// Runs one plugin's event handler on the blocking pool, within its
    /// bulkhead, and waits for it at most `event_timeout_ms`: a handler that
    /// hangs is abandoned (and reported), never the emitter.
    fn deliver(
        &self,
        target: &Arc<LivePlugin>,
        subscription: u64,
        event: &BusEvent,
        payload_json: &str,
    ) -> Result<(), CallError> {
        let limit = self.settings.max_calls_in_flight;
        let (source, event) = (event.source.clone(), event.name.as_str());
        let entry = format!("event handler for '{event}'");
        let Some(call) = target
            .in_flight
            .try_enter(inflight::Entry::Event(event.to_string()), limit)
        else {
            return Err(target.instance.refused(entry, limit));
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let (plugin, name, payload) = (
            Arc::clone(target),
            event.to_string(),
            payload_json.to_string(),
        );
        let nesting = events::nesting();
        let timeout_ms = self.settings.event_timeout_ms;
        // The handler's FFI entry carries no cancellation signal: it asks
        // the host, which answers from this control (`current_call.rs`).
        let control = Arc::new(agent_host_plugin_abi::CallControl::with_deadline(
            crate::watchdog::unix_ms_after(std::time::Duration::from_millis(timeout_ms)),
        ));
        let control_bg = Arc::clone(&control);
        self.runtime.spawn_blocking(move || {
            let _call = call;
            let outcome = current_call::within(&control_bg, || {
                events::nested(nesting, || {
                    current_call::delivering(&source, || {
                        plugin.instance.on_event(subscription, &name, &payload)
                    })
                })
            });
            let _ = sender.send(outcome);
        });
        match receiver.recv_timeout(std::time::Duration::from_millis(timeout_ms)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.record_error(target, &error);
                Err(error)
            }
            Err(_) => {
                control.cancel();
                let error = target.instance.timed_out(entry, timeout_ms);
                self.record_error(target, &error);
                Err(error)
            }
        }
    }

    /// Says where the values that providers push go; the first caller
    /// wins (the pipeline, when the host is made).
    pub(crate) fn send_pushed_values_to(&self, sink: Arc<dyn PushedValues>) {
        let _ = self.pushed_values.set(sink);
    }

    /// Stores a value pushed by one of a plugin's providers. A value pushed
    /// by a generation that is not (or not yet) serving is dropped: the next
    /// message asks the serving generation's provider instead.
    pub fn store_provider_value(
        &self,
        plugin: &str,
        generation: u64,
        provider: u32,
        json: Arc<str>,
    ) -> Result<(), HostError> {
        let plugin = self.plugin(plugin).ok_or_else(|| {
            HostError::new(
                ErrorKind::NotFound,
                format!("no plugin named '{plugin}' is loaded"),
            )
        })?;
        if plugin.generation != generation {
            tracing::debug!(
                plugin = plugin.name(),
                generation,
                "value pushed by a generation that is not serving: dropped"
            );
            return Ok(());
        }
        if plugin
            .instance
            .manifest
            .providers
            .get(provider as usize)
            .is_none()
        {
            return Err(HostError::new(
                ErrorKind::NotFound,
                format!(
                    "plugin '{}' has no provider number {provider}",
                    plugin.name()
                ),
            ));
        }
        if let Some(sink) = self.pushed_values.get() {
            sink.store(&plugin, provider, json, self.watchdog.now_ms());
        }
        Ok(())
    }
}

/// Where the values a plugin's providers push are kept: the pipeline's
/// provider slots, which the registry reaches through this trait without
/// naming the pipeline.
pub(crate) trait PushedValues: Send + Sync {
    /// Stores the value pushed by provider `provider` (an index that
    /// exists) of the serving generation `plugin`, at `now_ms` on the
    /// watchdog's clock.
    fn store(&self, plugin: &Arc<LivePlugin>, provider: u32, json: Arc<str>, now_ms: u64);
}

/// The identity of a plugin calling back into the host.
pub struct LiveCaller<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its permissions.
    pub permissions: &'a Permissions,
}
