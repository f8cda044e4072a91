//! A provider's cache slot: its key in the state JSON, its cached (or
//! pushed) value, and its counters. Each live plugin holds one per provider;
//! only the pipeline reads and refreshes them, and pushed values are stored
//! through the registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

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
    /// The slot of provider `provider` of plugin `plugin`, empty.
    pub fn new(
        plugin: &str,
        provider: &str,
        version: &Arc<AtomicU64>,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        Self {
            state_key: format!("{}:", serde_json::Value::from(provider)),
            version: Arc::clone(version),
            cached: RwLock::new(None),
            hits: metrics.cache_counter(plugin, provider, "hit"),
            stale: metrics.cache_counter(plugin, provider, "stale"),
            misses: metrics.cache_counter(plugin, provider, "miss"),
        }
    }

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

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
