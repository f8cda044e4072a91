//! Why a plugin file could not be opened.
//!
//! Each failure is a value the host can act on (the watcher retries only a
//! file caught half-written) and one line an operator can read: the file
//! is named once, by the report that carries the error, and the error says
//! what is wrong and what to do.

use crate::shared_cause::SharedCause;
use agent_host_plugin_sdk::manifest::UnknownFields;
use std::fmt;
use std::path::PathBuf;

/// Why a file could not be opened as a plugin library. Nothing of the
/// plugin's code has run when any of these is returned (a refused file is
/// never even mapped), except for
/// [`OpenError::Manifest`], [`OpenError::NewerManifest`] and
/// [`OpenError::NoPlugins`] (the manifest function ran).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The file (or its private copy) could not be read or written.
    Io {
        /// What was being done, such as "cannot make a private copy".
        doing: &'static str,
        /// The operating system's error.
        cause: SharedCause<std::io::Error>,
    },
    /// The private copy's path no longer leads to the file written there.
    CopyReplaced {
        /// The copy's path.
        copy: PathBuf,
    },
    /// The file is empty: a build that has only just created it.
    Empty,
    /// The file is larger than the configured limit; it was not copied.
    TooLarge {
        /// Its size in bytes.
        bytes: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not a shared library of any known format, or is an
    /// object file of another kind (an executable, a relocatable object).
    NotALibrary {
        /// What it is instead.
        found: String,
    },
    /// A shared library built for another operating system or processor.
    WrongPlatform {
        /// What it was built for, such as "aarch64 (ELF)".
        built_for: String,
        /// What this host is, such as "x86_64 (ELF)".
        host: String,
    },
    /// The file is shorter than its own headers say: a build caught while
    /// writing it. Mapping it would crash the host, so it is never opened.
    Incomplete {
        /// The part that lies past the end, such as "a loadable segment".
        what: String,
        /// The file's size in bytes.
        bytes: u64,
    },
    /// The dynamic loader refused the file.
    Dlopen {
        /// The loader's reason, without the file name.
        reason: String,
    },
    /// The library exports no agent-host plugin module.
    NotAPlugin,
    /// The plugin was built against another major version of the plugin ABI.
    AbiVersion {
        /// The ABI version the plugin was built against.
        plugin: String,
        /// The ABI major version this host speaks.
        host: u64,
    },
    /// The plugin was built with an incompatible `abi_stable`.
    AbiStable {
        /// The library's ABI header, as `abi_stable` describes it.
        header: String,
    },
    /// The binary layout of the plugin interface differs from the host's.
    Layout {
        /// The first mismatch: the type and what differs.
        first_mismatch: String,
        /// The full layout report (thousands of lines), shown with `-v`.
        report: String,
    },
    /// Another check of `abi_stable` refused the library.
    Rejected {
        /// The first line of its report.
        first_line: String,
        /// The full report.
        report: String,
    },
    /// The library's manifest function failed, or its manifests cannot be read.
    Manifest {
        /// Why.
        cause: String,
    },
    /// A manifest has fields this host does not know: the plugin was built
    /// with a newer SDK (or a foreign one).
    NewerManifest(UnknownFields),
    /// The library exports no plugin.
    NoPlugins,
    /// The library was built with `panic = "abort"`: it cannot catch a
    /// panic at the boundary, so it is not run in the host's process.
    AbortsOnPanic,
    /// The worker process that opens the file for an isolated plugin could
    /// not open or check it; the cause is the worker's own error line.
    Worker {
        /// Why, as the worker said.
        cause: String,
    },
    /// The trust policy (`[trust]`: the lock file, trusted keys) refused
    /// the file's bytes; nothing of it was mapped.
    Refused(crate::trust::Refusal),
}

impl OpenError {
    /// Whether trying again later may succeed: the file is being written.
    pub fn is_transient(&self) -> bool {
        matches!(self, OpenError::Empty | OpenError::Incomplete { .. })
    }

    /// The full diagnostic behind a condensed line, if there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            OpenError::Layout { report, .. } | OpenError::Rejected { report, .. } => Some(report),
            _ => None,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REBUILD: &str = "rebuild the plugin against this host's agent-host-plugin-sdk";
        match self {
            OpenError::Io { doing, cause } => write!(f, "{doing}: {cause}"),
            OpenError::CopyReplaced { copy } => write!(
                f,
                "cannot open the private copy: {} is no longer the file written",
                copy.display()
            ),
            OpenError::Empty => f.write_str("the file is empty (a build still writing it?)"),
            OpenError::TooLarge { bytes, limit } => write!(
                f,
                "the file has {bytes} bytes, over the {limit} byte limit for plugin files (host.max_plugin_bytes)"
            ),
            OpenError::NotALibrary { found } => write!(f, "not a shared library: {found}"),
            OpenError::WrongPlatform { built_for, host } => {
                write!(f, "built for {built_for}; this host is {host}")
            }
            OpenError::Incomplete { what, bytes } => write!(
                f,
                "the file is incomplete ({what} lies past its end at {bytes} bytes): a build still writing it?"
            ),
            OpenError::Dlopen { reason } => write!(f, "the dynamic loader refused it: {reason}"),
            OpenError::NotAPlugin => f.write_str(
                "not an agent-host plugin: it exports no plugin module (build it with export_plugin!)",
            ),
            OpenError::AbiVersion { plugin, host } => write!(
                f,
                "built against plugin ABI {plugin}, but this host speaks plugin ABI {host}.x: {REBUILD}"
            ),
            OpenError::AbiStable { header } => {
                write!(f, "built with an incompatible abi_stable ({header}): {REBUILD}")
            }
            OpenError::Layout { first_mismatch, .. } => write!(
                f,
                "incompatible plugin ABI layout ({first_mismatch}): {REBUILD}; -v shows the full report"
            ),
            OpenError::Rejected { first_line, .. } => {
                write!(f, "rejected by the ABI check: {first_line}")
            }
            OpenError::Manifest { cause } => write!(f, "manifest: {cause}"),
            OpenError::NewerManifest(unknown) => unknown.fmt(f),
            OpenError::NoPlugins => f.write_str("the library exports no plugin"),
            OpenError::AbortsOnPanic => f.write_str(
                "built with panic = \"abort\": its first panic would end the host, so it does not run in process; build it with panic = \"unwind\" (the default), or run it isolated ([isolation] process = [\"<plugin>\"])",
            ),
            OpenError::Worker { cause } => f.write_str(cause),
            OpenError::Refused(refusal) => refusal.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { cause, .. } => Some(cause),
            OpenError::NewerManifest(unknown) => Some(unknown),
            OpenError::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}
