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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRef {
    /// The plugin.
    pub plugin: String,
    /// The action.
    pub action: String,
}

/// The names a reply's verdicts refer to by position: (plugin, evaluator).
/// One table per serving plan, shared by every reply it serves.
pub type EvaluatorNames = Arc<[(Arc<str>, Arc<str>)]>;

/// One evaluator's verdict on the message, as [`Evaluations`] lends it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvaluationRecord<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// The evaluator.
    pub evaluator: &'a str,
    /// Its result.
    #[serde(flatten)]
    pub evaluation: &'a Evaluation,
}

/// The evaluators' verdicts on one message, in the order the evaluators
/// ran. Each verdict names its plugin and evaluator by position in a table
/// shared by every reply of one serving plan, so that recording a verdict
/// copies no name and counts no reference. Serialized as a list of
/// `{plugin, evaluator, score, passed, metadata}` objects.
#[derive(Clone, Default)]
pub struct Evaluations {
    names: Option<EvaluatorNames>,
    verdicts: Vec<(u32, Evaluation)>,
}

impl Evaluations {
    /// Verdicts whose names come from `names`, with room for `capacity`.
    pub(crate) fn with_names(names: &EvaluatorNames, capacity: usize) -> Self {
        Self {
            names: Some(Arc::clone(names)),
            verdicts: Vec::with_capacity(capacity),
        }
    }

    /// Adds the verdict of the evaluator at `position` of the names table.
    pub(crate) fn push_at(&mut self, position: u32, evaluation: Evaluation) {
        debug_assert!(self
            .names
            .as_ref()
            .is_some_and(|names| (position as usize) < names.len()));
        self.verdicts.push((position, evaluation));
    }

    /// Adds a verdict under the names given (they join this reply's table).
    pub fn push(&mut self, plugin: &str, evaluator: &str, evaluation: Evaluation) {
        let mut names: Vec<(Arc<str>, Arc<str>)> =
            self.names.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        names.push((Arc::from(plugin), Arc::from(evaluator)));
        let position = (names.len() - 1) as u32;
        self.names = Some(names.into());
        self.verdicts.push((position, evaluation));
    }

    /// How many verdicts there are.
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    /// Whether there is no verdict.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    /// The verdict at `index`, in the order the evaluators ran.
    pub fn get(&self, index: usize) -> Option<EvaluationRecord<'_>> {
        self.verdicts
            .get(index)
            .map(|(position, evaluation)| self.record(*position, evaluation))
    }

    /// Every verdict, in the order the evaluators ran.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EvaluationRecord<'_>> + '_ {
        self.verdicts
            .iter()
            .map(|(position, evaluation)| self.record(*position, evaluation))
    }

    fn record<'a>(&'a self, position: u32, evaluation: &'a Evaluation) -> EvaluationRecord<'a> {
        let (plugin, evaluator) = self
            .names
            .as_deref()
            .and_then(|names| names.get(position as usize))
            .map_or(("?", "?"), |(plugin, evaluator)| (&**plugin, &**evaluator));
        EvaluationRecord {
            plugin,
            evaluator,
            evaluation,
        }
    }
}

impl PartialEq for Evaluations {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Evaluations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Evaluations {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// One verdict as it is serialized, owned: what [`Evaluations`] reads back.
#[derive(Deserialize)]
struct OwnedRecord {
    plugin: String,
    evaluator: String,
    #[serde(flatten)]
    evaluation: Evaluation,
}

/// Reads the list [`Evaluations`] serializes to (a reply that crossed the
/// wire from another host): each verdict's names join the reply's table.
impl<'de> Deserialize<'de> for Evaluations {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let records = Vec::<OwnedRecord>::deserialize(deserializer)?;
        let names: EvaluatorNames = records
            .iter()
            .map(|r| {
                (
                    Arc::from(r.plugin.as_str()),
                    Arc::from(r.evaluator.as_str()),
                )
            })
            .collect();
        let verdicts = records
            .into_iter()
            .enumerate()
            .map(|(position, record)| (position as u32, record.evaluation))
            .collect();
        Ok(Self {
            names: Some(names),
            verdicts,
        })
    }
}

/// How long each step took, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// The answer to one message. It reads back from the JSON it writes, so
/// that a reply crosses from the host that ran the message to the one
/// whose client waits (cluster mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub evaluations: Evaluations,
    /// Errors from providers, validators, the handler or evaluators: each names
    /// the plugin and the entry point.
    pub errors: Vec<String>,
    /// Step timings.
    pub timings: Timings,
    /// The host of the cluster that ran the message (cluster mode only;
    /// left out of the JSON when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The reply text when no action accepts a message.
pub const NO_ACTION_TEXT: &str = "Sorry, I don't know how to help with that.";

/// What a host that is shutting down answers instead of running a message.
pub const SHUTTING_DOWN: &str = "the agent is shutting down";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reply_reads_back_from_its_json() {
        let mut reply = Reply {
            id: "m7".into(),
            text: "It is mild.".into(),
            data: json!({"celsius": 18}),
            action: Some(ActionRef {
                plugin: "weather".into(),
                action: "NOW".into(),
            }),
            ok: true,
            errors: vec!["plugin 'geo': provider 'here' timed out".into()],
            timings: Timings {
                providers_us: 1,
                validate_us: 2,
                handler_us: 3,
                evaluators_us: 4,
                total_us: 10,
            },
            host: Some("web-1".into()),
            ..Reply::default()
        };
        reply.metadata.insert("source".into(), json!("cache"));
        reply
            .evaluations
            .push("sentiment", "tone", Evaluation::new(0.25, false));
        reply.evaluations.push(
            "sentiment",
            "length",
            Evaluation {
                score: 1.0,
                passed: true,
                metadata: json!({"words": 3}),
            },
        );
        let text = serde_json::to_string(&reply).expect("serialize");
        let back: Reply = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, reply);
        assert_eq!(back.evaluations.get(1).map(|r| r.evaluator), Some("length"));
    }

    #[test]
    fn a_reply_without_a_host_leaves_it_out() {
        let reply = Reply {
            id: "m1".into(),
            ..Reply::default()
        };
        let value = serde_json::to_value(&reply).expect("serialize");
        assert!(value.get("host").is_none(), "{value}");
        let back: Reply = serde_json::from_value(value).expect("deserialize");
        assert_eq!(back, reply);
    }
}
