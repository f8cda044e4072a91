//! What can go wrong while running a plugin in the host.

use std::fmt;

/// Why an [`Agent`](crate::Agent) could not start or answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The `agent-host` program is not where it was looked for.
    ProgramNotFound(String),
    /// A file, a folder or the program could not be used.
    Io {
        /// What was being done.
        what: String,
        /// The system's error.
        cause: std::io::Error,
    },
    /// `agent-host check` refused a plugin: its report, one line per
    /// problem, each naming the file or plugin and the cause.
    Load(String),
    /// The agent answered something that is not a reply, or stopped.
    Protocol(String),
    /// No reply, or no such log line, in time.
    TimedOut(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, cause: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            cause,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ProgramNotFound(why) => write!(f, "cannot find the agent-host program: {why}"),
            Error::Io { what, cause } => write!(f, "{what}: {cause}"),
            Error::Load(report) => write!(f, "the host refused the plugins: {report}"),
            Error::Protocol(what) => write!(f, "the agent did not answer as expected: {what}"),
            Error::TimedOut(what) => write!(f, "timed out waiting for {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { cause, .. } => Some(cause),
            _ => None,
        }
    }
}
