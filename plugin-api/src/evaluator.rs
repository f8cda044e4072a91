//! Evaluators: score messages after the agent answered them.

use crate::error::{Error, Result};
use crate::manifest::EvaluatorSpec;
use crate::message::Message;
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

type Evaluate = Box<dyn Fn(&Message<'_>, &Runtime<'_>) -> Result<Evaluation> + Send + Sync>;
type EvaluateBatch =
    Box<dyn Fn(&[Message<'_>], &Runtime<'_>) -> Result<Vec<Evaluation>> + Send + Sync>;

/// What an evaluator concludes about a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Confidence from 0 to 1; the host rejects anything outside.
    pub score: f64,
    /// Whether the message passed.
    pub passed: bool,
    /// Extra facts.
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
pub struct Evaluator {
    pub(crate) spec: EvaluatorSpec,
    evaluate: Option<Evaluate>,
    batch: Option<EvaluateBatch>,
}

impl Evaluator {
    /// A new evaluator.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: EvaluatorSpec {
                name: name.into(),
                description: String::new(),
                batch: false,
            },
            evaluate: None,
            batch: None,
        }
    }

    /// Says what the evaluator scores.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Scores one message.
    pub fn evaluate(
        mut self,
        evaluate: impl Fn(&Message<'_>, &Runtime<'_>) -> Result<Evaluation> + Send + Sync + 'static,
    ) -> Self {
        self.evaluate = Some(Box::new(evaluate));
        self
    }

    /// Scores many messages at once; without it, batches call `evaluate` per message.
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

    /// Runs `evaluate`.
    pub fn run(&self, message: &Message<'_>, rt: &Runtime<'_>) -> Result<Evaluation> {
        match &self.evaluate {
            Some(evaluate) => evaluate(message, rt),
            None => Err(Error::msg(format!(
                "evaluator '{}' has no evaluate",
                self.spec.name
            ))),
        }
    }

    /// Runs the batch form, or `evaluate` per message when there is none.
    pub fn run_batch(&self, messages: &[Message<'_>], rt: &Runtime<'_>) -> Result<Vec<Evaluation>> {
        let results = match &self.batch {
            Some(batch) => batch(messages, rt)?,
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
