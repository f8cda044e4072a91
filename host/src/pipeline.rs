//! The message pipeline: from one inbound message to one reply.
//!
//! 1. compose the state from every provider (each isolated: a failure is
//!    reported and left out);
//! 2. ask every action's `validate`;
//! 3. pick the highest priority valid action (ties: earlier in load order,
//!    then earlier in its plugin);
//! 4. check the sender holds the action's permissions;
//! 5. run its handler, with `action:started` / `action:completed` /
//!    `action:failed` events around it;
//! 6. run every evaluator on the message;
//! 7. answer with the handler's result, the evaluations and the timings.

use crate::core::{Core, LivePlugin};
use plugin_abi::{CallControl, MessageView};
use plugin_api::{ActionResult, Evaluation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

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

/// The state composed from providers, keyed by provider name.
fn compose_state(
    plugins: &[Arc<LivePlugin>],
    view: MessageView<'_>,
    core: &Core,
    errors: &mut Vec<String>,
) -> Map<String, Value> {
    let mut state = Map::new();
    let control = CallControl::default();
    for plugin in plugins {
        for (index, spec) in plugin.instance.manifest.providers.iter().enumerate() {
            let index = index as u32;
            if state.contains_key(&spec.name) {
                errors.push(format!(
                    "plugin '{}': provider '{}' left out: another plugin's provider has that name",
                    plugin.name(),
                    spec.name
                ));
                continue;
            }
            let value = match core.pushed_value(plugin.name(), index) {
                Some(value) => Ok(value),
                None => plugin
                    .instance
                    .provide(index, view, &control)
                    .map_err(|e| e.to_string())
                    .and_then(|json| {
                        serde_json::from_str::<Value>(&json).map_err(|e| {
                            format!(
                                "plugin '{}': provider '{}' returned invalid JSON: {e}",
                                plugin.name(),
                                spec.name
                            )
                        })
                    }),
            };
            match value {
                Ok(value) => {
                    state.insert(spec.name.clone(), value);
                }
                Err(error) => errors.push(error),
            }
        }
    }
    state
}

/// The JSON context plugins see with a message: sender, permissions,
/// metadata and, once providers have run, the composed state.
fn context_json(message: &InboundMessage, state: Option<&Map<String, Value>>) -> String {
    let mut context = json!({
        "sender": message.sender,
        "permissions": message.permissions,
        "metadata": message.metadata,
    });
    if let Some(state) = state {
        context["state"] = Value::Object(state.clone());
    }
    context.to_string()
}

fn view_of<'a>(message: &'a InboundMessage, context_json: &'a str) -> MessageView<'a> {
    MessageView {
        id: message.id.as_str().into(),
        text: message.text.as_str().into(),
        context_json: context_json.into(),
    }
}

/// Runs one message through the pipeline. Never fails: every problem is in
/// the reply's `errors`.
pub fn handle_message(core: &Core, message: &InboundMessage) -> Reply {
    let started = Instant::now();
    let plugins = core.plugins();
    let mut reply = Reply {
        id: message.id.clone(),
        ..Reply::default()
    };
    let bare_context = context_json(message, None);
    let step = Instant::now();
    let state = compose_state(
        &plugins,
        view_of(message, &bare_context),
        core,
        &mut reply.errors,
    );
    reply.timings.providers_us = micros(step);

    let context = context_json(message, Some(&state));
    let view = view_of(message, &context);

    let step = Instant::now();
    let mut chosen: Option<(i32, &Arc<LivePlugin>, u32)> = None;
    for plugin in &plugins {
        for (index, spec) in plugin.instance.manifest.actions.iter().enumerate() {
            match plugin.instance.validate(index as u32, &view) {
                Ok(true) => {
                    if chosen
                        .as_ref()
                        .is_none_or(|(priority, _, _)| spec.priority > *priority)
                    {
                        chosen = Some((spec.priority, plugin, index as u32));
                    }
                }
                Ok(false) => {}
                Err(error) => reply.errors.push(error.to_string()),
            }
        }
    }
    reply.timings.validate_us = micros(step);

    let step = Instant::now();
    match chosen {
        None => {
            reply.text = NO_ACTION_TEXT.to_string();
        }
        Some((_, plugin, index)) => {
            let spec = &plugin.instance.manifest.actions[index as usize];
            reply.action = Some(ActionRef {
                plugin: plugin.name().to_string(),
                action: spec.name.clone(),
            });
            let missing: Vec<&String> = spec
                .permissions
                .iter()
                .filter(|p| !message.permissions.contains(p))
                .collect();
            if !missing.is_empty() {
                reply.text = format!(
                    "You lack the permission {} needed for {}.",
                    missing
                        .iter()
                        .map(|p| format!("'{p}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    spec.name
                );
                reply.errors.push(format!(
                    "sender '{}' lacks permission for action '{}' of plugin '{}'",
                    message.sender,
                    spec.name,
                    plugin.name()
                ));
            } else {
                run_action(core, plugin, index, view, message, &mut reply);
            }
        }
    }
    reply.timings.handler_us = micros(step);

    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plugins {
        for (index, spec) in plugin.instance.manifest.evaluators.iter().enumerate() {
            let outcome = plugin
                .instance
                .evaluate(index as u32, view, &control)
                .map_err(|e| e.to_string())
                .and_then(|json| parse_evaluation(&json, plugin.name(), &spec.name));
            match outcome {
                Ok(evaluation) => reply.evaluations.push(EvaluationRecord {
                    plugin: plugin.name().to_string(),
                    evaluator: spec.name.clone(),
                    evaluation,
                }),
                Err(error) => reply.errors.push(error),
            }
        }
    }
    reply.timings.evaluators_us = micros(step);
    reply.timings.total_us = micros(started);
    reply
}

/// Parses an evaluator's JSON and rejects scores outside 0..=1.
pub fn parse_evaluation(json: &str, plugin: &str, evaluator: &str) -> Result<Evaluation, String> {
    let evaluation: Evaluation = serde_json::from_str(json).map_err(|e| {
        format!("plugin '{plugin}': evaluator '{evaluator}' returned invalid JSON: {e}")
    })?;
    if !(0.0..=1.0).contains(&evaluation.score) {
        return Err(format!(
            "plugin '{plugin}': evaluator '{evaluator}' returned score {} outside 0..1",
            evaluation.score
        ));
    }
    Ok(evaluation)
}

fn run_action(
    core: &Core,
    plugin: &LivePlugin,
    index: u32,
    view: MessageView<'_>,
    message: &InboundMessage,
    reply: &mut Reply,
) {
    let action = plugin.instance.manifest.actions[index as usize]
        .name
        .clone();
    let started = Instant::now();
    core.emit(
        "host",
        "action:started",
        json!({"plugin": plugin.name(), "action": action, "message_id": message.id}),
    );
    let control = CallControl::default();
    let outcome = plugin
        .instance
        .handle(index, view, &control)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            serde_json::from_str::<ActionResult>(&json).map_err(|e| {
                format!(
                    "plugin '{}': action '{action}' returned invalid JSON: {e}",
                    plugin.name()
                )
            })
        });
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(result) => {
            reply.text = result.text;
            reply.data = result.data;
            reply.metadata = result.metadata;
            reply.ok = true;
            core.emit(
                "host",
                "action:completed",
                json!({"plugin": plugin.name(), "action": action, "message_id": message.id, "duration_ms": duration_ms}),
            );
        }
        Err(error) => {
            reply.text = format!("Sorry, {action} failed.");
            core.emit(
                "host",
                "action:failed",
                json!({"plugin": plugin.name(), "action": action, "message_id": message.id, "duration_ms": duration_ms, "error": error}),
            );
            reply.errors.push(error);
        }
    }
}
