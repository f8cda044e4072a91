//! The providers' cache slots: each provider's key in the state JSON, its
//! cached (or pushed) value, and its counters. The pipeline keeps one set of
//! slots per generation of a plugin ([`ProviderSlots`]); it reads and
//! refreshes them, and the values providers push reach them from the
//! registry through [`PushedValues`].

use crate::metrics::CacheLabels;
use crate::registry::{LivePlugin, PushedValues};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

/// The provider slots of every generation that has them, by generation.
pub(crate) struct ProviderSlots {
    /// Bumped whenever any provider value is stored, so a composed state
    /// can tell it is still current.
    pub(crate) version: Arc<AtomicU64>,
    /// `agent_host_provider_cache_total`, where the slots count.
    counters: Family<CacheLabels, Counter>,
    by_generation: RwLock<HashMap<u64, GenerationSlots>>,
}

/// One generation's slots, kept while the generation lives.
struct GenerationSlots {
    plugin: Weak<LivePlugin>,
    slots: Arc<[ProviderSlot]>,
}

impl ProviderSlots {
    /// No slots yet; they count in `counters`.
    pub(crate) fn new(counters: Family<CacheLabels, Counter>) -> Self {
        Self {
            version: Arc::new(AtomicU64::new(0)),
            counters,
            by_generation: RwLock::new(HashMap::new()),
        }
    }

    /// The slots of `plugin`'s generation, one per provider by index, made
    /// empty when first asked for.
    pub(crate) fn of(&self, plugin: &Arc<LivePlugin>) -> Arc<[ProviderSlot]> {
        if let Some(found) = read(&self.by_generation).get(&plugin.generation) {
            return Arc::clone(&found.slots);
        }
        let mut by_generation = write(&self.by_generation);
        let entry = by_generation
            .entry(plugin.generation)
            .or_insert_with(|| GenerationSlots {
                plugin: Arc::downgrade(plugin),
                slots: plugin
                    .instance
                    .manifest
                    .providers
                    .iter()
                    .map(|spec| {
                        ProviderSlot::new(plugin.name(), &spec.name, &self.version, &self.counters)
                    })
                    .collect(),
            });
        Arc::clone(&entry.slots)
    }

    /// Drops the slots of the generations that are gone.
    pub(crate) fn forget_gone(&self) {
        write(&self.by_generation).retain(|_, kept| kept.plugin.strong_count() > 0);
    }
}

impl PushedValues for ProviderSlots {
    fn store(&self, plugin: &Arc<LivePlugin>, provider: u32, json: Arc<str>, now_ms: u64) {
        if let Some(slot) = self.of(plugin).get(provider as usize) {
            slot.store(json, now_ms);
        }
    }
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
    /// Failures and timeouts in a row.
    failures: AtomicU32,
    /// The watchdog's time (ms) before which the provider is not asked.
    retry_at_ms: AtomicU64,
    /// Whether a call of the provider that a message left behind at its
    /// state budget is still running (later messages do not ask again).
    answering_late: AtomicBool,
}

/// The first pause of a provider that keeps failing; each further failure
/// doubles it.
const FIRST_BACKOFF_MS: u64 = 1_000;

impl ProviderSlot {
    /// The slot of provider `provider` of plugin `plugin`, empty.
    pub fn new(
        plugin: &str,
        provider: &str,
        version: &Arc<AtomicU64>,
        counters: &Family<CacheLabels, Counter>,
    ) -> Self {
        let counter = |result: &str| {
            counters
                .get_or_create(&CacheLabels {
                    plugin: plugin.into(),
                    provider: provider.into(),
                    result: result.into(),
                })
                .clone()
        };
        Self {
            state_key: format!("{}:", serde_json::Value::from(provider)),
            version: Arc::clone(version),
            cached: RwLock::new(None),
            hits: counter("hit"),
            stale: counter("stale"),
            misses: counter("miss"),
            failures: AtomicU32::new(0),
            retry_at_ms: AtomicU64::new(0),
            answering_late: AtomicBool::new(false),
        }
    }

    /// While the provider is backed off at `now_ms` (the watchdog's
    /// clock): its failures in a row and how long until it is asked again.
    pub fn backed_off(&self, now_ms: u64) -> Option<(u32, u64)> {
        let retry_at = self.retry_at_ms.load(Ordering::Relaxed);
        (retry_at > now_ms).then(|| (self.failures.load(Ordering::Relaxed), retry_at - now_ms))
    }

    /// Whether a call a message left behind at its state budget is still
    /// running: the provider is not asked again until it returns.
    pub fn is_answering_late(&self) -> bool {
        self.answering_late.load(Ordering::Acquire)
    }

    /// Marks (`true`) or clears (`false`) a call left behind at the state
    /// budget and still running.
    pub fn set_answering_late(&self, late: bool) {
        self.answering_late.store(late, Ordering::Release);
    }

    /// Records an answer: the failures in a row end.
    pub fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.retry_at_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure or a timeout at `now_ms`. From the `after`-th in a
    /// row on, the provider is backed off: one second, doubling with each
    /// further failure, at most `max_ms`. Returns the pause when it starts
    /// one.
    pub fn failed(&self, now_ms: u64, after: u32, max_ms: u64) -> Option<u64> {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if after == 0 || failures < after {
            return None;
        }
        let doublings = (failures - after).min(32);
        let pause = FIRST_BACKOFF_MS.saturating_mul(1 << doublings).min(max_ms);
        self.retry_at_ms
            .store(now_ms.saturating_add(pause), Ordering::Relaxed);
        Some(pause)
    }

    /// Stores a value (fetched or pushed) as fresh at `now_ms` (the
    /// watchdog's clock).
    pub fn store(&self, json: Arc<str>, now_ms: u64) {
        *write(&self.cached) = Some(CachedValue {
            json,
            at_ms: now_ms,
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

/// A provider's cached value: JSON text checked once when it arrived.
#[derive(Debug, Clone)]
pub struct CachedValue {
    /// The value as JSON text.
    pub json: Arc<str>,
    /// When it was fetched or pushed, on the watchdog's clock (ms): the
    /// clock a test moves on to expire it.
    pub at_ms: u64,
    /// Whether a background refresh is running.
    pub refreshing: bool,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
