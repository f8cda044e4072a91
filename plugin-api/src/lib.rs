//! Write plugins for `agent-host` in plain Rust.
//!
//! This crate is what plugin authors depend on. A plugin is a `cdylib` crate
//! that builds a [`Plugin`] from [`Action`]s, [`Provider`]s, [`Evaluator`]s and
//! [`Service`]s, and exports it with [`export_plugin!`]. The author never sees
//! an FFI type or writes `unsafe`; [`testing`] runs the same code in unit tests
//! without a host.
//!
//! The plugin guide (`docs/plugin-guide.md` in the agent-host repository)
//! walks through every component kind, config, permissions, hot reload,
//! testing and the rules a plugin must keep.
//!
//! ```
//! use agent_host_plugin_sdk::{Action, ActionResult, Plugin};
//!
//! fn plugin() -> Plugin {
//!     Plugin::new("hello", "1.0.0")
//!         .description("Answers greetings")
//!         .action(
//!             Action::new("HELLO")
//!                 .validate(|msg| msg.text().to_lowercase().contains("hello"))
//!                 .handler(|msg, _rt| Ok(ActionResult::text(format!("Hello, {}!", msg.sender())))),
//!         )
//! }
//! // In the plugin's lib.rs: agent_host_plugin_sdk::export_plugin!(plugin);
//! # assert!(plugin().manifest().validate().is_ok());
//! ```
//!
//! # What this crate must never do
//!
//! It must never let a panic cross into the host (every entry point is wrapped
//! in `catch_unwind` here, in code the plugin compiles), never start an async
//! runtime or threads of its own behind the author's back, and never expose the
//! FFI layout: that lives in `agent-host-plugin-abi` and changes only with its major
//! version.
//!
//! # ABI compatibility policy
//!
//! A plugin library carries two versions:
//!
//! * the **ABI version** (`agent-host-plugin-abi`'s crate version, currently 1.x): the
//!   host loads a plugin only if the major versions match and `abi_stable`'s
//!   layout check of the root module passes. The layout is frozen for a major
//!   version; new capabilities arrive as JSON fields or as string-keyed
//!   `invoke` requests, never as layout changes;
//! * the **SDK version** ([`SDK_VERSION`], in the manifest's
//!   `sdk_version`): it may change freely. A plugin built with an older SDK
//!   keeps loading in a newer host as long as the ABI major matches. A host
//!   knows the manifest fields of the SDK it was built with: a manifest with
//!   fields it does not know (from a newer SDK) is refused with one line
//!   naming the plugin and both SDK versions ([`manifest::parse_manifests`]).
//!
//! A plugin built against another ABI major version, or with a foreign
//! layout, is rejected at load time with one line that names the file and
//! says to rebuild it against the host's `agent-host-plugin-sdk`, such as:
//!
//! ```text
//! plugins/old.so: built against plugin ABI 2.0.0, but this host speaks plugin ABI 1.x: rebuild the plugin against this host's agent-host-plugin-sdk
//! ```
//!
//! The other plugins load and serve regardless.

#![warn(missing_docs)]

mod action;
mod error;
mod evaluator;
mod export;
pub mod manifest;
mod message;
pub mod middleware;
mod object;
mod panic_report;
mod plugin;
mod provider;
mod runtime;
pub mod schema_defaults;
mod service;
pub mod testing;

pub use action::{Action, ActionResult};
pub use error::{Error, ErrorKind, Result};
pub use evaluator::{Evaluation, Evaluator};
#[doc(hidden)]
pub use export::__private;
pub use manifest::Manifest;
pub use message::{Context, Message};
pub use middleware::Middleware;
pub use plugin::Plugin;
pub use provider::{Provider, Unsubscribe};
pub use runtime::{
    Event, Host, Level, ProviderPush, Runtime, RuntimeHandle, ServiceClient, Subscription, Timer,
};
pub use service::{Service, ServiceBuilder};

/// The version of this SDK, as recorded in every manifest's `sdk_version`.
///
/// A host built with this SDK speaks this version: it knows exactly the
/// manifest fields this version writes (see [`manifest::parse_manifests`]).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Re-exported so plugins can build JSON values without their own dependency.
/// (`serde` itself is not re-exported: a plugin that derives `Serialize` or
/// `Deserialize` depends on `serde` with the `derive` feature.)
pub use serde_json::{self, json, Value};

/// The names a plugin usually needs: `use agent_host_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        bail, export_plugin, json, Action, ActionResult, Error, Evaluation, Evaluator, Message,
        Plugin, Provider, Result, Runtime, Service, Value,
    };
}
