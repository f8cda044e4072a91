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
#[cfg(all(test, target_os = "linux"))]
mod tests;

#[cfg(not(target_os = "linux"))]
use fallback as platform;
#[cfg(target_os = "linux")]
use linux as platform;

use super::policy::SandboxPolicy;
use std::fmt;

/// Which protections are in force in a worker, for status displays.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Protections {
    /// The worker runs as a user other than root (`worker_user` when the
    /// agent is root).
    #[serde(default)]
    pub unprivileged_user: bool,
    /// The worker holds no capability, in any set (bounding and ambient
    /// included).
    #[serde(default)]
    pub no_capabilities: bool,
    /// A user namespace of its own: its user is mapped to itself, and
    /// nothing it holds counts outside.
    #[serde(default)]
    pub user_namespace: bool,
    /// A PID namespace of its own: it sees no other process, and every
    /// process it starts ends when it ends.
    #[serde(default)]
    pub pid_namespace: bool,
    /// An IPC namespace of its own (System V IPC, POSIX message queues).
    #[serde(default)]
    pub ipc_namespace: bool,
    /// An empty network namespace: only for a plugin without a network
    /// grant.
    #[serde(default)]
    pub network_namespace: bool,
    /// The worker and what it starts cannot gain privileges (set-user-ID
    /// programs, file capabilities).
    pub no_new_privs: bool,
    /// Files: only the policy's paths are reachable, each with its rights.
    pub landlock_filesystem: bool,
    /// TCP: no listening, and connections to the granted ports only. Off
    /// when the policy allows any network use.
    pub landlock_network: bool,
    /// No connecting to abstract UNIX sockets, nor signalling processes,
    /// outside the sandbox.
    pub landlock_scopes: bool,
    /// The system-call filter.
    pub seccomp: bool,
    /// The operator's resource limits, and no core dumps.
    pub resource_limits: bool,
    /// What is not in force and why, one line each
    /// (`landlock: not supported by this kernel`).
    pub missing: Vec<String>,
}

impl fmt::Display for Protections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.unprivileged_user, "unprivileged user"),
            (self.no_capabilities, "no capabilities"),
            (self.user_namespace, "user namespace"),
            (self.pid_namespace, "pid namespace"),
            (self.ipc_namespace, "ipc namespace"),
            (self.network_namespace, "network namespace"),
            (self.no_new_privs, "no_new_privs"),
            (self.landlock_filesystem, "landlock filesystem"),
            (self.landlock_network, "landlock network"),
            (self.landlock_scopes, "landlock scopes"),
            (self.seccomp, "seccomp"),
            (self.resource_limits, "resource limits"),
        ];
        let in_force: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        if in_force.is_empty() {
            f.write_str("no protection in force")?;
        } else {
            write!(f, "in force: {}", in_force.join(", "))?;
        }
        if !self.missing.is_empty() {
            write!(f, "; missing: {}", self.missing.join("; "))?;
        }
        Ok(())
    }
}

/// A protection the policy requires could not be put in force, or the
/// policy cannot be applied at all; the worker must not load the plugin.
// (Built by the Linux sandbox only.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxError {
    plugin: String,
    protection: String,
    cause: String,
}

impl SandboxError {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only Linux sandboxes
    fn new(plugin: &str, protection: &str, cause: impl Into<String>) -> Self {
        Self {
            plugin: plugin.to_owned(),
            protection: protection.to_owned(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin '{}': cannot sandbox its worker: {}: {}",
            self.plugin, self.protection, self.cause
        )
    }
}

impl std::error::Error for SandboxError {}

/// Puts `policy` in force in the calling process, for good, and tells which
/// protections are in force. Call it on the worker's main thread before the
/// worker starts any other thread, opens the plugin, or needs anything the
/// policy does not grant (see the Linux notes in the module documentation).
/// `copy` is the plugin's private copy as an open file, when the host
/// passed one; without it the copy is reached by the policy's path.
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
    copy: Option<&std::fs::File>,
) -> Result<Protections, SandboxError> {
    platform::apply(policy, copy)
}

#[cfg(test)]
mod display {
    use super::Protections;

    #[test]
    fn protections_read_as_what_is_in_force_then_what_is_missing() {
        let protections = Protections {
            no_new_privs: true,
            seccomp: true,
            missing: vec![
                "landlock: not supported by this kernel".to_owned(),
                "resource limits: RLIMIT_AS: Operation not permitted".to_owned(),
            ],
            ..Protections::default()
        };
        assert_eq!(
            protections.to_string(),
            "in force: no_new_privs, seccomp; missing: landlock: not supported by this \
             kernel; resource limits: RLIMIT_AS: Operation not permitted"
        );
        assert_eq!(Protections::default().to_string(), "no protection in force");
    }
}
