//! Deadlines on a plugin's life: its `on_load` and `on_unload`, the start
//! and stop of its services, its providers' subscriptions, and the export
//! and import of its state on a reload. Each step has `[host]
//! lifecycle_timeout_ms`, so no plugin can keep the agent from starting,
//! reloading or exiting.
//!
//! A step runs on a thread of its own, as that thread's current call
//! (`current_call.rs`) under a [`CallControl`] with the step's deadline,
//! while the caller waits for it at most that long; a step of a lazy
//! plugin's start runs as part of that start (`lazy.rs`). A step that is
//! late:
//!
//! * is cancelled: its control's flag is raised. An in-process plugin sees
//!   it when it asks (`Runtime::is_cancelled`); an isolated plugin's call
//!   sees it within a few milliseconds, and the host kills its worker
//!   process (`isolation/engine/process.rs`), as for any call past its deadline;
//! * when the generation was being started or stopped ([`IfLate::GiveUp`]),
//!   ends that generation: the host gives up on it (an isolated plugin's
//!   worker is not restarted) and calls no step of its life again. When it
//!   serves on ([`IfLate::ServeOn`]: the export of the serving generation's
//!   state, its services started again after a failed reload), an isolated
//!   plugin's worker is restarted as after a crash;
//! * if it has not returned [`AFTER_CANCEL`] later, leaves its thread in the
//!   plugin (no thread can be stopped from outside): the log says so, the
//!   step stays among the plugin's calls in flight until it returns, and no
//!   other step of that generation's life is called meanwhile.
//!
//! The caller learns which in the error: the step's entry point and a
//! message that names the deadline and what became of the call.

use super::inflight::Entry;
pub use super::inflight::Step;
use super::{lazy, LivePlugin, Registry};
use crate::current_call;
use crate::plugin::{CallError, PluginInstance};
use crate::watchdog::{deadline_passed, unix_ms_after};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::ErrorKind;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the host waits, once it cancelled a late step, for the step to
/// come back: a worker is killed within milliseconds, and an in-process
/// plugin that watches its cancellation returns; one that does not has a
/// thread left in it.
pub(crate) const AFTER_CANCEL: Duration = Duration::from_millis(500);

/// What a missed deadline means for the generation whose step it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfLate {
    /// It was being started or stopped: the host gives up on it.
    GiveUp,
    /// It serves on: an isolated plugin's killed worker is restarted.
    ServeOn,
}

impl Registry {
    /// Runs one step of `plugin`'s life (`call`) within the lifecycle
    /// deadline; see the module's documentation for a late step.
    pub(crate) fn run_step<T: Send + 'static>(
        &self,
        plugin: &Arc<LivePlugin>,
        step: Step,
        if_late: IfLate,
        call: impl FnOnce(&PluginInstance) -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        let instance = &plugin.instance;
        let refuse = |why: String| {
            Err(instance.host_error(step.describe(instance), ErrorKind::Unavailable, why))
        };
        if plugin.is_given_up() {
            return refuse(
                "not called: an earlier step of its life missed its deadline and the host \
                 gave up on this generation"
                    .to_string(),
            );
        }
        if let Some((earlier, running)) =
            plugin
                .in_flight
                .calls()
                .into_iter()
                .find_map(|(entry, running)| match entry {
                    Entry::Lifecycle(earlier) => Some((earlier, running)),
                    _ => None,
                })
        {
            return refuse(format!(
                "not called: its {} is still running, {} ms after it started, past its deadline",
                earlier.describe(instance),
                running.as_millis()
            ));
        }
        let limit_ms = self.settings.lifecycle_timeout_ms;
        let limit = Duration::from_millis(limit_ms);
        let control = Arc::new(CallControl::with_deadline(unix_ms_after(limit)));
        let worker = instance.placement().worker_status().and_then(|w| w.pid);
        let (sender, receiver) = sync_channel(1);
        let held = lazy::start_held_here();
        let in_flight = plugin.in_flight.enter(Entry::Lifecycle(step));
        let (target, control_bg) = (Arc::clone(plugin), Arc::clone(&control));
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name(format!("life-{}", plugin.name()))
            .spawn(move || {
                let outcome = lazy::as_part_of_start(held, || {
                    current_call::within(&control_bg, || call(&target.instance))
                });
                let took = started.elapsed();
                if took > limit + AFTER_CANCEL {
                    tracing::warn!(
                        plugin = target.name(),
                        "plugin '{}': {} returned at last, {} ms after it started (its deadline \
                         was {} ms)",
                        target.name(),
                        step.describe(&target.instance),
                        took.as_millis(),
                        limit.as_millis()
                    );
                }
                // Out of the calls in flight before the caller hears of it,
                // so that its next step finds none of this one.
                drop(in_flight);
                let _ = sender.send(outcome);
            });
        if let Err(error) = spawned {
            return refuse(format!("not called: no thread to run it on: {error}"));
        }
        // A step that gives up by itself once its deadline has passed (it
        // sees the deadline too) is late all the same.
        let gave_up_by_itself = match receiver.recv_timeout(limit) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if !deadline_passed(&control) => return Err(error),
            Ok(Err(_)) => true,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(instance.host_error(
                    step.describe(instance),
                    ErrorKind::Failed,
                    "the thread that ran it ended without an answer",
                ))
            }
            Err(RecvTimeoutError::Timeout) => false,
        };
        if if_late == IfLate::GiveUp {
            plugin.given_up.store(true, Ordering::Release);
            instance.give_up();
        }
        control.cancel();
        let returned = gave_up_by_itself || receiver.recv_timeout(AFTER_CANCEL).is_ok();
        let fate = match (worker, gave_up_by_itself, returned, if_late) {
            (_, true, _, _) | (None, false, true, _) => "it returned once cancelled".to_string(),
            (Some(pid), false, true, IfLate::GiveUp) => {
                format!("the host killed its worker process (pid {pid})")
            }
            (Some(pid), false, true, IfLate::ServeOn) => format!(
                "the host killed its worker process (pid {pid}), which is restarted as after \
                 a crash"
            ),
            (_, _, false, _) => "a thread is left running in the plugin".to_string(),
        };
        let error = instance.host_error(
            step.describe(instance),
            ErrorKind::Cancelled,
            format!("did not return within {limit_ms} ms ([host] lifecycle_timeout_ms); {fate}"),
        );
        // Counted here; the caller says it (a load's failure, a reload's).
        self.count_fault(
            plugin.name(),
            super::faults::FaultEntry::Lifecycle,
            super::faults::FaultCause::TimedOut,
        );
        if !returned {
            tracing::warn!(
                plugin = plugin.name(),
                "{error}: the host went on without it{}",
                match if_late {
                    IfLate::GiveUp => " and calls into this generation no more",
                    IfLate::ServeOn => "",
                }
            );
        }
        Err(error)
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
