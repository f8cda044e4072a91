//! The message pipeline: from one inbound message to one reply.
//!
//! 1. compose the state from every provider: cached values while fresh
//!    (`cache.ttl_ms`), stale ones at once with a background refresh
//!    (`stale_while_revalidate`), pushed values from subscriptions; each
//!    provider isolated (a failure is reported and left out);
//! 2. ask every action's `validate` (validate always gates the handler);
//! 3. pick the highest priority valid action (ties: the plugin earlier in
//!    load order, then the action earlier in its plugin);
//! 4. check the sender holds the action's permissions;
//! 5. check the action's rate limit;
//! 6. run its handler on the blocking pool with its timeout and a
//!    cancellation signal, inside a tracing span, with `action:started` /
//!    `action:completed` / `action:failed` events and timing metrics;
//! 7. run every evaluator on the message (the batch form for a batch);
//! 8. answer with the handler's result, the evaluations and the timings.
//!
//! Plugins that are quarantined take no part. Nothing here fails: every
//! problem becomes an entry in the reply's `errors`, naming the plugin and
//! the entry point.

pub(crate) mod ratelimit;

use crate::registry::{LivePlugin, Registry, ServingPlan, StateSnapshot};
use agent_host_plugin_abi::{CallControl, MessageView};
use agent_host_plugin_sdk::{ActionResult, Evaluation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A message from a user or a client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InboundMessage {
    /// Unique id; the host makes one when it is empty.
    pub id: String,
    /// Who sent it.
    pub sender: String,
    /// What the sender may do (checked against actions' permissions).
    pub permissions: Vec<String>,
    /// The text.
    pub text: String,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
}

/// Which action answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRef {
    /// The plugin.
    pub plugin: String,
    /// The action.
    pub action: String,
}

/// One evaluator's verdict on the message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationRecord {
    /// The plugin.
    pub plugin: Arc<str>,
    /// The evaluator.
    pub evaluator: Arc<str>,
    /// Its result.
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

/// How long each step took, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    /// Composing the state.
    pub providers_us: u64,
    /// All `validate` calls.
    pub validate_us: u64,
    /// The handler.
    pub handler_us: u64,
    /// All evaluators.
    pub evaluators_us: u64,
    /// The whole message.
    pub total_us: u64,
}

/// The answer to one message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reply {
    /// The message's id.
    pub id: String,
    /// The reply text.
    pub text: String,
    /// Structured data from the action.
    pub data: Value,
    /// Metadata from the action.
    pub metadata: Map<String, Value>,
    /// The action that answered, if one did.
    pub action: Option<ActionRef>,
    /// Whether an action answered without error.
    pub ok: bool,
    /// The evaluators' verdicts.
    pub evaluations: Vec<EvaluationRecord>,
    /// Errors from providers, validators, the handler or evaluators: each names
    /// the plugin and the entry point.
    pub errors: Vec<String>,
    /// Step timings.
    pub timings: Timings,
}

/// The reply text when no action accepts a message.
pub const NO_ACTION_TEXT: &str = "Sorry, I don't know how to help with that.";

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn unix_ms_after(timeout: Duration) -> u64 {
    let deadline = SystemTime::now() + timeout;
    deadline
        .duration_since(UNIX_EPOCH)
        // Rounded up, so the plugin never sees its deadline before the host does.
        .map(|d| u64::try_from(d.as_millis() + 1).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The JSON context plugins see with a message: sender, permissions and
/// metadata, then (once providers ran) the composed state, already JSON.
fn context_json(message: &InboundMessage, state_json: Option<&str>) -> String {
    let mut context = json!({
        "sender": message.sender,
        "permissions": message.permissions,
        "metadata": message.metadata,
    })
    .to_string();
    if let Some(state) = state_json {
        context.pop();
        context.push_str(",\"state\":");
        context.push_str(state);
        context.push('}');
    }
    context
}

fn view_of<'a>(message: &'a InboundMessage, context_json: &'a str) -> MessageView<'a> {
    MessageView {
        id: message.id.as_str().into(),
        text: message.text.as_str().into(),
        context_json: context_json.into(),
    }
}

/// A message's parts copied out, for a call that runs on another thread
/// and may outlive the message (a timed-out handler, a background refresh).
struct OwnedMessage {
    id: String,
    text: String,
    context: String,
}

impl OwnedMessage {
    fn of(message: &InboundMessage, context: &str) -> Self {
        Self {
            id: message.id.clone(),
            text: message.text.clone(),
            context: context.to_string(),
        }
    }

    fn view(&self) -> MessageView<'_> {
        MessageView {
            id: self.id.as_str().into(),
            text: self.text.as_str().into(),
            context_json: self.context.as_str().into(),
        }
    }
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Calls a provider's `get` and checks its JSON.
fn fetch(
    core: &Registry,
    plugin: &LivePlugin,
    index: u32,
    view: &MessageView<'_>,
) -> Result<Arc<str>, String> {
    let control = CallControl::default();
    let json = plugin
        .instance
        .provide(index, view, &control)
        .map_err(|error| {
            core.record_error(plugin, &error);
            error.to_string()
        })?;
    if is_json(&json) {
        Ok(json.into())
    } else {
        let name = &plugin.instance.manifest.providers[index as usize].name;
        Err(format!(
            "plugin '{}': provider '{name}' get returned invalid JSON",
            plugin.name()
        ))
    }
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
        let _admitted = core_bg.admission.enter();
        match fetch(&core_bg, &plugin_bg, index, &view) {
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
fn compose_state(
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
    let mut state = String::with_capacity(64 * plan.providers.len() + 2);
    state.push('{');
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
        let value = match served {
            Some((json, stale)) => {
                if stale {
                    reusable = false;
                    if slot.start_refresh() {
                        refresh_in_background(core, plugin, index, message, &bare_context);
                    }
                }
                Ok(json)
            }
            None => {
                reusable = false;
                let fetched = fetch(core, plugin, index, &view);
                if spec.cache.is_some() {
                    slot.misses.inc();
                    if let Ok(json) = &fetched {
                        slot.store(Arc::clone(json));
                    }
                }
                fetched
            }
        };
        match value {
            Ok(json) => {
                if state.len() > 1 {
                    state.push(',');
                }
                state.push_str(&slot.state_key);
                state.push_str(&json);
            }
            Err(error) => {
                reusable = false;
                errors.push(error);
            }
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

/// The highest-priority action whose `validate` accepts the message.
fn choose_action<'p>(
    core: &Registry,
    plugins: &'p [Arc<LivePlugin>],
    view: &MessageView<'_>,
    errors: &mut Vec<String>,
) -> Option<(&'p Arc<LivePlugin>, u32)> {
    let mut chosen: Option<(i32, &Arc<LivePlugin>, u32)> = None;
    for plugin in plugins {
        for (index, spec) in plugin.instance.manifest.actions.iter().enumerate() {
            match plugin.instance.validate(index as u32, view) {
                Ok(true) => {
                    if chosen
                        .as_ref()
                        .is_none_or(|(priority, _, _)| spec.priority > *priority)
                    {
                        chosen = Some((spec.priority, plugin, index as u32));
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    core.record_error(plugin, &error);
                    errors.push(error.to_string());
                }
            }
        }
    }
    chosen.map(|(_, plugin, index)| (plugin, index))
}

/// What running the handler came to.
enum Outcome {
    Completed(ActionResult),
    Failed(String),
    TimedOut(Duration),
}

/// Runs a handler on the blocking pool and waits at most `timeout`. On
/// timeout the call's control is cancelled (the plugin sees it) and the
/// host moves on; the call itself finishes, or not, on its own thread.
fn run_handler(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
    timeout: Duration,
) -> Outcome {
    let control = Arc::new(CallControl::with_deadline(unix_ms_after(timeout)));
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let (plugin_bg, control_bg) = (Arc::clone(plugin), Arc::clone(&control));
    let owned = OwnedMessage::of(message, context);
    core.runtime().spawn_blocking(move || {
        let view = owned.view();
        let _ = sender.send(plugin_bg.instance.handle(index, &view, &control_bg));
    });
    match wait_briefly_then_block(&receiver, timeout) {
        Ok(Ok(json)) => match serde_json::from_str::<ActionResult>(&json) {
            Ok(result) => Outcome::Completed(result),
            Err(e) => Outcome::Failed(format!(
                "plugin '{}': action '{}' handler returned invalid JSON: {e}",
                plugin.name(),
                plugin.instance.manifest.actions[index as usize].name
            )),
        },
        // The plugin saw its deadline pass and stopped: that is the timeout.
        Ok(Err(error)) if error.kind == agent_host_plugin_sdk::ErrorKind::Cancelled => {
            Outcome::TimedOut(timeout)
        }
        Ok(Err(error)) => {
            core.record_error(plugin, &error);
            Outcome::Failed(error.to_string())
        }
        Err(_) => {
            control.cancel();
            Outcome::TimedOut(timeout)
        }
    }
}

/// Waits for a handler's result: first spinning for a few microseconds (most
/// handlers answer in less than the cost of putting this thread to sleep
/// and waking it again), then blocking until the timeout.
fn wait_briefly_then_block<T>(
    receiver: &std::sync::mpsc::Receiver<T>,
    timeout: Duration,
) -> Result<T, std::sync::mpsc::RecvTimeoutError> {
    const SPIN: Duration = Duration::from_micros(50);
    let started = Instant::now();
    loop {
        match receiver.try_recv() {
            Ok(value) => return Ok(value),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        let waited = started.elapsed();
        if waited >= SPIN.min(timeout) {
            return receiver.recv_timeout(timeout.saturating_sub(waited));
        }
        std::hint::spin_loop();
    }
}

/// Checks permissions and the rate limit, then runs the action and fills the reply.
fn run_action(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
    reply: &mut Reply,
) {
    let spec = &plugin.instance.manifest.actions[index as usize];
    let counters = &plugin.action_metrics[index as usize];
    let (plugin_name, action) = (plugin.name(), spec.name.as_str());
    reply.action = Some(ActionRef {
        plugin: plugin_name.to_string(),
        action: action.to_string(),
    });
    let missing: Vec<&String> = spec
        .permissions
        .iter()
        .filter(|p| !message.permissions.contains(p))
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", ");
        reply.text = format!("You lack the permission {list} needed for {action}.");
        reply.errors.push(format!(
            "sender '{}' lacks {list} for action '{action}' of plugin '{plugin_name}'",
            message.sender
        ));
        counters.denied.inc();
        return;
    }
    if let Some(limit) = spec.rate_limit {
        if let Err(wait) = core
            .rate_limiter
            .try_acquire(plugin_name, action, limit, Instant::now())
        {
            reply.text = format!(
                "{action} is busy; try again in {:.1} s.",
                wait.as_secs_f64()
            );
            reply.errors.push(format!(
                "plugin '{plugin_name}': action '{action}' rate limit reached ({} per {} ms)",
                limit.max_requests, limit.window_ms
            ));
            counters.rate_limited.inc();
            return;
        }
    }

    let span = tracing::info_span!("action", plugin = plugin_name, action);
    let _entered = span.enter();
    let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(core.settings.action_timeout_ms));
    let started = Instant::now();
    core.emit_lazy(
        "host",
        "action:started",
        || json!({"plugin": plugin_name, "action": action, "message_id": message.id}),
    );
    let outcome = run_handler(core, plugin, index, message, context, timeout);
    let duration = started.elapsed();
    let duration_ms = duration.as_secs_f64() * 1000.0;
    let failure = match outcome {
        Outcome::Completed(result) => {
            reply.text = result.text;
            reply.data = result.data;
            reply.metadata = result.metadata;
            reply.ok = true;
            counters.completed.inc();
            counters.seconds.observe(duration.as_secs_f64());
            tracing::debug!(duration_ms, "action completed");
            core.emit_lazy("host", "action:completed", || {
                json!({"plugin": plugin_name, "action": action, "message_id": message.id, "duration_ms": duration_ms})
            });
            return;
        }
        Outcome::Failed(error) => {
            reply.text = format!("Sorry, {action} failed.");
            counters.failed.inc();
            counters.seconds.observe(duration.as_secs_f64());
            error
        }
        Outcome::TimedOut(timeout) => {
            reply.text = format!("Sorry, {action} took too long.");
            counters.timed_out.inc();
            counters.seconds.observe(duration.as_secs_f64());
            format!(
                "plugin '{plugin_name}': action '{action}' handler: timed out after {} ms (the call was cancelled)",
                timeout.as_millis()
            )
        }
    };
    tracing::warn!(duration_ms, "{failure}");
    core.emit_lazy("host", "action:failed", || {
        json!({"plugin": plugin_name, "action": action, "message_id": message.id, "duration_ms": duration_ms, "error": failure})
    });
    reply.errors.push(failure);
}

/// Steps 1 to 6: everything but the evaluators. Returns the reply so far
/// and the context JSON the evaluators will see.
fn answer(core: &Arc<Registry>, plan: &ServingPlan, message: &InboundMessage) -> (Reply, String) {
    let started = Instant::now();
    let mut reply = Reply {
        id: message.id.clone(),
        ..Reply::default()
    };
    let step = Instant::now();
    let state = compose_state(core, plan, message, &mut reply.errors);
    reply.timings.providers_us = micros(step);
    let context = context_json(message, Some(&state));
    let view = view_of(message, &context);

    let step = Instant::now();
    let chosen = choose_action(core, &plan.plugins, &view, &mut reply.errors);
    reply.timings.validate_us = micros(step);

    let step = Instant::now();
    match chosen {
        None => reply.text = NO_ACTION_TEXT.to_string(),
        Some((plugin, index)) => run_action(core, plugin, index, message, &context, &mut reply),
    }
    reply.timings.handler_us = micros(step);
    reply.timings.total_us = micros(started);
    (reply, context)
}

fn finish(core: &Registry, reply: &mut Reply, started: Instant) {
    reply.timings.total_us = micros(started);
    core.metrics.messages.inc();
    core.metrics
        .message_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Runs one message through the pipeline. Never fails: every problem is in
/// the reply's `errors`. Blocks while plugin code runs; call it from a
/// thread that may block.
pub fn handle_message(core: &Arc<Registry>, message: &InboundMessage) -> Reply {
    let span = tracing::info_span!("message", id = %message.id, sender = %message.sender);
    let _entered = span.enter();
    let _admitted = core.admission.enter();
    let started = Instant::now();
    let plan = core.serving_plan();
    let (mut reply, context) = answer(core, &plan, message);
    let view = view_of(message, &context);
    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plan.plugins {
        for (index, name) in plugin.evaluator_names.iter().enumerate() {
            match plugin.instance.evaluate(index as u32, &view, &control) {
                Ok(evaluation) => reply.evaluations.push(EvaluationRecord {
                    plugin: Arc::clone(&plugin.shared_name),
                    evaluator: Arc::clone(name),
                    evaluation,
                }),
                Err(error) => {
                    core.record_error(plugin, &error);
                    reply.errors.push(error.to_string());
                }
            }
        }
    }
    reply.timings.evaluators_us = micros(step);
    finish(core, &mut reply, started);
    reply
}

/// Runs several messages: each is answered in turn, then every evaluator
/// scores all of them at once through its batch form.
pub fn handle_batch(core: &Arc<Registry>, messages: &[InboundMessage]) -> Vec<Reply> {
    let _admitted = core.admission.enter();
    let started = Instant::now();
    let plan = core.serving_plan();
    let (mut replies, contexts): (Vec<Reply>, Vec<String>) =
        messages.iter().map(|m| answer(core, &plan, m)).unzip();
    let views: Vec<MessageView<'_>> = messages
        .iter()
        .zip(&contexts)
        .map(|(m, c)| view_of(m, c))
        .collect();
    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plan.plugins {
        for (index, name) in plugin.evaluator_names.iter().enumerate() {
            match plugin
                .instance
                .evaluate_batch(index as u32, &views, &control)
            {
                Ok(evaluations) => {
                    for (reply, evaluation) in replies.iter_mut().zip(evaluations) {
                        reply.evaluations.push(EvaluationRecord {
                            plugin: Arc::clone(&plugin.shared_name),
                            evaluator: Arc::clone(name),
                            evaluation,
                        });
                    }
                }
                Err(error) => {
                    core.record_error(plugin, &error);
                    for reply in &mut replies {
                        reply.errors.push(error.to_string());
                    }
                }
            }
        }
    }
    let evaluators_us = micros(step);
    for reply in &mut replies {
        reply.timings.evaluators_us = evaluators_us;
        finish(core, reply, started);
    }
    replies
}
