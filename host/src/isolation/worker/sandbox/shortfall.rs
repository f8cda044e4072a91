//! A protection the Linux sandbox could not put in force, and why: what
//! confinement and the rest of the sandbox both report.

/// A protection not in force, and why.
#[derive(Debug)]
pub(super) struct Shortfall {
    /// The protection.
    pub(super) protection: &'static str,
    /// Why it is not in force.
    pub(super) cause: String,
}

impl Shortfall {
    pub(super) fn new(protection: &'static str, cause: impl ToString) -> Self {
        Self {
            protection,
            cause: cause.to_string(),
        }
    }
}
