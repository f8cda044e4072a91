//! A batch of messages: each is answered as a message is (without its
//! evaluators), one after another, then every evaluator scores all of them
//! in one call through its batch form, each call with
//! `evaluator_timeout_ms` as its deadline.
//!
//! The batch is admitted once, as one piece of work, and carried on by
//! whichever thread finishes its current step:
//! the thread that finishes a message starts the next one, and the thread
//! that finishes the last starts the evaluation. So a late call anywhere in
//! the batch delays the replies by its deadline only, as for one message.

use super::context::view_of;
use super::plan::ServingPlan;
use super::run::{late, lock, MessageRun, ReplyTo, Seen};
use super::{refused, Answered, Evaluations, InboundMessage, Pipeline, Reply};
use crate::plugin::{CallError, MessageRef};
use crate::registry::inflight::Entry;
use crate::registry::Registry;
use crate::watchdog::relay::{Relay, Relayed};
use crate::watchdog::Watched;
use agent_host_plugin_sdk::Evaluation;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// A batch on its way: the messages, the replies so far, and who waits for
/// them all. It holds one entry of the admission gate from its start until
/// it is dropped (its messages run inside it, as one piece of work).
pub(crate) struct Batch {
    pipeline: Arc<Pipeline>,
    core: Arc<Registry>,
    messages: Vec<InboundMessage>,
    /// One per message answered so far, with the context it saw.
    answered: Mutex<Vec<(Reply, Arc<str>)>>,
    waiting: Mutex<Option<oneshot::Sender<Answered<Vec<Reply>>>>>,
}

/// The evaluators of a batch: one job per evaluator of the plan, each
/// scoring every message.
struct BatchEvaluation {
    batch: Arc<Batch>,
    plan: Arc<ServingPlan>,
    contexts: Vec<Arc<str>>,
    started: Instant,
    relay: Relay<Result<Vec<Evaluation>, CallError>>,
    replies: Mutex<Vec<Reply>>,
    seen: Mutex<Seen>,
}

/// Starts a batch whose replies go to `waiting`: returns the run of its
/// first message, for the caller to drive (`None` when there is nothing to
/// drive: no message, or the host is shutting down, and the replies are
/// already sent).
pub(super) fn start(
    pipeline: &Arc<Pipeline>,
    messages: Vec<InboundMessage>,
    waiting: oneshot::Sender<Answered<Vec<Reply>>>,
) -> Option<Arc<MessageRun>> {
    let first = messages.first()?.clone();
    let core = &pipeline.core;
    if !core.admission.enter_detached() {
        let _ = waiting.send(Answered::ShuttingDown(
            messages.iter().map(|m| refused(&m.id)).collect(),
        ));
        return None;
    }
    let batch = Arc::new(Batch {
        pipeline: Arc::clone(pipeline),
        core: Arc::clone(core),
        answered: Mutex::new(Vec::with_capacity(messages.len())),
        messages,
        waiting: Mutex::new(Some(waiting)),
    });
    MessageRun::start(pipeline, first, ReplyTo::Batch(batch, 0))
}

impl Batch {
    /// Message `index` is answered: starts the next message, or, after the
    /// last, scores them all (on this thread) and sends the replies.
    pub(crate) fn answered(
        self: &Arc<Self>,
        index: usize,
        reply: Reply,
        context: Arc<str>,
    ) -> Option<Arc<MessageRun>> {
        lock(&self.answered).push((reply, context));
        match self.messages.get(index + 1) {
            Some(next) => MessageRun::start(
                &self.pipeline,
                next.clone(),
                ReplyTo::Batch(Arc::clone(self), index + 1),
            ),
            None => {
                self.evaluate();
                None
            }
        }
    }

    fn send(&self, replies: Vec<Reply>) {
        if let Some(waiting) = lock(&self.waiting).take() {
            // Nobody waits any more (a client gone): the replies are dropped.
            let _ = waiting.send(Answered::Served(replies));
        }
    }

    /// Every message is answered: the evaluators score them all.
    fn evaluate(self: &Arc<Self>) {
        let (replies, contexts): (Vec<Reply>, Vec<Arc<str>>) =
            std::mem::take(&mut *lock(&self.answered))
                .into_iter()
                .unzip();
        let plan = self.pipeline.serving_plan();
        let evaluation = Arc::new(BatchEvaluation {
            batch: Arc::clone(self),
            relay: Relay::new(plan.evaluators.len(), 0),
            plan,
            contexts,
            started: Instant::now(),
            replies: Mutex::new(replies),
            seen: Mutex::new(Seen::default()),
        });
        let watched: Arc<dyn Watched> = evaluation.clone();
        self.core.watchdog.watch(Arc::downgrade(&watched));
        evaluation.drive(0);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.core.admission.leave();
    }
}

impl BatchEvaluation {
    /// Evaluator number `job` of the plan: its plugin's index and its index.
    fn evaluator(&self, job: usize) -> (usize, u32) {
        self.plan.evaluators[job]
    }

    fn drive(self: &Arc<Self>, driver: u32) {
        let views: Vec<MessageRef<'_>> = self
            .batch
            .messages
            .iter()
            .zip(&self.contexts)
            .map(|(m, c)| view_of(m, c))
            .collect();
        let limit = self.batch.core.settings.max_calls_in_flight;
        let relayed = self.relay.drive(driver, |job, control| {
            let (p, evaluator) = self.evaluator(job);
            let plugin = &self.plan.plugins[p];
            let Some(_call) = plugin
                .in_flight
                .try_enter(Entry::Evaluator(evaluator), limit)
            else {
                let entry = format!(
                    "evaluator '{}' evaluate_batch",
                    plugin.instance.evaluator_name(evaluator)
                );
                return Err(plugin.instance.refused(entry, limit));
            };
            plugin.instance.evaluate_batch(evaluator, &views, control)
        });
        if relayed == Relayed::Finished {
            self.finish();
        }
    }

    fn finish(&self) {
        let core = &self.batch.core;
        let mut replies = std::mem::take(&mut *lock(&self.replies));
        let limit_ms = core.settings.evaluator_timeout_ms;
        for reply in &mut replies {
            reply.evaluations =
                Evaluations::with_names(&self.plan.evaluator_names, self.plan.evaluators.len());
        }
        self.relay.drain(|job, outcome| {
            let (p, evaluator) = self.evaluator(job);
            let plugin = &self.plan.plugins[p];
            let name = &plugin.evaluator_names[evaluator as usize];
            let outcome = outcome.unwrap_or_else(|| {
                let entry = format!("evaluator '{name}' evaluate_batch");
                Err(plugin.instance.timed_out(entry, limit_ms))
            });
            match outcome {
                Ok(evaluations) => {
                    for (reply, evaluation) in replies.iter_mut().zip(evaluations) {
                        reply.evaluations.push_at(job as u32, evaluation);
                    }
                }
                Err(error) => {
                    core.record_error(plugin, &error);
                    for reply in &mut replies {
                        reply.errors.push(error.to_string());
                    }
                }
            }
        });
        let evaluators_us = super::micros(self.started);
        for reply in &mut replies {
            reply.timings.evaluators_us = evaluators_us;
            reply.timings.total_us += evaluators_us;
        }
        self.batch.send(replies);
    }
}

impl Watched for BatchEvaluation {
    fn check(self: Arc<Self>, now_ms: u64) -> bool {
        if self.relay.in_progress().is_none() {
            return false;
        }
        let limit = self.batch.core.settings.evaluator_timeout_ms;
        // Each call holds its place in its plugin's calls in flight itself.
        let next = late(&self.seen, 0, &self.relay, now_ms, |_| limit, |_| ());
        if let Some(next) = next {
            let evaluation = Arc::clone(&self);
            self.batch
                .core
                .runtime()
                .spawn_blocking(move || evaluation.drive(next));
        }
        true
    }
}
