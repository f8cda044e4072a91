//! What the host says of its own health (`GET /healthz`): `ok`, or
//! `degraded` with the reasons (a plugin quarantined or given up on, a
//! plugin file that failed to load, a worker that keeps restarting), or
//! `draining` once it shuts down.

use super::PluginHost;
use crate::plugin_stats::RESTART_WINDOW;
use std::time::Instant;

/// A worker restarted this many times within [`RESTART_WINDOW`] keeps
/// restarting: the host is degraded.
pub(crate) const RESTARTS_THAT_DEGRADE: usize = 3;

/// The host's health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// `ok`, `degraded` or `draining`.
    pub status: &'static str,
    /// The plugins loaded (the lazy ones not started yet included).
    pub plugins: usize,
    /// Why it is degraded, one line each.
    pub reasons: Vec<String>,
}

impl PluginHost {
    /// The host's health: `draining` once it shuts down, `degraded` while
    /// a plugin is quarantined or given up on, a plugin file failed to
    /// load, or a plugin's worker restarted [`RESTARTS_THAT_DEGRADE`] times
    /// or more within the last 5 minutes; else `ok`.
    pub fn health(&self) -> Health {
        let statuses = self.statuses();
        let mut reasons = Vec::new();
        let now = Instant::now();
        for status in &statuses {
            let why = status.state_reason.as_deref().unwrap_or("no reason given");
            match status.state {
                "quarantined" => {
                    reasons.push(format!("plugin '{}' is quarantined: {why}", status.name))
                }
                "failed" => reasons.push(format!("plugin '{}' failed: {why}", status.name)),
                _ => {}
            }
            let restarts = self
                .core
                .metrics
                .stats_of(&status.name)
                .map_or(0, |stats| stats.recent_restarts(now));
            if restarts >= RESTARTS_THAT_DEGRADE {
                reasons.push(format!(
                    "plugin '{}' keeps restarting: its worker restarted {restarts} times in the \
                     last {} minutes",
                    status.name,
                    RESTART_WINDOW.as_secs() / 60
                ));
            }
        }
        for failed in self.core.failed_loads() {
            reasons.push(match &failed.plugin {
                Some(plugin) => format!(
                    "plugin '{plugin}' failed to load from {}: {}",
                    failed.file.display(),
                    failed.reason
                ),
                None => format!(
                    "{} failed to load: {}",
                    failed.file.display(),
                    failed.reason
                ),
            });
        }
        let status = if self.is_shutting_down() {
            "draining"
        } else if reasons.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        Health {
            status,
            plugins: statuses.len(),
            reasons,
        }
    }

    /// The plugin files that failed to load and why, kept until a later
    /// load of the same file succeeds (or the file is removed).
    pub fn failed_loads(&self) -> Vec<crate::registry::FailedLoad> {
        self.core.failed_loads()
    }
}
