//! Evaluators: score messages after the agent answered them.

use crate::error::{Error, Result};
use crate::manifest::EvaluatorSpec;
use crate::message::Message;
use crate::middleware::{Call, Component, Layers};
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

type Evaluate = Box<dyn Fn(&Message<'_>, &Runtime<'_>) -> Result<Evaluation> + Send + Sync>;
type EvaluateBatch =
    Box<dyn Fn(&[Message<'_>], &Runtime<'_>) -> Result<Vec<Evaluation>> + Send + Sync>;

/// What an evaluator concludes about a message: a score from 0 to 1, a
/// verdict, and optional metadata. The host rejects a score outside 0..=1
/// (or NaN) as an error naming the plugin and the evaluator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Confidence from 0 to 1; the host rejects anything outside.
    pub score: f64,
    /// Whether the message passed.
    pub passed: bool,
    /// Extra facts (`Value::Null` for none).
    #[serde(default)]
    pub metadata: Value,
}

impl Evaluation {
    /// An evaluation without metadata.
    pub fn new(score: f64, passed: bool) -> Self {
        Self {
            score,
            passed,
            metadata: Value::Null,
        }
    }

    /// Attaches metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An evaluator, with an optional batch form for many messages at once.
///
/// The host runs every evaluator on every message after the action answered
/// (whether or not one did); a batch request (`{"messages": [...]}`) calls the
/// batch form once with all the messages. The batch form must return exactly
/// one evaluation per message, in order.
///
/// ```
/// use agent_host_plugin_sdk::{json, testing::TestHost, Evaluation, Evaluator, Plugin};
///
/// fn score(text: &str) -> Evaluation {
///     let score = (text.len() as f64 / 40.0).min(1.0);
///     Evaluation::new(score, score >= 0.25).with_metadata(json!({"chars": text.len()}))
/// }
///
/// let plugin = Plugin::new("length", "1.0.0").evaluator(
///     Evaluator::new("length")
///         .description("Longer messages score higher")
///         .evaluate(|msg, _rt| Ok(score(msg.text())))
///         .evaluate_batch(|msgs, _rt| Ok(msgs.iter().map(|m| score(m.text())).collect())),
/// );
/// let host = TestHost::new("length");
/// let loaded = host.load(plugin).unwrap();
///
/// let one = loaded.evaluate("length", "hi").unwrap();
/// assert_eq!(one.score, 0.05);
/// assert!(!one.passed);
/// assert_eq!(one.metadata["chars"], 2);
///
/// let many = loaded
///     .evaluate_batch("length", &["hi", "a message long enough to pass"])
///     .unwrap();
/// assert_eq!(many.len(), 2);
/// assert!(many[1].passed);
/// ```
pub struct Evaluator {
    pub(crate) spec: EvaluatorSpec,
    evaluate: Option<Evaluate>,
    batch: Option<EvaluateBatch>,
    /// The plugin's middleware around one evaluation.
    pub(crate) layers: Layers<Evaluation>,
    /// The plugin's middleware around a call of the batch form.
    pub(crate) batch_layers: Layers<Vec<Evaluation>>,
}

impl Evaluator {
    /// A new evaluator with a name unique within the plugin.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: EvaluatorSpec {
                name: name.into(),
                description: String::new(),
                batch: false,
            },
            evaluate: None,
            batch: None,
            layers: Layers::default(),
            batch_layers: Layers::default(),
        }
    }

    /// Says what the evaluator scores.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Scores one message. Required.
    pub fn evaluate(
        mut self,
        evaluate: impl Fn(&Message<'_>, &Runtime<'_>) -> Result<Evaluation> + Send + Sync + 'static,
    ) -> Self {
        self.evaluate = Some(Box::new(evaluate));
        self
    }

    /// Scores many messages at once; without it, batches call `evaluate` per
    /// message. Must return one evaluation per message, in order.
    pub fn evaluate_batch(
        mut self,
        batch: impl Fn(&[Message<'_>], &Runtime<'_>) -> Result<Vec<Evaluation>> + Send + Sync + 'static,
    ) -> Self {
        self.spec.batch = true;
        self.batch = Some(Box::new(batch));
        self
    }

    /// The evaluator's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Runs `evaluate` through the plugin's middleware.
    pub fn run(&self, message: &Message<'_>, rt: &Runtime<'_>) -> Result<Evaluation> {
        let Some(evaluate) = &self.evaluate else {
            return Err(Error::msg(format!(
                "evaluator '{}' has no evaluate",
                self.spec.name
            )));
        };
        let call = Call::one(Component::Evaluator, &self.spec.name, message, *rt);
        self.layers.run(&call, &|| evaluate(message, rt))
    }

    /// Runs the batch form (through the plugin's middleware, once for the
    /// batch), or `evaluate` per message when there is none (through the
    /// middleware once per message); an error when the number of results
    /// differs from the number of messages.
    pub fn run_batch(&self, messages: &[Message<'_>], rt: &Runtime<'_>) -> Result<Vec<Evaluation>> {
        let results = match &self.batch {
            Some(batch) => {
                let call = Call::batch(&self.spec.name, messages, *rt);
                self.batch_layers.run(&call, &|| batch(messages, rt))?
            }
            None => messages
                .iter()
                .map(|m| self.run(m, rt))
                .collect::<Result<Vec<_>>>()?,
        };
        if results.len() != messages.len() {
            return Err(Error::msg(format!(
                "evaluator '{}' returned {} results for {} messages",
                self.spec.name,
                results.len(),
                messages.len()
            )));
        }
        Ok(results)
    }

    pub(crate) fn missing_parts(&self) -> Option<String> {
        self.evaluate
            .is_none()
            .then(|| format!("evaluator '{}' has no evaluate", self.spec.name))
    }
}
