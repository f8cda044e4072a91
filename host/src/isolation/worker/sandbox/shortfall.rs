//! A protection the Linux sandbox could not put in force, and why: what
//! confinement and the rest of the sandbox both report.

use landlock::{RulesetError, ABI};
use std::io;
use std::path::PathBuf;

/// A protection not in force, and why.
#[derive(Debug)]
pub(super) struct Shortfall {
    /// The protection.
    pub(super) protection: &'static str,
    /// Why it is not in force.
    pub(super) cause: SandboxCause,
}

impl Shortfall {
    pub(super) fn new(protection: &'static str, cause: impl Into<SandboxCause>) -> Self {
        Self {
            protection,
            cause: cause.into(),
        }
    }
}

/// Why a protection of the Linux sandbox is not in force: the error of the
/// system call, of landlock or of seccompiler where there is one, else what
/// the kernel or the process lacks.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxCause {
    /// A system call failed.
    #[error("{0}")]
    Os(#[from] io::Error),
    /// Lowering one resource limit failed.
    #[error("{limit}: {source}")]
    Limit {
        /// The limit, such as `RLIMIT_AS`.
        limit: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A path the policy grants could not be opened.
    #[error("'{}': {source}", path.display())]
    Grant {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A path the policy grants goes through a symbolic link.
    #[error(
        "'{}': a symbolic link is on the way, and the sandbox follows none in a grant: \
         grant the path the link leads to",
        path.display()
    )]
    GrantThroughLink {
        /// The path.
        path: PathBuf,
        /// The refusal to follow it.
        #[source]
        source: io::Error,
    },
    /// The plugin's copy could not be opened.
    #[error("the plugin's copy '{}': {source}", path.display())]
    Copy {
        /// The copy's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Switching to the worker's user failed.
    #[error("cannot become '{user}': {source}")]
    BecomeUser {
        /// The user.
        user: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Switching users needs a process with one thread.
    #[error("cannot become '{user}' in a process with other threads")]
    UserWithThreads {
        /// The user.
        user: String,
    },
    /// The operator chose root as the worker's user.
    #[error("the worker runs as root")]
    RunsAsRoot,
    /// Entering namespaces needs a process with one thread.
    #[error("cannot enter new namespaces in a process with other threads")]
    NamespacesWithThreads,
    /// The kernel did not keep `no_new_privs` set.
    #[error("the kernel did not keep it set")]
    NotKept,
    /// Landlock refused the ruleset or a rule.
    #[error("{0}")]
    Landlock(#[from] RulesetError),
    /// Landlock is built in but not enabled.
    #[error("disabled in this kernel (not in its lsm= list)")]
    LandlockDisabled,
    /// The kernel has no landlock.
    #[error("not supported by this kernel")]
    LandlockUnsupported,
    /// Landlock took the ruleset but enforced none of it.
    #[error("the kernel enforced no rule")]
    NothingEnforced,
    /// Other threads would stay unrestricted (`threads` is the process's
    /// thread count, when `/proc` tells).
    #[error("{}", other_threads(*threads))]
    OtherThreads {
        /// The threads of the process.
        threads: Option<usize>,
    },
    /// A protection needs a newer landlock ABI than the kernel's.
    #[error("{feature} needs landlock ABI {required}, the kernel has ABI {found}")]
    OldAbi {
        /// What needs it.
        feature: &'static str,
        /// The ABI it needs.
        required: ABI,
        /// The kernel's.
        found: ABI,
    },
    /// The host has no system-call filter for this processor.
    #[cfg_attr(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        allow(dead_code) // built only on other processors
    )]
    #[error("not available on this processor ({arch})")]
    NoFilter {
        /// The processor.
        arch: &'static str,
    },
    /// Seccompiler could not build or install the filter.
    #[error("{0}")]
    Seccomp(#[from] seccompiler::Error),
}

impl From<rustix::io::Errno> for SandboxCause {
    fn from(errno: rustix::io::Errno) -> Self {
        Self::Os(errno.into())
    }
}

fn other_threads(threads: Option<usize>) -> String {
    let count = match threads.map(|n| n.saturating_sub(1)) {
        Some(1) => "1 other thread".to_owned(),
        Some(n) => format!("{n} other threads"),
        None => "other threads (unknown: /proc/self/task is unreadable)".to_owned(),
    };
    format!(
        "{count} of the worker would stay unrestricted: restricting them needs landlock \
         ABI 8; apply the sandbox before starting threads"
    )
}

#[cfg(test)]
mod tests {
    use super::super::SandboxError;
    use super::*;
    use std::error::Error;

    #[test]
    fn a_sandbox_error_prints_one_line_and_keeps_the_os_error() {
        let cause = SandboxCause::Grant {
            path: PathBuf::from("/srv/notes"),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let error = SandboxError::new("notes", "filesystem grants", cause);
        let line = error.to_string();
        assert!(
            line.starts_with(
                "plugin 'notes': cannot sandbox its worker: filesystem grants: '/srv/notes': "
            ),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        let cause = error.source().expect("the cause");
        let os = cause.source().expect("the OS error");
        let os = os.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(os.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_landlock_abi_too_old_names_both_versions() {
        let cause = SandboxCause::OldAbi {
            feature: "restricting TCP",
            required: ABI::V4,
            found: ABI::V1,
        };
        assert_eq!(
            cause.to_string(),
            format!(
                "restricting TCP needs landlock ABI {}, the kernel has ABI {}",
                ABI::V4,
                ABI::V1
            )
        );
    }
}
