//! What one isolated plugin may do: its granted permissions and the
//! operator's limits, turned into the paths, ports and limits the worker's
//! sandbox enforces.
//!
//! # Permissions the sandbox enforces
//!
//! * `filesystem:read:PATH`: read files and list folders at and under PATH.
//! * `filesystem:write:PATH`: read, create, change and remove files and
//!   folders at and under PATH.
//! * `filesystem:*`: read and write everywhere (`/`).
//! * `network:connect:PORT`: open TCP connections to PORT (1 to 65535) on any
//!   address, and nothing else: no UDP, no listening.
//! * `network:*`: TCP and UDP over IPv4 and IPv6, to any port, listening
//!   included.
//!
//! Whatever is granted, a worker never creates UNIX sockets (named or
//! abstract), raw, packet or netlink sockets: local daemons are out of
//! reach. A plugin granted TCP resolves host names through the host
//! (`Runtime::resolve` in the SDK), which answers only for the ports the
//! plugin may connect to; the system resolver inside the sandbox has no
//! UDP and sees only `/etc/hosts`.
//!
//! PATH must be absolute: a relative or empty path is an error, and `~` is
//! not expanded. A trailing `*` follows the host's permission patterns:
//! `filesystem:read:/data/*` grants `/data`, `filesystem:read:*` grants `/`,
//! `network:connect:*` any network, and a pattern that covers a whole family
//! (`*`, `filesystem:*`, `network:*`) grants all of it. A `*` inside a folder
//! name or a port is an error, as is any other `filesystem:` or `network:`
//! permission. Permissions of other families (`service:`, `event:`,
//! `config:`, ...) are checked by the host, not the sandbox, and are ignored
//! here.
//!
//! Every isolated plugin may also read and map its own private copy and the
//! system's library folders, and, when it holds any network permission, the
//! files name resolution and TLS certificate checks read.

use crate::isolation::wire::policy::{
    NetworkGrant, ResourceLimits, SandboxPolicy, NAME_RESOLUTION, SYSTEM_LIBRARIES,
};
use std::fmt;
use std::path::{Path, PathBuf};

/// A permission the sandbox cannot turn into a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyError {
    plugin: String,
    permission: String,
    cause: PolicyErrorCause,
}

/// Why a permission cannot be turned into a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyErrorCause {
    /// `filesystem:read:` or `filesystem:write:` without a path.
    EmptyPath,
    /// A path that does not start at the root.
    RelativePath,
    /// A `*` that does not follow a `/`.
    PathPattern,
    /// A port that is not a number from 1 to 65535.
    Port,
    /// A `*` in a port.
    PortPattern,
    /// A `filesystem:` or `network:` permission the sandbox does not know.
    Unknown,
}

impl PolicyError {
    /// The permission that could not be turned into a rule.
    #[cfg(test)]
    pub(crate) fn permission(&self) -> &str {
        &self.permission
    }

    /// Why.
    #[cfg(test)]
    pub(crate) fn cause(&self) -> PolicyErrorCause {
        self.cause
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = match self.cause {
            PolicyErrorCause::EmptyPath => "the path is empty",
            PolicyErrorCause::RelativePath => {
                "the path is not absolute (the sandbox needs an absolute path; `~` is not expanded)"
            }
            PolicyErrorCause::PathPattern => {
                "a `*` in a path must follow a `/` (`/data/*` grants all of `/data`)"
            }
            PolicyErrorCause::Port => "the port is not a number from 1 to 65535",
            PolicyErrorCause::PortPattern => {
                "a port cannot be a pattern (`network:connect:*` allows every port)"
            }
            PolicyErrorCause::Unknown => {
                "the sandbox knows `filesystem:read:PATH`, `filesystem:write:PATH`, \
                 `filesystem:*`, `network:connect:PORT` and `network:*`"
            }
        };
        write!(
            f,
            "plugin '{}': permission '{}': {cause}",
            self.plugin, self.permission
        )
    }
}

impl std::error::Error for PolicyError {}

const FILESYSTEM: &str = "filesystem:";
const READ: &str = "filesystem:read:";
const WRITE: &str = "filesystem:write:";
const NETWORK: &str = "network:";
const CONNECT: &str = "network:connect:";

/// One rule a permission stands for.
#[derive(Debug, PartialEq, Eq)]
enum Grant {
    Read(PathBuf),
    Write(PathBuf),
    Port(u16),
    AnyNetwork,
}

impl SandboxPolicy {
    /// The policy of plugin `plugin`, loaded from `plugin_copy`, holding
    /// `permissions` (requested and granted), under the operator's `limits`.
    /// The error names the first permission the sandbox cannot express.
    pub(crate) fn new(
        plugin: &str,
        permissions: &[String],
        plugin_copy: &Path,
        limits: ResourceLimits,
        best_effort: bool,
    ) -> Result<SandboxPolicy, PolicyError> {
        let mut read = Vec::new();
        let mut write = Vec::new();
        let mut ports = Vec::new();
        let mut any_network = false;
        for permission in permissions {
            let grants = grants(permission).map_err(|cause| PolicyError {
                plugin: plugin.to_owned(),
                permission: permission.clone(),
                cause,
            })?;
            for grant in grants {
                match grant {
                    Grant::Read(path) => push_new(&mut read, path),
                    Grant::Write(path) => push_new(&mut write, path),
                    Grant::Port(port) => ports.push(port),
                    Grant::AnyNetwork => any_network = true,
                }
            }
        }
        ports.sort_unstable();
        ports.dedup();
        let network = if any_network {
            NetworkGrant::Any
        } else if ports.is_empty() {
            NetworkGrant::None
        } else {
            NetworkGrant::Ports(ports)
        };
        if network.is_granted() {
            for path in NAME_RESOLUTION {
                push_new(&mut read, PathBuf::from(path));
            }
        }
        let mut read_exec = Vec::new();
        for path in SYSTEM_LIBRARIES {
            push_new(&mut read_exec, PathBuf::from(path));
        }
        Ok(SandboxPolicy {
            plugin: plugin.to_owned(),
            copy: plugin_copy.to_path_buf(),
            more_copies: Vec::new(),
            read_exec,
            read,
            write,
            network,
            limits,
            identity: None,
            best_effort,
        })
    }
}

/// The `filesystem:` and `network:` permissions among `permissions`
/// (patterns such as `*` that cover them included): those a plugin running
/// inside the host's process holds without anything enforcing them.
pub(crate) fn unenforceable_in_process(permissions: &[String]) -> Vec<&str> {
    permissions
        .iter()
        .map(String::as_str)
        .filter(|permission| {
            permission.starts_with(FILESYSTEM)
                || permission.starts_with(NETWORK)
                || permission.strip_suffix('*').is_some_and(|prefix| {
                    FILESYSTEM.starts_with(prefix) || NETWORK.starts_with(prefix)
                })
        })
        .collect()
}

/// The rules one permission stands for: none for the families the sandbox
/// does not enforce.
fn grants(permission: &str) -> Result<Vec<Grant>, PolicyErrorCause> {
    let Some(prefix) = permission.strip_suffix('*') else {
        return exact_grant(permission).map(|grant| grant.into_iter().collect());
    };
    let mut grants = Vec::new();
    // A pattern grants what every permission it matches would.
    if FILESYSTEM.starts_with(prefix) || WRITE.starts_with(prefix) {
        grants.push(Grant::Write(PathBuf::from("/")));
    } else if READ.starts_with(prefix) {
        grants.push(Grant::Read(PathBuf::from("/")));
    } else if let Some(folder) = prefix.strip_prefix(WRITE) {
        grants.push(Grant::Write(pattern_folder(folder)?));
    } else if let Some(folder) = prefix.strip_prefix(READ) {
        grants.push(Grant::Read(pattern_folder(folder)?));
    } else if prefix.starts_with(FILESYSTEM) {
        return Err(PolicyErrorCause::Unknown);
    }
    if NETWORK.starts_with(prefix) || CONNECT.starts_with(prefix) {
        grants.push(Grant::AnyNetwork);
    } else if prefix.starts_with(CONNECT) {
        return Err(PolicyErrorCause::PortPattern);
    } else if prefix.starts_with(NETWORK) {
        return Err(PolicyErrorCause::Unknown);
    }
    Ok(grants)
}

/// The rule of a permission without a pattern, if it is one the sandbox
/// enforces.
fn exact_grant(permission: &str) -> Result<Option<Grant>, PolicyErrorCause> {
    if let Some(path) = permission.strip_prefix(READ) {
        Ok(Some(Grant::Read(absolute(path)?)))
    } else if let Some(path) = permission.strip_prefix(WRITE) {
        Ok(Some(Grant::Write(absolute(path)?)))
    } else if let Some(port) = permission.strip_prefix(CONNECT) {
        Ok(Some(Grant::Port(port_number(port)?)))
    } else if permission.starts_with(FILESYSTEM) || permission.starts_with(NETWORK) {
        Err(PolicyErrorCause::Unknown)
    } else {
        Ok(None)
    }
}

/// The folder a path pattern (`/data/` of `/data/*`) covers.
fn pattern_folder(prefix: &str) -> Result<PathBuf, PolicyErrorCause> {
    if prefix.is_empty() {
        return Ok(PathBuf::from("/"));
    }
    if !prefix.ends_with('/') {
        return Err(PolicyErrorCause::PathPattern);
    }
    absolute(prefix)
}

fn absolute(path: &str) -> Result<PathBuf, PolicyErrorCause> {
    if path.is_empty() {
        return Err(PolicyErrorCause::EmptyPath);
    }
    let path = PathBuf::from(path);
    // `has_root`, not `is_absolute`: `/data` is a full path on every
    // platform the host builds for, Windows (no drive letter) included.
    if !path.has_root() {
        return Err(PolicyErrorCause::RelativePath);
    }
    Ok(path)
}

fn port_number(port: &str) -> Result<u16, PolicyErrorCause> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PolicyErrorCause::Port);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(PolicyErrorCause::Port),
        Ok(port) => Ok(port),
    }
}

fn push_new(paths: &mut Vec<PathBuf>, path: PathBuf) {
    if !paths.contains(&path) {
        paths.push(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::wire::policy::is_system_path;

    fn policy(permissions: &[&str]) -> Result<SandboxPolicy, PolicyError> {
        let permissions: Vec<String> = permissions.iter().map(|p| p.to_string()).collect();
        SandboxPolicy::new(
            "notes",
            &permissions,
            Path::new("/var/lib/agent-host/copies/notes.so"),
            ResourceLimits::default(),
            false,
        )
    }

    fn paths(paths: &[&str]) -> Vec<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    fn system_libraries() -> Vec<PathBuf> {
        SYSTEM_LIBRARIES.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn no_permission_allows_only_the_copy_and_system_libraries() {
        let limits = ResourceLimits {
            memory_bytes: Some(1 << 28),
            open_files: Some(64),
            cpu_seconds: None,
            processes: Some(32),
        };
        let policy = SandboxPolicy::new(
            "notes",
            &[
                "service:weather".to_owned(),
                "event:emit:notes:*".to_owned(),
            ],
            Path::new("/copies/notes.so"),
            limits,
            true,
        )
        .expect("no sandboxed permission");
        assert_eq!(policy.plugin, "notes");
        assert_eq!(policy.copy, Path::new("/copies/notes.so"));
        assert_eq!(policy.read_exec, system_libraries());
        assert_eq!(policy.identity, None);
        assert!(policy.read.is_empty());
        assert!(policy.write.is_empty());
        assert_eq!(policy.network, NetworkGrant::None);
        assert_eq!(policy.limits, limits);
        assert!(policy.best_effort);
    }

    #[test]
    fn filesystem_grants_become_read_and_write_paths() {
        let policy = policy(&[
            "filesystem:read:/data/notes",
            "filesystem:write:/var/tmp/notes",
            "filesystem:read:/data/notes",
            "filesystem:read:/srv/a:b",
        ])
        .expect("valid grants");
        assert_eq!(policy.read, paths(&["/data/notes", "/srv/a:b"]));
        assert_eq!(policy.write, paths(&["/var/tmp/notes"]));
        assert_eq!(policy.network, NetworkGrant::None);
    }

    #[test]
    fn filesystem_star_writes_everywhere() {
        let policy = policy(&["filesystem:*"]).expect("valid grant");
        assert_eq!(policy.write, paths(&["/"]));
        assert!(policy.read.is_empty());
        assert_eq!(policy.network, NetworkGrant::None);
    }

    #[test]
    fn path_patterns_grant_their_folder() {
        let policy = policy(&[
            "filesystem:read:/data/*",
            "filesystem:write:*",
            "filesystem:r*",
        ])
        .expect("valid patterns");
        assert_eq!(policy.read, paths(&["/data/", "/"]));
        assert_eq!(policy.write, paths(&["/"]));
    }

    #[test]
    fn connect_grants_become_sorted_ports_and_name_resolution() {
        let policy = policy(&[
            "network:connect:8443",
            "network:connect:443",
            "network:connect:8443",
            "filesystem:read:/data",
        ])
        .expect("valid grants");
        assert_eq!(policy.network, NetworkGrant::Ports(vec![443, 8443]));
        let mut read = paths(&["/data"]);
        read.extend(NAME_RESOLUTION.iter().map(PathBuf::from));
        assert_eq!(policy.read, read);
    }

    #[test]
    fn network_star_allows_any_network() {
        for permissions in [
            &["network:*"][..],
            &["network:connect:*"],
            &["network:connect:80", "network:*"],
        ] {
            let policy = policy(permissions).expect("valid grant");
            assert_eq!(policy.network, NetworkGrant::Any, "{permissions:?}");
            assert!(policy
                .read
                .iter()
                .any(|path| path == Path::new("/etc/resolv.conf")));
        }
    }

    #[test]
    fn a_bare_star_grants_everything() {
        let policy = policy(&["*"]).expect("valid pattern");
        assert_eq!(policy.write, paths(&["/"]));
        assert_eq!(policy.network, NetworkGrant::Any);
    }

    #[test]
    fn other_families_are_ignored() {
        let policy = policy(&["service:*", "event:subscribe:x", "config:read"]).expect("ignored");
        assert_eq!(policy, self::policy(&[]).expect("empty"));
    }

    fn error(permission: &str) -> PolicyError {
        policy(&["filesystem:read:/fine", permission]).expect_err(permission)
    }

    #[test]
    fn relative_empty_and_tilde_paths_are_errors() {
        for (permission, cause) in [
            ("filesystem:read:data", PolicyErrorCause::RelativePath),
            ("filesystem:write:./data", PolicyErrorCause::RelativePath),
            ("filesystem:read:~/notes", PolicyErrorCause::RelativePath),
            ("filesystem:read:", PolicyErrorCause::EmptyPath),
            ("filesystem:write:", PolicyErrorCause::EmptyPath),
            ("filesystem:read:/data/no*", PolicyErrorCause::PathPattern),
            ("filesystem:write:data/*", PolicyErrorCause::RelativePath),
        ] {
            let error = error(permission);
            assert_eq!(error.cause(), cause, "{permission}");
            assert_eq!(error.permission(), permission);
            let message = error.to_string();
            assert!(message.contains("plugin 'notes'"), "{message}");
            assert!(message.contains(permission), "{message}");
        }
        assert!(error("filesystem:read:~/notes").to_string().contains('~'));
    }

    #[test]
    fn bad_ports_are_errors() {
        for port in ["0", "65536", "-1", "+80", "http", "", "80 ", "99999999999"] {
            let permission = format!("network:connect:{port}");
            let error = error(&permission);
            assert_eq!(error.cause(), PolicyErrorCause::Port, "{permission}");
            let message = error.to_string();
            assert!(message.contains("plugin 'notes'"), "{message}");
            assert!(message.contains(&permission), "{message}");
            assert!(message.contains("1 to 65535"), "{message}");
        }
        assert_eq!(
            error("network:connect:8*").cause(),
            PolicyErrorCause::PortPattern
        );
        assert!(policy(&["network:connect:1", "network:connect:65535"]).is_ok());
    }

    #[test]
    fn unknown_filesystem_and_network_permissions_are_errors() {
        for permission in [
            "filesystem:exec:/bin",
            "filesystem:read",
            "filesystem:delete:*",
            "network:listen:80",
            "network:udp:*",
            "network:",
        ] {
            let error = error(permission);
            assert_eq!(error.cause(), PolicyErrorCause::Unknown, "{permission}");
            assert!(error.to_string().contains("network:connect:PORT"));
        }
    }

    #[test]
    fn the_first_bad_permission_is_named() {
        let error = policy(&["network:connect:x", "filesystem:read:y"]).expect_err("bad");
        assert_eq!(error.permission(), "network:connect:x");
    }

    #[test]
    fn system_paths_are_told_from_grants() {
        assert!(is_system_path(Path::new("/usr/lib")));
        assert!(is_system_path(Path::new("/etc/resolv.conf")));
        assert!(!is_system_path(Path::new("/usr/lib/x")));
        assert!(!is_system_path(Path::new("/data")));
    }

    #[test]
    fn policies_survive_serialization() {
        let policy = SandboxPolicy::new(
            "notes",
            &[
                "filesystem:read:/data".to_owned(),
                "network:connect:443".to_owned(),
            ],
            Path::new("/copies/notes.so"),
            ResourceLimits {
                memory_bytes: Some(1),
                open_files: None,
                cpu_seconds: Some(3),
                processes: Some(16),
            },
            false,
        )
        .expect("valid");
        let json = serde_json::to_string(&policy).expect("serializable");
        let back: SandboxPolicy = serde_json::from_str(&json).expect("deserializable");
        assert_eq!(back, policy);
    }

    #[test]
    fn unenforceable_permissions_are_the_filesystem_and_network_ones() {
        let permissions: Vec<String> = [
            "service:weather",
            "filesystem:read:/data",
            "network:connect:443",
            "event:emit:*",
            "network:*",
            "*",
            "files*",
            "config:read",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        assert_eq!(
            unenforceable_in_process(&permissions),
            [
                "filesystem:read:/data",
                "network:connect:443",
                "network:*",
                "*",
                "files*"
            ]
        );
        assert!(unenforceable_in_process(&["service:*".to_owned()]).is_empty());
    }
}
