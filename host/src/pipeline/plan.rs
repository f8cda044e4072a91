//! The serving plan: who takes part in the pipeline now (loaded plugins,
//! not quarantined) and whose providers compose the state. Worked out once
//! per change of the plugin set, and cached by the [`Pipeline`](super::Pipeline).

use crate::pipeline::cache::{ProviderSlot, ProviderSlots};
use crate::pipeline::message::EvaluatorNames;
use crate::plugin::WarmStage;
use crate::registry::LivePlugin;
use crate::triggers::TriggerIndex;
use std::sync::{Arc, Mutex};

/// The plugins taking part in the pipeline (loaded, not quarantined), and
/// the providers whose values compose the state.
pub struct ServingPlan {
    /// Serving plugins in load order.
    pub plugins: Vec<Arc<LivePlugin>>,
    /// Their provider slots, one set per plugin of `plugins`.
    pub slots: Vec<Arc<[ProviderSlot]>>,
    /// Their action triggers, one slot per plugin of `plugins`.
    pub triggers: TriggerIndex,
    /// (plugin index in `plugins`, provider index) of every provider in the
    /// state, in order.
    pub providers: Vec<(usize, u32)>,
    /// (plugin index in `plugins`, evaluator index) of every evaluator, in
    /// order.
    pub evaluators: Vec<(usize, u32)>,
    /// The names of the evaluators of `evaluators`, in the same order: the
    /// table every reply's verdicts refer to.
    pub evaluator_names: EvaluatorNames,
    /// Plugins (indices in `plugins`) whose calls cross to another
    /// process: each gets its part of a message sent ahead in one request.
    pub costly: Vec<usize>,
    /// Providers left out because an earlier plugin's provider has their name.
    pub shadowed: Vec<String>,
    /// Whether some provider must be called for every message (it has no
    /// cache and pushes nothing), so no composed state can be reused.
    pub calls_every_message: bool,
    /// The last composed state, reusable while no provider value changed
    /// and none of the cached values it used has expired.
    pub snapshot: Mutex<Option<StateSnapshot>>,
    /// The last context composed with a state.
    pub context: super::context::ContextCache,
}

/// A composed state and what it depends on.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    /// `ProviderSlots::version` when it was composed.
    pub version: u64,
    /// When its earliest cached value expires, on the watchdog's clock
    /// (ms; `None`: never).
    pub fresh_until: Option<u64>,
    /// The state object as JSON text.
    pub json: Arc<str>,
}

/// How many plugins apart a warm-up's stages are asked (see
/// [`ServingPlan::warm_after`]): enough for a line to arrive while that
/// many plugins are served.
const WARM_STRIDE: usize = 4;

impl ServingPlan {
    /// Warms the plugins after plugin `p` for a phase that is about to call
    /// `p` (see `prefetch.rs`): the plugin three strides ahead gets its
    /// fields asked for, the one two strides ahead what they point to, the
    /// one a stride ahead its object. So every line is asked for a stride
    /// after the line that points to it, and is in when its plugin's turn
    /// comes.
    #[inline]
    pub(crate) fn warm_after(&self, p: usize) {
        let stages = [
            (WarmStage::Fields, 3),
            (WarmStage::Targets, 2),
            (WarmStage::Object, 1),
        ];
        for (stage, strides) in stages {
            if let Some(plugin) = self.plugins.get(p + strides * WARM_STRIDE) {
                plugin.warm(stage);
            }
        }
    }

    pub(crate) fn new(mut plugins: Vec<Arc<LivePlugin>>, provider_slots: &ProviderSlots) -> Self {
        plugins.retain(|p| !p.is_quarantined());
        let slots = plugins.iter().map(|p| provider_slots.of(p)).collect();
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
        let evaluators: Vec<(usize, u32)> = plugins
            .iter()
            .enumerate()
            .flat_map(|(p, plugin)| plugin.evaluator_indices.iter().map(move |&e| (p, e)))
            .collect();
        let evaluator_names: EvaluatorNames = evaluators
            .iter()
            .map(|&(p, e)| {
                let plugin = &plugins[p];
                let name = &plugin.evaluator_names[e as usize];
                (Arc::clone(&plugin.shared_name), Arc::clone(name))
            })
            .collect();
        let triggers = TriggerIndex::new(plugins.iter().map(|p| &*p.triggers));
        let costly = (0..plugins.len())
            .filter(|&p| !plugins[p].instance.calls_are_cheap())
            .collect();
        Self {
            plugins,
            slots,
            triggers,
            providers,
            evaluators,
            evaluator_names,
            costly,
            shadowed,
            calls_every_message,
            snapshot: Mutex::new(None),
            context: super::context::ContextCache::default(),
        }
    }
}
