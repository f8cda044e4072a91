//! Windows: `LoadLibraryExW`, Ctrl-C, no limit of open files, the
//! console's mode left as the chat's editor sets it, and private copies
//! in the user's own temporary folder.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// Opens a library; the error holds the loader's own text.
pub(crate) fn open_library(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: opening a library runs its initialisers (`DllMain`). The
    // caller has checked the file's object header and loads a private copy
    // that nothing else writes; what the plugin's initialisers do is the
    // trust the operator places in an in-process plugin.
    unsafe { libloading::Library::new(path) }
}

/// Resolves on Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// How many files the process may have open at once: sockets have no
/// per-process limit here.
pub(crate) fn open_file_limit() -> Option<u64> {
    None
}

/// The resident memory of process `pid`: not read on this platform yet.
pub(crate) fn resident_bytes(_pid: u32) -> Option<u64> {
    None
}

/// The console's mode around the chat: not kept here yet, so an agent
/// stopped while the chat's editor reads leaves the console in the
/// editor's input mode.
#[derive(Debug)]
pub(crate) struct TerminalMode;

impl TerminalMode {
    /// Keeps nothing.
    pub(crate) fn of_stdin() -> Self {
        Self
    }
}

/// Opens `path` for reading. Opening a file never waits here (a named pipe
/// lives under `\\.\pipe\`, never in a plugin folder); the caller
/// refuses anything but a regular file.
pub(crate) fn open_without_blocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Creates the folder `path`, which must not exist. The temporary folder
/// is the user's own here; the folder inherits its access list.
pub(crate) fn create_private_folder(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// Checks that `path` itself (not a link) is a folder.
pub(crate) fn check_private_folder(path: &Path) -> io::Result<()> {
    let found = std::fs::symlink_metadata(path)?;
    if found.file_type().is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "is not a folder",
        ))
    }
}

/// Whether this process's user owns the file: the temporary folder is the
/// user's own here, so whatever is in it.
pub(crate) fn is_own(_metadata: &Metadata) -> bool {
    true
}

/// Creates the file `path`, which must not exist, open for writing. It is
/// not marked read-only: a read-only file could not be removed when its
/// generation ends.
pub(crate) fn create_read_only_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Whether `path` names the file `file` is open on. Std has no stable file
/// identity here: both must exist and have the same length.
pub(crate) fn is_same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.len() == named.len(),
        _ => false,
    }
}
