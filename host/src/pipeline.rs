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

use crate::core::{Core, LivePlugin};
use plugin_abi::{CallControl, MessageView};
use plugin_api::{ActionResult, Evaluation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::sync::Arc;
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
    pub plugin: String,
    /// The evaluator.
    pub evaluator: String,
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
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Calls a provider's `get` and checks its JSON.
fn fetch(
    core: &Core,
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
    core: &Arc<Core>,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
) {
    let (core_bg, plugin_bg) = (Arc::clone(core), Arc::clone(plugin));
    let (id, text, context) = (
        message.id.clone(),
        message.text.clone(),
        context.to_string(),
    );
    core.runtime().spawn_blocking(move || {
        let view = MessageView {
            id: id.as_str().into(),
            text: text.as_str().into(),
            context_json: context.as_str().into(),
        };
        match fetch(&core_bg, &plugin_bg, index, &view) {
            Ok(json) => core_bg.store_provider_value(plugin_bg.name(), index, json),
            Err(error) => {
                tracing::warn!("background refresh failed: {error}");
                // Let the next message try again.
                if let Some(cached) = core_bg.cached_provider_value(plugin_bg.name(), index) {
                    core_bg.store_provider_value(plugin_bg.name(), index, cached.json);
                }
            }
        }
    });
}

/// The state composed from providers, as a JSON object text keyed by
/// provider name. Each provider is isolated: a failure is reported and the
/// provider left out.
fn compose_state(
    core: &Arc<Core>,
    plugins: &[Arc<LivePlugin>],
    message: &InboundMessage,
    errors: &mut Vec<String>,
) -> String {
    let bare_context = context_json(message, None);
    let view = view_of(message, &bare_context);
    let mut state = String::from("{");
    let mut names: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for plugin in plugins {
        for (index, spec) in plugin.instance.manifest.providers.iter().enumerate() {
            let index = index as u32;
            if !names.insert(spec.name.as_str()) {
                errors.push(format!(
                    "plugin '{}': provider '{}' left out: another plugin's provider has that name",
                    plugin.name(),
                    spec.name
                ));
                continue;
            }
            let cached = core.cached_provider_value(plugin.name(), index);
            let value = match (spec.cache, cached) {
                (Some(cache), Some(cached))
                    if cached.at.elapsed() < Duration::from_millis(cache.ttl_ms) =>
                {
                    core.metrics.cache(plugin.name(), &spec.name, "hit");
                    Ok(cached.json)
                }
                (Some(cache), Some(cached)) if cache.stale_while_revalidate => {
                    core.metrics.cache(plugin.name(), &spec.name, "stale");
                    if core.start_refresh(plugin.name(), index) {
                        refresh_in_background(core, plugin, index, message, &bare_context);
                    }
                    Ok(cached.json)
                }
                (None, Some(pushed)) if spec.subscribable => Ok(pushed.json),
                (cache, _) => {
                    if cache.is_some() {
                        core.metrics.cache(plugin.name(), &spec.name, "miss");
                    }
                    let fetched = fetch(core, plugin, index, &view);
                    if let (Some(_), Ok(json)) = (cache, &fetched) {
                        core.store_provider_value(plugin.name(), index, Arc::clone(json));
                    }
                    fetched
                }
            };
            match value {
                Ok(json) => {
                    if state.len() > 1 {
                        state.push(',');
                    }
                    // Writing into a String cannot fail.
                    let _ = write!(state, "{}:{json}", Value::from(spec.name.as_str()));
                }
                Err(error) => errors.push(error),
            }
        }
    }
    state.push('}');
    state
}

/// The highest-priority action whose `validate` accepts the message.
fn choose_action<'p>(
    core: &Core,
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
    core: &Core,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
    timeout: Duration,
) -> Outcome {
    let control = Arc::new(CallControl::with_deadline(unix_ms_after(timeout)));
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let (plugin_bg, control_bg) = (Arc::clone(plugin), Arc::clone(&control));
    let (id, text, context) = (
        message.id.clone(),
        message.text.clone(),
        context.to_string(),
    );
    core.runtime().spawn_blocking(move || {
        let view = MessageView {
            id: id.as_str().into(),
            text: text.as_str().into(),
            context_json: context.as_str().into(),
        };
        let _ = sender.send(plugin_bg.instance.handle(index, &view, &control_bg));
    });
    match receiver.recv_timeout(timeout) {
        Ok(Ok(json)) => match serde_json::from_str::<ActionResult>(&json) {
            Ok(result) => Outcome::Completed(result),
            Err(e) => Outcome::Failed(format!(
                "plugin '{}': action '{}' handler returned invalid JSON: {e}",
                plugin.name(),
                plugin.instance.manifest.actions[index as usize].name
            )),
        },
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

/// Checks permissions and the rate limit, then runs the action and fills the reply.
fn run_action(
    core: &Core,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
    reply: &mut Reply,
) {
    let spec = &plugin.instance.manifest.actions[index as usize];
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
        core.metrics.action(plugin_name, action, "denied", None);
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
            core.metrics
                .action(plugin_name, action, "rate_limited", None);
            return;
        }
    }

    let span = tracing::info_span!("action", plugin = plugin_name, action);
    let _entered = span.enter();
    let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(core.settings.action_timeout_ms));
    let started = Instant::now();
    core.emit(
        "host",
        "action:started",
        json!({"plugin": plugin_name, "action": action, "message_id": message.id}),
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
            core.metrics
                .action(plugin_name, action, "completed", Some(duration));
            tracing::debug!(duration_ms, "action completed");
            core.emit(
                "host",
                "action:completed",
                json!({"plugin": plugin_name, "action": action, "message_id": message.id, "duration_ms": duration_ms}),
            );
            return;
        }
        Outcome::Failed(error) => {
            reply.text = format!("Sorry, {action} failed.");
            core.metrics
                .action(plugin_name, action, "failed", Some(duration));
            error
        }
        Outcome::TimedOut(timeout) => {
            reply.text = format!("Sorry, {action} took too long.");
            core.metrics
                .action(plugin_name, action, "timed_out", Some(duration));
            format!(
                "plugin '{plugin_name}': action '{action}' handler: timed out after {} ms (the call was cancelled)",
                timeout.as_millis()
            )
        }
    };
    tracing::warn!(duration_ms, "{failure}");
    core.emit(
        "host",
        "action:failed",
        json!({"plugin": plugin_name, "action": action, "message_id": message.id, "duration_ms": duration_ms, "error": failure}),
    );
    reply.errors.push(failure);
}

/// The plugins taking part: loaded and not quarantined.
fn serving(core: &Core) -> Vec<Arc<LivePlugin>> {
    let mut plugins = core.plugins();
    plugins.retain(|p| !p.is_quarantined());
    plugins
}

/// Steps 1 to 6: everything but the evaluators. Returns the reply so far
/// and the context JSON the evaluators will see.
fn answer(
    core: &Arc<Core>,
    plugins: &[Arc<LivePlugin>],
    message: &InboundMessage,
) -> (Reply, String) {
    let started = Instant::now();
    let mut reply = Reply {
        id: message.id.clone(),
        ..Reply::default()
    };
    let step = Instant::now();
    let state = compose_state(core, plugins, message, &mut reply.errors);
    reply.timings.providers_us = micros(step);
    let context = context_json(message, Some(&state));
    let view = view_of(message, &context);

    let step = Instant::now();
    let chosen = choose_action(core, plugins, &view, &mut reply.errors);
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

fn finish(core: &Core, reply: &mut Reply, started: Instant) {
    reply.timings.total_us = micros(started);
    core.metrics.messages.inc();
    core.metrics
        .message_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Runs one message through the pipeline. Never fails: every problem is in
/// the reply's `errors`. Blocks while plugin code runs; call it from a
/// thread that may block.
pub fn handle_message(core: &Arc<Core>, message: &InboundMessage) -> Reply {
    let span = tracing::info_span!("message", id = %message.id, sender = %message.sender);
    let _entered = span.enter();
    let started = Instant::now();
    let plugins = serving(core);
    let (mut reply, context) = answer(core, &plugins, message);
    let view = view_of(message, &context);
    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plugins {
        for (index, spec) in plugin.instance.manifest.evaluators.iter().enumerate() {
            match plugin.instance.evaluate(index as u32, &view, &control) {
                Ok(evaluation) => reply.evaluations.push(EvaluationRecord {
                    plugin: plugin.name().to_string(),
                    evaluator: spec.name.clone(),
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
pub fn handle_batch(core: &Arc<Core>, messages: &[InboundMessage]) -> Vec<Reply> {
    let started = Instant::now();
    let plugins = serving(core);
    let (mut replies, contexts): (Vec<Reply>, Vec<String>) =
        messages.iter().map(|m| answer(core, &plugins, m)).unzip();
    let views: Vec<MessageView<'_>> = messages
        .iter()
        .zip(&contexts)
        .map(|(m, c)| view_of(m, c))
        .collect();
    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plugins {
        for (index, spec) in plugin.instance.manifest.evaluators.iter().enumerate() {
            match plugin
                .instance
                .evaluate_batch(index as u32, &views, &control)
            {
                Ok(evaluations) => {
                    for (reply, evaluation) in replies.iter_mut().zip(evaluations) {
                        reply.evaluations.push(EvaluationRecord {
                            plugin: plugin.name().to_string(),
                            evaluator: spec.name.clone(),
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
