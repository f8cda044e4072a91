//! Step 1: the state composed from every provider, served from the
//! provider caches where they are fresh.

use super::context::{context_json, view_of, OwnedMessage};
use super::plan::{ServingPlan, StateSnapshot};
use super::InboundMessage;
use crate::plugin::{CallError, MessageRef};
use crate::registry::{LivePlugin, Registry};
use agent_host_plugin_abi::CallControl;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

/// A provider's answer as a value for the state, or its error line (the
/// error counted against the plugin).
fn recorded(
    core: &Registry,
    plugin: &LivePlugin,
    outcome: Result<String, CallError>,
) -> Result<Arc<str>, String> {
    outcome.map(Arc::from).map_err(|error| {
        core.record_error(plugin, &error);
        error.to_string()
    })
}

/// Calls a provider's `get` (the instance checks its JSON).
fn fetch(
    core: &Registry,
    plugin: &LivePlugin,
    index: u32,
    view: MessageRef<'_>,
) -> Result<Arc<str>, String> {
    let control = CallControl::default();
    recorded(core, plugin, plugin.instance.provide(index, view, &control))
}

/// Refreshes a stale provider value in the background (stale-while-revalidate).
fn refresh_in_background(
    core: &Arc<Registry>,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
) {
    let (core_bg, plugin_bg) = (Arc::clone(core), Arc::clone(plugin));
    let owned = OwnedMessage::of(message, context);
    core.runtime().spawn_blocking(move || {
        let view = owned.view();
        let slot = &plugin_bg.providers[index as usize];
        // A host shutting down refreshes nothing.
        let Some(_admitted) = core_bg.admission.enter() else {
            slot.end_refresh();
            return;
        };
        let _call = plugin_bg
            .in_flight
            .enter(crate::registry::inflight::Entry::Provider(index));
        match fetch(&core_bg, &plugin_bg, index, view) {
            Ok(json) => slot.store(json),
            Err(error) => {
                tracing::warn!("background refresh failed: {error}");
                slot.end_refresh();
            }
        }
    });
}

/// The state composed from providers, as a JSON object text keyed by
/// provider name. Each provider is isolated: a failure is reported and the
/// provider left out.
///
/// When every provider is served from its cache or from pushed values, the
/// composed text is kept and reused until a provider value changes or the
/// earliest cached value expires: composing is then constant time.
pub(super) fn compose_state(
    core: &Arc<Registry>,
    plan: &ServingPlan,
    message: &InboundMessage,
    errors: &mut Vec<String>,
) -> Arc<str> {
    errors.extend(plan.shadowed.iter().cloned());
    let now = Instant::now();
    let version = core
        .provider_version
        .load(std::sync::atomic::Ordering::Acquire);
    if !plan.calls_every_message {
        let snapshot = plan
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(snapshot) = snapshot {
            if snapshot.version == version && snapshot.fresh_until.is_none_or(|t| now < t) {
                for &(p, index) in &plan.providers {
                    let spec = &plan.plugins[p].instance.manifest.providers[index as usize];
                    if spec.cache.is_some() {
                        plan.plugins[p].providers[index as usize].hits.inc();
                    }
                }
                return snapshot.json;
            }
        }
    }

    let bare_context = context_json(message, None);
    let view = view_of(message, &bare_context);
    let mut reusable = !plan.calls_every_message;
    let mut fresh_until: Option<Instant> = None;
    // First from the caches; what they cannot serve is asked for below, each
    // plugin's providers together.
    let mut values: Vec<Option<Result<Arc<str>, String>>> =
        Vec::with_capacity(plan.providers.len());
    // (plugin in the plan, its provider indices, their positions in `values`)
    let mut asks: Vec<(usize, Vec<u32>, Vec<usize>)> = Vec::new();
    for &(p, index) in &plan.providers {
        let plugin = &plan.plugins[p];
        let spec = &plugin.instance.manifest.providers[index as usize];
        let slot = &plugin.providers[index as usize];
        let served = slot.with_cached(|cached| match (spec.cache, cached) {
            (Some(cache), Some(cached)) => {
                let expires = cached.at + Duration::from_millis(cache.ttl_ms);
                if now < expires {
                    slot.hits.inc();
                    fresh_until = Some(fresh_until.map_or(expires, |t| t.min(expires)));
                    Some((Arc::clone(&cached.json), false))
                } else if cache.stale_while_revalidate {
                    slot.stale.inc();
                    Some((Arc::clone(&cached.json), true))
                } else {
                    None
                }
            }
            (None, Some(pushed)) if spec.subscribable => Some((Arc::clone(&pushed.json), false)),
            _ => None,
        });
        match served {
            Some((json, stale)) => {
                if stale {
                    reusable = false;
                    if slot.start_refresh() {
                        refresh_in_background(core, plugin, index, message, &bare_context);
                    }
                }
                values.push(Some(Ok(json)));
            }
            None => {
                reusable = false;
                let position = values.len();
                values.push(None);
                match asks.last_mut() {
                    Some((last, indices, positions)) if *last == p => {
                        indices.push(index);
                        positions.push(position);
                    }
                    _ => asks.push((p, vec![index], vec![position])),
                }
            }
        }
    }
    let control = CallControl::default();
    for (p, indices, positions) in &asks {
        let plugin = &plan.plugins[*p];
        let _call = plugin
            .in_flight
            .enter(crate::registry::inflight::Entry::Providers);
        plugin
            .instance
            .provide_each(indices, view, &control, &mut |index, outcome| {
                let slot = &plugin.providers[index as usize];
                if plugin.instance.manifest.providers[index as usize]
                    .cache
                    .is_some()
                {
                    slot.misses.inc();
                    if let Ok(json) = &outcome {
                        slot.store(Arc::from(json.as_str()));
                    }
                }
                let outcome = recorded(core, plugin, outcome);
                if let Some(k) = indices.iter().position(|&i| i == index) {
                    values[positions[k]] = Some(outcome);
                }
            });
    }
    let mut state = String::with_capacity(64 * plan.providers.len() + 2);
    state.push('{');
    for (&(p, index), value) in plan.providers.iter().zip(values) {
        match value {
            Some(Ok(json)) => {
                if state.len() > 1 {
                    state.push(',');
                }
                state.push_str(&plan.plugins[p].providers[index as usize].state_key);
                state.push_str(&json);
            }
            Some(Err(error)) => {
                reusable = false;
                errors.push(error);
            }
            None => reusable = false,
        }
    }
    state.push('}');
    let state: Arc<str> = state.into();
    if reusable {
        *plan.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(StateSnapshot {
            version,
            fresh_until,
            json: Arc::clone(&state),
        });
    }
    state
}
