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
//!
//! Each tick reads the time from the watchdog's [`Clock`]: in the host, the
//! system's monotonic clock; in its tests, a clock the test sets, with the
//! test calling [`Watchdog::tick`] itself instead of waiting for the thread.

pub(crate) mod relay;
#[cfg(test)]
pub(crate) mod test_clock;

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

/// Where the watchdog reads its time: milliseconds since it started. The
/// host's is [`MonotonicClock`]; tests hand in a clock they set, and drive
/// the watchdog with [`Watchdog::tick`] instead of waiting for its thread.
pub(crate) trait Clock: Send + Sync {
    /// Milliseconds since the watchdog started.
    fn now_ms(&self) -> u64;
}

/// The system's monotonic clock, counted from when this was made.
pub(crate) struct MonotonicClock(Instant);

impl MonotonicClock {
    /// A clock that reads 0 now.
    pub(crate) fn new() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

struct Shared {
    clock: Box<dyn Clock>,
    now_ms: AtomicU64,
    watched: Mutex<Vec<Weak<dyn Watched>>>,
    /// The work being watched, out of `watched`, while a tick checks it.
    current: Mutex<Vec<Weak<dyn Watched>>>,
    stopped: AtomicBool,
}

/// The watchdog of one host: its clock and the work it watches.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Starts the watchdog thread, which ticks every [`TICK`] on the
    /// monotonic clock (in tests, on a clock installed with
    /// `test_clock::install`, if any). It ends when the watchdog is
    /// dropped.
    pub(crate) fn start() -> Self {
        #[cfg(test)]
        let clock = test_clock::take().unwrap_or_else(|| Box::new(MonotonicClock::new()));
        #[cfg(not(test))]
        let clock = Box::new(MonotonicClock::new());
        let watchdog = Self::with_clock(clock);
        let thread_shared = Arc::clone(&watchdog.shared);
        let spawned = std::thread::Builder::new()
            .name("agent-host-watchdog".into())
            .spawn(move || {
                while !thread_shared.stopped.load(Ordering::Acquire) {
                    std::thread::sleep(TICK);
                    thread_shared.tick();
                }
            });
        if let Err(error) = spawned {
            // Without the thread, calls still run and still see their
            // deadlines through their call controls; nothing abandons them.
            tracing::error!("could not start the watchdog thread: {error}");
        }
        watchdog
    }

    /// A watchdog on `clock` that nothing ticks: whoever holds it calls
    /// [`Self::tick`].
    pub(crate) fn with_clock(clock: Box<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared {
                clock,
                now_ms: AtomicU64::new(0),
                watched: Mutex::new(Vec::new()),
                current: Mutex::new(Vec::new()),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// One look at the watched work: reads the clock, then asks each piece
    /// of work whether its current call is late.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn tick(&self) {
        self.shared.tick();
    }

    /// The watchdog's clock as of its last tick: milliseconds since the
    /// host started, read without a system call.
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

impl Shared {
    fn tick(&self) {
        // One tick at a time: the thread is the only caller in the host.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now_ms = self.clock.now_ms();
        self.now_ms.store(now_ms, Ordering::Relaxed);
        // Take the new work out under the lock, check it without the lock
        // (a check may start a thread), then keep what is still going.
        current.append(&mut self.watched.lock().unwrap_or_else(PoisonError::into_inner));
        current.retain(|work| work.upgrade().is_some_and(|work| work.check(now_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test sets.
    struct SetClock(Arc<AtomicU64>);

    impl Clock for SetClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A watchdog on a clock the test sets, and the clock's hand.
    fn watchdog_at(start_ms: u64) -> (Watchdog, Arc<AtomicU64>) {
        let hand = Arc::new(AtomicU64::new(start_ms));
        let watchdog = Watchdog::with_clock(Box::new(SetClock(Arc::clone(&hand))));
        (watchdog, hand)
    }

    /// Work that writes the times it is checked at into `log`, and is over
    /// after `done_after` checks.
    struct Logged {
        log: Arc<Mutex<Vec<u64>>>,
        done_after: usize,
    }

    impl Watched for Logged {
        fn check(self: Arc<Self>, now_ms: u64) -> bool {
            let mut log = self.log.lock().expect("lock");
            log.push(now_ms);
            log.len() < self.done_after
        }
    }

    /// Watches new work that is over after `done_after` checks; returns
    /// the work and the log of its checks.
    fn watch(watchdog: &Watchdog, done_after: usize) -> (Arc<dyn Watched>, Arc<Mutex<Vec<u64>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let work: Arc<dyn Watched> = Arc::new(Logged {
            log: Arc::clone(&log),
            done_after,
        });
        watchdog.watch(Arc::downgrade(&work));
        (work, log)
    }

    fn checked_at(log: &Mutex<Vec<u64>>) -> Vec<u64> {
        log.lock().expect("lock").clone()
    }

    #[test]
    fn each_tick_reads_the_clock_and_checks_the_work_at_that_time() {
        let (watchdog, hand) = watchdog_at(0);
        assert_eq!(watchdog.now_ms(), 0);
        let (_work, log) = watch(&watchdog, usize::MAX);
        for now in [2, 4, 9] {
            hand.store(now, Ordering::SeqCst);
            watchdog.tick();
            assert_eq!(watchdog.now_ms(), now, "the clock as of the last tick");
        }
        assert_eq!(checked_at(&log), vec![2, 4, 9]);
    }

    #[test]
    fn work_is_forgotten_once_over_or_dropped() {
        let (watchdog, hand) = watchdog_at(10);
        let (_finishing, finishing_log) = watch(&watchdog, 3);
        let (dropped, dropped_log) = watch(&watchdog, usize::MAX);
        watchdog.tick();
        drop(dropped);
        for now in 11..=15 {
            hand.store(now, Ordering::SeqCst);
            watchdog.tick();
        }
        assert_eq!(
            checked_at(&finishing_log),
            vec![10, 11, 12],
            "checked until over"
        );
        assert_eq!(
            checked_at(&dropped_log),
            vec![10],
            "not checked once dropped"
        );
    }

    #[test]
    fn work_watched_between_ticks_is_checked_from_the_next_one() {
        let (watchdog, hand) = watchdog_at(0);
        watchdog.tick();
        let (_work, log) = watch(&watchdog, usize::MAX);
        assert!(checked_at(&log).is_empty(), "no tick since");
        hand.store(7, Ordering::SeqCst);
        watchdog.tick();
        assert_eq!(checked_at(&log), vec![7]);
    }

    #[test]
    fn a_started_watchdog_ticks_on_its_own_thread_in_clock_order() {
        let watchdog = Watchdog::start();
        let (_work, log) = watch(&watchdog, 2);
        // The bound only keeps a broken watchdog from hanging the test; what
        // is asserted is that its thread checked the work, twice, in order.
        let give_up = Instant::now() + Duration::from_secs(20);
        while checked_at(&log).len() < 2 {
            assert!(Instant::now() < give_up, "the watchdog thread never ticked");
            std::thread::sleep(TICK);
        }
        let times = checked_at(&log);
        assert!(times[0] <= times[1], "{times:?}");
        assert!(watchdog.now_ms() >= times[1], "{times:?}");
    }
}
