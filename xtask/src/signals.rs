//! Catching Ctrl-C (SIGINT), SIGTERM and SIGHUP so that `cargo xtask dev`
//! can stop the agent it started before exiting.
//!
//! On Unix the handler only records the signal in an atomic (the one thing a
//! signal handler may safely do); handlers are reset by `exec`, so child
//! processes keep the default behaviour. Elsewhere nothing is installed: a
//! console Ctrl-C reaches the child directly.

/// Installs the handlers; call once, before starting children.
#[cfg(unix)]
pub fn install() {
    extern "C" fn record(signal: libc::c_int) {
        imp::RECEIVED.store(signal, std::sync::atomic::Ordering::SeqCst);
    }
    let handler: extern "C" fn(libc::c_int) = record;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `record` is async-signal-safe (one atomic store) and lives
        // for the whole program.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

/// Installs the handlers; call once, before starting children.
#[cfg(not(unix))]
pub fn install() {}

/// The signal received since [`install`], if any.
pub fn received() -> Option<i32> {
    #[cfg(unix)]
    {
        match imp::RECEIVED.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Asks process `pid` to terminate (SIGTERM); returns false when that is
/// not possible here (then kill it).
pub fn terminate(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, not yet waited for, so it cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

#[cfg(unix)]
mod imp {
    use std::sync::atomic::AtomicI32;

    /// The last signal received, or 0.
    pub static RECEIVED: AtomicI32 = AtomicI32::new(0);
}
