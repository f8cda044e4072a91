//! The host's side of isolation: the sandbox policy the host computes for
//! a plugin from the operator's `[isolation]` table (`config/isolation.rs`), starting a worker process
//! and holding it (calls, callbacks, how it ended), and supervising it
//! (restarts, quarantine).
//!
//! * `policy`: what one plugin's sandbox allows, from its granted
//!   permissions and its limits;
//! * `identity`: the unprivileged user the workers of a root agent become;
//! * `probe`: the worker program, and the policy of a plugin's (or a
//!   probe's) worker;
//! * `spawn`: starting a worker, and naming how it ended;
//! * `process`: the host's side of one worker process;
//! * `supervisor`: one plugin's worker, restarted when it dies.

mod identity;
pub(crate) mod policy;
pub(crate) mod probe;
pub(crate) mod process;
mod spawn;
pub(crate) mod supervisor;
