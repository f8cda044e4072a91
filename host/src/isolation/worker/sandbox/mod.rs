//! Putting a [`SandboxPolicy`] in force inside the worker process, before it
//! opens the plugin. A sandbox cannot be lifted: everything the worker runs
//! afterwards, the plugin included, stays inside it.
//!
//! On Linux the worker lowers its resource limits, sets `no_new_privs`,
//! restricts itself with landlock (files, TCP ports, abstract UNIX sockets
//! and signals) and installs a seccomp filter against the system calls a
//! plugin has no use for. Other systems have no sandbox: [`apply`] reports
//! every protection missing.
//!
//! Unless the policy is best-effort, a protection that cannot be put in
//! force is an error, and the worker must refuse to load the plugin.

#[cfg(target_os = "linux")]
mod confine;
#[cfg(not(target_os = "linux"))]
mod fallback;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod seccomp;
#[cfg(target_os = "linux")]
mod shortfall;
#[cfg(all(test, target_os = "linux"))]
mod tests;

#[cfg(not(target_os = "linux"))]
use fallback as platform;
#[cfg(target_os = "linux")]
use linux as platform;

use crate::isolation::wire::policy::SandboxPolicy;
use crate::worker_status::Protections;
#[cfg(not(target_os = "linux"))]
use fallback::SandboxCause;
#[cfg(target_os = "linux")]
use shortfall::SandboxCause;

/// A protection the policy requires could not be put in force, or the
/// policy cannot be applied at all; the worker must not load the plugin.
// (Built by the Linux sandbox only.)
#[derive(Debug, thiserror::Error)]
#[error("plugin '{plugin}': cannot sandbox its worker: {protection}: {cause}")]
pub(crate) struct SandboxError {
    plugin: String,
    protection: &'static str,
    #[source]
    cause: SandboxCause,
}

impl SandboxError {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only Linux sandboxes
    fn new(plugin: &str, protection: &'static str, cause: SandboxCause) -> Self {
        Self {
            plugin: plugin.to_owned(),
            protection,
            cause,
        }
    }
}

/// Puts `policy` in force in the calling process, for good, and tells which
/// protections are in force. Call it on the worker's main thread before the
/// worker starts any other thread, opens the plugin, or needs anything the
/// policy does not grant (see the Linux notes in the module documentation).
/// `copies` are the private copies of the worker's files as open files,
/// when the host passed them; without them each copy is reached by the
/// policy's path.
///
/// On Linux this may split the process (see `confine.rs`): it returns in
/// the process that goes on as the worker, and the process that called it
/// ends when that one ends, as it ends.
///
/// When a protection cannot be put in force, the error names it, unless the
/// policy is best-effort: then the result lists it in
/// [`Protections::missing`]. A granted path that does not exist is an error
/// either way.
pub(crate) fn apply(
    policy: &SandboxPolicy,
    copies: &[std::fs::File],
) -> Result<Protections, SandboxError> {
    platform::apply(policy, copies)
}
