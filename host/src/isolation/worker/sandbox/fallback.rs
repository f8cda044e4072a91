//! Systems without a process sandbox: nothing to put in force. An isolated
//! plugin still runs in a worker of its own (its crashes, hangs and memory
//! stay there), and its status says that no sandbox is in force.

use super::SandboxError;
use crate::isolation::wire::policy::SandboxPolicy;
use crate::worker_status::Protections;

/// Why a protection is not in force: never built here, as there is no
/// protection to put in force.
#[derive(Debug)]
pub(crate) enum SandboxCause {}

impl std::fmt::Display for SandboxCause {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for SandboxCause {}

const MISSING: &str = "process sandbox: not available on this operating system";

/// Reports every protection missing.
pub(super) fn apply(
    _policy: &SandboxPolicy,
    _copies: &[std::fs::File],
) -> Result<Protections, SandboxError> {
    Ok(Protections {
        missing: vec![MISSING.to_string()],
        ..Protections::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::wire::policy::ResourceLimits;
    use std::path::Path;

    #[test]
    fn nothing_is_in_force_and_the_status_says_so() {
        let policy = SandboxPolicy::new(
            "notes",
            &[],
            Path::new("/copies/notes"),
            ResourceLimits::default(),
            false,
        )
        .expect("no permission");
        let protections = apply(&policy, None).expect("a plain worker");
        assert!(!protections.seccomp && !protections.landlock_filesystem);
        assert_eq!(protections.missing, [MISSING]);
    }
}
