//! Running a plugin in a sandboxed worker process of its own: the
//! isolation engine, below the plugin seam.
//!
//! The operator chooses, per plugin, where it runs ([`IsolationSettings`]):
//! in the host's process (calls are function calls, and a crash is the
//! host's crash), or in a worker: the same plugin file, loaded by the
//! `agent-host worker` subcommand of the same program, which puts itself in
//! a kernel sandbox before it opens the file. The plugin cannot tell the
//! difference through the SDK; the host reaches it through the plugin seam,
//! whose isolated backend and probing source use this engine.
//!
//! Three parts, each knowing only the one below it:
//!
//! * `wire`: what crosses between host and worker (frames, protocol types,
//!   the handshake, the sandbox policy, the connections); no host types;
//! * `worker`: the worker's side: its life, its sandbox, serving calls;
//! * `engine`: the host's side: settings, the policy the host computes,
//!   starting and holding a worker process, restarts.

pub(crate) mod engine;
pub(crate) mod wire;
mod worker;

pub use crate::config::isolation::{
    IsolationSettings, Limits, Placement, DEFAULT_MAX_PROCESSES, DEFAULT_MEMORY_MB,
    DEFAULT_OPEN_FILES, DEFAULT_WORKER_USER,
};
pub use crate::worker_status::{Protections, WorkerStatus};
pub(crate) use engine::policy::unenforceable_in_process;

/// Set by a program that serves `PROGRAM worker` itself.
static SERVES_WORKERS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that this program runs [`run_worker`] when its first argument is
/// `worker` (the `agent-host` binary does, first thing in `main`). A host
/// whose configured `worker_program` cannot run may then still probe plugin
/// files in a sandboxed worker of this program, so that the in-process
/// plugins of those files load; without it, such files fail whole, since
/// only running a file's code tells which plugins it holds.
pub fn this_program_serves_workers() {
    SERVES_WORKERS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// This program, if it serves workers itself.
pub(crate) fn own_worker_program() -> Option<std::path::PathBuf> {
    if !SERVES_WORKERS.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    std::env::current_exe().ok()
}

/// Runs this process as a worker (the `agent-host worker` subcommand) and
/// returns its exit code. A program that embeds the host and wants to be
/// its own worker program calls this when its first argument is `worker`.
pub fn run_worker() -> i32 {
    worker::run()
}
