//! Unix: `dlopen` with eager binding, SIGTERM besides Ctrl-C, the limit
//! of open files, the terminal's mode, opening a file without blocking,
//! and the modes and owner of the private copies' folder and files.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Opens a library with `RTLD_NOW | RTLD_LOCAL`: every symbol is bound at
/// load time (a missing one is an error now, not a crash later), and none
/// of the plugin's symbols leak into other libraries' lookups. The error
/// holds the loader's own text.
pub(crate) fn open_library(path: &Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: opening a library runs its initialisers. The caller has
    // checked the file's object header (a shared library for this
    // platform, complete on disk) and loads a private copy that nothing
    // else writes; what the plugin's initialisers do is the trust the
    // operator places in an in-process plugin.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(libloading::Library::from)
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

/// The resident memory of process `pid`, in bytes (`/proc/PID/statm`'s
/// resident pages); `None` where `/proc` does not say (not Linux, or the
/// process is gone).
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant; it has no pointer
    // arguments and no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
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

/// Opens `path` for reading with `O_NONBLOCK` (and `O_NOCTTY`): opening a
/// FIFO does not wait for a writer, nor a device for its carrier, and a
/// terminal never becomes the controlling one.
pub(crate) fn open_without_blocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// The mode of the folder of private copies: its user's alone.
const PRIVATE_FOLDER_MODE: u32 = 0o700;

/// The mode of a private copy: readable by anyone who can reach it (a
/// sandboxed worker running as another user opens it through a file
/// descriptor the host passes), writable by nobody. The folder's mode keeps
/// everyone else from reaching it by path.
const COPY_MODE: u32 = 0o444;

/// Creates the folder `path`, which must not exist, with mode 0700 whatever
/// the umask.
pub(crate) fn create_private_folder(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .mode(PRIVATE_FOLDER_MODE)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FOLDER_MODE))?;
    check_private_folder(path)
}

/// Checks that `path` itself (not a link) is a folder of this process's
/// user with mode 0700; the error says what it is instead.
pub(crate) fn check_private_folder(path: &Path) -> io::Result<()> {
    let found = std::fs::symlink_metadata(path)?;
    let mode = found.mode() & 0o7777;
    if found.file_type().is_dir() && is_own(&found) && mode == PRIVATE_FOLDER_MODE {
        return Ok(());
    }
    let kind = if found.file_type().is_symlink() {
        "a symbolic link"
    } else if found.file_type().is_dir() {
        "a folder"
    } else {
        "not a folder"
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "is {kind} of uid {} with mode {mode:04o}, not a folder of uid {} with mode {PRIVATE_FOLDER_MODE:04o}",
            found.uid(),
            rustix::process::geteuid().as_raw()
        ),
    ))
}

/// Whether this process's user owns the file `metadata` describes.
pub(crate) fn is_own(metadata: &Metadata) -> bool {
    metadata.uid() == rustix::process::geteuid().as_raw()
}

/// Creates the file `path`, which must not exist, open for writing, with
/// mode 0444 whatever the umask.
pub(crate) fn create_read_only_file(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(COPY_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(COPY_MODE))?;
    Ok(file)
}

/// Whether `path` names the file `file` is open on (the same device and
/// inode).
pub(crate) fn is_same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}
