//! The error of a call into a plugin, naming the plugin and the entry point.

use agent_host_plugin_sdk::ErrorKind;
use serde::Serialize;
use std::fmt;

/// A failed call into a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallError {
    /// The plugin called.
    pub plugin: String,
    /// The entry point, such as `action 'GET_WEATHER' handler`.
    pub entry: String,
    /// What kind of failure (`panicked`, `failed`, `not_found`...).
    #[serde(serialize_with = "serialize_kind")]
    pub kind: ErrorKind,
    /// The plugin's message.
    pub message: String,
}

fn serialize_kind<S: serde::Serializer>(kind: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin '{}': {}: {}",
            self.plugin, self.entry, self.message
        )
    }
}

impl std::error::Error for CallError {}
