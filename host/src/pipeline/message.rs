//! A message as it comes in, and the reply that goes back.

use agent_host_plugin_sdk::Evaluation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

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

/// What a host that is shutting down answers instead of running a message.
pub const SHUTTING_DOWN: &str = "the agent is shutting down";
