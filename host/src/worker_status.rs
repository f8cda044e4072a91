//! What the operator sees of a plugin that runs in a worker process: the
//! worker's state, and the protections its sandbox put in force. Plain
//! data, filled by the isolation engine (the worker reports its
//! protections in the handshake) and shown through the plugin seam.

use std::fmt;

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
    /// The group (`[isolation.groups]`) whose worker this is, if it is one.
    pub group: Option<String>,
    /// The plugins the worker serves (this one, its file's other isolated
    /// plugins, or its group's).
    pub plugins: Vec<String>,
    /// The `filesystem:` and `network:` permissions the worker's sandbox
    /// holds: the union of its plugins'.
    pub grants: Vec<String>,
}

impl WorkerStatus {
    /// One line for people: the pid, restarts, quarantine and protections.
    pub fn describe(&self) -> String {
        let mut line = match self.pid {
            Some(pid) => format!("in worker process {pid}"),
            None => "in a worker process (not running now)".to_string(),
        };
        if let Some(group) = &self.group {
            line.push_str(&format!(" of group {group}"));
        }
        if self.plugins.len() > 1 {
            line.push_str(&format!(" shared by {}", self.plugins.join(", ")));
        }
        line.push_str(&format!(", {} restart(s)", self.restarts));
        if let Some(why) = &self.quarantined {
            line.push_str(&format!(", QUARANTINED: {why}"));
        }
        if !self.grants.is_empty() {
            line.push_str(&format!("; grants: {}", self.grants.join(", ")));
        }
        line.push_str(&format!("; sandbox: {}", self.protections));
        line
    }
}

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
