//! Systems without a process sandbox: nothing to put in force.

use super::{Protections, SandboxError};
use crate::isolation::policy::SandboxPolicy;

const MISSING: &str = "process sandbox";
const CAUSE: &str = "not available on this operating system";

/// Reports every protection missing; an error unless the policy is
/// best-effort.
pub(super) fn apply(policy: &SandboxPolicy) -> Result<Protections, SandboxError> {
    if !policy.best_effort {
        return Err(SandboxError::new(&policy.plugin, MISSING, CAUSE));
    }
    Ok(Protections {
        missing: vec![format!("{MISSING}: {CAUSE}")],
        ..Protections::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::policy::ResourceLimits;
    use std::path::Path;

    fn policy(best_effort: bool) -> SandboxPolicy {
        SandboxPolicy::new(
            "notes",
            &[],
            Path::new("/copies/notes"),
            ResourceLimits::default(),
            best_effort,
        )
        .expect("no permission")
    }

    #[test]
    fn nothing_is_in_force_and_only_best_effort_accepts_it() {
        let error = apply(&policy(false)).expect_err("no sandbox");
        assert_eq!(error.protection(), MISSING);
        assert!(error.to_string().contains("plugin 'notes'"));
        let protections = apply(&policy(true)).expect("best effort");
        assert!(!protections.seccomp && !protections.landlock_filesystem);
        assert_eq!(
            protections.missing,
            ["process sandbox: not available on this operating system"]
        );
    }
}
