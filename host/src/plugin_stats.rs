//! One plugin's counts for its status (`GET /v1/plugins`): its action
//! handler runs and their durations, and its faults (timeouts, panics,
//! worker crashes and restarts). Recording a run is one atomic increment
//! in a power-of-two bucket of microseconds; the percentiles are read from
//! the buckets when the status is asked for. The counts live as long as
//! the host (a reload keeps them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets of handler durations: bucket `i` holds the runs that took less
/// than `2^i` microseconds (and at least `2^(i-1)`); the last one holds
/// the rest (over about 36 minutes).
const BUCKETS: usize = 32;

/// How far back restarts count as recent (see
/// [`PluginStats::recent_restarts`]).
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(300);

/// One plugin's counts.
#[derive(Default)]
pub struct PluginStats {
    durations: [AtomicU64; BUCKETS],
    timeouts: AtomicU64,
    panics: AtomicU64,
    crashes: AtomicU64,
    restarts: AtomicU64,
    /// When its worker restarted, within [`RESTART_WINDOW`].
    restarted_at: Mutex<VecDeque<Instant>>,
}

/// A plugin's counts at one time, as its status shows them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatsView {
    /// Action handler runs.
    pub calls: u64,
    /// The median handler duration, in microseconds (the upper bound of
    /// its power-of-two bucket); `null` before the first run.
    pub p50_us: Option<u64>,
    /// The 99th percentile of the handler durations, read the same way.
    pub p99_us: Option<u64>,
    /// Calls into it that missed their deadline.
    pub timeouts: u64,
    /// Calls into it that panicked.
    pub panics: u64,
    /// Times its worker process died.
    pub crashes: u64,
    /// Times its worker process was restarted.
    pub restarts: u64,
}

/// A fault counted in a plugin's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// A call missed its deadline.
    Timeout,
    /// A call panicked.
    Panic,
    /// Its worker died.
    Crash,
    /// Its worker was restarted.
    Restart,
}

impl PluginStats {
    /// Records one handler run of `took`.
    #[inline]
    pub fn record_run(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.durations[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one fault of the plugin at `now`.
    pub(crate) fn count(&self, fault: Counted, now: Instant) {
        let counter = match fault {
            Counted::Timeout => &self.timeouts,
            Counted::Panic => &self.panics,
            Counted::Crash => &self.crashes,
            Counted::Restart => {
                let mut at = self
                    .restarted_at
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                at.push_back(now);
                forget_before(&mut at, now);
                &self.restarts
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The restarts of its worker within the last [`RESTART_WINDOW`] of `now`.
    pub(crate) fn recent_restarts(&self, now: Instant) -> usize {
        let mut at = self
            .restarted_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        forget_before(&mut at, now);
        at.len()
    }

    /// The counts now.
    pub fn view(&self) -> StatsView {
        let counts: Vec<u64> = self
            .durations
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let calls: u64 = counts.iter().sum();
        let percentile = |share: f64| -> Option<u64> {
            if calls == 0 {
                return None;
            }
            // The run at this rank (1-based) is in the bucket the running
            // sum reaches it in.
            let rank = ((calls as f64) * share).ceil().max(1.0) as u64;
            let mut seen = 0;
            counts.iter().enumerate().find_map(|(bucket, count)| {
                seen += count;
                (seen >= rank).then(|| 1u64.checked_shl(bucket as u32).unwrap_or(u64::MAX))
            })
        };
        StatsView {
            calls,
            p50_us: percentile(0.5),
            p99_us: percentile(0.99),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}

fn forget_before(at: &mut VecDeque<Instant>, now: Instant) {
    while at
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > RESTART_WINDOW)
    {
        at.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_from_the_buckets_and_faults_counted_by_kind() {
        let stats = PluginStats::default();
        assert_eq!(stats.view(), StatsView::default());
        for _ in 0..98 {
            stats.record_run(Duration::from_micros(100));
        }
        stats.record_run(Duration::from_millis(5));
        stats.record_run(Duration::from_millis(5));
        let view = stats.view();
        assert_eq!(view.calls, 100);
        // 100 us is in the bucket below 128 us; 5 ms below 8192 us.
        assert_eq!(view.p50_us, Some(128));
        assert_eq!(view.p99_us, Some(8192));
        let now = Instant::now();
        stats.count(Counted::Timeout, now);
        stats.count(Counted::Restart, now);
        stats.count(Counted::Restart, now);
        let view = stats.view();
        assert_eq!((view.timeouts, view.restarts, view.panics), (1, 2, 0));
        assert_eq!(stats.recent_restarts(now), 2);
        assert_eq!(stats.recent_restarts(now + RESTART_WINDOW * 2), 0);
    }
}
