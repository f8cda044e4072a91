//! Running a plugin in a sandboxed worker process of its own.
//!
//! The operator chooses, per plugin, where it runs ([`IsolationSettings`]):
//! in the host's process (calls are function calls, and a crash is the
//! host's crash), or in a worker: the same plugin file, loaded by the
//! `agent-host worker` subcommand of the same program, which puts itself in
//! a kernel sandbox before it opens the file. The plugin cannot tell the
//! difference through the SDK; the host reaches it through the same
//! [`Backend`](crate::plugin::Backend) seam.
//!
//! * `settings`: the `[isolation]` table of the config file;
//! * `policy`: what one plugin's sandbox allows, from its granted
//!   permissions and its limits;
//! * `identity`: the unprivileged user the workers of a root agent become;
//! * `sandbox`: putting a policy in force inside the worker (landlock,
//!   seccomp, resource limits on Linux);
//! * `protocol`: the frames between host and worker, and the handshake;
//! * `link`: the connections between host and worker, and how each
//!   reaches the worker (passed as a descriptor on Unix, dialled on
//!   loopback with a token on Windows);
//! * `spawn`: starting a worker, dying with the host, naming how it ended;
//! * `worker`: the worker's side: sandbox, open, serve;
//! * `process`: the host's side of one worker process;
//! * `backend`: an isolated plugin as the registry sees it, and its
//!   restarts;
//! * `source`: opening a plugin file when some of its plugins are isolated.

mod backend;
mod identity;
mod link;
pub(crate) mod policy;
mod process;
pub(crate) mod protocol;
pub(crate) mod sandbox;
mod settings;
pub(crate) mod source;
mod spawn;
mod worker;

pub use sandbox::Protections;
pub use settings::{
    IsolationSettings, Limits, Placement, DEFAULT_MAX_PROCESSES, DEFAULT_MEMORY_MB,
    DEFAULT_OPEN_FILES, DEFAULT_WORKER_USER,
};

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

/// What the operator sees of an isolated plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStatus {
    /// The worker's process id, while one runs.
    pub pid: Option<u32>,
    /// Restarts since the plugin was loaded.
    pub restarts: u32,
    /// Why the plugin is quarantined, if it is.
    pub quarantined: Option<String>,
    /// How the last worker that crashed ended.
    pub last_crash: Option<String>,
    /// The protections in force in the worker.
    pub protections: Protections,
}

impl WorkerStatus {
    /// One line for people: the pid, restarts, quarantine and protections.
    pub fn describe(&self) -> String {
        let mut line = match self.pid {
            Some(pid) => format!("in worker process {pid}"),
            None => "in a worker process (not running now)".to_string(),
        };
        line.push_str(&format!(", {} restart(s)", self.restarts));
        if let Some(why) = &self.quarantined {
            line.push_str(&format!(", QUARANTINED: {why}"));
        }
        line.push_str(&format!("; sandbox: {}", self.protections));
        line
    }
}
