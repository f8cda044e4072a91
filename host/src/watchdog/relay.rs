//! A relay: a fixed list of calls into plugins ("jobs"), run in order by
//! one thread at a time, which another thread takes over when a job runs
//! past its deadline.
//!
//! The thread running the relay (its *driver*) runs job after job on its
//! own stack: no hand-over per call. Each finished job's result goes into
//! the job's slot, and the driver moves the relay's progress word on with
//! one compare-and-swap. The word holds the driver's number (high 32 bits)
//! and how many jobs are done (low 32 bits).
//!
//! When the watchdog sees the progress word unchanged past the current
//! job's deadline, [`Relay::take_over`] moves the word to the next driver
//! number and past the late job in one compare-and-swap, raises the old
//! driver's cancellation flag and records the job as abandoned. A new
//! thread then drives the rest. The old driver stays in the plugin until it
//! returns; its compare-and-swap then fails, it removes the result it put
//! into the abandoned job's slot and leaves. Exactly one of the two wins
//! for every job, so no job runs twice and no result is lost or read twice.

use agent_host_plugin_abi::CallControl;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// How many drivers a relay may have: the first, and one per job it takes
/// over. Work that has lost this many calls to their deadlines stops
/// taking over and waits.
pub(crate) const MAX_DRIVERS: u32 = 8;

const DONE_BITS: u64 = 0xffff_ffff;

fn driver_of(progress: u64) -> u32 {
    (progress >> 32) as u32
}

fn done_of(progress: u64) -> usize {
    (progress & DONE_BITS) as usize
}

/// One job's result, written by the driver that ran it.
struct Slot<R>(UnsafeCell<Option<R>>);

// SAFETY: a slot is written only by the one driver that owns its job (the
// one whose number is in the progress word while the job is the next one
// to do) and read only after the progress word has moved past it through
// that driver's successful compare-and-swap (release) and a later
// acquire-load of the word. An abandoned job's slot is written by its old
// driver and emptied by it again; nobody else touches it.
unsafe impl<R: Send> Sync for Slot<R> {}

/// What driving a relay came to for the thread that drove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relayed {
    /// Every job is done and this thread did the last one: it goes on
    /// with the work.
    Finished,
    /// Another thread took over; this one must leave the work alone.
    Superseded,
}

/// A job the watchdog abandoned, and what the relay keeps for it until its
/// old driver returns (a place in the plugin's calls in flight).
struct Abandoned<G> {
    job: usize,
    holds: Option<G>,
}

/// A fixed list of jobs with results of type `R`; `G` is what an abandoned
/// job holds until its call returns.
pub(crate) struct Relay<R, G = ()> {
    progress: AtomicU64,
    slots: Box<[Slot<R>]>,
    abandoned: Mutex<Vec<Abandoned<G>>>,
    controls: [CallControl; MAX_DRIVERS as usize],
}

impl<R: Send, G> Relay<R, G> {
    /// A relay of `jobs` jobs, driven first by driver number `driver`.
    pub(crate) fn new(jobs: usize, driver: u32) -> Self {
        Self::with_deadline(jobs, driver, 0)
    }

    /// A relay whose calls see `deadline_unix_ms` (milliseconds since the
    /// Unix epoch, 0 for none) as their deadline.
    pub(crate) fn with_deadline(jobs: usize, driver: u32, deadline_unix_ms: u64) -> Self {
        Self {
            progress: AtomicU64::new(u64::from(driver) << 32),
            slots: (0..jobs).map(|_| Slot(UnsafeCell::new(None))).collect(),
            abandoned: Mutex::new(Vec::new()),
            controls: std::array::from_fn(|_| CallControl::with_deadline(deadline_unix_ms)),
        }
    }

    /// The job in progress and the driver running it, as the watchdog sees
    /// them: the progress word (compare it between two looks to see
    /// whether anything moved), or `None` once every job is done.
    pub(crate) fn in_progress(&self) -> Option<(u64, usize)> {
        let progress = self.progress.load(Ordering::Acquire);
        let job = done_of(progress);
        (job < self.slots.len()).then_some((progress, job))
    }

    /// The cancellation signal of driver `driver`'s calls.
    pub(crate) fn control(&self, driver: u32) -> &CallControl {
        &self.controls[driver as usize % MAX_DRIVERS as usize]
    }

    /// Runs the jobs left, in order, as driver `driver`: `run(job, control)`
    /// makes the call of job `job`.
    pub(crate) fn drive(
        &self,
        driver: u32,
        mut run: impl FnMut(usize, &CallControl) -> R,
    ) -> Relayed {
        let control = self.control(driver);
        loop {
            let seen = self.progress.load(Ordering::Acquire);
            if driver_of(seen) != driver {
                return Relayed::Superseded;
            }
            let job = done_of(seen);
            if job >= self.slots.len() {
                return Relayed::Finished;
            }
            let result = crate::current_call::within(control, || run(job, control));
            let slot = self.slots[job].0.get();
            // SAFETY: job `job` is ours (our number is in the word and `job`
            // jobs are done), so no other thread writes this slot, and no
            // thread reads it before the word moves past it below.
            unsafe { *slot = Some(result) };
            if self
                .progress
                .compare_exchange(seen, seen + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Taken over while the call ran: the job is abandoned and
                // its slot is never read. Take the result back and leave.
                // SAFETY: as above; the new driver started after this job.
                drop(unsafe { (*slot).take() });
                drop(self.release_abandoned(job));
                return Relayed::Superseded;
            }
        }
    }

    /// Takes the relay over from the driver in `seen` (a word from
    /// [`Relay::in_progress`]) if it has not moved since: the job in
    /// progress is abandoned (holding `holds` until its call returns) and
    /// its driver's calls are cancelled. Returns the new driver's number,
    /// which must then drive the rest on another thread.
    pub(crate) fn take_over(&self, seen: u64, holds: impl FnOnce() -> G) -> Option<u32> {
        let driver = driver_of(seen);
        let job = done_of(seen);
        if driver + 1 >= MAX_DRIVERS || job >= self.slots.len() {
            return None;
        }
        let mut abandoned = self
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = (u64::from(driver + 1) << 32) | ((seen & DONE_BITS) + 1);
        if self
            .progress
            .compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        abandoned.push(Abandoned {
            job,
            holds: Some(holds()),
        });
        drop(abandoned);
        self.control(driver).cancel();
        Some(driver + 1)
    }

    /// Ends what an abandoned job held, once its old driver is back.
    fn release_abandoned(&self, job: usize) -> Option<G> {
        self.abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .find(|a| a.job == job)
            .and_then(|a| a.holds.take())
    }

    /// The jobs abandoned at their deadline (no allocation when none was).
    fn abandoned_jobs(&self) -> Vec<usize> {
        self.abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|a| a.job)
            .collect()
    }

    /// Whether job `job` was abandoned at its deadline.
    #[cfg(test)]
    pub(crate) fn was_abandoned(&self, job: usize) -> bool {
        self.abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|a| a.job == job)
    }

    /// Takes the results out once the relay is finished: `None` for an
    /// abandoned job. Only the driver that got [`Relayed::Finished`] may
    /// call it, once.
    #[cfg(test)]
    pub(crate) fn take_results(&self) -> Vec<Option<R>> {
        let mut results = Vec::with_capacity(self.slots.len());
        self.drain(|_, result| results.push(result));
        results
    }

    /// Hands each result over in job order, moved out of its slot (`None`
    /// for an abandoned job), without collecting them first. Only the
    /// driver that got [`Relayed::Finished`] may call it, once.
    pub(crate) fn drain(&self, mut visit: impl FnMut(usize, Option<R>)) {
        let progress = self.progress.load(Ordering::Acquire);
        debug_assert!(done_of(progress) >= self.slots.len());
        let abandoned = self.abandoned_jobs();
        for (job, slot) in self.slots.iter().enumerate() {
            if abandoned.contains(&job) {
                visit(job, None);
            } else {
                // SAFETY: every job is done, so the drivers that wrote the
                // slots published them with their compare-and-swap before
                // the acquire-load above; abandoned slots are skipped, and
                // the caller is the one finishing driver.
                visit(job, unsafe { (*slot.0.get()).take() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_driver_runs_every_job_in_order() {
        let relay: Relay<usize> = Relay::new(4, 0);
        let mut order = Vec::new();
        let outcome = relay.drive(0, |job, _| {
            order.push(job);
            job * 10
        });
        assert_eq!(outcome, Relayed::Finished);
        assert_eq!(order, vec![0, 1, 2, 3]);
        assert_eq!(
            relay.take_results(),
            vec![Some(0), Some(10), Some(20), Some(30)]
        );
    }

    #[test]
    fn a_late_job_is_abandoned_and_the_rest_run_on_the_new_driver() {
        let relay: Arc<Relay<&'static str, &'static str>> = Arc::new(Relay::new(3, 0));
        let release = Arc::new(AtomicBool::new(false));
        let (first, gate) = (Arc::clone(&relay), Arc::clone(&release));
        let stuck = std::thread::spawn(move || {
            first.drive(0, |job, control| {
                if job == 1 {
                    while !gate.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    assert!(
                        control.is_cancelled(),
                        "the late call sees the cancellation"
                    );
                    "late"
                } else {
                    "first"
                }
            })
        });
        let seen = loop {
            match relay.in_progress() {
                Some((seen, 1)) => break seen,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let next = relay.take_over(seen, || "held").expect("taken over");
        assert_eq!(next, 1);
        assert!(relay.take_over(seen, || "again").is_none(), "only once");
        assert_eq!(relay.drive(next, |_, _| "rescued"), Relayed::Finished);
        assert!(relay.was_abandoned(1));
        release.store(true, Ordering::SeqCst);
        assert_eq!(stuck.join().expect("joins"), Relayed::Superseded);
        assert_eq!(
            relay.take_results(),
            vec![Some("first"), None, Some("rescued")]
        );
        assert!(
            relay.release_abandoned(1).is_none(),
            "the old driver released it"
        );
    }

    #[test]
    fn a_job_that_finished_first_is_not_taken_over() {
        let relay: Relay<u8> = Relay::new(2, 0);
        let (seen, _) = relay.in_progress().expect("in progress");
        relay.drive(0, |_, _| 1);
        assert!(relay.take_over(seen, || ()).is_none());
        assert_eq!(relay.take_results(), vec![Some(1), Some(1)]);
    }
}
