//! An isolated plugin, as the registry and the pipeline see it: a
//! [`Backend`] whose calls cross, as they are described, to the plugin's
//! worker process, which the isolation engine's [`Supervisor`] restarts
//! when it dies.
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
use crate::call::{Answer, Call};
use crate::isolation::engine::supervisor::{PendingRound, Supervisor};
use crate::isolation::wire::protocol::{Request, WireAnswer, WireEvaluation};
use crate::load::library::PrivateCopy;
use crate::watchdog::unix_ms_now;
use crate::worker_status::WorkerStatus;
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::{ErrorKind, Evaluation};
use std::borrow::Cow;

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
}

impl Backend for WorkerBackend {
    /// Sends `call` to the worker. `control` is the call's own control;
    /// without one, the control of the host call this thread is in (a
    /// validate inside a message, an event, a timer) decides when to give
    /// up.
    fn call(&self, call: Call<'_>, control: Option<&CallControl>) -> Result<Answer, Failure> {
        let inherited = || crate::current_call::inherited().unwrap_or((0, false));
        let deadline_ms = match control {
            Some(control) => control.deadline_unix_ms(),
            None => inherited().0,
        };
        let source = matches!(call, Call::OnEvent { .. })
            .then(|| Cow::Owned(crate::current_call::current_source().unwrap_or_default()));
        let request = Request::Call {
            call,
            deadline_ms,
            source,
        };
        let cancelled = || {
            let (deadline, cancelled) = match control {
                Some(control) => (control.deadline_unix_ms(), control.is_cancelled()),
                None => inherited(),
            };
            cancelled || (deadline != 0 && unix_ms_now() > deadline + DEADLINE_GRACE_MS)
        };
        self.supervisor.call(&request, &cancelled)
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
        let request = Request::Round {
            actions: Cow::Borrowed(actions),
            evaluators: Cow::Borrowed(evaluators),
            message,
            deadline_ms: deadlines.validate_ms,
            evaluate_deadline_ms: deadlines.evaluate_ms,
        };
        let validate_ms = deadlines.validate_ms;
        let late = || validate_ms != 0 && unix_ms_now() > validate_ms + DEADLINE_GRACE_MS;
        Box::new(WorkerRound {
            round: self.supervisor.begin(&request, &late),
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

fn wrong(answer: &WireAnswer) -> Failure {
    Failure::new(
        ErrorKind::Failed,
        format!(
            "protocol error: the worker answered {}",
            answer.kind().describe()
        ),
    )
}

impl WorkerRound {
    fn read_validated(&mut self, cancelled: &dyn Fn() -> bool) {
        if self.validates_read {
            return;
        }
        self.validates_read = true;
        let answers = match self.round.next(ROUND, cancelled) {
            Some(WireAnswer::Validated(answers)) if answers.len() == self.actions => answers
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
                Some(WireAnswer::EvaluatedEach(verdicts)) => {
                    self.round.finish();
                    verdicts
                        .into_iter()
                        .map(|v| v.map_err(Failure::from).and_then(WireEvaluation::read))
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
