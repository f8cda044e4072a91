//! One message's way through the pipeline, as work that any thread can
//! carry on.
//!
//! The thread that starts a message drives it through four phases, each a
//! [`Relay`] of calls into plugins with host code between them:
//!
//! | phase      | one job per                    | deadline of a job          |
//! |------------|--------------------------------|----------------------------|
//! | providers  | plugin with providers to ask   | its slowest provider's     |
//! | validate   | plugin                         | `validate_timeout_ms`      |
//! | handler    | the chosen action (0 or 1 job) | the action's timeout       |
//! | evaluators | evaluator                      | `evaluator_timeout_ms`     |
//!
//! The watchdog checks the run every tick ([`Watched`]). When a job runs
//! past its deadline, the relay is taken over and a new thread carries on
//! from the next job: the late call is reported as timed out (a provider's
//! cached value served stale), and the message is answered on time. The
//! first thread stays in the plugin until it returns, then leaves.
//!
//! The providers phase also ends at the state budget: a provider call
//! still running then is left behind without being cancelled (see
//! `state.rs`), and cancelled only at its own deadline.
//!
//! Whoever finishes the last phase sends the reply to whoever waits for it.

use super::batch::Batch;
use super::message::{InboundMessage, Reply};
use super::plan::ServingPlan;
use super::{action, choose, evaluate, state, Answered, Pipeline};
use crate::registry::Registry;
use crate::watchdog::relay::{Relay, Relayed};
use crate::watchdog::Watched;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;
use tokio::sync::oneshot;

const PROVIDERS: u8 = 0;
const VALIDATE: u8 = 1;
const HANDLER: u8 = 2;
const EVALUATORS: u8 = 3;
const DONE: u8 = 4;

/// What the watchdog saw at its last look.
pub(super) struct Seen {
    phase: u8,
    progress: u64,
    since_ms: u64,
}

impl Default for Seen {
    /// Nothing seen yet: matches no phase, so the first look starts the
    /// count (a fresh run's first job must not look as old as the host).
    fn default() -> Self {
        Self {
            phase: u8::MAX,
            progress: u64::MAX,
            since_ms: 0,
        }
    }
}

/// One message on its way through the pipeline.
pub(crate) struct MessageRun {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) core: Arc<Registry>,
    pub(super) plan: Arc<ServingPlan>,
    pub(super) message: InboundMessage,
    pub(super) started: Instant,
    /// Whether this run holds an entry of the admission gate (a message of
    /// a batch is inside the batch's).
    admitted: bool,
    /// Whether the evaluators score this message (a batch scores its
    /// messages together afterwards).
    pub(super) evaluate: bool,
    phase: AtomicU8,
    pub(super) providers: OnceLock<state::ProvidersPhase>,
    /// The JSON context every plugin sees after the providers phase.
    pub(super) context: OnceLock<Arc<str>>,
    pub(super) validate: OnceLock<choose::ValidatePhase>,
    pub(super) handler: OnceLock<action::HandlerPhase>,
    pub(super) evaluators: OnceLock<evaluate::EvaluatorsPhase>,
    /// The reply so far; only the driver touches it, between jobs.
    pub(super) reply: Mutex<Reply>,
    seen: Mutex<Seen>,
    reply_to: Mutex<Option<ReplyTo>>,
}

/// Where a message's reply goes.
pub(crate) enum ReplyTo {
    /// To whoever waits on the channel.
    Waiting(oneshot::Sender<Answered<Reply>>),
    /// Into message number `.1` of a batch, whose next message (or whose
    /// evaluation) the thread that finishes this one carries on with.
    Batch(Arc<Batch>, usize),
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MessageRun {
    /// Admits a message, starts the lazy plugins it needs and prepares its
    /// run; the reply goes to `reply_to`. `None` (the refusal already
    /// delivered) when the host is shutting down. Runs plugin code (a lazy
    /// plugin's start): call it from a thread that may block.
    pub(crate) fn start(
        pipeline: &Arc<Pipeline>,
        message: InboundMessage,
        reply_to: ReplyTo,
    ) -> Option<Arc<Self>> {
        let core = &pipeline.core;
        // A message of a batch is inside the batch's admitted entry.
        let admitted = matches!(reply_to, ReplyTo::Waiting(_));
        if admitted && !core.admission.enter_detached() {
            if let ReplyTo::Waiting(waiting) = reply_to {
                let _ = waiting.send(Answered::ShuttingDown(super::refused(&message.id)));
            }
            return None;
        }
        let evaluate = admitted;
        let start_failures = core.start_pending_for_message(&message.text);
        let reply = Reply {
            id: message.id.clone(),
            errors: start_failures.iter().map(ToString::to_string).collect(),
            ..Reply::default()
        };
        let run = Arc::new(Self {
            pipeline: Arc::clone(pipeline),
            core: Arc::clone(core),
            plan: pipeline.serving_plan(),
            message,
            started: Instant::now(),
            admitted,
            evaluate,
            phase: AtomicU8::new(PROVIDERS),
            providers: OnceLock::new(),
            context: OnceLock::new(),
            validate: OnceLock::new(),
            handler: OnceLock::new(),
            evaluators: OnceLock::new(),
            reply: Mutex::new(reply),
            seen: Mutex::new(Seen::default()),
            reply_to: Mutex::new(Some(reply_to)),
        });
        let watched: Arc<dyn Watched> = run.clone();
        core.watchdog.watch(Arc::downgrade(&watched));
        Some(run)
    }

    /// The context plugins saw, once the providers phase is over.
    pub(super) fn context(&self) -> Arc<str> {
        self.context
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from("{}"))
    }

    /// The watchdog's clock now.
    pub(super) fn now_ms(&self) -> u64 {
        self.core.watchdog.now_ms()
    }

    /// Drives the message from where it stands, as driver number `driver`,
    /// until it is answered or another thread takes over; then, for a
    /// message of a batch, the batch's next message, and so on.
    pub(crate) fn drive(self: &Arc<Self>, driver: u32) {
        let mut next = self.drive_one(driver);
        while let Some(run) = next {
            next = run.drive_one(0);
        }
    }

    /// Drives this message; returns the next message of its batch, if it
    /// finished this one and there is one.
    fn drive_one(self: &Arc<Self>, driver: u32) -> Option<Arc<Self>> {
        let _span = tracing::info_span!("message", id = %self.message.id).entered();
        loop {
            let phase = self.phase.load(Ordering::Acquire);
            let relayed = match phase {
                PROVIDERS => state::drive(self, driver),
                VALIDATE => choose::drive(self, driver),
                HANDLER => action::drive(self, driver),
                EVALUATORS if self.evaluate => evaluate::drive(self, driver),
                EVALUATORS => Relayed::Finished,
                DONE.. => return None,
            };
            if relayed == Relayed::Superseded {
                return None;
            }
            if phase == EVALUATORS {
                self.phase.store(DONE, Ordering::Release);
                return self.finish();
            }
            self.phase.store(phase + 1, Ordering::Release);
        }
    }

    /// Delivers the reply; for a message of a batch, returns the batch's
    /// next message.
    fn finish(&self) -> Option<Arc<Self>> {
        let mut reply = std::mem::take(&mut *lock(&self.reply));
        reply.timings.total_us = super::micros(self.started);
        self.core.metrics.messages.inc();
        self.core
            .metrics
            .message_seconds
            .observe(self.started.elapsed().as_secs_f64());
        match lock(&self.reply_to).take()? {
            ReplyTo::Waiting(waiting) => {
                // Nobody waits any more (a client gone): the reply is dropped.
                let _ = waiting.send(Answered::Served(reply));
                None
            }
            ReplyTo::Batch(batch, index) => batch.answered(index, reply, self.context()),
        }
    }

    /// The watchdog's look at the providers phase: a call past its own
    /// deadline is abandoned, one still running at the end of the state
    /// budget is left behind, and a new thread carries the message on.
    fn check_providers(self: &Arc<Self>, phase: &state::ProvidersPhase, now_ms: u64) {
        let Some((progress, job, running_ms)) =
            running(&self.seen, PROVIDERS, &phase.relay, now_ms)
        else {
            return;
        };
        let Some(ending) = phase.ending(job, running_ms, now_ms) else {
            return;
        };
        if !phase.end(self, job, ending) {
            return;
        }
        if let Some(next) = phase.relay.take_over(progress, || ()) {
            let run = Arc::clone(self);
            self.core.runtime().spawn_blocking(move || run.drive(next));
        }
    }

    /// Takes the relay in `relay` over if its job in progress is past
    /// `deadline_ms`, and starts a thread that carries the message on.
    fn check_relay<R: Send, G>(
        self: &Arc<Self>,
        phase: u8,
        relay: &Relay<R, G>,
        now_ms: u64,
        deadline_ms: impl FnOnce(usize) -> u64,
        holds: impl FnOnce(usize) -> G,
    ) {
        if let Some(next) = late(&self.seen, phase, relay, now_ms, deadline_ms, holds) {
            let run = Arc::clone(self);
            self.core.runtime().spawn_blocking(move || run.drive(next));
        }
    }
}

/// The watchdog's look at a relay: when its job in progress has not moved
/// since an earlier look at least `deadline_ms` ago, takes the relay over
/// and returns the new driver's number (who must then carry the work on).
pub(super) fn late<R: Send, G>(
    seen: &Mutex<Seen>,
    phase: u8,
    relay: &Relay<R, G>,
    now_ms: u64,
    deadline_ms: impl FnOnce(usize) -> u64,
    holds: impl FnOnce(usize) -> G,
) -> Option<u32> {
    let (progress, job, running_ms) = running(seen, phase, relay, now_ms)?;
    if running_ms < deadline_ms(job) {
        return None;
    }
    relay.take_over(progress, || holds(job))
}

/// The watchdog's look at a relay: its progress word, the job in progress
/// and how long it has run, counted from the first look that saw it
/// (`None` at that first look, or when every job is done).
fn running<R: Send, G>(
    seen: &Mutex<Seen>,
    phase: u8,
    relay: &Relay<R, G>,
    now_ms: u64,
) -> Option<(u64, usize, u64)> {
    let (progress, job) = relay.in_progress()?;
    let mut seen = lock(seen);
    if seen.phase != phase || seen.progress != progress {
        *seen = Seen {
            phase,
            progress,
            since_ms: now_ms,
        };
        return None;
    }
    Some((progress, job, now_ms.saturating_sub(seen.since_ms)))
}

impl Watched for MessageRun {
    fn check(self: Arc<Self>, now_ms: u64) -> bool {
        // Provider calls left behind at the state budget are cancelled at
        // their own deadline, in whatever phase the message is by then.
        let left_calls = self
            .providers
            .get()
            .is_some_and(state::ProvidersPhase::watch_left_calls);
        match self.phase.load(Ordering::Acquire) {
            PROVIDERS => {
                if let Some(phase) = self.providers.get() {
                    self.check_providers(phase, now_ms);
                }
            }
            VALIDATE => {
                if let Some(phase) = self.validate.get() {
                    let limit = self.core.settings.validate_timeout_ms;
                    self.check_relay(
                        VALIDATE,
                        &phase.relay,
                        now_ms,
                        |_| limit,
                        |job| phase.hold(&self.plan, job),
                    );
                }
            }
            HANDLER => {
                if let Some(phase) = self.handler.get() {
                    let limit = phase.timeout_ms;
                    self.check_relay(HANDLER, &phase.relay, now_ms, |_| limit, |_| ());
                }
            }
            EVALUATORS => {
                if let Some(phase) = self.evaluators.get() {
                    let limit = self.core.settings.evaluator_timeout_ms;
                    self.check_relay(
                        EVALUATORS,
                        &phase.relay,
                        now_ms,
                        |_| limit,
                        |job| phase.hold(&self.plan, job),
                    );
                }
            }
            DONE.. => return left_calls,
        }
        true
    }
}

impl Drop for MessageRun {
    fn drop(&mut self) {
        if self.admitted {
            self.core.admission.leave();
        }
    }
}
