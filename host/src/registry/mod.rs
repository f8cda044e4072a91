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
pub(crate) mod current_call;
mod error;
pub(crate) mod events;
mod images;
pub(crate) mod inflight;
pub(crate) mod lazy;
pub(crate) mod lifecycle;
mod live;
pub(crate) mod log_limit;
pub(crate) mod permissions;
mod quarantine;
mod services;
mod timers;

pub use error::HostError;
pub use images::MappedImages;
pub use live::LivePlugin;

use crate::config::HostSettings;
use crate::metrics::Metrics;
use crate::pipeline::plan::ServingPlan;
use crate::pipeline::ratelimit::RateLimiter;
use crate::plugin::CallError;
use crate::registry::events::{BusEvent, DeliveryFailure, EventBus};
use crate::registry::permissions::Permissions;
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
    plan: Mutex<Option<Arc<ServingPlan>>>,
    /// Bumped whenever any provider value is stored, so a composed state
    /// can tell it is still current.
    pub provider_version: Arc<AtomicU64>,
    /// Host settings from the config file.
    pub settings: HostSettings,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-action rate limits.
    pub rate_limiter: RateLimiter,
    /// The clock and thread that bound calls into plugins.
    pub(crate) watchdog: crate::watchdog::Watchdog,
    /// The lazy plugins not started yet (`lazy.rs`).
    lazy: lazy::LazyPlugins,
    /// This registry, for what it starts from `&self` (a lazy plugin needs
    /// the `Arc` its callbacks hold weakly).
    me: Weak<Registry>,
}

impl Registry {
    /// An empty registry whose timers and blocking calls run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle, settings: HostSettings) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            plugins: RwLock::new(Vec::new()),
            services: RwLock::new(HashMap::new()),
            bus: EventBus::new(),
            runtime,
            timers: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            mapped: Mutex::new(HashMap::new()),
            admission: crate::registry::admission::Admission::default(),
            plan: Mutex::new(None),
            provider_version: Arc::new(AtomicU64::new(0)),
            settings,
            metrics: Metrics::new(),
            rate_limiter: RateLimiter::default(),
            watchdog: crate::watchdog::Watchdog::start(),
            lazy: lazy::LazyPlugins::default(),
            me: me.clone(),
        })
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
        self.invalidate_plan();
    }

    fn invalidate_plan(&self) {
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Who takes part in the pipeline now, worked out once per change of the
    /// plugin set (a load, an unload, a quarantine) rather than per message.
    pub fn serving_plan(&self) -> Arc<ServingPlan> {
        let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = plan.as_ref() {
            return Arc::clone(plan);
        }
        let fresh = Arc::new(ServingPlan::new(self.plugins()));
        *plan = Some(Arc::clone(&fresh));
        fresh
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
        self.rate_limiter.forget(name);
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
        self.invalidate_plan();
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
        self.invalidate_plan();
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
                core.emit("host", name, payload);
            }
        })
    }

    /// Emits an event to every matching subscriber, after starting the lazy
    /// plugins whose manifest subscribes to it (their `on_load` makes the
    /// subscriptions that then receive it).
    pub fn emit(&self, source: &str, name: &str, payload: Value) -> Vec<DeliveryFailure> {
        self.start_pending_for_event(name);
        let event = BusEvent {
            name: name.to_string(),
            source: source.to_string(),
            payload,
        };
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
        if failures.iter().any(|f| f.cut) {
            self.metrics.events_cut.inc();
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
                    events::delivering(&source, || {
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
        let slot = plugin.providers.get(provider as usize).ok_or_else(|| {
            HostError::new(
                ErrorKind::NotFound,
                format!(
                    "plugin '{}' has no provider number {provider}",
                    plugin.name()
                ),
            )
        })?;
        slot.store(json);
        Ok(())
    }
}

/// The identity of a plugin calling back into the host.
pub struct LiveCaller<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its permissions.
    pub permissions: &'a Permissions,
}
