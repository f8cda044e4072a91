//! A batch of messages: each is answered as a message is (without its
//! evaluators), then every evaluator scores all of them in one call through
//! its batch form, each call with `evaluator_timeout_ms` as its deadline.

use super::context::view_of;
use super::plan::ServingPlan;
use super::run::{late, lock, MessageRun, Seen};
use super::{lost, refused, EvaluationRecord, InboundMessage, Reply};
use crate::plugin::{CallError, MessageRef};
use crate::registry::inflight::Entry;
use crate::registry::Registry;
use crate::watchdog::relay::{Relay, Relayed};
use crate::watchdog::Watched;
use agent_host_plugin_sdk::Evaluation;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// The evaluators of a batch: one job per evaluator of the plan, each
/// scoring every message.
struct BatchEvaluation {
    core: Arc<Registry>,
    plan: Arc<ServingPlan>,
    messages: Vec<InboundMessage>,
    contexts: Vec<Arc<str>>,
    started: Instant,
    relay: Relay<Result<Vec<Evaluation>, CallError>>,
    replies: Mutex<Vec<Reply>>,
    seen: Mutex<Seen>,
    waiting: Mutex<Option<oneshot::Sender<Vec<Reply>>>>,
}

/// Answers each message, then scores them all.
pub(super) fn handle_batch(core: &Arc<Registry>, messages: Vec<InboundMessage>) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(messages.len());
    let mut contexts = Vec::with_capacity(messages.len());
    let mut answered = Vec::with_capacity(messages.len());
    for (position, message) in messages.iter().enumerate() {
        let id = message.id.clone();
        let (sender, mut receiver) = oneshot::channel();
        let Some(run) = MessageRun::start(core, message.clone(), false, sender) else {
            // The host shuts down: the rest are refused, unscored.
            replies.extend(messages[position..].iter().map(|m| refused(&m.id)));
            return replies;
        };
        run.drive(0);
        let reply = match receiver.try_recv() {
            Ok(reply) => reply,
            Err(_) => receiver.blocking_recv().unwrap_or_else(|_| lost(&id)),
        };
        contexts.push(run.context());
        replies.push(reply);
        answered.push(message.clone());
    }
    let (sender, mut receiver) = oneshot::channel();
    let plan = core.serving_plan();
    let batch = Arc::new(BatchEvaluation {
        core: Arc::clone(core),
        relay: Relay::new(plan.evaluators.len(), 0),
        plan,
        messages: answered,
        contexts,
        started: Instant::now(),
        replies: Mutex::new(replies),
        seen: Mutex::new(Seen::default()),
        waiting: Mutex::new(Some(sender)),
    });
    let watched: Arc<dyn Watched> = batch.clone();
    core.watchdog.watch(Arc::downgrade(&watched));
    batch.drive(0);
    drop(batch);
    match receiver.try_recv() {
        Ok(replies) => replies,
        Err(_) => receiver.blocking_recv().unwrap_or_default(),
    }
}

impl BatchEvaluation {
    /// Evaluator number `job` of the plan: its plugin's index and its index.
    fn evaluator(&self, job: usize) -> (usize, u32) {
        self.plan.evaluators[job]
    }

    fn drive(self: &Arc<Self>, driver: u32) {
        let views: Vec<MessageRef<'_>> = self
            .messages
            .iter()
            .zip(&self.contexts)
            .map(|(m, c)| view_of(m, c))
            .collect();
        let limit = self.core.settings.max_calls_in_flight;
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
        let mut replies = std::mem::take(&mut *lock(&self.replies));
        let limit_ms = self.core.settings.evaluator_timeout_ms;
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
                        reply.evaluations.push(EvaluationRecord {
                            plugin: Arc::clone(&plugin.shared_name),
                            evaluator: Arc::clone(name),
                            evaluation,
                        });
                    }
                }
                Err(error) => {
                    self.core.record_error(plugin, &error);
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
        if let Some(waiting) = lock(&self.waiting).take() {
            let _ = waiting.send(replies);
        }
    }
}

impl Watched for BatchEvaluation {
    fn check(self: Arc<Self>, now_ms: u64) -> bool {
        if self.relay.in_progress().is_none() {
            return false;
        }
        let limit = self.core.settings.evaluator_timeout_ms;
        // Each call holds its place in its plugin's calls in flight itself.
        let next = late(&self.seen, 0, &self.relay, now_ms, |_| limit, |_| ());
        if let Some(next) = next {
            let batch = Arc::clone(&self);
            self.core
                .runtime()
                .spawn_blocking(move || batch.drive(next));
        }
        true
    }
}
