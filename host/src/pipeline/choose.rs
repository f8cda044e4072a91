//! Phase 2: the `validate` of every action whose triggers match the
//! message (`triggers.rs`), each plugin's in one call with
//! `validate_timeout_ms` as its deadline; then the highest priority valid
//! action (ties: the earlier plugin in load order, then the earlier
//! action in its plugin). When no action answers, the reply's metadata
//! names the plugins that could not take part and why
//! (`not_taking_part`: a validate that failed or timed out, a quarantine,
//! a file that failed to load), worked out only then.

use super::context::view_of;
use super::plan::ServingPlan;
use super::rounds::Rounds;
use super::run::{lock, MessageRun};
use crate::plugin::CallError;
use crate::registry::inflight::{Entry, InFlightCall};
use crate::watchdog::relay::{Relay, Relayed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one plugin's actions said: its best valid action the sender may
/// run (priority, index), and the rarer outcomes, boxed so that each job's
/// slot in the relay stays small (at N = 1000 the slots of one message are
/// written and read once each, and their size shows).
#[derive(Default)]
pub(crate) struct Validated {
    best: Option<(i32, u32)>,
    rest: Option<Box<NotChosen>>,
}

/// The valid actions the sender may not run (priority, index), and the
/// errors.
#[derive(Default)]
struct NotChosen {
    denied: Vec<(i32, u32)>,
    errors: Vec<CallError>,
}

impl Validated {
    fn rest(&mut self) -> &mut NotChosen {
        self.rest.get_or_insert_with(Box::default)
    }
}

/// The validate phase of one message.
pub(crate) struct ValidatePhase {
    started: Instant,
    /// One job per serving plugin.
    pub(super) relay: Relay<Validated, InFlightCall>,
    /// The chosen action: its plugin's index in the plan, and its index.
    chosen: Mutex<Option<(usize, u32)>>,
    /// The parts of this message sent ahead to plugins in workers.
    pub(super) rounds: Rounds,
}

impl ValidatePhase {
    /// What an abandoned job holds: a place in its plugin's calls in
    /// flight, until the call returns.
    pub(super) fn hold(&self, plan: &ServingPlan, job: usize) -> InFlightCall {
        plan.plugins[job].in_flight.enter(Entry::Validate)
    }

    /// The action chosen, once the phase is over.
    pub(super) fn chosen(&self) -> Option<(usize, u32)> {
        *lock(&self.chosen)
    }
}

/// Runs the validate phase as driver `driver`.
pub(super) fn drive(run: &Arc<MessageRun>, driver: u32) -> Relayed {
    let context = run.context.get().map_or("{}", |c| &**c);
    let view = view_of(&run.message, context);
    let limit = run.core.settings.max_calls_in_flight;
    let matched = run.plan.triggers.matching(view.text);
    let phase = run.validate.get_or_init(|| ValidatePhase {
        started: Instant::now(),
        relay: Relay::new(run.plan.plugins.len(), driver),
        chosen: Mutex::new(None),
        rounds: Rounds::begin(run, view, &matched),
    });
    let relayed = phase.relay.drive(driver, |job, control| {
        run.plan.warm_after(job);
        let plugin = &run.plan.plugins[job];
        let mut validated = Validated::default();
        let asked = matched.actions(job).unwrap_or(&plugin.action_indices);
        if asked.is_empty() {
            return validated;
        }
        if plugin.in_flight.is_full(limit) {
            validated
                .rest()
                .errors
                .push(plugin.instance.refused("actions' validate", limit));
            return validated;
        }
        let actions = &plugin.instance.manifest.actions;
        let held = &run.message.permissions;
        let mut answer = |index: u32, outcome| match outcome {
            Ok(true) => {
                let spec = &actions[index as usize];
                let priority = spec.priority;
                if !spec.permissions.iter().all(|p| held.contains(p)) {
                    validated.rest().denied.push((priority, index));
                } else if validated.best.is_none_or(|(best, _)| priority > best) {
                    validated.best = Some((priority, index));
                }
            }
            Ok(false) => {}
            Err(error) => validated.rest().errors.push(error),
        };
        let cancelled = || control.is_cancelled();
        let from_round = phase.rounds.with(job, |round| {
            plugin
                .instance
                .round_validated(round, asked, &cancelled, &mut answer)
        });
        // No round, or one whose worker died before answering: the
        // validates are asked call by call, of the worker that replaces it.
        if from_round != Some(true) {
            plugin.instance.validate_actions(asked, view, answer);
        }
        validated
    });
    if relayed == Relayed::Finished {
        finish(run, phase);
    }
    relayed
}

/// Chooses the highest-priority valid action the sender may run. Valid
/// actions of a higher priority that the sender may not run are skipped and
/// listed in the reply's metadata (`skipped_actions`); when the sender may
/// run none, the highest denied one is chosen, so the reply says which
/// permission is missing.
fn finish(run: &MessageRun, phase: &ValidatePhase) {
    let mut reply = lock(&run.reply);
    let mut chosen: Option<(i32, usize, u32)> = None;
    let mut denied: Vec<(i32, usize, u32)> = Vec::new();
    let limit_ms = run.core.settings.validate_timeout_ms;
    // The plugins whose validate failed, and why (only on that rare path).
    let mut failed: Vec<(usize, String)> = Vec::new();
    phase.relay.drain(|job, validated| {
        let plugin = &run.plan.plugins[job];
        let Some(validated) = validated else {
            let error = plugin.instance.timed_out("actions' validate", limit_ms);
            run.core.record_error(plugin, &error);
            reply.errors.push(error.to_string());
            failed.push((job, format!("validate timed out after {limit_ms} ms")));
            return;
        };
        if let Some((priority, index)) = validated.best {
            if chosen.is_none_or(|(best, _, _)| priority > best) {
                chosen = Some((priority, job, index));
            }
        }
        let Some(rest) = validated.rest else {
            return;
        };
        for error in &rest.errors {
            run.core.record_error(plugin, error);
            reply.errors.push(error.to_string());
            failed.push((job, format!("{}: {}", error.entry, error.message)));
        }
        denied.extend(
            rest.denied
                .iter()
                .map(|&(priority, index)| (priority, job, index)),
        );
    });
    if !denied.is_empty() {
        // Highest priority first; ties in load order, then action order.
        denied.sort_by_key(|&(priority, job, index)| (std::cmp::Reverse(priority), job, index));
        let skipped: Vec<_> = match chosen {
            Some((best, _, _)) => denied.iter().filter(|d| d.0 > best).collect(),
            None => denied.iter().collect(),
        };
        if !skipped.is_empty() {
            reply.metadata.insert(
                "skipped_actions".to_string(),
                skipped
                    .iter()
                    .map(|&&(_, job, index)| skipped_action(run, job, index))
                    .collect(),
            );
        }
        if chosen.is_none() {
            chosen = denied.first().copied();
        }
    }
    if chosen.is_none() {
        // Nothing answered: say which plugins could not take part, and why.
        let mut absent: Vec<serde_json::Value> = failed
            .iter()
            .map(|(job, reason)| not_taking_part(run.plan.plugins[*job].name(), reason))
            .collect();
        for plugin in run.core.plugins().iter().filter(|p| p.is_quarantined()) {
            if plugin.instance.manifest.actions.is_empty() {
                continue;
            }
            reply.errors.push(format!(
                "plugin '{}' is quarantined after repeated panics: its actions were not asked",
                plugin.name()
            ));
            absent.push(not_taking_part(
                plugin.name(),
                "quarantined after repeated panics: its actions were not asked",
            ));
        }
        for load in run.core.failed_loads() {
            let who = load
                .plugin
                .unwrap_or_else(|| load.file.display().to_string());
            absent.push(not_taking_part(
                &who,
                &format!("failed to load: {}", load.reason),
            ));
        }
        if !absent.is_empty() {
            reply
                .metadata
                .insert("not_taking_part".to_string(), absent.into());
        }
    }
    *lock(&phase.chosen) = chosen.map(|(_, job, index)| (job, index));
    reply.timings.validate_us = super::micros(phase.started);
}

/// A plugin that could not take part in a message no action answered, and
/// why, for the reply's metadata (`not_taking_part`).
fn not_taking_part(plugin: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({"plugin": plugin, "reason": reason})
}

/// A valid action the sender may not run, for the reply's metadata.
fn skipped_action(run: &MessageRun, job: usize, index: u32) -> serde_json::Value {
    let plugin = &run.plan.plugins[job];
    let spec = &plugin.instance.manifest.actions[index as usize];
    let missing: Vec<&String> = spec
        .permissions
        .iter()
        .filter(|p| !run.message.permissions.contains(p))
        .collect();
    serde_json::json!({
        "plugin": plugin.name(),
        "action": spec.name,
        "reason": format!("the sender lacks {}", missing.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ")),
    })
}
