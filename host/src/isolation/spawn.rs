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

/// In the worker: asks the kernel to kill this process when its parent
/// dies, and exits at once if the parent is already gone.
pub(crate) fn die_with_parent() -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::process::{getppid, set_parent_process_death_signal, Signal};
        set_parent_process_death_signal(Some(Signal::KILL))?;
        // The parent may have died before the signal was armed.
        if getppid().is_none_or(|pid| pid.as_raw_nonzero().get() == 1) {
            std::process::exit(0);
        }
    }
    Ok(())
}

/// In the worker: a crash ends the process at once, with the crash's
/// exception code as its exit code. Windows would otherwise show an error
/// dialog or start a debugger first, and the host would see a hung call
/// rather than a crash. (Elsewhere a crash is a signal, which already ends
/// the process.)
pub(crate) fn end_at_once_on_crash() {
    #[cfg(windows)]
    windows_crash::install();
}

#[cfg(windows)]
mod windows_crash {
    use windows_sys::Win32::Foundation::STATUS_STACK_OVERFLOW;
    use windows_sys::Win32::System::Diagnostics::Debug::{
        AddVectoredExceptionHandler, SetErrorMode, SetUnhandledExceptionFilter,
        EXCEPTION_CONTINUE_SEARCH, EXCEPTION_POINTERS, SEM_FAILCRITICALERRORS,
        SEM_NOGPFAULTERRORBOX,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};

    pub(super) fn install() {
        // SAFETY: these calls only set this process's error mode, its
        // top-level exception filter and one more exception handler, each
        // a function that lives as long as the process. The handler is
        // added last, after the Rust runtime's own (which prints the
        // overflowed thread's name).
        unsafe {
            SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
            SetUnhandledExceptionFilter(Some(end_unhandled));
            AddVectoredExceptionHandler(0, Some(end_on_stack_overflow));
        }
    }

    /// The code of the exception `info` describes, if any.
    ///
    /// # Safety
    /// `info` must be null or point to the system's description of an
    /// exception being dispatched.
    unsafe fn code_of(info: *const EXCEPTION_POINTERS) -> Option<u32> {
        // SAFETY: the caller's promise; both pointers are checked for null.
        unsafe {
            info.as_ref()
                .and_then(|i| i.ExceptionRecord.as_ref())
                .map(|record| record.ExceptionCode as u32)
        }
    }

    fn end_now(code: u32) {
        // SAFETY: terminating the current process through its
        // pseudo-handle; this needs almost no stack.
        unsafe { TerminateProcess(GetCurrentProcess(), code) };
    }

    /// Every exception nothing handled: end with its code.
    unsafe extern "system" fn end_unhandled(info: *const EXCEPTION_POINTERS) -> i32 {
        // SAFETY: the system passes the exception being dispatched.
        end_now(unsafe { code_of(info) }.unwrap_or(1));
        EXCEPTION_CONTINUE_SEARCH
    }

    /// A stack overflow, which no handler can recover from and which may
    /// leave too little stack to reach the unhandled-exception filter.
    unsafe extern "system" fn end_on_stack_overflow(info: *mut EXCEPTION_POINTERS) -> i32 {
        // SAFETY: the system passes the exception being dispatched.
        if unsafe { code_of(info) } == Some(STATUS_STACK_OVERFLOW as u32) {
            end_now(STATUS_STACK_OVERFLOW as u32);
        }
        EXCEPTION_CONTINUE_SEARCH
    }
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
