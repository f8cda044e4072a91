//! Deadlines for calls into plugins, without a thread hop per call.
//!
//! Plugin code runs on the thread that needs its answer: a message's calls
//! run one after another on the thread that serves the message, so a call
//! costs a function call, not a hand-over to another thread and back. What
//! bounds them is one watchdog thread per host. It keeps a coarse clock
//! (milliseconds since the host started, one tick every
//! [`TICK`]) and, each tick, asks every watched piece of work whether its
//! current call has run past its deadline. Work that is late is taken over:
//! the call's cancellation flag is raised (the plugin sees it), the call is
//! abandoned (its thread keeps it until the plugin returns, counted against
//! the plugin's bulkhead), and the rest of the work moves to a fresh thread
//! (see [`relay`]).
//!
//! A call is never declared late early: the watchdog notices a new call at
//! its first tick and counts from there, so a deadline holds to within one
//! tick.

pub(crate) mod relay;

use agent_host_plugin_abi::CallControl;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now: the clock of the deadlines a
/// plugin sees in its [`CallControl`].
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch, `timeout` from now: a deadline for a
/// [`CallControl`].
pub(crate) fn unix_ms_after(timeout: Duration) -> u64 {
    // Rounded up, so the plugin never sees its deadline before the host
    // does; 0 (a clock before the epoch) stays "no deadline".
    match unix_ms_now() {
        0 => 0,
        now => now
            .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .saturating_add(1),
    }
}

/// Whether the wall clock has reached the control's deadline.
pub(crate) fn deadline_passed(control: &CallControl) -> bool {
    let deadline = control.deadline_unix_ms();
    deadline != 0 && unix_ms_now() >= deadline
}

/// How often the watchdog looks at the work it watches.
pub(crate) const TICK: Duration = Duration::from_millis(2);

/// Work whose calls into plugins the watchdog bounds.
pub(crate) trait Watched: Send + Sync {
    /// Looks at the work at `now_ms` (the watchdog's clock). Returns false
    /// once the work is over, so the watchdog forgets it.
    fn check(self: Arc<Self>, now_ms: u64) -> bool;
}

struct Shared {
    started: Instant,
    now_ms: AtomicU64,
    watched: Mutex<Vec<Weak<dyn Watched>>>,
    stopped: AtomicBool,
}

/// The watchdog of one host: its clock and the work it watches.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Starts the watchdog thread. It ends when the watchdog is dropped.
    pub(crate) fn start() -> Self {
        let shared = Arc::new(Shared {
            started: Instant::now(),
            now_ms: AtomicU64::new(0),
            watched: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("agent-host-watchdog".into())
            .spawn(move || watch(&thread_shared));
        if let Err(error) = spawned {
            // Without the thread, calls still run and still see their
            // deadlines through their call controls; nothing abandons them.
            tracing::error!("could not start the watchdog thread: {error}");
        }
        Self { shared }
    }

    /// The watchdog's clock: milliseconds since the host started, read
    /// without a system call.
    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.now_ms.load(Ordering::Relaxed)
    }

    /// Watches `work` until its [`Watched::check`] returns false or it is
    /// dropped.
    pub(crate) fn watch(&self, work: Weak<dyn Watched>) {
        self.shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(work);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
    }
}

fn watch(shared: &Shared) {
    let mut current: Vec<Weak<dyn Watched>> = Vec::new();
    while !shared.stopped.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        let now_ms = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.now_ms.store(now_ms, Ordering::Relaxed);
        // Take the new work out under the lock, check it without the lock
        // (a check may start a thread), then put back what is still going.
        current.append(
            &mut shared
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        current.retain(|work| work.upgrade().is_some_and(|work| work.check(now_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counted {
        checks: AtomicUsize,
        done_after: usize,
    }

    impl Watched for Counted {
        fn check(self: Arc<Self>, _now_ms: u64) -> bool {
            self.checks.fetch_add(1, Ordering::SeqCst) + 1 < self.done_after
        }
    }

    #[test]
    fn the_clock_advances_and_finished_work_is_forgotten() {
        let watchdog = Watchdog::start();
        let work = Arc::new(Counted {
            checks: AtomicUsize::new(0),
            done_after: 3,
        });
        let weak: Weak<dyn Watched> = Arc::downgrade(&work) as Weak<dyn Watched>;
        watchdog.watch(weak);
        std::thread::sleep(TICK * 40);
        assert_eq!(work.checks.load(Ordering::SeqCst), 3, "checked until done");
        assert!(watchdog.now_ms() >= 2 * TICK.as_millis() as u64);
    }
}
