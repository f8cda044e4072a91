//! Unix: `dlopen` with eager binding, SIGTERM besides Ctrl-C, the limit
//! of open files, and the terminal's mode.

use std::path::Path;

/// Opens a library with `RTLD_NOW | RTLD_LOCAL`: every symbol is bound at
/// load time (a missing one is an error now, not a crash later), and none
/// of the plugin's symbols leak into other libraries' lookups. The error is
/// the loader's own text.
pub(crate) fn open_library(path: &Path) -> Result<libloading::Library, String> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: opening a library runs its initialisers. The caller has
    // checked the file's object header (a shared library for this
    // platform, complete on disk) and loads a private copy that nothing
    // else writes; what the plugin's initialisers do is the trust the
    // operator places in an in-process plugin.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map(libloading::Library::from)
        .map_err(|e| e.to_string())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How many files (sockets included) the process may have open at once,
/// when it has a limit.
pub(crate) fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The mode of the terminal on stdin when this was made, put back when it
/// is dropped: the chat's line editor puts the terminal in raw mode while
/// it reads, and the agent may stop while it reads.
#[derive(Debug)]
pub(crate) struct TerminalMode(Option<rustix::termios::Termios>);

impl TerminalMode {
    /// The terminal's mode now; nothing when stdin is no terminal.
    pub(crate) fn of_stdin() -> Self {
        Self(rustix::termios::tcgetattr(std::io::stdin()).ok())
    }
}

impl Drop for TerminalMode {
    fn drop(&mut self) {
        if let Some(mode) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                mode,
            );
        }
    }
}
