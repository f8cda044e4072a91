//! Phase 1: the state composed from every provider, served from the
//! provider caches where they are fresh, the other providers asked with a
//! deadline, each plugin's together.
//!
//! A provider that fails or misses its deadline is left out of the state
//! and reported; if it has a cached value, that value is served instead,
//! and its name is listed under `stale_providers` in the context. After
//! `provider_backoff_after` failures in a row a provider is backed off: not
//! asked for a while (its cached value served stale meanwhile).
//!
//! The phase as a whole waits at most the state budget
//! (`state_budget_ms`). A call still running when the budget ends is left
//! behind, not cancelled: the message goes on without it (stale, as
//! above), the call runs on within its own deadline on the thread that
//! made it, and when it returns that thread settles its outcome (caches
//! the value, counts a failure). Until then later messages do not ask the
//! provider. Each call therefore settles its own outcome, whoever waits
//! for it; the thread that finishes the phase only composes.

use super::cache::ProviderSlot;
use super::context::{context_json, view_of, OwnedMessage};
use super::plan::StateSnapshot;
use super::run::{lock, MessageRun};
use super::InboundMessage;
use crate::plugin::CallError;
use crate::registry::inflight::Entry;
use crate::registry::{LivePlugin, Registry};
use crate::watchdog::relay::{Relay, Relayed};
use crate::watchdog::{deadline_passed, unix_ms_after};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::ErrorKind;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What one job answers, settled: each asked provider's index and its
/// value, or the error to report.
type Answers = Vec<(u32, Result<Arc<str>, String>)>;

/// Where an ask's call stands: running, its message waiting for it.
const ASKING: u8 = 0;
/// Returned while its message waited for it.
const RETURNED: u8 = 1;
/// Abandoned at its own deadline: cancelled, counted as a timeout.
const TIMED_OUT: u8 = 2;
/// Left behind at the state budget, still running within its own deadline.
const LEFT: u8 = 3;
/// Left behind at the state budget, then returned (its outcome settled).
const LEFT_RETURNED: u8 = 4;

/// The providers of one plugin asked in one call.
struct Ask {
    /// The plugin's index in the serving plan.
    plugin: usize,
    /// Its providers to ask.
    indices: Vec<u32>,
    /// Where each goes in the state.
    positions: Vec<usize>,
    /// The job's deadline: its slowest provider's timeout.
    timeout_ms: u64,
    /// The call's own control: its deadline, and its cancellation at that
    /// deadline (never at the state budget).
    control: CallControl,
    /// Where the call stands: [`ASKING`], [`RETURNED`], [`TIMED_OUT`],
    /// [`LEFT`] or [`LEFT_RETURNED`].
    standing: AtomicU8,
}

impl Ask {
    fn new(plugin: usize, index: u32, position: usize, timeout_ms: u64) -> Self {
        Self {
            plugin,
            indices: vec![index],
            positions: vec![position],
            timeout_ms,
            control: CallControl::default(),
            standing: AtomicU8::new(ASKING),
        }
    }
}

/// A provider's value for the state; `None` leaves it out.
type Value = Option<Arc<str>>;

/// What the host code of the phase gathers, between the caches and the
/// calls.
struct Composing {
    values: Vec<Value>,
    /// Positions of values served stale.
    stale: Vec<usize>,
    errors: Vec<String>,
    reusable: bool,
    /// When the earliest cached value used expires (the watchdog's ms).
    fresh_until: Option<u64>,
}

/// The providers phase of one message.
pub(crate) struct ProvidersPhase {
    started: Instant,
    /// The state, when a composed one could be reused as it is.
    reused: Option<Arc<str>>,
    asks: Vec<Ask>,
    /// The context providers see (no state yet).
    bare_context: String,
    /// One job per ask.
    pub(super) relay: Relay<Answers>,
    composing: Mutex<Composing>,
    /// When the state budget ends, on the watchdog's clock (`u64::MAX`:
    /// no budget).
    budget_end_ms: u64,
    /// The budget, for the errors that name it.
    budget_ms: u64,
    /// Calls left behind at the budget that have not returned.
    left_running: AtomicUsize,
}

impl ProvidersPhase {
    /// How job `job`, running for `running_ms`, must end at `now_ms` (the
    /// watchdog's clock): [`TIMED_OUT`] past its own deadline, [`LEFT`]
    /// past the state budget, `None` while it may go on.
    pub(super) fn ending(&self, job: usize, running_ms: u64, now_ms: u64) -> Option<u8> {
        let ask = self.asks.get(job)?;
        if running_ms >= ask.timeout_ms {
            Some(TIMED_OUT)
        } else if now_ms >= self.budget_end_ms {
            Some(LEFT)
        } else {
            None
        }
    }

    /// Ends job `job`'s wait as `ending` ([`TIMED_OUT`]: its call is
    /// cancelled; [`LEFT`]: its call runs on, and its providers are not
    /// asked again until it returns). False if the call returned first.
    pub(super) fn end(&self, run: &MessageRun, job: usize, ending: u8) -> bool {
        let Some(ask) = self.asks.get(job) else {
            return false;
        };
        let slots = &run.plan.slots[ask.plugin];
        let left = ending == LEFT;
        if left {
            // Marked before the call can see it left, so the call's own
            // clearing, when it returns, comes after.
            self.left_running.fetch_add(1, Ordering::AcqRel);
            for &index in &ask.indices {
                slots[index as usize].set_answering_late(true);
            }
        }
        let ended = ask
            .standing
            .compare_exchange(ASKING, ending, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !ended && left {
            for &index in &ask.indices {
                slots[index as usize].set_answering_late(false);
            }
            self.left_running.fetch_sub(1, Ordering::AcqRel);
        }
        if ended && !left {
            ask.control.cancel();
        }
        ended
    }

    /// Cancels the calls left behind at the budget that are past their own
    /// deadline. Whether any is still running within it (the watchdog
    /// keeps watching the message until none is).
    pub(super) fn watch_left_calls(&self) -> bool {
        if self.left_running.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut within_deadline = false;
        for ask in &self.asks {
            if ask.standing.load(Ordering::Acquire) == LEFT && !ask.control.is_cancelled() {
                if deadline_passed(&ask.control) {
                    ask.control.cancel();
                } else {
                    within_deadline = true;
                }
            }
        }
        within_deadline
    }
}

/// A provider's timeout: its own, else the host's.
fn timeout_ms(core: &Registry, plugin: &LivePlugin, index: u32) -> u64 {
    plugin.instance.manifest.providers[index as usize]
        .timeout_ms
        .unwrap_or(core.settings.provider_timeout_ms)
}

/// Runs the providers phase as driver `driver`.
pub(super) fn drive(run: &Arc<MessageRun>, driver: u32) -> Relayed {
    let phase = run.providers.get_or_init(|| begin(run, driver));
    let relayed = phase
        .relay
        .drive(driver, |job, control| ask(run, phase, job, control));
    if relayed == Relayed::Finished {
        finish(run, phase);
    }
    relayed
}

/// The host code before the calls: the reusable state, else every cached
/// or pushed value, and what must be asked.
fn begin(run: &Arc<MessageRun>, driver: u32) -> ProvidersPhase {
    let (core, plan, message) = (&run.core, &run.plan, &run.message);
    let started = Instant::now();
    let now_ms = run.now_ms();
    let budget_ms = core.settings.state_budget_ms;
    let budget_end_ms = match budget_ms {
        0 => u64::MAX,
        budget => now_ms.saturating_add(budget),
    };
    if let Some(state) = reusable_state(run, now_ms) {
        return ProvidersPhase {
            started,
            reused: Some(state),
            asks: Vec::new(),
            bare_context: String::new(),
            relay: Relay::new(0, driver),
            composing: Mutex::new(Composing {
                values: Vec::new(),
                stale: Vec::new(),
                errors: Vec::new(),
                reusable: false,
                fresh_until: None,
            }),
            budget_end_ms,
            budget_ms,
            left_running: AtomicUsize::new(0),
        };
    }

    let bare_context = context_json(message, None, &[]);
    let mut composing = Composing {
        values: Vec::with_capacity(plan.providers.len()),
        stale: Vec::new(),
        errors: Vec::new(),
        reusable: !plan.calls_every_message,
        fresh_until: None,
    };
    let mut asks: Vec<Ask> = Vec::new();
    for &(p, index) in &plan.providers {
        let plugin = &plan.plugins[p];
        let spec = &plugin.instance.manifest.providers[index as usize];
        let slot = &plan.slots[p][index as usize];
        let position = composing.values.len();
        if let Some((failures, retry_in)) = slot.backed_off(now_ms) {
            composing.not_asked(slot, position, format!(
                "plugin '{}': provider '{}' get: backed off after {failures} failures in a row; asked again in {retry_in} ms",
                plugin.name(),
                spec.name
            ));
            continue;
        }
        let served = slot.with_cached(|cached| match (spec.cache, cached) {
            (Some(cache), Some(cached)) => {
                let expires = cached.at_ms.saturating_add(cache.ttl_ms);
                if now_ms < expires {
                    slot.hits.inc();
                    composing.fresh_until =
                        Some(composing.fresh_until.map_or(expires, |t| t.min(expires)));
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
                    composing.reusable = false;
                    composing.stale.push(position);
                    if slot.start_refresh() {
                        refresh_in_background(
                            core,
                            plugin,
                            &plan.slots[p],
                            index,
                            message,
                            &bare_context,
                        );
                    }
                }
                composing.values.push(Some(json));
            }
            None if slot.is_answering_late() => {
                // Its call for an earlier message, left behind at the
                // budget, is still running: not asked again, not waited for.
                composing.not_asked(slot, position, format!(
                    "plugin '{}': provider '{}' get: still answering an earlier message, slower than the state budget ({budget_ms} ms); left out",
                    plugin.name(),
                    spec.name
                ));
            }
            None => {
                composing.reusable = false;
                composing.values.push(None);
                let timeout = timeout_ms(core, plugin, index);
                match asks.last_mut() {
                    Some(ask) if ask.plugin == p => {
                        ask.indices.push(index);
                        ask.positions.push(position);
                        ask.timeout_ms = ask.timeout_ms.max(timeout);
                    }
                    _ => asks.push(Ask::new(p, index, position, timeout)),
                }
            }
        }
    }
    for ask in &mut asks {
        ask.control =
            CallControl::with_deadline(unix_ms_after(Duration::from_millis(ask.timeout_ms)));
    }
    ProvidersPhase {
        started,
        reused: None,
        relay: Relay::new(asks.len(), driver),
        asks,
        bare_context,
        composing: Mutex::new(composing),
        budget_end_ms,
        budget_ms,
        left_running: AtomicUsize::new(0),
    }
}

/// The state composed for an earlier message, when it may serve this one
/// whole: no provider must be asked for every message, no value stored
/// since (the provider slots' version), no cached value in it expired.
fn reusable_state(run: &MessageRun, now_ms: u64) -> Option<Arc<str>> {
    let plan = &run.plan;
    if plan.calls_every_message {
        return None;
    }
    let version = run
        .pipeline
        .provider_slots
        .version
        .load(std::sync::atomic::Ordering::Acquire);
    let snapshot = plan
        .snapshot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()?;
    if snapshot.version != version || snapshot.fresh_until.is_some_and(|t| now_ms >= t) {
        return None;
    }
    // Counted once for the whole state, not per provider: a thousand
    // providers would cost a thousand increments.
    run.core.metrics.states_reused.inc();
    Some(snapshot.json)
}

impl Composing {
    /// A provider not asked for this message (`why`): its cached value
    /// served stale, or none; the state is not reused.
    fn not_asked(&mut self, slot: &ProviderSlot, position: usize, why: String) {
        self.reusable = false;
        self.errors.push(why);
        let value = serve_stale(slot, &mut self.stale, position);
        self.values.push(value);
    }
}

/// The cached value of a provider that cannot answer now, marked stale;
/// `None` (left out) when it has none.
fn serve_stale(slot: &ProviderSlot, stale: &mut Vec<usize>, position: usize) -> Value {
    let cached = slot.with_cached(|cached| cached.map(|c| Arc::clone(&c.json)))?;
    stale.push(position);
    Some(cached)
}

/// Job `job`: one plugin's providers asked in one call (under the call's
/// own control, not the relay's: a call left behind at the budget is not
/// cancelled), unless the plugin's bulkhead is full; then each outcome
/// settled by this thread, whether the message still waits for it or not.
fn ask(run: &MessageRun, phase: &ProvidersPhase, job: usize, _relay: &CallControl) -> Answers {
    let ask = &phase.asks[job];
    let plugin = &run.plan.plugins[ask.plugin];
    let limit = run.core.settings.max_calls_in_flight;
    let mut outcomes = Vec::with_capacity(ask.indices.len());
    match plugin.in_flight.try_enter(Entry::Providers, limit) {
        Some(_call) => {
            let view = view_of(&run.message, &phase.bare_context);
            crate::current_call::within(&ask.control, || {
                plugin.instance.provide_each(
                    &ask.indices,
                    view,
                    &ask.control,
                    &mut |index, outcome| outcomes.push((index, outcome)),
                );
            });
        }
        None => {
            for &index in &ask.indices {
                let entry = Entry::Provider(index).describe(&plugin.instance);
                outcomes.push((index, Err(plugin.instance.refused(entry, limit))));
            }
        }
    }
    let standing =
        match ask
            .standing
            .compare_exchange(ASKING, RETURNED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => RETURNED,
            Err(ended) => ended,
        };
    let answers = outcomes
        .into_iter()
        .map(|(index, outcome)| (index, settle(run, ask, index, outcome, standing)))
        .collect();
    if standing == LEFT {
        ask.standing.store(LEFT_RETURNED, Ordering::Release);
        for &index in &ask.indices {
            run.plan.slots[ask.plugin][index as usize].set_answering_late(false);
        }
        phase.left_running.fetch_sub(1, Ordering::AcqRel);
    }
    answers
}

/// Settles one provider's outcome of a call that ended as `standing`: a
/// value answers the provider's failures and is cached (a late one even
/// for a provider without a cache, to be served stale); an error counts
/// against its backoff, unless the call was abandoned at its deadline
/// (counted then, as a timeout).
fn settle(
    run: &MessageRun,
    ask: &Ask,
    index: u32,
    outcome: Result<String, CallError>,
    standing: u8,
) -> Result<Arc<str>, String> {
    let plugin = &run.plan.plugins[ask.plugin];
    let slot = &run.plan.slots[ask.plugin][index as usize];
    match outcome {
        Ok(json) => {
            slot.answered();
            let json: Arc<str> = Arc::from(json);
            let spec = &plugin.instance.manifest.providers[index as usize];
            let late = standing != RETURNED;
            if spec.cache.is_some() || (late && !spec.subscribable) {
                slot.misses.inc();
                slot.store(Arc::clone(&json), run.now_ms());
            }
            Ok(json)
        }
        Err(error) => {
            if standing != TIMED_OUT {
                failed(run, ask.plugin, index, &error);
            }
            Err(error.to_string())
        }
    }
}

/// Records a provider's failure (or timeout) against its backoff.
fn failed(run: &MessageRun, p: usize, index: u32, error: &CallError) {
    let plugin = &run.plan.plugins[p];
    run.core.record_error(plugin, error);
    let settings = &run.core.settings;
    let slot = &run.plan.slots[p][index as usize];
    if let Some(pause) = slot.failed(
        run.now_ms(),
        settings.provider_backoff_after,
        settings.provider_backoff_max_ms,
    ) {
        tracing::warn!(
            plugin = plugin.name(),
            provider = plugin.instance.provider_name(index),
            "provider backed off for {pause} ms after failing {} times in a row",
            settings.provider_backoff_after
        );
    }
}

/// The host code after the calls: every answer stored and checked, the
/// state and the context composed.
fn finish(run: &MessageRun, phase: &ProvidersPhase) {
    let plan = &run.plan;
    let mut reply = lock(&run.reply);
    reply.errors.extend(plan.shadowed.iter().cloned());
    if let Some(state) = &phase.reused {
        let _ = run.context.set(plan.context.compose(&run.message, state));
        reply.timings.providers_us = super::micros(phase.started);
        return;
    }
    let mut composing = lock(&phase.composing);
    let composing = &mut *composing;
    phase.relay.drain(|job, answers| {
        let ask = &phase.asks[job];
        let plugin = &plan.plugins[ask.plugin];
        let position_of = |index: u32| {
            ask.indices
                .iter()
                .position(|&i| i == index)
                .map(|k| ask.positions[k])
        };
        let Some(answers) = answers else {
            // Abandoned at its deadline, or left behind at the budget:
            // every provider of the call.
            let timed_out = ask.standing.load(Ordering::Acquire) == TIMED_OUT;
            for (&index, &position) in ask.indices.iter().zip(&ask.positions) {
                let entry = Entry::Provider(index).describe(&plugin.instance);
                let error = if timed_out {
                    let error = plugin.instance.timed_out(entry, ask.timeout_ms);
                    failed(run, ask.plugin, index, &error);
                    error
                } else {
                    plugin.instance.host_error(
                        entry,
                        ErrorKind::Unavailable,
                        format!(
                            "slower than the state budget ({} ms); left out, its call goes on within its own deadline of {} ms",
                            phase.budget_ms, ask.timeout_ms
                        ),
                    )
                };
                composing.errors.push(error.to_string());
                let slot = &plan.slots[ask.plugin][index as usize];
                composing.values[position] = serve_stale(slot, &mut composing.stale, position);
            }
            return;
        };
        for (index, outcome) in answers {
            let Some(position) = position_of(index) else {
                continue;
            };
            match outcome {
                Ok(json) => composing.values[position] = Some(json),
                Err(error) => {
                    composing.errors.push(error);
                    let slot = &plan.slots[ask.plugin][index as usize];
                    composing.values[position] = serve_stale(slot, &mut composing.stale, position);
                }
            }
        }
    });
    let mut state = String::with_capacity(64 * plan.providers.len() + 2);
    state.push('{');
    let mut reusable = composing.reusable;
    for (&(p, index), value) in plan.providers.iter().zip(&composing.values) {
        match value {
            Some(json) => {
                if state.len() > 1 {
                    state.push(',');
                }
                state.push_str(&plan.slots[p][index as usize].state_key);
                state.push_str(json);
            }
            None => reusable = false,
        }
    }
    state.push('}');
    let state: Arc<str> = state.into();
    if reusable && composing.stale.is_empty() && composing.errors.is_empty() {
        let version = run
            .pipeline
            .provider_slots
            .version
            .load(std::sync::atomic::Ordering::Acquire);
        *plan.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(StateSnapshot {
            version,
            fresh_until: composing.fresh_until,
            json: Arc::clone(&state),
        });
    }
    let stale: Vec<&str> = composing
        .stale
        .iter()
        .map(|&position| {
            let (p, index) = plan.providers[position];
            plan.plugins[p].instance.provider_name(index)
        })
        .collect();
    let context = if stale.is_empty() {
        plan.context.compose(&run.message, &state)
    } else {
        Arc::from(context_json(&run.message, Some(&state), &stale))
    };
    let _ = run.context.set(context);
    reply.errors.append(&mut composing.errors);
    reply.timings.providers_us = super::micros(phase.started);
}

/// Refreshes a stale provider value in the background
/// (stale-while-revalidate), with the provider's deadline and within the
/// plugin's bulkhead. Nothing waits for it.
fn refresh_in_background(
    core: &Arc<Registry>,
    plugin: &Arc<LivePlugin>,
    slots: &Arc<[ProviderSlot]>,
    index: u32,
    message: &InboundMessage,
    context: &str,
) {
    let (core_bg, plugin_bg, slots) = (Arc::clone(core), Arc::clone(plugin), Arc::clone(slots));
    let owned = OwnedMessage::of(message, context);
    let timeout = timeout_ms(core, plugin, index);
    core.runtime().spawn_blocking(move || {
        let view = owned.view();
        let slot = &slots[index as usize];
        // A host shutting down refreshes nothing.
        let Some(_admitted) = core_bg.admission.enter() else {
            slot.end_refresh();
            return;
        };
        let limit = core_bg.settings.max_calls_in_flight;
        let Some(_call) = plugin_bg.in_flight.try_enter(Entry::Provider(index), limit) else {
            slot.end_refresh();
            return;
        };
        let control = CallControl::with_deadline(unix_ms_after(Duration::from_millis(timeout)));
        match plugin_bg.instance.provide(index, view, &control) {
            Ok(json) => {
                slot.answered();
                slot.store(Arc::from(json), core_bg.watchdog.now_ms());
            }
            Err(error) => {
                core_bg.record_error(&plugin_bg, &error);
                tracing::warn!("background refresh failed: {error}");
                slot.end_refresh();
            }
        }
    });
}
