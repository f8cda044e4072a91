//! The worker's life tied to its host's: it dies with its parent, and a
//! crash ends it at once with a cause the host can name.

use std::io;

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
