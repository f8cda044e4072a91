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

/// The operator's limits for `plugin`, as its sandbox applies them.
fn limits(settings: &IsolationSettings, plugin: &str) -> ResourceLimits {
    let limits = settings.limits_of(plugin);
    ResourceLimits {
        memory_bytes: limits.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        open_files: limits.open_files,
        cpu_seconds: limits.cpu_seconds,
        processes: limits.max_processes,
    }
}

/// The sandbox of `plugin`'s worker, holding `permissions` (none for a
/// probe), loading the private copy at `copy`, under the operator's limits
/// and worker user. The error names the permission or the user at fault.
pub(crate) fn sandbox_policy(
    settings: &IsolationSettings,
    plugin: &str,
    permissions: &[String],
    copy: &Path,
) -> Result<SandboxPolicy, WorkerSetupError> {
    let mut policy = SandboxPolicy::new(
        plugin,
        permissions,
        copy,
        limits(settings, plugin),
        settings.best_effort,
    )?;
    policy.identity = worker_identity(settings)?;
    Ok(policy)
}
