//! A plugin that is loaded and registered: its instance, permissions, place
//! in the load order and generation, its metrics,
//! its quarantine state, and its calls in flight.

use crate::metrics::Metrics;
use crate::permissions::Permissions;
use crate::plugin::{PluginInstance, WarmStage};
use crate::prefetch::prefetch;
use crate::triggers::PluginTriggers;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    /// `0..n` for its `n` actions: the actions asked about a message when
    /// none declares triggers.
    pub action_indices: Vec<u32>,
    /// Its actions' triggers, compiled when its manifest was checked.
    pub triggers: Arc<PluginTriggers>,
    /// `0..n` for its `n` evaluators: every evaluator scores every message.
    pub evaluator_indices: Vec<u32>,
    /// Its evaluators' names, by index.
    pub evaluator_names: Vec<Arc<str>>,
    /// Each action's counters, by index.
    pub action_metrics: Vec<crate::metrics::ActionMetrics>,
    /// Its counts for its status (shared by its generations).
    pub stats: Arc<crate::plugin_stats::PluginStats>,
    /// The calls in flight into this generation.
    pub in_flight: Arc<crate::registry::inflight::InFlight>,
    pub(super) quarantined: AtomicBool,
    /// A step of its life missed its deadline while it was being started
    /// or stopped: the host calls no step of its life again.
    pub(super) given_up: AtomicBool,
    pub(super) recent_panics: Mutex<VecDeque<Instant>>,
}

impl LivePlugin {
    /// Asks for the lines a message's calls into this plugin read first,
    /// at `stage` (see [`WarmStage`]): its calls in flight, the indices of
    /// its actions, and its instance's.
    #[inline]
    pub(crate) fn warm(&self, stage: WarmStage) {
        match stage {
            WarmStage::Fields => {
                prefetch(&self.in_flight);
                prefetch(&self.action_indices);
            }
            WarmStage::Targets => {
                prefetch(Arc::as_ptr(&self.in_flight));
                prefetch(self.action_indices.as_ptr());
            }
            WarmStage::Object => {}
        }
        self.instance.warm(stage);
    }

    /// A live plugin, not quarantined.
    pub fn new(
        instance: PluginInstance,
        triggers: Arc<PluginTriggers>,
        permissions: Permissions,
        load_order: usize,
        generation: u64,
        metrics: &Metrics,
    ) -> Self {
        let name = instance.name().to_string();
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
            action_indices: (0..instance.manifest.actions.len() as u32).collect(),
            evaluator_indices: (0..instance.manifest.evaluators.len() as u32).collect(),
            shared_name: Arc::from(name.as_str()),
            triggers,
            evaluator_names,
            action_metrics,
            stats: metrics.plugin_stats(&name),
            instance,
            permissions,
            load_order,
            generation,
            in_flight: Arc::default(),
            quarantined: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
            recent_panics: Mutex::new(VecDeque::new()),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.instance.name()
    }

    /// Whether the host gave up on this generation: a step of its life
    /// missed its deadline while it was being started or stopped (see
    /// `registry/step.rs`).
    pub fn is_given_up(&self) -> bool {
        self.given_up.load(Ordering::Acquire)
    }

    /// Whether the plugin panicked too often and is out of service.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }
}
