//! The admission gate: every top-level entry into plugin code (a message, a
//! host-level service call or event, a timer, a background refresh) passes
//! it; a hot reload closes it to quiesce the plugins before exporting state.
//!
//! Closing waits until no admitted entry is left (or the drain timeout
//! passes, and the reload gives up), and holds new entries until it reopens,
//! so no call can change a plugin's state between the export of the old
//! generation's state and the swap to the new generation. Calls that plugin
//! code makes into other plugins are inside an admitted entry and never wait
//! here, so the gate cannot deadlock on nested calls.
//!
//! Shutting down shuts the gate for good: entries are refused from then on
//! (waiting ones too), and the shutdown waits, at most its grace period, for
//! the admitted ones to leave.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    active: usize,
    closed: bool,
    shut: bool,
}

/// The gate.
#[derive(Default)]
pub struct Admission {
    state: Mutex<State>,
    changed: Condvar,
}

/// An admitted entry; leaves the gate when dropped.
pub struct Admitted<'a>(&'a Admission);

/// The gate held closed; reopens when dropped.
pub struct Closed<'a>(&'a Admission);

impl Admission {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, once the gate is open or shut (waiting while it is closed).
    fn lock_unless_closed(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while state.closed && !state.shut {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state
    }

    /// Enters, waiting while the gate is closed. `None` once the gate is
    /// shut: the host is shutting down and takes no new work.
    pub fn enter(&self) -> Option<Admitted<'_>> {
        let mut state = self.lock_unless_closed();
        if state.shut {
            return None;
        }
        state.active += 1;
        Some(Admitted(self))
    }

    /// Enters like [`Admission::enter`], for work that may move between
    /// threads and so cannot hold a borrowed [`Admitted`]: true when
    /// admitted, and then the work must call [`Admission::leave`] exactly
    /// once when it is over.
    pub fn enter_detached(&self) -> bool {
        match self.enter() {
            Some(admitted) => {
                std::mem::forget(admitted);
                true
            }
            None => false,
        }
    }

    /// Leaves the gate: the end of an entry made with
    /// [`Admission::enter_detached`].
    pub fn leave(&self) {
        let mut state = self.lock();
        state.active -= 1;
        if state.active == 0 {
            self.changed.notify_all();
        }
    }

    /// Shuts the gate for good (every later and waiting entry is refused)
    /// and waits until the admitted entries have left or `deadline` passes.
    /// Returns how many were still inside.
    pub fn shut(&self, deadline: Instant) -> usize {
        let mut state = self.lock();
        state.shut = true;
        self.changed.notify_all();
        while state.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.active
    }

    /// Closes the gate and waits for every admitted entry to leave. Gives up
    /// after `drain_timeout`, reopening the gate and returning how many
    /// entries were still inside.
    pub fn close(&self, drain_timeout: Duration) -> Result<Closed<'_>, usize> {
        let deadline = Instant::now() + drain_timeout;
        // Another closer (reloads are serialized, but be safe) may hold it.
        let mut state = self.lock_unless_closed();
        state.closed = true;
        while state.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let still = state.active;
                state.closed = false;
                self.changed.notify_all();
                return Err(still);
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(Closed(self))
    }

    /// How many entries are admitted now.
    pub fn active(&self) -> usize {
        self.lock().active
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.lock().closed = false;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn close_waits_for_entries_and_holds_new_ones() {
        let gate = Arc::new(Admission::default());
        let inside = gate.enter().expect("open");
        let closer_gate = Arc::clone(&gate);
        let closed_flag = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed_flag);
        let closer = std::thread::spawn(move || {
            let closed = closer_gate.close(Duration::from_secs(5)).expect("drains");
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            drop(closed);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !closed_flag.load(Ordering::SeqCst),
            "still waiting for the entry inside"
        );
        drop(inside);
        while !closed_flag.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let waited = Instant::now();
        let again = gate.enter().expect("open");
        assert!(
            waited.elapsed() >= Duration::from_millis(20),
            "a new entry waited for the reopening"
        );
        drop(again);
        closer.join().expect("closer");
    }

    #[test]
    fn close_gives_up_after_the_drain_timeout_and_reopens() {
        let gate = Admission::default();
        let inside = gate.enter().expect("open");
        assert_eq!(gate.close(Duration::from_millis(30)).err(), Some(1));
        let second = gate.enter().expect("reopened");
        assert_eq!(gate.active(), 2);
        drop((inside, second));
        assert!(gate.close(Duration::from_millis(30)).is_ok());
    }

    #[test]
    fn a_shut_gate_refuses_entries_and_waits_for_those_inside() {
        let gate = Admission::default();
        let inside = gate.enter().expect("open");
        std::thread::scope(|scope| {
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                drop(inside);
            });
            let started = Instant::now();
            assert_eq!(gate.shut(Instant::now() + Duration::from_secs(5)), 0);
            assert!(started.elapsed() >= Duration::from_millis(40));
        });
        assert!(gate.enter().is_none(), "no entry after the shutdown");
    }

    #[test]
    fn shut_gives_up_at_the_deadline() {
        let gate = Admission::default();
        let _stuck = gate.enter().expect("open");
        assert_eq!(gate.shut(Instant::now() + Duration::from_millis(30)), 1);
        assert!(gate.enter().is_none());
    }
}
