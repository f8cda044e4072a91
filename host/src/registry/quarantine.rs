//! Quarantine: a plugin that panics too often within a window is taken out
//! of service until it is reloaded.

use super::faults::{FaultCause, FaultEntry};
use super::{LivePlugin, Registry};
use crate::plugin::CallError;
use agent_host_plugin_sdk::ErrorKind;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

impl Registry {
    /// Counts an error from plugin code and quarantines the plugin when it
    /// panicked `quarantine_after_panics` times within the window.
    /// A missed deadline or a panic is a fault (`faults.rs`): counted and
    /// said in the log once.
    pub fn record_error(&self, plugin: &LivePlugin, error: &CallError) {
        self.metrics.plugin_error(plugin.name(), error.kind);
        self.call_fault(error);
        if error.kind != ErrorKind::Panicked || self.settings.quarantine_after_panics == 0 {
            return;
        }
        let now = Instant::now();
        let window = Duration::from_millis(self.settings.quarantine_window_ms);
        let count = {
            let mut panics = plugin
                .recent_panics
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            panics.push_back(now);
            while panics
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                panics.pop_front();
            }
            panics.len()
        };
        if count >= self.settings.quarantine_after_panics as usize
            && !plugin.quarantined.swap(true, Ordering::AcqRel)
        {
            self.metrics.plugins_quarantined.inc();
            self.plugin_set_changed();
            self.fault(
                plugin.name(),
                FaultEntry::of_call(&error.entry),
                FaultCause::Quarantined,
                &format_args!(
                    "plugin '{}' quarantined: {count} panics within {} ms; its actions, providers, \
                     evaluators and services are out of service until it is reloaded",
                    plugin.name(),
                    self.settings.quarantine_window_ms
                ),
            );
            self.emit(
                "host",
                "plugin:quarantined",
                json!({"plugin": plugin.name(), "panics": count, "window_ms": self.settings.quarantine_window_ms, "last_error": error.to_string()}),
            );
        }
    }
}
