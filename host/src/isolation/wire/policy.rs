//! What one worker's sandbox allows, as the host sends it in the
//! handshake and the worker puts it in force: paths, network use, resource
//! limits and the user to become. The host computes it (the engine's
//! `policy`) from the plugin's granted permissions and the operator's
//! limits.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the dynamic loader reads to open a plugin and the libraries it links
/// to. Entries missing on a system are skipped.
pub(crate) const SYSTEM_LIBRARIES: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
];

/// What name resolution and certificate checks read, granted (read only)
/// with any network permission. Entries missing on a system are skipped.
pub(crate) const NAME_RESOLUTION: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
];

/// Whether `path` is one of the system paths every policy lists (which the
/// sandbox skips when a system lacks them), rather than a grant.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only Linux sandboxes
pub(crate) fn is_system_path(path: &Path) -> bool {
    SYSTEM_LIBRARIES
        .iter()
        .chain(NAME_RESOLUTION)
        .any(|system| path == Path::new(system))
}

/// What one isolated plugin may do, derived from its granted permissions and
/// the operator's limits. Serializable because the host sends it to the
/// worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SandboxPolicy {
    /// The plugin's name, for messages.
    pub plugin: String,
    /// The plugin's private copy: read and map for execution. A worker
    /// handed the copy as an open file gets its rule from that file, as it
    /// may not be able to reach this path.
    pub copy: PathBuf,
    /// The private copies of the worker's other files (a group's), each
    /// with the copy's rule.
    pub more_copies: Vec<PathBuf>,
    /// Read and map for execution: the system library folders.
    pub read_exec: Vec<PathBuf>,
    /// Read only: the `filesystem:read:` grants, then the name-resolution
    /// files when the plugin holds a network permission.
    pub read: Vec<PathBuf>,
    /// Read and write: the `filesystem:write:` grants (`/` for
    /// `filesystem:*`).
    pub write: Vec<PathBuf>,
    /// Which network use is allowed.
    pub network: NetworkGrant,
    /// The process's resource limits.
    pub limits: ResourceLimits,
    /// The unprivileged user a worker started by root becomes; `None` keeps
    /// the user the worker started as.
    pub identity: Option<WorkerIdentity>,
    /// Whether the operator accepts a worker some protections are missing
    /// from (an old kernel, say) instead of refusing to load the plugin.
    pub best_effort: bool,
}

/// A user a worker runs as: its name (for messages) and ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerIdentity {
    /// The user's name, or its id when given as a number.
    pub user: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

/// Which network use a plugin is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum NetworkGrant {
    /// None: no socket can be created, and the worker runs in an empty
    /// network namespace where the kernel allows it.
    None,
    /// TCP connections to these ports only (sorted, without duplicates).
    Ports(Vec<u16>),
    /// TCP and UDP over IPv4 and IPv6, any port, listening included.
    Any,
}

impl NetworkGrant {
    /// Whether any network use is allowed.
    pub(crate) fn is_granted(&self) -> bool {
        !matches!(self, NetworkGrant::None)
    }
}

/// The operator's resource limits for one worker; `None` leaves a limit as
/// the worker inherited it. Core dumps are always disabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceLimits {
    /// Address space, in bytes (`RLIMIT_AS`): counts every mapping,
    /// including thread stacks and reserved allocator arenas.
    pub memory_bytes: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`), including those the worker
    /// already holds.
    pub open_files: Option<u64>,
    /// Processor time, in seconds (`RLIMIT_CPU`); the kernel ends the worker
    /// when it runs out.
    pub cpu_seconds: Option<u64>,
    /// Processes and threads (`RLIMIT_NPROC`), the worker's own included.
    /// In the worker's own user namespace the kernel counts only the
    /// worker's tasks; without one it counts every task of the user.
    pub processes: Option<u64>,
}
