//! The one funnel of plugin faults: a deadline missed (in any entry point,
//! in process or in a worker), a panic, a worker's crash, restart or
//! quarantine, a file that failed to load, an event cascade cut at its
//! bound. Each is counted in `agent_host_plugin_faults_total{plugin, entry,
//! cause}` and in the plugin's stats, and said in the log once
//! (`fault_log.rs`: the repeats within a window are counted, and the next
//! line, or the summary every window, says how many).

use super::Registry;
use crate::fault_log::FAULT_LOG_WINDOW;
use crate::plugin::CallError;
use crate::plugin_stats::Counted;
use agent_host_plugin_sdk::ErrorKind;
use std::fmt::Display;
use std::sync::Weak;
use std::time::Instant;

/// The entry point a fault happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultEntry {
    /// A provider's `get`.
    Provider,
    /// An action's `validate`.
    Validate,
    /// An action's handler.
    Handler,
    /// An evaluator.
    Evaluator,
    /// A service method.
    Service,
    /// An event handler, or the emit of an event (a cut cascade).
    Event,
    /// A timer.
    Timer,
    /// A step of the plugin's life (`on_load`, a service start, ...).
    Lifecycle,
    /// The plugin's worker process.
    Worker,
    /// The load of its file.
    Load,
}

impl FaultEntry {
    /// The metric's `entry` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultEntry::Provider => "provider",
            FaultEntry::Validate => "validate",
            FaultEntry::Handler => "handler",
            FaultEntry::Evaluator => "evaluator",
            FaultEntry::Service => "service",
            FaultEntry::Event => "event",
            FaultEntry::Timer => "timer",
            FaultEntry::Lifecycle => "lifecycle",
            FaultEntry::Worker => "worker",
            FaultEntry::Load => "load",
        }
    }

    /// The entry point a call error names (`CallError::entry`, as
    /// `inflight::Entry::describe` and the phases write it).
    pub(crate) fn of_call(entry: &str) -> Self {
        if entry.ends_with(" subscribe") {
            FaultEntry::Lifecycle
        } else if entry.starts_with("action '") && entry.ends_with(" handler") {
            FaultEntry::Handler
        } else if entry.contains("validate") {
            FaultEntry::Validate
        } else if entry.starts_with("provider") {
            FaultEntry::Provider
        } else if entry.starts_with("evaluator") {
            FaultEntry::Evaluator
        } else if entry.starts_with("service '") && entry.contains(" method '") {
            FaultEntry::Service
        } else if entry.starts_with("event handler") {
            FaultEntry::Event
        } else if entry.starts_with("timer ") {
            FaultEntry::Timer
        } else {
            FaultEntry::Lifecycle
        }
    }
}

/// What the fault was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultCause {
    /// A call missed its deadline.
    TimedOut,
    /// A call panicked.
    Panicked,
    /// The plugin's worker process died.
    Crashed,
    /// The plugin's worker process was restarted.
    Restarted,
    /// The plugin was quarantined.
    Quarantined,
    /// Its file failed to load or was refused.
    LoadFailed,
    /// An event it emitted was not delivered: its cascade crossed a bound.
    EventsCut,
}

impl FaultCause {
    /// The metric's `cause` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultCause::TimedOut => "timed_out",
            FaultCause::Panicked => "panicked",
            FaultCause::Crashed => "crashed",
            FaultCause::Restarted => "restarted",
            FaultCause::Quarantined => "quarantined",
            FaultCause::LoadFailed => "load_failed",
            FaultCause::EventsCut => "events_cut",
        }
    }

    /// The fault of a call error, if it is one: a missed deadline or a
    /// panic (a plugin's own error is not a fault of the host's making).
    pub(crate) fn of_call(kind: ErrorKind) -> Option<Self> {
        match kind {
            ErrorKind::Cancelled => Some(FaultCause::TimedOut),
            ErrorKind::Panicked => Some(FaultCause::Panicked),
            _ => None,
        }
    }

    fn counted(self) -> Option<Counted> {
        match self {
            FaultCause::TimedOut => Some(Counted::Timeout),
            FaultCause::Panicked => Some(Counted::Panic),
            FaultCause::Crashed => Some(Counted::Crash),
            FaultCause::Restarted => Some(Counted::Restart),
            FaultCause::Quarantined | FaultCause::LoadFailed | FaultCause::EventsCut => None,
        }
    }
}

impl Registry {
    /// Counts a fault of `plugin` and says it in the log (once: see the
    /// module's documentation); `what` is the line.
    pub(crate) fn fault(
        &self,
        plugin: &str,
        entry: FaultEntry,
        cause: FaultCause,
        what: &dyn Display,
    ) {
        self.count_fault(plugin, entry, cause);
        let Some(left_out) = self.fault_log.admit(plugin, cause.as_str(), Instant::now()) else {
            return;
        };
        let (entry, cause_label) = (entry.as_str(), cause.as_str());
        let more = if left_out == 0 {
            String::new()
        } else {
            format!(" ({left_out} more of this fault since the last line: counted, not logged)")
        };
        match cause {
            FaultCause::Crashed | FaultCause::Quarantined | FaultCause::LoadFailed => {
                tracing::error!(plugin, entry, cause = cause_label, "{what}{more}")
            }
            _ => tracing::warn!(plugin, entry, cause = cause_label, "{what}{more}"),
        }
    }

    /// Counts a fault of `plugin` without a line: the caller writes one of
    /// its own (a load failure's line of the load report).
    pub(crate) fn count_fault(&self, plugin: &str, entry: FaultEntry, cause: FaultCause) {
        self.metrics.fault(plugin, entry.as_str(), cause.as_str());
        if let Some(counted) = cause.counted() {
            self.metrics
                .plugin_stats(plugin)
                .count(counted, Instant::now());
        }
    }

    /// Counts and says the fault of a call error, if it is one (a missed
    /// deadline or a panic).
    pub(crate) fn call_fault(&self, error: &CallError) {
        if let Some(cause) = FaultCause::of_call(error.kind) {
            self.fault(
                &error.plugin,
                FaultEntry::of_call(&error.entry),
                cause,
                error,
            );
        }
    }

    /// Says how many faults were left out of the log: those whose window
    /// is over, or every one when `all` (at shutdown).
    pub(crate) fn say_suppressed_faults(&self, all: bool) {
        for left_out in self.fault_log.take_suppressed(Instant::now(), all) {
            tracing::warn!(
                plugin = %left_out.plugin,
                cause = left_out.cause,
                "plugin '{}': {} more '{}' fault(s) since its last line: counted \
                 (agent_host_plugin_faults_total), not logged",
                left_out.plugin,
                left_out.count,
                left_out.cause
            );
        }
    }

    /// Starts the summary of the faults left out of the log, every
    /// [`FAULT_LOG_WINDOW`], while the registry lives.
    pub(super) fn summarize_faults_periodically(&self, me: Weak<Registry>) {
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(FAULT_LOG_WINDOW).await;
                let Some(core) = me.upgrade() else {
                    return;
                };
                core.say_suppressed_faults(false);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_of_a_call_error_is_read_from_its_name() {
        for (entry, expected) in [
            ("action 'GET' handler", FaultEntry::Handler),
            ("actions' validate", FaultEntry::Validate),
            ("action 'GET' validate", FaultEntry::Validate),
            ("provider 'time' get", FaultEntry::Provider),
            ("providers' get", FaultEntry::Provider),
            ("evaluator 'mood' evaluate", FaultEntry::Evaluator),
            ("service 'db' method 'get'", FaultEntry::Service),
            ("event handler for 'x'", FaultEntry::Event),
            ("timer 3", FaultEntry::Timer),
            ("on_load", FaultEntry::Lifecycle),
            ("service 'db' start", FaultEntry::Lifecycle),
            ("provider 'time' subscribe", FaultEntry::Lifecycle),
        ] {
            assert_eq!(FaultEntry::of_call(entry), expected, "{entry}");
        }
    }
}
