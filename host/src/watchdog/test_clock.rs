//! A clock that tests move on: the monotonic clock plus the time a test
//! skipped. Installed on a test's thread, it is the clock of the next
//! watchdog started there (the host's, when the test then builds a host),
//! so a test of a cache's lifetime or of an old host skips time instead of
//! sleeping through it.

use super::{Clock, MonotonicClock, TICK};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Skipping {
    real: MonotonicClock,
    skipped_ms: AtomicU64,
    /// How many times the watchdog has read the clock.
    reads: AtomicU64,
}

impl Clock for Arc<Skipping> {
    fn now_ms(&self) -> u64 {
        let now = self
            .real
            .now_ms()
            .saturating_add(self.skipped_ms.load(Ordering::SeqCst));
        self.reads.fetch_add(1, Ordering::SeqCst);
        now
    }
}

thread_local! {
    static INSTALLED: RefCell<Option<Arc<Skipping>>> = const { RefCell::new(None) };
}

/// The hand of an installed clock.
pub(crate) struct SkipHand(Arc<Skipping>);

/// Installs a skipping clock on this thread, for the next watchdog started
/// on it.
pub(crate) fn install() -> SkipHand {
    let clock = Arc::new(Skipping {
        real: MonotonicClock::new(),
        skipped_ms: AtomicU64::new(0),
        reads: AtomicU64::new(0),
    });
    INSTALLED.with(|installed| *installed.borrow_mut() = Some(Arc::clone(&clock)));
    SkipHand(clock)
}

/// The clock installed on this thread, taken (a watchdog takes it).
pub(super) fn take() -> Option<Box<dyn Clock>> {
    INSTALLED
        .with(|installed| installed.borrow_mut().take())
        .map(|clock| Box::new(clock) as Box<dyn Clock>)
}

impl SkipHand {
    /// Moves the clock `ms` on, and returns once the watchdog has finished
    /// a tick at the new time (so the host reads it).
    pub(crate) fn skip(&self, ms: u64) {
        self.0.skipped_ms.fetch_add(ms, Ordering::SeqCst);
        // A read counted after this one began after the skip; the read
        // after that one, in the next tick, means that tick is over.
        let seen = self.0.reads.load(Ordering::SeqCst);
        let give_up = Instant::now() + Duration::from_secs(20);
        while self.0.reads.load(Ordering::SeqCst) < seen + 3 {
            assert!(Instant::now() < give_up, "no watchdog reads this clock");
            std::thread::sleep(TICK);
        }
    }
}
