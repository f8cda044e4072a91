//! The message pipeline: from one inbound message to one reply.
//!
//! 1. compose the state from every provider: cached values while fresh
//!    (`cache.ttl_ms`), stale ones at once with a background refresh
//!    (`stale_while_revalidate`), pushed values from subscriptions; each
//!    provider isolated (a failure is reported and left out);
//! 2. ask the `validate` of every action whose triggers match the message
//!    (all of a plugin's actions that declare none; validate always gates
//!    the handler);
//! 3. pick the highest priority valid action (ties: the plugin earlier in
//!    load order, then the action earlier in its plugin);
//! 4. check the sender holds the action's permissions;
//! 5. check the action's rate limit;
//! 6. run its handler on the blocking pool with its timeout and a
//!    cancellation signal, inside a tracing span, with `action:started` /
//!    `action:completed` / `action:failed` events and timing metrics;
//! 7. run every evaluator on the message (the batch form for a batch);
//! 8. answer with the handler's result, the evaluations and the timings.
//!
//! First, the lazy plugins the message needs are started (see
//! `registry/lazy.rs`); their start failures lead the reply's `errors`.
//! Plugins that are quarantined take no part. A message that arrives once
//! the host shuts down is answered with [`SHUTTING_DOWN`] and reaches no
//! plugin. Nothing here fails: every
//! problem becomes an entry in the reply's `errors`, naming the plugin and
//! the entry point.

mod action;
pub(crate) mod cache;
mod choose;
mod context;
mod message;
pub(crate) mod plan;
pub(crate) mod ratelimit;
mod state;
#[cfg(test)]
mod tests;
pub(crate) mod triggers;

pub use message::{
    ActionRef, EvaluationRecord, InboundMessage, Reply, NO_ACTION_TEXT, SHUTTING_DOWN,
};

use crate::plugin::MessageRef;
use crate::registry::Registry;
use action::run_action;
use agent_host_plugin_abi::CallControl;
use choose::choose_action;
use context::{context_json, view_of};
use plan::ServingPlan;
use state::compose_state;
use std::sync::Arc;
use std::time::Instant;

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Steps 1 to 6: everything but the evaluators. Returns the reply so far
/// and the context JSON the evaluators will see.
fn answer(core: &Arc<Registry>, plan: &ServingPlan, message: &InboundMessage) -> (Reply, String) {
    let started = Instant::now();
    let mut reply = Reply {
        id: message.id.clone(),
        ..Reply::default()
    };
    let step = Instant::now();
    let state = compose_state(core, plan, message, &mut reply.errors);
    reply.timings.providers_us = micros(step);
    let context = context_json(message, Some(&state));
    let view = view_of(message, &context);

    let step = Instant::now();
    let chosen = choose_action(core, plan, view, &mut reply.errors);
    reply.timings.validate_us = micros(step);

    let step = Instant::now();
    match chosen {
        None => reply.text = NO_ACTION_TEXT.to_string(),
        Some((plugin, index)) => run_action(core, plugin, index, message, &context, &mut reply),
    }
    reply.timings.handler_us = micros(step);
    reply.timings.total_us = micros(started);
    (reply, context)
}

/// The reply to a message that arrives while the host shuts down: no plugin
/// sees it.
fn refused(message: &InboundMessage) -> Reply {
    Reply {
        id: message.id.clone(),
        text: SHUTTING_DOWN.to_string(),
        errors: vec![SHUTTING_DOWN.to_string()],
        ..Reply::default()
    }
}

fn finish(core: &Registry, reply: &mut Reply, started: Instant) {
    reply.timings.total_us = micros(started);
    core.metrics.messages.inc();
    core.metrics
        .message_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Runs one message through the pipeline. Never fails: every problem is in
/// the reply's `errors`. Blocks while plugin code runs; call it from a
/// thread that may block.
pub fn handle_message(core: &Arc<Registry>, message: &InboundMessage) -> Reply {
    let span = tracing::info_span!("message", id = %message.id, sender = %message.sender);
    let _entered = span.enter();
    let Some(_admitted) = core.admission.enter() else {
        return refused(message);
    };
    let started = Instant::now();
    let start_failures = core.start_pending_for_message(&message.text);
    let plan = core.serving_plan();
    let (mut reply, context) = answer(core, &plan, message);
    reply.errors.splice(0..0, start_failures);
    let view = view_of(message, &context);
    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plan.plugins {
        plugin.instance.evaluate_each(
            &plugin.evaluator_indices,
            view,
            &control,
            &mut |index, outcome| match outcome {
                Ok(evaluation) => reply.evaluations.push(EvaluationRecord {
                    plugin: Arc::clone(&plugin.shared_name),
                    evaluator: Arc::clone(&plugin.evaluator_names[index as usize]),
                    evaluation,
                }),
                Err(error) => {
                    core.record_error(plugin, &error);
                    reply.errors.push(error.to_string());
                }
            },
        );
    }
    reply.timings.evaluators_us = micros(step);
    finish(core, &mut reply, started);
    reply
}

/// Runs several messages: each is answered in turn, then every evaluator
/// scores all of them at once through its batch form.
pub fn handle_batch(core: &Arc<Registry>, messages: &[InboundMessage]) -> Vec<Reply> {
    let Some(_admitted) = core.admission.enter() else {
        return messages.iter().map(refused).collect();
    };
    let started = Instant::now();
    let start_failures: Vec<Vec<String>> = messages
        .iter()
        .map(|m| core.start_pending_for_message(&m.text))
        .collect();
    let plan = core.serving_plan();
    let (mut replies, contexts): (Vec<Reply>, Vec<String>) =
        messages.iter().map(|m| answer(core, &plan, m)).unzip();
    for (reply, failures) in replies.iter_mut().zip(start_failures) {
        reply.errors.splice(0..0, failures);
    }
    let views: Vec<MessageRef<'_>> = messages
        .iter()
        .zip(&contexts)
        .map(|(m, c)| view_of(m, c))
        .collect();
    let step = Instant::now();
    let control = CallControl::default();
    for plugin in &plan.plugins {
        for (index, name) in plugin.evaluator_names.iter().enumerate() {
            match plugin
                .instance
                .evaluate_batch(index as u32, &views, &control)
            {
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
                    core.record_error(plugin, &error);
                    for reply in &mut replies {
                        reply.errors.push(error.to_string());
                    }
                }
            }
        }
    }
    let evaluators_us = micros(step);
    for reply in &mut replies {
        reply.timings.evaluators_us = evaluators_us;
        finish(core, reply, started);
    }
    replies
}
