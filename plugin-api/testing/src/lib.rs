//! Test an agent-host plugin's built library in the real host, from the
//! plugin's own tests.
//!
//! `agent_host_plugin_sdk::testing::TestHost` runs plugin code in memory;
//! this crate runs the file you ship: it copies your built library (and the
//! plugins it depends on) into a folder of its own, has the `agent-host`
//! program check it (`agent-host check --json`: ABI, manifest, config,
//! dependencies, `on_load`, services), then starts the agent
//! (`agent-host run`) and talks to it over JSON lines, one request and one
//! reply per line, as an operator's pipe would. Everything the host does is
//! real: the private copy, the layout check, the operator's config and
//! grants, triggers, `validate`, priorities, deadlines, and, with an
//! `[isolation]` table, a sandboxed worker process.
//!
//! ```no_run
//! use agent_host_plugin_testing::{Agent, Error};
//!
//! # fn main() -> Result<(), Error> {
//! // `cargo build --release` first; a test can find the file from
//! // `env!("CARGO_MANIFEST_DIR")`.
//! let mut agent = Agent::builder()
//!     .plugin("target/release/libgreeter.so")
//!     .config("[grants]\ngreeter = [\"config:*\"]\n")
//!     .start()?;
//! let reply = agent.send("hello")?;
//! assert_eq!(reply.text, "Hello, tester!");
//! assert_eq!(reply.action.as_deref(), Some("GREET"));
//! agent.wait_for_log("greeting someone")?; // the plugin's log lines, as the host wrote them
//! agent.stop()?;
//! # Ok(())
//! # }
//! ```
//!
//! The program is the one your agent runs: [`AgentBuilder::program`], else
//! the `AGENT_HOST_BIN` environment variable, else `agent-host` on `PATH`.
//! Its plugin ABI major version must be the one your plugin was built
//! against (`agent-host --version` says it).
//!
//! This crate depends on neither the SDK nor the host, so it never ties
//! your tests to one host build: the program you point it at is the host
//! under test.

#![warn(missing_docs)]

/// The README's example compiles.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod agent;
mod error;
mod program;
mod reply;

pub use agent::{Agent, AgentBuilder};
pub use error::Error;
pub use reply::Reply;
