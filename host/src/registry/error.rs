//! The error of a host-side operation, and the refusal of a permission.

use super::Registry;
use crate::plugin::CallError;
use agent_host_plugin_sdk::ErrorKind;

/// An error from a host-side operation (a service lookup, a permission check)
/// or from the plugin it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line saying what went wrong.
    pub message: String,
}

impl HostError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<CallError> for HostError {
    fn from(error: CallError) -> Self {
        Self::new(error.kind, error.to_string())
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

impl Registry {
    /// Refuses a plugin a permission it lacks: a warning in the log, a
    /// count in the metrics, and the error the plugin gets.
    pub fn deny(&self, plugin: &str, permission: &str) -> HostError {
        tracing::warn!(plugin, %permission, "permission denied");
        self.metrics.denied(plugin, permission);
        HostError::new(
            ErrorKind::PermissionDenied,
            format!("plugin '{plugin}' lacks permission '{permission}'"),
        )
    }
}
