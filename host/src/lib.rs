//! `agent-host`: load native plugin libraries and run an agent with them.
//!
//! The host finds plugin files in a folder, loads each from a private copy,
//! checks its ABI, manifest and dependencies, starts the plugins in dependency
//! order, routes messages through their actions, providers and evaluators,
//! lets them call each other's services and exchange events, and shuts them
//! down in reverse order. [`PluginHost`] is the entry point; the `agent-host`
//! binary is a thin CLI over it.
//!
//! # What this crate must never do
//!
//! * Let one plugin take down the host or an unrelated plugin: every failure
//!   becomes a report line or an error value naming the plugin.
//! * Call into a plugin while holding a lock that a callback from that plugin
//!   could take.
//! * `dlopen` a plugin file in place, or overwrite a file it has loaded: it
//!   always loads a fresh private copy.
//! * Unload a library: abi_stable libraries stay mapped until exit, and the
//!   host counts what they cost instead of pretending otherwise.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bench_support;
mod call;
pub mod cli;
pub mod cluster;
pub mod config;
mod current_call;
mod dependencies;
mod fault_log;
mod host;
pub mod http;
pub mod isolation;
mod lifecycle;
mod load;
mod log_limit;
mod metrics;
mod permissions;
mod pipeline;
mod plugin;
mod plugin_stats;
mod prefetch;
mod registry;
mod regular_file;
mod reload;
mod request;
mod shared_cause;
mod sys;
pub mod testing;
mod triggers;
pub mod trust;
mod watchdog;
mod worker_status;

pub use crate::config::AgentConfig;
pub use crate::config::ConfigError;
pub use crate::dependencies::{Misfit, Unresolved};
pub use crate::host::{Health, HostOptions, PluginHost, PluginStatus, ServiceStatus};
pub use crate::lifecycle::report::{LoadFailure, LoadReport, LoadedPlugin, Stage};
pub use crate::lifecycle::{LoadError, ManifestCheckError};
pub use crate::load::OpenError;
pub use crate::pipeline::{
    EvaluationRecord, Evaluations, InboundMessage, Reply, NO_ACTION_TEXT, SHUTTING_DOWN,
};
pub use crate::plugin::CallError;
pub use crate::plugin_stats::StatsView;
pub use crate::registry::{FailedLoad, ServiceStartError};
pub use crate::reload::watch::{Watch, WatchError, DEFAULT_DEBOUNCE};
pub use crate::reload::{ReloadError, ReloadFailure, ReloadOrigin, Reloaded, WhenUnchanged};
