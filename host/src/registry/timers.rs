//! Plugin timers: tokio tasks that fire a plugin's timer handler through
//! the admission gate and the plugin's bulkhead, owned by the plugin's
//! generation; a handler past `timer_timeout_ms` is abandoned.

use super::Registry;
use agent_host_plugin_abi::CallControl;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

impl Registry {
    /// Sets (or replaces) a plugin's timer.
    pub fn set_timer(
        self: &Arc<Self>,
        plugin: &str,
        generation: u64,
        timer: u64,
        after_ms: u64,
        every_ms: u64,
    ) {
        let core = Arc::downgrade(self);
        let owner = plugin.to_string();
        let task = self.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            loop {
                let Some(core_now) = core.upgrade() else {
                    return;
                };
                let target = match core_now.plugin(&owner) {
                    Some(p) if p.generation == generation => p,
                    // A generation being reloaded in: not serving yet, wait.
                    Some(p) if p.generation < generation => {
                        drop(core_now);
                        tokio::time::sleep(Duration::from_millis(every_ms.max(1))).await;
                        continue;
                    }
                    _ => return,
                };
                let timeout = Duration::from_millis(core_now.settings.timer_timeout_ms);
                let limit = core_now.settings.max_calls_in_flight;
                // The handler asks the host for its cancellation signal.
                let control = Arc::new(CallControl::with_deadline(crate::watchdog::unix_ms_after(
                    timeout,
                )));
                let control_bg = Arc::clone(&control);
                let fired = tokio::task::spawn_blocking(move || {
                    // A host shutting down fires no more timers.
                    let Some(_admitted) = core_now.admission.enter() else {
                        return Ok(());
                    };
                    let Some(_call) = target
                        .in_flight
                        .try_enter(super::inflight::Entry::Timer(timer), limit)
                    else {
                        return Err(target.instance.refused(format!("timer {timer}"), limit));
                    };
                    crate::current_call::within(&control_bg, || target.instance.on_timer(timer))
                });
                // A timer handler past its deadline is abandoned: the next
                // tick does not wait for it (its bulkhead bounds the pile).
                match tokio::time::timeout(timeout, fired).await {
                    Ok(Ok(Err(error))) => tracing::warn!(plugin = %owner, "{error}"),
                    Err(_) => {
                        control.cancel();
                        if let Some(core) = core.upgrade() {
                            core.fault(
                                &owner,
                                super::faults::FaultEntry::Timer,
                                super::faults::FaultCause::TimedOut,
                                &format_args!(
                                    "plugin '{owner}': timer {timer}: timed out after {} ms \
                                     (abandoned; it keeps its thread until it returns)",
                                    timeout.as_millis()
                                ),
                            );
                        }
                    }
                    Ok(_) => {}
                }
                if every_ms == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
            if let Some(core) = core.upgrade() {
                core.timers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(owner, generation, timer));
            }
        });
        let previous = self
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((plugin.to_string(), generation, timer), task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Cancels a plugin's timer.
    pub fn clear_timer(&self, plugin: &str, generation: u64, timer: u64) {
        let task = self
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(plugin.to_string(), generation, timer));
        if let Some(task) = task {
            task.abort();
        }
    }
}
