//! An isolated plugin, as the registry and the pipeline see it: a
//! [`Backend`] whose calls cross, as they are described, to the worker
//! process that serves it (alone, or with its file's or group's other
//! plugins: `shared.rs`), which the isolation engine's supervisor restarts
//! when it dies.
//!
//! A call that finds the worker dead waits for the worker that replaces it.
//! A call that sees it die is made again on the new worker when it has no
//! effects (validates, providers, evaluators) or is the handler of an
//! action marked idempotent; any other fails with the cause
//! (a signal, an exit code, a limit, a deadline) and the worker is
//! restarted after a backoff, doubling with each crash in the window, for
//! every plugin it serves. The new worker gets what the old one had: each
//! plugin is created again, `on_load` runs again, its services start, its
//! subscribed providers subscribe; the old worker's event subscriptions and
//! timers are dropped first (the plugin sets them up again in `on_load`).
//! After `quarantine_after_crashes` crashes in the window the worker and
//! its plugins are quarantined: no restart, and every call fails at once
//! saying why, until the operator reloads them.

use super::shared::Place;
use super::{
    Backend, Failure, MessageRef, MessageRound, Placement, RoundAsk, RoundDeadlines, Worker,
};
use crate::call::{Answer, Call};
use crate::isolation::engine::supervisor::{Member, PendingRound};
use crate::isolation::wire::protocol::{Request, RoundPart, WireAnswer, WireEvaluation};
use crate::watchdog::unix_ms_now;
use crate::worker_status::WorkerStatus;
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ErrorKind, Evaluation};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// A call past its deadline by this much is abandoned even if nobody
/// cancelled it.
const DEADLINE_GRACE_MS: u64 = 1_000;

/// A plugin that runs in a worker process.
pub(crate) struct WorkerBackend {
    /// The plugin in its worker; dropped first, so it leaves the worker
    /// before the place may end.
    member: Member,
    /// The actions (by index) whose handlers its manifest marks
    /// idempotent: run again when their worker dies under them.
    idempotent_actions: HashSet<u32>,
    /// The worker and the private copies it opens: held so that they stay
    /// while a worker of the plugin may (re)start.
    _place: Arc<Place>,
}

impl WorkerBackend {
    /// The plugin `member` of the worker of `place`, described by
    /// `manifest`.
    pub(crate) fn new(member: Member, manifest: &Manifest, place: Arc<Place>) -> Self {
        let idempotent_actions = (0u32..)
            .zip(&manifest.actions)
            .filter(|(_, action)| action.idempotent)
            .map(|(index, _)| index)
            .collect();
        Self {
            member,
            idempotent_actions,
            _place: place,
        }
    }

    /// Whether `call` may be made again when its worker dies under it:
    /// validates, providers and evaluators have no effects by contract; a
    /// handler only when its action is marked idempotent; services, hooks,
    /// events and timers never.
    fn repeatable(&self, call: &Call<'_>) -> bool {
        match call {
            Call::Validate { .. }
            | Call::ValidateEach { .. }
            | Call::Provide { .. }
            | Call::ProvideEach { .. }
            | Call::Evaluate { .. }
            | Call::EvaluateBatch { .. } => true,
            Call::Handle { action, .. } => self.idempotent_actions.contains(action),
            Call::OnLoad
            | Call::OnUnload
            | Call::SetSubscribed { .. }
            | Call::StartService { .. }
            | Call::StopService { .. }
            | Call::ServiceMethod { .. }
            | Call::OnEvent { .. }
            | Call::OnTimer { .. }
            | Call::ExportState
            | Call::ImportState { .. } => false,
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
        let repeatable = self.repeatable(&call);
        let request = Request::Call {
            call,
            deadline_ms,
            source,
            slot: self.member.slot(),
        };
        let cancelled = || {
            let (deadline, cancelled) = match control {
                Some(control) => (control.deadline_unix_ms(), control.is_cancelled()),
                None => inherited(),
            };
            cancelled || (deadline != 0 && unix_ms_now() > deadline + DEADLINE_GRACE_MS)
        };
        self.member.call(&request, repeatable, &cancelled)
    }

    fn placement(&self) -> Placement<'_> {
        Placement::Worker(self)
    }
}

impl Worker for WorkerBackend {
    fn status(&self) -> WorkerStatus {
        self.member.status()
    }

    /// The plugin is not created again once the host gave up on it (a
    /// step of its life missed its deadline): the kill that follows ends
    /// it for good (the worker restarts for its other plugins).
    fn give_up(&self) {
        self.member.retire();
    }

    fn process_key(&self) -> usize {
        self.member.worker_key()
    }

    fn slot(&self) -> u32 {
        self.member.slot()
    }

    fn begin_messages(
        &self,
        parts: &[RoundAsk<'_>],
        message: MessageRef<'_>,
        deadlines: RoundDeadlines,
    ) -> Vec<Box<dyn MessageRound>> {
        let request = Request::Round {
            parts: parts
                .iter()
                .map(|part| RoundPart {
                    slot: part.worker.slot(),
                    actions: Cow::Borrowed(part.actions),
                    evaluators: Cow::Borrowed(part.evaluators),
                })
                .collect(),
            message,
            deadline_ms: deadlines.validate_ms,
            evaluate_deadline_ms: deadlines.evaluate_ms,
        };
        let validate_ms = deadlines.validate_ms;
        let late = || validate_ms != 0 && unix_ms_now() > validate_ms + DEADLINE_GRACE_MS;
        let round = Arc::new(Mutex::new(WorkerRound {
            round: self.member.begin(&request, &late),
            validated: None,
            validates_read: false,
            validates_lost: false,
            evaluations_lost: false,
            evaluations: None,
            actions: parts.iter().map(|p| p.actions.len()).collect(),
        }));
        (0..parts.len())
            .map(|part| {
                Box::new(RoundShare {
                    round: Arc::clone(&round),
                    part,
                }) as Box<dyn MessageRound>
            })
            .collect()
    }
}

/// A message round with a worker: one request for the parts of every
/// plugin of the worker, two replies (the validates, then the
/// evaluators), each read when its phase first asks for any part.
struct WorkerRound {
    round: PendingRound,
    /// Each part's validates, taken by its part when it asks.
    validated: Option<Vec<Vec<Result<bool, Failure>>>>,
    /// Whether the validates' reply has been read (it comes first).
    validates_read: bool,
    /// Whether the worker died before the validates' reply: each part
    /// then asks the worker that replaces it, call by call.
    validates_lost: bool,
    /// Whether the worker died before the evaluators' reply (likewise).
    evaluations_lost: bool,
    evaluations: Option<Vec<Vec<Result<Evaluation, Failure>>>>,
    /// How many actions each part validates.
    actions: Vec<usize>,
}

/// One plugin's part of a [`WorkerRound`]. Its lock is taken inside the
/// lock of the plugin's round in the message, and held while a reply is
/// read, as that lock is.
struct RoundShare {
    round: Arc<Mutex<WorkerRound>>,
    part: usize,
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
    /// Every part's answers as errors.
    fn failed<T>(&self, counts: impl Iterator<Item = usize>) -> Vec<Vec<Result<T, Failure>>> {
        counts
            .map(|n| (0..n).map(|_| Err(self.round.error())).collect())
            .collect()
    }

    fn read_validated(&mut self, cancelled: &dyn Fn() -> bool) {
        if self.validates_read {
            return;
        }
        self.validates_read = true;
        let fits = |answers: &Vec<Vec<Result<bool, _>>>| {
            answers.len() == self.actions.len()
                && answers
                    .iter()
                    .zip(&self.actions)
                    .all(|(a, n)| a.len() == *n)
        };
        let answers = match self.round.next(ROUND, cancelled) {
            Some(WireAnswer::RoundValidated(answers)) if fits(&answers) => answers
                .into_iter()
                .map(|part| part.into_iter().map(|a| a.map_err(Failure::from)).collect())
                .collect(),
            Some(other) => {
                self.round.abandon(wrong(&other));
                self.failed(self.actions.clone().into_iter())
            }
            None => {
                self.validates_lost = self.round.lost();
                self.failed(self.actions.clone().into_iter())
            }
        };
        self.validated = Some(answers);
    }

    /// Part `part`'s validates; `None` when the worker died before
    /// answering them.
    fn validated(
        &mut self,
        part: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Vec<Result<bool, Failure>>> {
        self.read_validated(cancelled);
        if self.validates_lost {
            return None;
        }
        Some(
            self.validated
                .as_mut()
                .and_then(|parts| parts.get_mut(part))
                .map(std::mem::take)
                .unwrap_or_default(),
        )
    }

    /// Part `part`'s verdict of the evaluator at `position`; `None` when
    /// the worker died before answering the evaluators.
    fn evaluation(
        &mut self,
        part: usize,
        position: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<Evaluation, Failure>> {
        if self.evaluations.is_none() {
            // The validates' reply comes first, read or not.
            self.read_validated(cancelled);
            let evaluations = match self.round.next(ROUND, cancelled) {
                Some(WireAnswer::EvaluatedEach(parts)) => {
                    self.round.finish();
                    parts
                        .into_iter()
                        .map(|verdicts| {
                            verdicts
                                .into_iter()
                                .map(|v| v.map_err(Failure::from).and_then(WireEvaluation::read))
                                .collect()
                        })
                        .collect()
                }
                Some(other) => {
                    self.round.abandon(wrong(&other));
                    Vec::new()
                }
                None => {
                    self.evaluations_lost = self.round.lost();
                    Vec::new()
                }
            };
            self.evaluations = Some(evaluations);
        }
        if self.evaluations_lost {
            return None;
        }
        Some(
            match self
                .evaluations
                .as_ref()
                .and_then(|e| e.get(part))
                .and_then(|e| e.get(position))
            {
                Some(outcome) => outcome.clone(),
                None => Err(self.round.error()),
            },
        )
    }
}

impl RoundShare {
    fn round(&self) -> std::sync::MutexGuard<'_, WorkerRound> {
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MessageRound for RoundShare {
    fn validated(&mut self, cancelled: &dyn Fn() -> bool) -> Option<Vec<Result<bool, Failure>>> {
        self.round().validated(self.part, cancelled)
    }

    fn evaluation(
        &mut self,
        position: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<Evaluation, Failure>> {
        self.round().evaluation(self.part, position, cancelled)
    }
}
