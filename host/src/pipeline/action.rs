//! Phase 3: the chosen action. The sender's permissions and the action's
//! rate limit are checked, then its handler runs, on this thread, with the
//! action's timeout as its deadline, inside a tracing span, with
//! `action:started` / `action:completed` / `action:failed` events and
//! timing metrics.

use super::context::view_of;
use super::run::{lock, MessageRun};
use super::{ActionRef, Reply, NO_ACTION_TEXT};
use crate::registry::faults::{FaultCause, FaultEntry};
use crate::registry::inflight::Entry;
use crate::watchdog::relay::{Relay, Relayed};
use crate::watchdog::{deadline_passed, unix_ms_after};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::{ActionResult, ErrorKind};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What running the handler came to.
pub(crate) enum Outcome {
    Completed(ActionResult),
    Failed(String),
    /// Refused: the plugin's bulkhead was full.
    Refused(String),
    TimedOut,
}

/// The handler phase of one message.
pub(crate) struct HandlerPhase {
    started: Instant,
    /// The action: its plugin's index in the plan, and its index; `None`
    /// when no action answers or the checks stopped it.
    action: Option<(usize, u32)>,
    /// The handler's timeout.
    pub(super) timeout_ms: u64,
    /// No job, or the handler's one.
    pub(super) relay: Relay<Outcome>,
}

/// Runs the handler phase as driver `driver`.
pub(super) fn drive(run: &Arc<MessageRun>, driver: u32) -> Relayed {
    let phase = run.handler.get_or_init(|| begin(run, driver));
    let relayed = phase
        .relay
        .drive(driver, |_, control| call(run, phase, control));
    if relayed == Relayed::Finished {
        finish(run, phase);
    }
    relayed
}

/// The handler's one call, unless the plugin's bulkhead is full.
fn call(run: &MessageRun, phase: &HandlerPhase, control: &CallControl) -> Outcome {
    let Some((p, index)) = phase.action else {
        return Outcome::TimedOut;
    };
    let plugin = &run.plan.plugins[p];
    let limit = run.core.settings.max_calls_in_flight;
    let Some(_call) = plugin.in_flight.try_enter(Entry::Handler(index), limit) else {
        let entry = Entry::Handler(index).describe(&plugin.instance);
        return Outcome::Refused(plugin.instance.refused(entry, limit).to_string());
    };
    let context = run.context.get().map_or("{}", |c| &**c);
    match plugin
        .instance
        .handle(index, view_of(&run.message, context), control)
    {
        Ok(result) => Outcome::Completed(result),
        // The plugin saw the host's cancellation or its deadline and stopped:
        // that is the timeout. A `Cancelled` of its own (an upstream call
        // that was cancelled) is the plugin's error, with its message.
        Err(error)
            if error.kind == ErrorKind::Cancelled
                && (control.is_cancelled() || deadline_passed(control)) =>
        {
            Outcome::TimedOut
        }
        Err(error) => {
            run.core.record_error(plugin, &error);
            Outcome::Failed(error.to_string())
        }
    }
}

/// The host code before the handler: the action, the sender's permissions,
/// the rate limit, the `action:started` event.
fn begin(run: &MessageRun, driver: u32) -> HandlerPhase {
    let started = Instant::now();
    let stopped = |timeout_ms| HandlerPhase {
        started,
        action: None,
        timeout_ms,
        relay: Relay::new(0, driver),
    };
    let chosen = run.validate.get().and_then(|phase| phase.chosen());
    let mut reply = lock(&run.reply);
    let Some((p, index)) = chosen else {
        reply.text = NO_ACTION_TEXT.to_string();
        return stopped(0);
    };
    let (core, message) = (&run.core, &run.message);
    let plugin = &run.plan.plugins[p];
    let spec = &plugin.instance.manifest.actions[index as usize];
    let counters = &plugin.action_metrics[index as usize];
    let (plugin_name, action) = (plugin.name(), spec.name.as_str());
    reply.action = Some(ActionRef {
        plugin: plugin_name.to_string(),
        action: action.to_string(),
    });
    if let Some(refusal) = refusal(run, p, index, &mut reply) {
        reply.errors.push(refusal);
        counters.denied.inc();
        return stopped(0);
    }
    if let Some(limit) = spec.rate_limit {
        if let Err(wait) =
            run.pipeline
                .rate_limiter
                .try_acquire(plugin_name, action, limit, Instant::now())
        {
            reply.text = format!(
                "{action} is busy; try again in {:.1} s.",
                wait.as_secs_f64()
            );
            reply.errors.push(format!(
                "plugin '{plugin_name}': action '{action}' rate limit reached ({} per {} ms)",
                limit.max_requests, limit.window_ms
            ));
            counters.rate_limited.inc();
            return stopped(0);
        }
    }
    let timeout_ms = spec.timeout_ms.unwrap_or(core.settings.action_timeout_ms);
    core.emit_lazy(
        "host",
        "action:started",
        || json!({"plugin": plugin_name, "action": action, "message_id": message.id}),
    );
    HandlerPhase {
        started: Instant::now(),
        action: Some((p, index)),
        timeout_ms,
        relay: Relay::with_deadline(1, driver, unix_ms_after(Duration::from_millis(timeout_ms))),
    }
}

/// The error line when the sender lacks a permission the action needs
/// (and the reply's text says so).
fn refusal(run: &MessageRun, p: usize, index: u32, reply: &mut Reply) -> Option<String> {
    let plugin = &run.plan.plugins[p];
    let spec = &plugin.instance.manifest.actions[index as usize];
    let message = &run.message;
    let missing: Vec<&String> = spec
        .permissions
        .iter()
        .filter(|p| !message.permissions.contains(p))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let list = missing
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    reply.text = format!("You lack the permission {list} needed for {}.", spec.name);
    // The audit line; the count is `agent_host_action_runs_total{outcome="denied"}`.
    tracing::warn!(
        event = "permission_denied",
        sender = %message.sender,
        plugin = %plugin.name(),
        action = %spec.name,
        missing = %list,
        message_id = %message.id,
        "sender '{}' lacks {list} for action '{}'",
        message.sender,
        spec.name
    );
    Some(format!(
        "sender '{}' lacks {list} for action '{}' of plugin '{}'",
        message.sender,
        spec.name,
        plugin.name()
    ))
}

/// The host code after the handler: its outcome into the reply, events and
/// metrics.
fn finish(run: &MessageRun, phase: &HandlerPhase) {
    let mut reply = lock(&run.reply);
    let Some((p, index)) = phase.action else {
        reply.timings.handler_us = super::micros(phase.started);
        return;
    };
    let core = &run.core;
    let message_id = run.message.id.as_str();
    let plugin = &run.plan.plugins[p];
    let counters = &plugin.action_metrics[index as usize];
    let (plugin_name, action) = (plugin.name(), plugin.instance.action_name(index));
    let _span = tracing::info_span!("action", plugin = plugin_name, action).entered();
    let mut outcome = Outcome::TimedOut;
    phase.relay.drain(|_, result| {
        if let Some(result) = result {
            outcome = result;
        }
    });
    let duration = phase.started.elapsed();
    let duration_ms = duration.as_secs_f64() * 1000.0;
    counters.seconds.observe(duration.as_secs_f64());
    plugin.stats.record_run(duration);
    reply.timings.handler_us = super::micros(phase.started);
    let mut timed_out = false;
    let failure = match outcome {
        Outcome::Completed(result) => {
            reply.text = result.text;
            reply.data = result.data;
            // Kept: what the host itself said (`skipped_actions`).
            let host_notes = std::mem::take(&mut reply.metadata);
            reply.metadata = result.metadata;
            reply.metadata.extend(host_notes);
            reply.ok = true;
            counters.completed.inc();
            tracing::debug!(duration_ms, "action completed");
            core.emit_lazy("host", "action:completed", || {
                json!({"plugin": plugin_name, "action": action, "message_id": message_id, "duration_ms": duration_ms})
            });
            return;
        }
        Outcome::Failed(error) | Outcome::Refused(error) => {
            reply.text = format!("Sorry, {action} failed.");
            counters.failed.inc();
            error
        }
        Outcome::TimedOut => {
            reply.text = format!("Sorry, {action} took too long.");
            counters.timed_out.inc();
            timed_out = true;
            plugin
                .instance
                .timed_out(
                    Entry::Handler(index).describe(&plugin.instance),
                    phase.timeout_ms,
                )
                .to_string()
        }
    };
    if timed_out {
        core.fault(
            plugin_name,
            FaultEntry::Handler,
            FaultCause::TimedOut,
            &failure,
        );
    } else {
        tracing::warn!(duration_ms, "{failure}");
    }
    core.emit_lazy("host", "action:failed", || {
        json!({"plugin": plugin_name, "action": action, "message_id": message_id, "duration_ms": duration_ms, "error": failure})
    });
    reply.errors.push(failure);
}
