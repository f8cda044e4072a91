//! An isolated plugin, as the registry and the pipeline see it: a
//! [`Backend`] whose calls cross to the plugin's worker process, which the
//! isolation engine's [`Supervisor`] restarts when it dies.
//!
//! A call that finds the worker dead (or sees it die) fails with the cause
//! (a signal, an exit code, a limit, a deadline) and the worker is
//! restarted after a backoff, doubling with each crash in the window. The
//! new worker gets what the old one had: `on_load` runs again, its services
//! start, its subscribed providers subscribe; the old worker's event
//! subscriptions and timers are dropped first (the plugin sets them up
//! again in `on_load`). After `quarantine_after_crashes` crashes in the
//! window the plugin is quarantined: no restart, and every call fails at
//! once saying why, until the operator reloads it.

use super::{Backend, Failure, MessageRef, MessageRound, Placement, RoundDeadlines, Worker};
use crate::isolation::engine::supervisor::{PendingRound, Supervisor};
use crate::isolation::wire::protocol::{Answer, Call, WireEvaluation, WireMessage};
use crate::load::library::PrivateCopy;
use crate::watchdog::unix_ms_now;
use crate::worker_status::WorkerStatus;
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::{ActionResult, ErrorKind, Evaluation};

/// A call past its deadline by this much is abandoned even if nobody
/// cancelled it.
const DEADLINE_GRACE_MS: u64 = 1_000;

/// A plugin that runs in a worker process.
pub(crate) struct WorkerBackend {
    supervisor: Supervisor,
    /// The private copy the workers open: held so that it stays on disk
    /// while a worker of the plugin may (re)start.
    _copy: PrivateCopy,
}

impl WorkerBackend {
    /// The plugin served by `supervisor`'s workers, from `copy`.
    pub(crate) fn new(supervisor: Supervisor, copy: PrivateCopy) -> Self {
        Self {
            supervisor,
            _copy: copy,
        }
    }

    /// Makes one call into the worker. `control` is the call's own control;
    /// without one, the control of the host call this thread is in (a
    /// validate inside a message) decides when to give up.
    fn call(&self, call: Call, control: Option<&CallControl>) -> Result<Answer, Failure> {
        let cancelled = || {
            let (deadline, cancelled) = match control {
                Some(control) => (control.deadline_unix_ms(), control.is_cancelled()),
                None => crate::registry::current_call::inherited().unwrap_or((0, false)),
            };
            cancelled || (deadline != 0 && unix_ms_now() > deadline + DEADLINE_GRACE_MS)
        };
        self.supervisor.call(&call, &cancelled)
    }
}

fn wire(message: MessageRef<'_>) -> WireMessage {
    WireMessage {
        id: message.id.to_string(),
        text: message.text.to_string(),
        context_json: message.context_json.to_string(),
    }
}

fn wrong(answer: &Answer) -> Failure {
    Failure::new(
        ErrorKind::Failed,
        format!("protocol error: the worker answered {answer:?}"),
    )
}

fn done(answer: Answer) -> Result<(), Failure> {
    match answer {
        Answer::Done => Ok(()),
        other => Err(wrong(&other)),
    }
}

fn text(answer: Answer) -> Result<String, Failure> {
    match answer {
        Answer::Text(text) => Ok(text),
        other => Err(wrong(&other)),
    }
}

fn evaluation(wire: WireEvaluation) -> Result<Evaluation, Failure> {
    super::evaluation_from(wire.score, wire.passed, &wire.metadata_json)
}

impl Backend for WorkerBackend {
    fn on_load(&self) -> Result<(), Failure> {
        done(self.call(Call::OnLoad, None)?)
    }

    fn on_unload(&self) -> Result<(), Failure> {
        done(self.call(Call::OnUnload, None)?)
    }

    fn validate(&self, action: u32, message: MessageRef<'_>) -> Result<bool, Failure> {
        let mut answer = Ok(false);
        self.validate_each(&[action], message, &mut |_, outcome| answer = outcome);
        answer
    }

    fn validate_each(
        &self,
        actions: &[u32],
        message: MessageRef<'_>,
        answer: &mut dyn FnMut(u32, Result<bool, Failure>),
    ) {
        let call = Call::Validate {
            actions: actions.to_vec(),
            message: wire(message),
            deadline_ms: crate::registry::current_call::inherited().map_or(0, |(d, _)| d),
        };
        match self.call(call, None) {
            Ok(Answer::Validated(answers)) if answers.len() == actions.len() => {
                for (&action, outcome) in actions.iter().zip(answers) {
                    answer(action, outcome.map_err(Failure::from));
                }
            }
            Ok(other) => {
                let error = wrong(&other);
                for &action in actions {
                    answer(action, Err(error.clone()));
                }
            }
            Err(error) => {
                for &action in actions {
                    answer(action, Err(error.clone()));
                }
            }
        }
    }

    fn handle(
        &self,
        action: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<ActionResult, Failure> {
        let call = Call::Handle {
            action,
            message: wire(message),
            deadline_ms: control.deadline_unix_ms(),
        };
        match self.call(call, Some(control))? {
            Answer::Handled(json) => serde_json::from_str(&json).map_err(|e| {
                Failure::new(
                    ErrorKind::InvalidInput,
                    format!("returned invalid JSON: {e}"),
                )
            }),
            other => Err(wrong(&other)),
        }
    }

    fn provide(
        &self,
        provider: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<String, Failure> {
        let mut value = Err(Failure::new(ErrorKind::Failed, "no answer"));
        self.provide_each(&[provider], message, control, &mut |_, v| value = v);
        value
    }

    fn provide_each(
        &self,
        providers: &[u32],
        message: MessageRef<'_>,
        control: &CallControl,
        answer: &mut dyn FnMut(u32, Result<String, Failure>),
    ) {
        let call = Call::Provide {
            providers: providers.to_vec(),
            message: wire(message),
            deadline_ms: control.deadline_unix_ms(),
        };
        let outcome = match self.call(call, Some(control)) {
            Ok(Answer::Provided(values)) if values.len() == providers.len() => {
                for (&provider, value) in providers.iter().zip(values) {
                    answer(provider, value.map_err(Failure::from));
                }
                return;
            }
            Ok(other) => wrong(&other),
            Err(error) => error,
        };
        for &provider in providers {
            answer(provider, Err(outcome.clone()));
        }
    }

    fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<(), Failure> {
        done(self.call(
            Call::SetSubscribed {
                provider,
                subscribed,
            },
            None,
        )?)
    }

    fn evaluate(
        &self,
        evaluator: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, Failure> {
        let call = Call::Evaluate {
            evaluator,
            message: wire(message),
            deadline_ms: control.deadline_unix_ms(),
        };
        match self.call(call, Some(control))? {
            Answer::Evaluated(wire) => evaluation(wire),
            other => Err(wrong(&other)),
        }
    }

    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[MessageRef<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>, Failure> {
        let call = Call::EvaluateBatch {
            evaluator,
            messages: messages.iter().map(|m| wire(*m)).collect(),
            deadline_ms: control.deadline_unix_ms(),
        };
        match self.call(call, Some(control))? {
            Answer::EvaluatedBatch(wires) => wires.into_iter().map(evaluation).collect(),
            other => Err(wrong(&other)),
        }
    }

    fn start_service(&self, service: u32) -> Result<(), Failure> {
        done(self.call(Call::StartService { service }, None)?)
    }

    fn stop_service(&self, service: u32) -> Result<(), Failure> {
        done(self.call(Call::StopService { service }, None)?)
    }

    fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String, Failure> {
        let call = Call::ServiceMethod {
            service,
            method: method.to_string(),
            args_json: args_json.to_string(),
            deadline_ms: control.deadline_unix_ms(),
        };
        text(self.call(call, Some(control))?)
    }

    fn on_event(&self, subscription: u64, event: &str, payload_json: &str) -> Result<(), Failure> {
        let call = Call::OnEvent {
            subscription,
            event: event.to_string(),
            payload_json: payload_json.to_string(),
            source: crate::registry::events::current_source().unwrap_or_default(),
            deadline_ms: crate::registry::current_call::inherited().map_or(0, |(d, _)| d),
        };
        done(self.call(call, None)?)
    }

    fn on_timer(&self, timer: u64) -> Result<(), Failure> {
        let call = Call::OnTimer {
            timer,
            deadline_ms: crate::registry::current_call::inherited().map_or(0, |(d, _)| d),
        };
        done(self.call(call, None)?)
    }

    fn export_state(&self) -> Result<String, Failure> {
        text(self.call(Call::ExportState, None)?)
    }

    fn import_state(&self, state_json: &str) -> Result<(), Failure> {
        done(self.call(
            Call::ImportState {
                state_json: state_json.to_string(),
            },
            None,
        )?)
    }

    fn placement(&self) -> Placement<'_> {
        Placement::Worker(self)
    }
}

impl Worker for WorkerBackend {
    fn status(&self) -> WorkerStatus {
        self.supervisor.status()
    }

    /// The worker is not restarted once the host gave up on the plugin
    /// (a step of its life missed its deadline): the kill that follows
    /// ends it for good.
    fn give_up(&self) {
        self.supervisor.retire();
    }

    fn begin_message(
        &self,
        actions: &[u32],
        evaluators: &[u32],
        message: MessageRef<'_>,
        deadlines: RoundDeadlines,
    ) -> Box<dyn MessageRound> {
        let call = Call::Message {
            actions: actions.to_vec(),
            evaluators: evaluators.to_vec(),
            message: wire(message),
            deadline_ms: deadlines.validate_ms,
            evaluate_deadline_ms: deadlines.evaluate_ms,
        };
        let validate_ms = deadlines.validate_ms;
        let late = || validate_ms != 0 && unix_ms_now() > validate_ms + DEADLINE_GRACE_MS;
        Box::new(WorkerRound {
            round: self.supervisor.begin(&call, &late),
            validated: None,
            validates_read: false,
            evaluations: None,
            actions: actions.len(),
        })
    }
}

/// A message round with a worker: one request, two replies (the
/// validates, then the evaluators), each read when its phase asks.
struct WorkerRound {
    round: PendingRound,
    validated: Option<Vec<Result<bool, Failure>>>,
    /// Whether the validates' reply has been read (it comes first).
    validates_read: bool,
    evaluations: Option<Vec<Result<Evaluation, Failure>>>,
    actions: usize,
}

/// A message round's name in messages.
const ROUND: &str = "validate and evaluators";

impl WorkerRound {
    fn read_validated(&mut self, cancelled: &dyn Fn() -> bool) {
        if self.validates_read {
            return;
        }
        self.validates_read = true;
        let answers = match self.round.next(ROUND, cancelled) {
            Some(Answer::Validated(answers)) if answers.len() == self.actions => answers
                .into_iter()
                .map(|a| a.map_err(Failure::from))
                .collect(),
            Some(other) => {
                self.round.abandon(wrong(&other));
                vec![Err(self.round.error()); self.actions]
            }
            None => vec![Err(self.round.error()); self.actions],
        };
        self.validated = Some(answers);
    }
}

impl MessageRound for WorkerRound {
    fn validated(&mut self, cancelled: &dyn Fn() -> bool) -> Vec<Result<bool, Failure>> {
        self.read_validated(cancelled);
        self.validated.take().unwrap_or_default()
    }

    fn evaluation(
        &mut self,
        position: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Evaluation, Failure> {
        if self.evaluations.is_none() {
            // The validates' reply comes first, read or not.
            self.read_validated(cancelled);
            let evaluations = match self.round.next(ROUND, cancelled) {
                Some(Answer::EvaluatedEach(verdicts)) => {
                    self.round.finish();
                    verdicts
                        .into_iter()
                        .map(|v| v.map_err(Failure::from).and_then(evaluation))
                        .collect()
                }
                Some(other) => {
                    self.round.abandon(wrong(&other));
                    Vec::new()
                }
                None => Vec::new(),
            };
            self.evaluations = Some(evaluations);
        }
        match self.evaluations.as_ref().and_then(|e| e.get(position)) {
            Some(outcome) => outcome.clone(),
            None => Err(self.round.error()),
        }
    }
}
