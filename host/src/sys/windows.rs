//! Windows: `LoadLibraryExW`, Ctrl-C, no limit of open files, and the
//! console's mode left as the chat's editor sets it.

use std::path::Path;

/// Opens a library; the error is the loader's own text.
pub(crate) fn open_library(path: &Path) -> Result<libloading::Library, String> {
    // SAFETY: opening a library runs its initialisers (`DllMain`). The
    // caller has checked the file's object header and loads a private copy
    // that nothing else writes; what the plugin's initialisers do is the
    // trust the operator places in an in-process plugin.
    unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())
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
