//! One description of a plugin call: the entry points a plugin offers,
//! each as a [`Call`] borrowing its arguments, and what each is answered
//! with, an [`Answer`].
//!
//! Every place that runs a plugin follows from this list: the loader's
//! in-process dispatch turns a call into the FFI call of the same name, the
//! wire carries the call itself to a worker, which hands it to that same
//! dispatch, and the plugin seam hands it to whichever place runs the
//! plugin. Adding an entry point adds a variant here, its arm in the
//! in-process dispatch, and its method in the SDK.
//!
//! Components are addressed by their index in the plugin's manifest. The
//! batched forms (`ValidateEach`, `ProvideEach`) ask several components
//! about one message, so that a place whose calls cross to another process
//! answers them in one round trip.
//!
//! Only SDK and ABI types appear here: both the loader and the isolation
//! engine use this module, below the seam.

use agent_host_plugin_sdk::{ActionResult, ErrorKind, Evaluation};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What went wrong in a plugin call, as the plugin (or the place that runs
/// it) reported it: a kind and a message. The SDK's error type, so a plugin
/// value called directly needs no conversion.
pub(crate) type Failure = agent_host_plugin_sdk::Error;

/// One message as a plugin sees it, borrowed for one call: the text and a
/// JSON object with the rest of its context (sender, permissions, metadata,
/// the composed state).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct MessageRef<'a> {
    /// The message id.
    pub id: &'a str,
    /// The text.
    pub text: &'a str,
    /// The context, a JSON object.
    pub context_json: &'a str,
}

/// A call into one plugin instance: an entry point and its arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Call<'a> {
    /// `on_load`.
    OnLoad,
    /// `on_unload`.
    OnUnload,
    /// An action's `validate`: whether it accepts the message.
    Validate {
        /// The action.
        action: u32,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
    },
    /// The `validate` of several actions on one message.
    ValidateEach {
        /// The actions.
        actions: Cow<'a, [u32]>,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
    },
    /// An action's handler.
    Handle {
        /// The action.
        action: u32,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
    },
    /// A provider's `get`.
    Provide {
        /// The provider.
        provider: u32,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
    },
    /// The `get` of several providers for one message.
    ProvideEach {
        /// The providers.
        providers: Cow<'a, [u32]>,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
    },
    /// A provider's subscription on or off.
    SetSubscribed {
        /// The provider.
        provider: u32,
        /// On or off.
        subscribed: bool,
    },
    /// One evaluator on one message.
    Evaluate {
        /// The evaluator.
        evaluator: u32,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
    },
    /// One evaluator on many messages.
    EvaluateBatch {
        /// The evaluator.
        evaluator: u32,
        /// The messages.
        #[serde(borrow)]
        messages: Cow<'a, [MessageRef<'a>]>,
    },
    /// Starts a service.
    StartService {
        /// The service.
        service: u32,
    },
    /// Stops a service.
    StopService {
        /// The service.
        service: u32,
    },
    /// A service method with JSON arguments.
    ServiceMethod {
        /// The service.
        service: u32,
        /// The method.
        method: &'a str,
        /// Its arguments, JSON.
        args_json: &'a str,
    },
    /// An event for one of the plugin's subscriptions.
    OnEvent {
        /// The subscription.
        subscription: u64,
        /// The event's name.
        event: &'a str,
        /// Its payload, JSON.
        payload_json: &'a str,
    },
    /// One of the plugin's timers.
    OnTimer {
        /// The timer.
        timer: u64,
    },
    /// The plugin's state as JSON, for a new generation.
    ExportState,
    /// State exported by an earlier generation.
    ImportState {
        /// The state, JSON.
        state_json: &'a str,
    },
}

/// What a call returned; each call has one kind of answer
/// ([`Call::answered_by`]).
#[derive(Debug)]
pub(crate) enum Answer {
    /// Nothing (hooks, services, subscriptions, events, timers, imports).
    Done,
    /// Whether an action accepts the message.
    Accepted(bool),
    /// One answer per action asked, in order.
    Validated(Vec<Result<bool, Failure>>),
    /// A handler's result.
    Handled(Box<ActionResult>),
    /// A provider's value, as JSON text.
    Provided(String),
    /// One value (JSON) per provider asked, in order.
    ProvidedEach(Vec<Result<String, Failure>>),
    /// One verdict.
    Evaluated(Evaluation),
    /// One verdict per message.
    EvaluatedBatch(Vec<Evaluation>),
    /// Text: a service's JSON reply, or exported state.
    Text(String),
}

/// The kinds of [`Answer`], and of the wire's answers, which add the
/// verdicts of a message round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    /// [`Answer::Done`].
    Done,
    /// [`Answer::Accepted`].
    Accepted,
    /// [`Answer::Validated`].
    Validated,
    /// [`Answer::Handled`].
    Handled,
    /// [`Answer::Provided`].
    Provided,
    /// [`Answer::ProvidedEach`].
    ProvidedEach,
    /// [`Answer::Evaluated`].
    Evaluated,
    /// [`Answer::EvaluatedBatch`].
    EvaluatedBatch,
    /// The verdicts of several evaluators on one message (a worker's
    /// message round).
    EvaluatedEach,
    /// [`Answer::Text`].
    Text,
}

impl AnswerKind {
    /// The kind's name in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            AnswerKind::Done => "done",
            AnswerKind::Accepted => "a validate's answer",
            AnswerKind::Validated => "validates",
            AnswerKind::Handled => "a handler's result",
            AnswerKind::Provided => "a provider value",
            AnswerKind::ProvidedEach => "provider values",
            AnswerKind::Evaluated => "a verdict",
            AnswerKind::EvaluatedBatch => "verdicts on messages",
            AnswerKind::EvaluatedEach => "evaluators' verdicts",
            AnswerKind::Text => "text",
        }
    }
}

impl Call<'_> {
    /// The kind of answer this call is answered with.
    pub(crate) fn answered_by(&self) -> AnswerKind {
        match self {
            Call::OnLoad
            | Call::OnUnload
            | Call::SetSubscribed { .. }
            | Call::StartService { .. }
            | Call::StopService { .. }
            | Call::OnEvent { .. }
            | Call::OnTimer { .. }
            | Call::ImportState { .. } => AnswerKind::Done,
            Call::Validate { .. } => AnswerKind::Accepted,
            Call::ValidateEach { .. } => AnswerKind::Validated,
            Call::Handle { .. } => AnswerKind::Handled,
            Call::Provide { .. } => AnswerKind::Provided,
            Call::ProvideEach { .. } => AnswerKind::ProvidedEach,
            Call::Evaluate { .. } => AnswerKind::Evaluated,
            Call::EvaluateBatch { .. } => AnswerKind::EvaluatedBatch,
            Call::ServiceMethod { .. } | Call::ExportState => AnswerKind::Text,
        }
    }

    /// The call's name in messages, by component number (the seam names
    /// components by their manifest names).
    pub(crate) fn describe(&self) -> String {
        match self {
            Call::OnLoad => "on_load".into(),
            Call::OnUnload => "on_unload".into(),
            Call::Validate { .. } | Call::ValidateEach { .. } => "validate".into(),
            Call::Handle { action, .. } => format!("the handler of action {action}"),
            Call::Provide { .. } | Call::ProvideEach { .. } => "a provider's get".into(),
            Call::SetSubscribed { provider, .. } => {
                format!("the subscription of provider {provider}")
            }
            Call::Evaluate { evaluator, .. } | Call::EvaluateBatch { evaluator, .. } => {
                format!("evaluator {evaluator}")
            }
            Call::StartService { service } => format!("starting service {service}"),
            Call::StopService { service } => format!("stopping service {service}"),
            Call::ServiceMethod { method, .. } => format!("the service method '{method}'"),
            Call::OnEvent { event, .. } => format!("the handler of event '{event}'"),
            Call::OnTimer { timer } => format!("timer {timer}"),
            Call::ExportState => "export_state".into(),
            Call::ImportState { .. } => "import_state".into(),
        }
    }
}

impl Answer {
    /// The answer's kind.
    pub(crate) fn kind(&self) -> AnswerKind {
        match self {
            Answer::Done => AnswerKind::Done,
            Answer::Accepted(_) => AnswerKind::Accepted,
            Answer::Validated(_) => AnswerKind::Validated,
            Answer::Handled(_) => AnswerKind::Handled,
            Answer::Provided(_) => AnswerKind::Provided,
            Answer::ProvidedEach(_) => AnswerKind::ProvidedEach,
            Answer::Evaluated(_) => AnswerKind::Evaluated,
            Answer::EvaluatedBatch(_) => AnswerKind::EvaluatedBatch,
            Answer::Text(_) => AnswerKind::Text,
        }
    }

    /// The error of an answer of a kind the call is not answered with.
    pub(crate) fn wrong(&self) -> Failure {
        Failure::new(
            ErrorKind::Failed,
            format!(
                "protocol error: the call was answered with {}",
                self.kind().describe()
            ),
        )
    }

    /// Nothing, as a hook answers.
    pub(crate) fn done(self) -> Result<(), Failure> {
        match self {
            Answer::Done => Ok(()),
            other => Err(other.wrong()),
        }
    }

    /// Whether an action accepts the message.
    #[inline]
    pub(crate) fn accepted(self) -> Result<bool, Failure> {
        match self {
            Answer::Accepted(accepted) => Ok(accepted),
            other => Err(other.wrong()),
        }
    }

    /// Text: a provider's value, a service's reply, exported state.
    pub(crate) fn text(self) -> Result<String, Failure> {
        match self {
            Answer::Provided(text) | Answer::Text(text) => Ok(text),
            other => Err(other.wrong()),
        }
    }

    /// One answer per action asked.
    pub(crate) fn validated(self) -> Result<Vec<Result<bool, Failure>>, Failure> {
        match self {
            Answer::Validated(answers) => Ok(answers),
            other => Err(other.wrong()),
        }
    }

    /// A handler's result.
    pub(crate) fn handled(self) -> Result<ActionResult, Failure> {
        match self {
            Answer::Handled(result) => Ok(*result),
            other => Err(other.wrong()),
        }
    }

    /// One value per provider asked.
    pub(crate) fn provided_each(self) -> Result<Vec<Result<String, Failure>>, Failure> {
        match self {
            Answer::ProvidedEach(values) => Ok(values),
            other => Err(other.wrong()),
        }
    }

    /// One verdict.
    #[inline]
    pub(crate) fn evaluated(self) -> Result<Evaluation, Failure> {
        match self {
            Answer::Evaluated(evaluation) => Ok(evaluation),
            other => Err(other.wrong()),
        }
    }

    /// One verdict per message.
    pub(crate) fn evaluated_batch(self) -> Result<Vec<Evaluation>, Failure> {
        match self {
            Answer::EvaluatedBatch(evaluations) => Ok(evaluations),
            other => Err(other.wrong()),
        }
    }
}

/// An evaluator's verdict as it crossed a boundary (metadata as JSON text,
/// empty for none), read back; metadata that is not JSON is the plugin's
/// error.
pub(crate) fn evaluation_from(
    score: f64,
    passed: bool,
    metadata_json: &str,
) -> Result<Evaluation, Failure> {
    let metadata = if metadata_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(metadata_json).map_err(|e| {
            Failure::new(
                ErrorKind::InvalidInput,
                format!("metadata is not valid JSON: {e}"),
            )
        })?
    };
    Ok(Evaluation {
        score,
        passed,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_names_the_answer_it_takes() {
        let message = MessageRef {
            id: "m",
            text: "t",
            context_json: "{}",
        };
        assert_eq!(Call::ExportState.answered_by(), AnswerKind::Text);
        assert_eq!(Call::OnLoad.answered_by(), AnswerKind::Done);
        assert_eq!(
            Call::Validate { action: 0, message }.answered_by(),
            AnswerKind::Accepted
        );
        assert_eq!(Answer::Accepted(true).kind(), AnswerKind::Accepted);
        assert!(Answer::Done.accepted().is_err());
        assert!(Answer::Text("{}".into()).done().is_err());
    }
}
