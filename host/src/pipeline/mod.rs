//! The message pipeline: from one inbound message to one reply.
//!
//! 1. compose the state from every provider (`state.rs`): cached values
//!    while fresh (`cache.ttl_ms`), stale ones at once with a background
//!    refresh (`stale_while_revalidate`), pushed values from subscriptions,
//!    the others asked with a deadline; a provider that fails or is late is
//!    left out (its cached value served, marked stale) and backed off when
//!    it keeps failing;
//! 2. ask the `validate` of every action whose triggers match the message
//!    (`triggers.rs`; all of a plugin's actions that declare none; validate
//!    always gates the handler) and pick the highest priority valid action
//!    (ties: the plugin earlier in load order, then the action earlier in
//!    its plugin; `choose.rs`);
//! 3. check the sender holds the action's permissions and the action's
//!    rate limit, then run its handler with its timeout and a cancellation
//!    signal, inside a tracing span, with `action:started` /
//!    `action:completed` / `action:failed` events and timing metrics
//!    (`action.rs`);
//! 4. run every evaluator on the message (`evaluate.rs`; the batch form for
//!    a batch, `batch.rs`);
//! 5. answer with the handler's result, the evaluations and the timings.
//!
//! First, the lazy plugins the message needs are started (see
//! `registry/lazy.rs`); their start failures lead the reply's `errors`.
//! Every call runs on the thread that serves the message, bounded by its
//! deadline and its plugin's bulkhead (`run.rs`, and the watchdog in
//! `crate::watchdog`): a late call is abandoned and the message goes on
//! without it on another thread; a plugin with too many calls in flight is
//! refused at once. Plugins that are quarantined take no part. A message
//! that arrives once the host shuts down is answered with [`SHUTTING_DOWN`]
//! and reaches no plugin. Nothing here fails: every problem becomes an
//! entry in the reply's `errors`, naming the plugin and the entry point.

mod action;
mod batch;
pub(crate) mod cache;
mod choose;
pub(crate) mod context;
#[cfg(test)]
mod deadline_tests;
mod evaluate;
mod message;
pub(crate) mod plan;
pub(crate) mod ratelimit;
mod rounds;
mod run;
mod state;
#[cfg(test)]
mod tests;

pub use message::{
    ActionRef, EvaluationRecord, Evaluations, InboundMessage, Reply, NO_ACTION_TEXT, SHUTTING_DOWN,
};

use crate::registry::Registry;
use cache::ProviderSlots;
use plan::ServingPlan;
use ratelimit::RateLimiter;
use run::{MessageRun, ReplyTo};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::oneshot;

/// The pipeline's own state over the registry's plugins: the serving plan
/// (worked out once per change of the plugin set), the providers' cache
/// slots, and the actions' rate limits.
pub(crate) struct Pipeline {
    /// The plugins, services and settings the pipeline serves with.
    pub(crate) core: Arc<Registry>,
    /// The plan and the plugin set version it was worked out for.
    plan: Mutex<Option<(u64, Arc<ServingPlan>)>>,
    /// The providers' cached and pushed values.
    pub(crate) provider_slots: Arc<ProviderSlots>,
    /// Per-action rate limits.
    pub(crate) rate_limiter: RateLimiter,
}

impl Pipeline {
    /// The pipeline over `core`; the values its providers push come here.
    pub(crate) fn new(core: Arc<Registry>) -> Arc<Self> {
        let provider_slots = Arc::new(ProviderSlots::new(core.metrics.provider_cache.clone()));
        core.send_pushed_values_to(Arc::clone(&provider_slots) as _);
        Arc::new(Self {
            core,
            plan: Mutex::new(None),
            provider_slots,
            rate_limiter: RateLimiter::default(),
        })
    }

    /// Who takes part in the pipeline now, worked out once per change of the
    /// plugin set (a load, a reload, an unload, a quarantine) rather than per
    /// message. A new plan forgets the slots and rate limits of the plugins
    /// that are gone.
    pub(crate) fn serving_plan(&self) -> Arc<ServingPlan> {
        let version = self.core.plugin_set_version();
        let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((built_for, plan)) = plan.as_ref() {
            if *built_for == version {
                return Arc::clone(plan);
            }
        }
        let plugins = self.core.plugins();
        self.provider_slots.forget_gone();
        self.rate_limiter
            .retain(|name| plugins.iter().any(|p| p.name() == name));
        let fresh = Arc::new(ServingPlan::new(plugins, &self.provider_slots));
        *plan = Some((version, Arc::clone(&fresh)));
        fresh
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The reply to a message that arrives while the host shuts down: no plugin
/// sees it.
pub(crate) fn refused(id: &str) -> Reply {
    Reply {
        id: id.to_string(),
        text: SHUTTING_DOWN.to_string(),
        errors: vec![SHUTTING_DOWN.to_string()],
        ..Reply::default()
    }
}

/// What came of a message (or a batch): served, or refused unseen because
/// the host is shutting down (`T` is then the refusal, [`SHUTTING_DOWN`]),
/// so that a front-end can answer a refusal its own way.
pub(crate) enum Answered<T> {
    /// The pipeline ran it.
    Served(T),
    /// The host was shutting down: no plugin saw it.
    ShuttingDown(T),
}

impl<T> Answered<T> {
    /// The reply, served or refused.
    pub(crate) fn into_reply(self) -> T {
        match self {
            Answered::Served(reply) | Answered::ShuttingDown(reply) => reply,
        }
    }
}

/// The reply when the work on a message was lost (it cannot happen unless
/// a thread of the host died).
pub(crate) fn lost(id: &str) -> Reply {
    Reply {
        id: id.to_string(),
        text: "Sorry, something went wrong.".to_string(),
        errors: vec!["the host lost track of the message".to_string()],
        ..Reply::default()
    }
}

/// Runs one message through the pipeline on this thread. Never fails: every
/// problem is in the reply's `errors`. Blocks while plugin code runs; call
/// it from a thread that may block.
///
/// When a call overruns its deadline, the watchdog has another thread
/// finish the message on time, but this thread returns only once the late
/// call has returned: a front-end that must answer on time uses [`answer`].
pub fn handle_message(pipeline: &Arc<Pipeline>, message: InboundMessage) -> Reply {
    let id = message.id.clone();
    let (sender, mut receiver) = oneshot::channel();
    if let Some(run) = MessageRun::start(pipeline, message, ReplyTo::Waiting(sender)) {
        run.drive(0);
    }
    match receiver.try_recv() {
        Ok(answered) => answered.into_reply(),
        Err(_) => receiver
            .blocking_recv()
            .map_or_else(|_| lost(&id), Answered::into_reply),
    }
}

/// Runs one message through the pipeline on the blocking pool and waits
/// for its reply, which comes on time even when a plugin call hangs (the
/// late call is abandoned and reported).
pub async fn answer(pipeline: &Arc<Pipeline>, message: InboundMessage) -> Reply {
    answer_unless_shutting_down(pipeline, message)
        .await
        .into_reply()
}

/// [`answer`], saying whether the message was refused because the host is
/// shutting down.
pub(crate) async fn answer_unless_shutting_down(
    pipeline: &Arc<Pipeline>,
    message: InboundMessage,
) -> Answered<Reply> {
    let id = message.id.clone();
    let (sender, receiver) = oneshot::channel();
    let pipeline_bg = Arc::clone(pipeline);
    pipeline.core.runtime().spawn_blocking(move || {
        if let Some(run) = MessageRun::start(&pipeline_bg, message, ReplyTo::Waiting(sender)) {
            run.drive(0);
        }
    });
    receiver
        .await
        .unwrap_or_else(|_| Answered::Served(lost(&id)))
}

/// Runs several messages on this thread: each is answered in turn, then
/// every evaluator scores all of them at once through its batch form. Like
/// [`handle_message`], this thread is lent to a late call until it returns;
/// [`answer_batch`] returns the replies on time.
pub fn handle_batch(pipeline: &Arc<Pipeline>, messages: Vec<InboundMessage>) -> Vec<Reply> {
    let (sender, mut receiver) = oneshot::channel();
    if let Some(run) = batch::start(pipeline, messages, sender) {
        run.drive(0);
    }
    match receiver.try_recv() {
        Ok(answered) => answered.into_reply(),
        Err(_) => receiver
            .blocking_recv()
            .map(Answered::into_reply)
            .unwrap_or_default(),
    }
}

/// Runs several messages as [`handle_batch`] does, on the blocking pool,
/// and returns the replies when they are ready: on time even when a plugin
/// call hangs.
pub async fn answer_batch(pipeline: &Arc<Pipeline>, messages: Vec<InboundMessage>) -> Vec<Reply> {
    answer_batch_unless_shutting_down(pipeline, messages)
        .await
        .into_reply()
}

/// [`answer_batch`], saying whether the batch was refused because the host
/// is shutting down.
pub(crate) async fn answer_batch_unless_shutting_down(
    pipeline: &Arc<Pipeline>,
    messages: Vec<InboundMessage>,
) -> Answered<Vec<Reply>> {
    let (sender, receiver) = oneshot::channel();
    let pipeline_bg = Arc::clone(pipeline);
    pipeline.core.runtime().spawn_blocking(move || {
        if let Some(run) = batch::start(&pipeline_bg, messages, sender) {
            run.drive(0);
        }
    });
    receiver
        .await
        .unwrap_or_else(|_| Answered::Served(Vec::new()))
}
