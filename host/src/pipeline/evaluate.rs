//! Phase 4: every evaluator scores the message, each with
//! `evaluator_timeout_ms` as its deadline.

use super::context::view_of;
use super::plan::ServingPlan;
use super::run::{lock, MessageRun};
use super::Evaluations;
use crate::plugin::CallError;
use crate::registry::inflight::{Entry, InFlightCall};
use crate::watchdog::relay::{Relay, Relayed};
use agent_host_plugin_sdk::Evaluation;
use std::sync::Arc;
use std::time::Instant;

/// The evaluators phase of one message.
pub(crate) struct EvaluatorsPhase {
    started: Instant,
    /// One job per evaluator of the plan. An error is boxed so that each
    /// job's slot stays the size of a verdict.
    pub(super) relay: Relay<Result<Evaluation, Box<CallError>>, InFlightCall>,
}

impl EvaluatorsPhase {
    /// What an abandoned job holds: a place in its plugin's calls in
    /// flight, until the call returns.
    pub(super) fn hold(&self, plan: &ServingPlan, job: usize) -> InFlightCall {
        let (p, evaluator) = plan.evaluators[job];
        plan.plugins[p].in_flight.enter(Entry::Evaluator(evaluator))
    }
}

/// Runs the evaluators phase as driver `driver`.
pub(super) fn drive(run: &Arc<MessageRun>, driver: u32) -> Relayed {
    let phase = run.evaluators.get_or_init(|| EvaluatorsPhase {
        started: Instant::now(),
        relay: Relay::new(run.plan.evaluators.len(), driver),
    });
    let context = run.context.get().map_or("{}", |c| &**c);
    let view = view_of(&run.message, context);
    let limit = run.core.settings.max_calls_in_flight;
    let relayed = phase.relay.drive(driver, |job, control| {
        let (p, evaluator) = run.plan.evaluators[job];
        if job == 0 || run.plan.evaluators[job - 1].0 != p {
            // A plugin's first evaluator: the plugins after it are warmed
            // once, not once per evaluator.
            run.plan.warm_after(p);
        }
        let plugin = &run.plan.plugins[p];
        if plugin.in_flight.is_full(limit) {
            let entry = Entry::Evaluator(evaluator).describe(&plugin.instance);
            return Err(Box::new(plugin.instance.refused(entry, limit)));
        }
        let cancelled = || control.is_cancelled();
        let rounds = run.validate.get().map(|v| &v.rounds);
        // `None` without a round, or when its worker died before answering.
        let from_round = rounds.and_then(|rounds| {
            rounds
                .with(p, |round| {
                    // Where the evaluator stands in what the round asked for.
                    let position = plugin
                        .evaluator_indices
                        .iter()
                        .position(|&e| e == evaluator)
                        .unwrap_or(evaluator as usize);
                    plugin
                        .instance
                        .round_evaluation(round, position, evaluator, &cancelled)
                })
                .flatten()
        });
        from_round
            .unwrap_or_else(|| plugin.instance.evaluate(evaluator, view, control))
            .map_err(Box::new)
    });
    if relayed == Relayed::Finished {
        finish(run, phase);
    }
    relayed
}

fn finish(run: &MessageRun, phase: &EvaluatorsPhase) {
    let mut reply = lock(&run.reply);
    let limit_ms = run.core.settings.evaluator_timeout_ms;
    let plan = &run.plan;
    reply.evaluations = Evaluations::with_names(&plan.evaluator_names, plan.evaluators.len());
    phase.relay.drain(|job, outcome| {
        let (p, evaluator) = run.plan.evaluators[job];
        let plugin = &run.plan.plugins[p];
        let outcome = outcome.unwrap_or_else(|| {
            let entry = Entry::Evaluator(evaluator).describe(&plugin.instance);
            Err(Box::new(plugin.instance.timed_out(entry, limit_ms)))
        });
        match outcome {
            // The job's number is the evaluator's place in the plan's names.
            Ok(evaluation) => reply.evaluations.push_at(job as u32, evaluation),
            Err(error) => {
                run.core.record_error(plugin, &error);
                reply.errors.push(error.to_string());
            }
        }
    });
    reply.timings.evaluators_us = super::micros(phase.started);
}
