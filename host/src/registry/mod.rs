//! The live registry every part of the host shares: loaded plugins, services,
//! the event bus, timers, cached provider values, metrics and limits.
//!
//! Locks here guard maps only; they are always released before any call into
//! a plugin, because the plugin may call back into the host (DESIGN fact 11).

pub(crate) mod admission;
pub(crate) mod callbacks;
pub(crate) mod events;
pub(crate) mod permissions;

use crate::config::HostSettings;
use crate::metrics::Metrics;
use crate::pipeline::ratelimit::RateLimiter;
use crate::plugin::{CallError, PluginInstance};
use crate::registry::events::{BusEvent, DeliveryFailure, EventBus};
use crate::registry::permissions::Permissions;
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::ErrorKind;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A plugin that is loaded and registered.
pub struct LivePlugin {
    /// The instance.
    pub instance: PluginInstance,
    /// What its host callbacks may do.
    pub permissions: Permissions,
    /// Its position in the load order.
    pub load_order: usize,
    /// Which load of the plugin this is (unique across the host).
    pub generation: u64,
    /// Its name, shared by every reply that mentions it.
    pub shared_name: Arc<str>,
    /// Its evaluators' names, by index.
    pub evaluator_names: Vec<Arc<str>>,
    /// One slot per provider, by index: its cached value and counters.
    pub providers: Vec<ProviderSlot>,
    /// Each action's counters, by index.
    pub action_metrics: Vec<crate::metrics::ActionMetrics>,
    quarantined: AtomicBool,
    recent_panics: Mutex<VecDeque<Instant>>,
}

/// A provider's place in the pipeline: its key in the state JSON, its
/// cached value, and its cache counters (made once, so a lookup allocates
/// nothing).
pub struct ProviderSlot {
    /// `"name":`, ready to be written into the state object.
    pub state_key: String,
    /// The host-wide version of provider values, bumped by every store.
    version: Arc<AtomicU64>,
    cached: RwLock<Option<CachedValue>>,
    /// Cache hits.
    pub hits: prometheus_client::metrics::counter::Counter,
    /// Stale values served while a refresh runs.
    pub stale: prometheus_client::metrics::counter::Counter,
    /// Misses (the provider was called).
    pub misses: prometheus_client::metrics::counter::Counter,
}

impl ProviderSlot {
    /// Stores a value (fetched or pushed) as fresh.
    pub fn store(&self, json: Arc<str>) {
        *write(&self.cached) = Some(CachedValue {
            json,
            at: Instant::now(),
            refreshing: false,
        });
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Reads the cached value in place, without cloning it.
    pub fn with_cached<R>(&self, read_value: impl FnOnce(Option<&CachedValue>) -> R) -> R {
        read_value(read(&self.cached).as_ref())
    }

    /// Marks the cached value as being refreshed; false if a refresh is
    /// already running (so only one runs at a time).
    pub fn start_refresh(&self) -> bool {
        match write(&self.cached).as_mut() {
            Some(cached) if !cached.refreshing => {
                cached.refreshing = true;
                true
            }
            _ => false,
        }
    }

    /// Lets the next message try a refresh again.
    pub fn end_refresh(&self) {
        if let Some(cached) = write(&self.cached).as_mut() {
            cached.refreshing = false;
        }
    }
}

impl LivePlugin {
    /// A live plugin, not quarantined.
    pub fn new(
        instance: PluginInstance,
        permissions: Permissions,
        load_order: usize,
        generation: u64,
        metrics: &Metrics,
        provider_version: &Arc<AtomicU64>,
    ) -> Self {
        let name = instance.name().to_string();
        let providers = instance
            .manifest
            .providers
            .iter()
            .map(|spec| ProviderSlot {
                state_key: format!("{}:", Value::from(spec.name.as_str())),
                version: Arc::clone(provider_version),
                cached: RwLock::new(None),
                hits: metrics.cache_counter(&name, &spec.name, "hit"),
                stale: metrics.cache_counter(&name, &spec.name, "stale"),
                misses: metrics.cache_counter(&name, &spec.name, "miss"),
            })
            .collect();
        let action_metrics = instance
            .manifest
            .actions
            .iter()
            .map(|a| metrics.action_metrics(&name, &a.name))
            .collect();
        let evaluator_names = instance
            .manifest
            .evaluators
            .iter()
            .map(|e| Arc::from(e.name.as_str()))
            .collect();
        Self {
            shared_name: Arc::from(name.as_str()),
            evaluator_names,
            providers,
            action_metrics,
            instance,
            permissions,
            load_order,
            generation,
            quarantined: AtomicBool::new(false),
            recent_panics: Mutex::new(VecDeque::new()),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.instance.name()
    }

    /// Whether the plugin panicked too often and is out of service.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }
}

/// A provider's cached value: JSON text checked once when it arrived.
#[derive(Debug, Clone)]
pub struct CachedValue {
    /// The value as JSON text.
    pub json: Arc<str>,
    /// When it was fetched or pushed.
    pub at: Instant,
    /// Whether a background refresh is running.
    pub refreshing: bool,
}

/// A service registered by a plugin.
#[derive(Clone)]
struct ServiceSlot {
    plugin: Arc<LivePlugin>,
    index: u32,
    running: bool,
}

/// An error from a host-side operation (a service lookup, a permission check)
/// or from the plugin it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line saying what went wrong.
    pub message: String,
}

impl HostError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<CallError> for HostError {
    fn from(error: CallError) -> Self {
        Self::new(error.kind, error.to_string())
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The shared registry.
pub struct Registry {
    plugins: RwLock<Vec<Arc<LivePlugin>>>,
    services: RwLock<HashMap<String, ServiceSlot>>,
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
}

impl Registry {
    /// An empty registry whose timers and blocking calls run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle, settings: HostSettings) -> Arc<Self> {
        Arc::new(Self {
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
        })
    }

    /// Refuses a plugin a permission it lacks: a warning in the log, a
    /// count in the metrics, and the error the plugin gets.
    pub fn deny(&self, plugin: &str, permission: &str) -> HostError {
        tracing::warn!(plugin, %permission, "permission denied");
        self.metrics.denied(plugin, permission);
        HostError::new(
            ErrorKind::PermissionDenied,
            format!("plugin '{plugin}' lacks permission '{permission}'"),
        )
    }

    /// Counts an error from plugin code and quarantines the plugin when it
    /// panicked `quarantine_after_panics` times within the window.
    pub fn record_error(&self, plugin: &LivePlugin, error: &CallError) {
        self.metrics.plugin_error(plugin.name(), error.kind);
        if error.kind != ErrorKind::Panicked || self.settings.quarantine_after_panics == 0 {
            return;
        }
        let now = Instant::now();
        let window = Duration::from_millis(self.settings.quarantine_window_ms);
        let count = {
            let mut panics = plugin
                .recent_panics
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            panics.push_back(now);
            while panics
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                panics.pop_front();
            }
            panics.len()
        };
        if count >= self.settings.quarantine_after_panics as usize
            && !plugin.quarantined.swap(true, Ordering::AcqRel)
        {
            self.metrics.plugins_quarantined.inc();
            self.invalidate_plan();
            tracing::error!(
                plugin = plugin.name(),
                "quarantined: {count} panics within {} ms; its actions, providers, evaluators and services are out of service until it is reloaded",
                self.settings.quarantine_window_ms
            );
            self.emit(
                "host",
                "plugin:quarantined",
                json!({"plugin": plugin.name(), "panics": count, "window_ms": self.settings.quarantine_window_ms, "last_error": error.to_string()}),
            );
        }
    }

    /// The tokio runtime the host uses for timers and blocking calls.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Loaded plugins in load order.
    pub fn plugins(&self) -> Vec<Arc<LivePlugin>> {
        read(&self.plugins).clone()
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

    /// Counts a library image a plugin mapped (generations are never
    /// unmapped) and warns past the configured cap.
    pub fn count_mapped(&self, plugin: &str, bytes: u64) -> MappedImages {
        let mut mapped = self.mapped.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = mapped.entry(plugin.to_string()).or_default();
        entry.generations += 1;
        entry.bytes += bytes;
        if entry.bytes > self.settings.mapped_bytes_warning {
            tracing::warn!(
                plugin,
                generations = entry.generations,
                "plugin keeps {} bytes of library images mapped (over the {} byte warning): every reload maps a new image that is never unmapped; restart the host to reclaim them",
                entry.bytes,
                self.settings.mapped_bytes_warning
            );
        }
        *entry
    }

    /// The library images a plugin keeps mapped.
    pub fn mapped(&self, plugin: &str) -> MappedImages {
        self.mapped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
            .copied()
            .unwrap_or_default()
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
                ServiceSlot {
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

    /// Registers a plugin's service, stopped. Fails if another plugin already
    /// provides a service of that name.
    pub fn add_service(&self, plugin: &Arc<LivePlugin>, index: u32) -> Result<(), String> {
        let name = plugin
            .instance
            .manifest
            .services
            .get(index as usize)
            .map(|s| s.name.clone())
            .ok_or_else(|| format!("no service number {index}"))?;
        let mut services = write(&self.services);
        if let Some(existing) = services.get(&name) {
            return Err(format!(
                "service '{name}' is already provided by plugin '{}'",
                existing.plugin.name()
            ));
        }
        services.insert(
            name,
            ServiceSlot {
                plugin: Arc::clone(plugin),
                index,
                running: false,
            },
        );
        Ok(())
    }

    /// Marks a service running or stopped.
    pub fn set_service_running(&self, name: &str, running: bool) {
        if let Some(slot) = write(&self.services).get_mut(name) {
            slot.running = running;
        }
    }

    /// Names of registered services with their plugin and whether they run.
    pub fn services(&self) -> Vec<(String, String, bool)> {
        let mut list: Vec<_> = read(&self.services)
            .iter()
            .map(|(name, slot)| (name.clone(), slot.plugin.name().to_string(), slot.running))
            .collect();
        list.sort();
        list
    }

    /// Calls a service method. `caller` is the plugin making the call (its
    /// permissions are checked), or `None` for the host itself.
    pub fn call_service(
        &self,
        caller: Option<&LiveCaller<'_>>,
        service: &str,
        method: &str,
        args_json: &str,
    ) -> Result<String, HostError> {
        let slot = read(&self.services).get(service).cloned();
        // A plugin may always call its own services; any other needs `service:NAME`.
        if let Some(caller) = caller {
            let own = slot
                .as_ref()
                .is_some_and(|s| s.plugin.name() == caller.name);
            let permission = format!("service:{service}");
            if !own && !caller.permissions.allows(&permission) {
                return Err(self.deny(caller.name, &permission));
            }
        }
        let Some(slot) = slot else {
            let known: Vec<String> = read(&self.services).keys().cloned().collect();
            return Err(HostError::new(
                ErrorKind::NotFound,
                format!(
                    "no service named '{service}' is loaded (loaded: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        if !slot.running {
            return Err(HostError::new(
                ErrorKind::Unavailable,
                format!(
                    "service '{service}' of plugin '{}' is stopped",
                    slot.plugin.name()
                ),
            ));
        }
        if slot.plugin.is_quarantined() {
            return Err(HostError::new(
                ErrorKind::Unavailable,
                format!(
                    "service '{service}' is out of service: plugin '{}' is quarantined",
                    slot.plugin.name()
                ),
            ));
        }
        let control = CallControl::default();
        slot.plugin
            .instance
            .call_service(slot.index, method, args_json, &control)
            .map_err(|error| {
                self.record_error(&slot.plugin, &error);
                HostError::from(error)
            })
    }

    /// Emits an event whose payload is built only if someone observes it.
    pub fn emit_lazy(
        &self,
        source: &str,
        name: &str,
        payload: impl FnOnce() -> Value,
    ) -> Vec<DeliveryFailure> {
        if self.bus.is_observed(name) {
            self.emit(source, name, payload())
        } else {
            Vec::new()
        }
    }

    /// Emits an event to every matching subscriber.
    pub fn emit(&self, source: &str, name: &str, payload: Value) -> Vec<DeliveryFailure> {
        let event = BusEvent {
            name: name.to_string(),
            source: source.to_string(),
            payload,
        };
        let payload_json = event.payload.to_string();
        self.bus
            .emit(&event, |plugin, generation, subscription, event| {
                let Some(target) = self.plugin(plugin).filter(|p| p.generation == generation)
                else {
                    return Ok(());
                };
                target
                    .instance
                    .on_event(subscription, &event.name, &payload_json)
                    .map_err(|e| e.to_string())
            })
    }

    /// Sets (or replaces) a plugin's timer.
    pub fn set_timer(
        self: &Arc<Self>,
        plugin: &str,
        generation: u64,
        timer: u64,
        after_ms: u64,
        every_ms: u64,
    ) {
        let core = Arc::downgrade(self);
        let owner = plugin.to_string();
        let task = self.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            loop {
                let Some(core_now) = core.upgrade() else {
                    return;
                };
                let target = match core_now.plugin(&owner) {
                    Some(p) if p.generation == generation => p,
                    // A generation being reloaded in: not serving yet, wait.
                    Some(p) if p.generation < generation => {
                        drop(core_now);
                        tokio::time::sleep(Duration::from_millis(every_ms.max(1))).await;
                        continue;
                    }
                    _ => return,
                };
                let fired = tokio::task::spawn_blocking(move || {
                    let _admitted = core_now.admission.enter();
                    target.instance.on_timer(timer)
                })
                .await;
                if let Ok(Err(error)) = fired {
                    tracing::warn!(plugin = %owner, "{error}");
                }
                if every_ms == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
            if let Some(core) = core.upgrade() {
                core.timers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(owner, generation, timer));
            }
        });
        let previous = self
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((plugin.to_string(), generation, timer), task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Cancels a plugin's timer.
    pub fn clear_timer(&self, plugin: &str, generation: u64, timer: u64) {
        let task = self
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(plugin.to_string(), generation, timer));
        if let Some(task) = task {
            task.abort();
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

/// The library images one plugin keeps mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MappedImages {
    /// How many generations were loaded (each stays mapped).
    pub generations: u64,
    /// Their image bytes in total.
    pub bytes: u64,
}

/// The plugins taking part in the pipeline (loaded, not quarantined), and
/// the providers whose values compose the state.
pub struct ServingPlan {
    /// Serving plugins in load order.
    pub plugins: Vec<Arc<LivePlugin>>,
    /// (plugin index in `plugins`, provider index) of every provider in the
    /// state, in order.
    pub providers: Vec<(usize, u32)>,
    /// Providers left out because an earlier plugin's provider has their name.
    pub shadowed: Vec<String>,
    /// Whether some provider must be called for every message (it has no
    /// cache and pushes nothing), so no composed state can be reused.
    pub calls_every_message: bool,
    /// The last composed state, reusable while no provider value changed
    /// and none of the cached values it used has expired.
    pub snapshot: Mutex<Option<StateSnapshot>>,
}

/// A composed state and what it depends on.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    /// `Registry::provider_version` when it was composed.
    pub version: u64,
    /// When its earliest cached value expires (`None`: never).
    pub fresh_until: Option<Instant>,
    /// The state object as JSON text.
    pub json: Arc<str>,
}

impl ServingPlan {
    fn new(mut plugins: Vec<Arc<LivePlugin>>) -> Self {
        plugins.retain(|p| !p.is_quarantined());
        let mut names = std::collections::HashSet::new();
        let mut providers = Vec::new();
        let mut shadowed = Vec::new();
        for (p, plugin) in plugins.iter().enumerate() {
            for (index, spec) in plugin.instance.manifest.providers.iter().enumerate() {
                if names.insert(spec.name.clone()) {
                    providers.push((p, index as u32));
                } else {
                    shadowed.push(format!(
                        "plugin '{}': provider '{}' left out: another plugin's provider has that name",
                        plugin.name(),
                        spec.name
                    ));
                }
            }
        }
        let calls_every_message = providers.iter().any(|&(p, index)| {
            let spec = &plugins[p].instance.manifest.providers[index as usize];
            spec.cache.is_none() && !spec.subscribable
        });
        Self {
            plugins,
            providers,
            shadowed,
            calls_every_message,
            snapshot: Mutex::new(None),
        }
    }
}

/// The identity of a plugin calling back into the host.
pub struct LiveCaller<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its permissions.
    pub permissions: &'a Permissions,
}
