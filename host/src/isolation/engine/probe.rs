//! What the host needs to start a worker for a plugin file: the worker
//! program, and the sandbox policy of a plugin (or of a probe, which holds
//! no grant at all).

use super::identity::{worker_identity, IdentityError};
use super::policy::PolicyError;
use crate::config::isolation::IsolationSettings;
use crate::isolation::wire::policy::{ResourceLimits, SandboxPolicy};
use std::path::{Path, PathBuf};

/// Why a worker cannot be started for a plugin file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerSetupError {
    /// No worker program is configured, and this program cannot be found.
    #[error("cannot find this program to run as a worker: {0}")]
    NoProgram(#[source] std::io::Error),
    /// A permission cannot be turned into a rule of the sandbox.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `worker_user` cannot be honoured.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The worker program: the configured one, else this executable.
pub(crate) fn worker_program(settings: &IsolationSettings) -> Result<PathBuf, WorkerSetupError> {
    match &settings.worker_program {
        Some(program) => Ok(program.clone()),
        None => std::env::current_exe().map_err(WorkerSetupError::NoProgram),
    }
}

/// The operator's limits for a worker of `members` (the largest of
/// theirs; the host-wide ones for none), as its sandbox applies them.
fn limits(settings: &IsolationSettings, members: &[&str]) -> ResourceLimits {
    let limits = settings.limits_of_all(members.iter().copied());
    ResourceLimits {
        memory_bytes: limits.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        open_files: limits.open_files,
        cpu_seconds: limits.cpu_seconds,
        processes: limits.max_processes,
    }
}

/// The sandbox of the worker `name` of the plugins `members` (none for a
/// probe), holding `permissions`, loading the private copy at `copy`,
/// under the operator's limits and worker user. The error names the
/// permission or the user at fault.
pub(crate) fn sandbox_policy(
    settings: &IsolationSettings,
    name: &str,
    members: &[&str],
    permissions: &[String],
    copy: &Path,
) -> Result<SandboxPolicy, WorkerSetupError> {
    let mut policy = SandboxPolicy::new(
        name,
        permissions,
        copy,
        limits(settings, members),
        settings.best_effort,
    )?;
    policy.identity = worker_identity(settings)?;
    Ok(policy)
}

/// Whether `permissions` form a sandbox, for the plugin `name`: the error
/// names the first permission the sandbox cannot express.
pub(crate) fn check_grants(name: &str, permissions: &[String]) -> Result<(), WorkerSetupError> {
    SandboxPolicy::new(
        name,
        permissions,
        Path::new("/"),
        ResourceLimits::default(),
        false,
    )?;
    Ok(())
}
