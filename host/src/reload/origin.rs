//! Who asked for a reload, for the audit trail: the `origin` of the
//! `plugin_reloaded` and `plugin_reload_refused` log events and of
//! `agent_host_reloads_total`.

use serde::Serialize;

/// Who asked for a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
pub enum ReloadOrigin {
    /// The `--watch` folder watcher: the plugin's file changed.
    Watcher,
    /// A request to `POST /v1/plugins/{name}/reload`.
    Http {
        /// The authenticated caller, when the API knows one.
        identity: Option<String>,
    },
    /// The command line: `/reload` in the chat, or `agent-host reload`,
    /// which asks over HTTP and says so in its `user-agent` (a claim of the
    /// client, as any header is).
    Cli {
        /// The authenticated caller, when the API knows one.
        identity: Option<String>,
    },
    /// A program that embeds the host and calls [`PluginHost::reload`](crate::PluginHost::reload).
    Api,
}

impl ReloadOrigin {
    /// The label in logs and metrics: `watcher`, `http`, `cli` or `api`.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadOrigin::Watcher => "watcher",
            ReloadOrigin::Http { .. } => "http",
            ReloadOrigin::Cli { .. } => "cli",
            ReloadOrigin::Api => "api",
        }
    }

    /// The authenticated caller, if any.
    pub fn identity(&self) -> Option<&str> {
        match self {
            ReloadOrigin::Http { identity } | ReloadOrigin::Cli { identity } => identity.as_deref(),
            ReloadOrigin::Watcher | ReloadOrigin::Api => None,
        }
    }
}

impl std::fmt::Display for ReloadOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
