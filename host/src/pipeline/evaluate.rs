//! Phase 4: every evaluator scores the message, each plugin's in one call
//! with `evaluator_timeout_ms` as its deadline.

use super::context::view_of;
use super::plan::ServingPlan;
use super::run::{lock, MessageRun};
use super::Evaluations;
use crate::plugin::CallError;
use crate::registry::inflight::{Entry, InFlightCall};
use crate::watchdog::relay::{Relay, Relayed};
use agent_host_plugin_sdk::Evaluation;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;

/// One plugin's verdicts, in the order of its evaluators; an error is
/// boxed so that each verdict stays the size of an evaluation, and the
/// two evaluators a plugin usually has fit in its job's slot.
pub(crate) type Verdicts = SmallVec<[Result<Evaluation, Box<CallError>>; 2]>;

/// The evaluators phase of one message.
pub(crate) struct EvaluatorsPhase {
    started: Instant,
    /// One job per plugin with evaluators (`ServingPlan::evaluating`).
    pub(super) relay: Relay<Verdicts, InFlightCall>,
}

impl EvaluatorsPhase {
    /// What an abandoned job holds: a place in its plugin's calls in
    /// flight, until the call returns.
    pub(super) fn hold(&self, plan: &ServingPlan, job: usize) -> InFlightCall {
        let (p, _) = plan.evaluating[job];
        plan.plugins[p].in_flight.enter(Entry::Evaluators)
    }
}

/// Runs the evaluators phase as driver `driver`.
pub(super) fn drive(run: &Arc<MessageRun>, driver: u32) -> Relayed {
    let phase = run.evaluators.get_or_init(|| EvaluatorsPhase {
        started: Instant::now(),
        relay: Relay::new(run.plan.evaluating.len(), driver),
    });
    let context = run.context.get().map_or("{}", |c| &**c);
    let view = view_of(&run.message, context);
    let limit = run.core.settings.max_calls_in_flight;
    let relayed = phase.relay.drive(driver, |job, control| {
        let (p, _) = run.plan.evaluating[job];
        let plugin = &run.plan.plugins[p];
        let evaluators = &plugin.evaluator_indices;
        let mut verdicts = Verdicts::with_capacity(evaluators.len());
        if plugin.in_flight.is_full(limit) {
            let error = plugin
                .instance
                .refused(Entry::Evaluators.describe(&plugin.instance), limit);
            verdicts.extend(evaluators.iter().map(|_| Err(Box::new(error.clone()))));
            return verdicts;
        }
        let cancelled = || control.is_cancelled();
        let rounds = run.validate.get().map(|v| &v.rounds);
        let from_round = rounds.and_then(|rounds| {
            rounds.with(p, |round| {
                for (position, &evaluator) in evaluators.iter().enumerate() {
                    let verdict = plugin
                        .instance
                        .round_evaluation(round, position, evaluator, &cancelled);
                    verdicts.push(verdict.map_err(Box::new));
                }
            })
        });
        if from_round.is_none() {
            plugin
                .instance
                .evaluate_each(evaluators, view, control, &mut |_, verdict| {
                    verdicts.push(verdict.map_err(Box::new))
                });
        }
        verdicts
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
    phase.relay.drain(|job, verdicts| {
        let (p, first) = plan.evaluating[job];
        let plugin = &plan.plugins[p];
        let Some(verdicts) = verdicts else {
            // Late: every evaluator of the plugin missed the deadline of
            // the one call that asked them all.
            for &evaluator in &plugin.evaluator_indices {
                let entry = Entry::Evaluator(evaluator).describe(&plugin.instance);
                let error = plugin.instance.timed_out(entry, limit_ms);
                run.core.record_error(plugin, &error);
                reply.errors.push(error.to_string());
            }
            return;
        };
        for (position, verdict) in verdicts.into_iter().enumerate() {
            match verdict {
                // The verdict's place in the plan's names table.
                Ok(evaluation) => reply
                    .evaluations
                    .push_at((first + position) as u32, evaluation),
                Err(error) => {
                    run.core.record_error(plugin, &error);
                    reply.errors.push(error.to_string());
                }
            }
        }
    });
    reply.timings.evaluators_us = super::micros(phase.started);
}
