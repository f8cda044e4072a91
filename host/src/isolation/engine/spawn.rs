//! The operating-system side of a worker process: starting it, tying its
//! life to the host's, and naming how it ended. (Its connections are the
//! `link` module's.)
//!
//! The worker's environment is emptied: the host's environment may hold
//! secrets (config values taken from variables) that a sandboxed plugin
//! must not see.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};

/// Starts `program worker` with `stdin` as its standard input (what the
/// link gives), its output piped to the host.
///
/// Every worker is started by one long-lived thread: the kernel sends a
/// child its parent-death signal when the *thread* that forked it ends, so
/// a worker started from a short-lived thread (a parallel load, a restart)
/// would be killed with it.
pub(crate) fn start(program: &Path, stdin: Stdio) -> io::Result<Child> {
    type Request = (PathBuf, Stdio, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        let spawned = std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                for (program, stdin, reply) in incoming {
                    let _ = reply.send(spawn_now(&program, stdin));
                }
            });
        if let Err(error) = spawned {
            tracing::error!("cannot start the worker-spawning thread: {error}");
        }
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((program.to_path_buf(), stdin, reply))
        .map_err(|_| io::Error::other("the worker-spawning thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the worker-spawning thread is gone"))?
}

fn spawn_now(program: &Path, stdin: Stdio) -> io::Result<Child> {
    let mut command = Command::new(program);
    command
        .arg("worker")
        .env_clear()
        // Each thread's malloc arena reserves address space, which counts
        // against the worker's memory limit: two arenas are plenty.
        .env("MALLOC_ARENA_MAX", "2");
    // Windows sockets do not start without the system folder's name.
    #[cfg(windows)]
    if let Some(root) = std::env::var_os("SystemRoot") {
        command.env("SystemRoot", root);
    }
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// A readable name for a signal that ended a worker.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 if cfg!(target_os = "linux") => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 if cfg!(target_os = "linux") => "SIGXCPU",
        31 if cfg!(target_os = "linux") => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

/// An exit code as the system reports it, with what it says about how the
/// worker ended where it is the system's report of a crash (Windows ends a
/// crashed process with the exception code as its exit code, best read in
/// hexadecimal).
pub(crate) fn describe_exit_code(code: i32) -> String {
    describe_exit_code_on(code, cfg!(windows))
}

fn describe_exit_code_on(code: i32, windows: bool) -> String {
    if !windows {
        return code.to_string();
    }
    let hint = match code as u32 {
        0xC000_0005 => " (an access violation)",
        0xC000_00FD => " (a stack overflow)",
        0xC000_0409 => " (a fast fail: abort(), or a panic in a `panic = \"abort\"` build)",
        0xC000_0017 | 0xC000_012D => " (out of memory)",
        3 => " (exit(3), or the C runtime's abort())",
        _ => "",
    };
    if code < 0 {
        format!("0x{:08X}{hint}", code as u32)
    } else {
        format!("{code}{hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_crash_codes_read_in_hexadecimal_with_their_cause() {
        let fast_fail = 0xC000_0409_u32 as i32;
        assert_eq!(
            describe_exit_code_on(fast_fail, true),
            "0xC0000409 (a fast fail: abort(), or a panic in a `panic = \"abort\"` build)"
        );
        assert_eq!(
            describe_exit_code_on(0xC000_00FD_u32 as i32, true),
            "0xC00000FD (a stack overflow)"
        );
        assert_eq!(describe_exit_code_on(7, true), "7");
        assert_eq!(
            describe_exit_code_on(fast_fail, false),
            fast_fail.to_string()
        );
        assert_eq!(describe_exit_code_on(3, false), "3");
    }
}
