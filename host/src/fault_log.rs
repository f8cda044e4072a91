//! The log lines of plugin faults, said once: per plugin and cause, the
//! first fault is logged, the same fault again within [`FAULT_LOG_WINDOW`]
//! of the last line is only counted, and the next line logged (the next
//! such fault after the window, or the periodic summary) says how many
//! were left out. A plugin that times out ten thousand times a minute
//! writes a handful of lines, each with the count of the rest; the metric
//! (`agent_host_plugin_faults_total`) counts every one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the same fault of the same plugin is only counted after a line
/// that said it.
pub(crate) const FAULT_LOG_WINDOW: Duration = Duration::from_secs(10);

/// When the last line of one plugin's fault of one cause was written, and
/// how many of the same came since without a line.
struct Said {
    at: Instant,
    suppressed: u64,
}

/// The lines of faults said, per plugin and cause.
pub(crate) struct FaultLog {
    window: Duration,
    said: Mutex<HashMap<(String, &'static str), Said>>,
}

impl Default for FaultLog {
    fn default() -> Self {
        Self::new(FAULT_LOG_WINDOW)
    }
}

/// A summary of faults left out of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// The plugin.
    pub plugin: String,
    /// The cause.
    pub cause: &'static str,
    /// How many faults had no line of their own.
    pub count: u64,
}

impl FaultLog {
    /// A log that counts the repeats of a fault for `window` after a line.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            said: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a fault of `plugin` for `cause` at `now` gets a line:
    /// `Some(n)` when it does, `n` being the same faults left out since the
    /// last line; `None` when it is only counted.
    pub(crate) fn admit(&self, plugin: &str, cause: &'static str, now: Instant) -> Option<u64> {
        let mut said = self.said.lock().unwrap_or_else(PoisonError::into_inner);
        match said.get_mut(&(plugin.to_string(), cause)) {
            Some(last) if now.saturating_duration_since(last.at) < self.window => {
                last.suppressed += 1;
                None
            }
            Some(last) => {
                last.at = now;
                Some(std::mem::take(&mut last.suppressed))
            }
            None => {
                said.insert(
                    (plugin.to_string(), cause),
                    Said {
                        at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// The faults left out of the log whose window has passed at `now`
    /// (every one when `all`), to say in a summary line; their counts start
    /// again from zero and the entries of quiet faults are dropped.
    pub(crate) fn take_suppressed(&self, now: Instant, all: bool) -> Vec<Suppressed> {
        let mut said = self.said.lock().unwrap_or_else(PoisonError::into_inner);
        let mut summaries = Vec::new();
        said.retain(|(plugin, cause), last| {
            let over = now.saturating_duration_since(last.at) >= self.window;
            if last.suppressed > 0 && (over || all) {
                summaries.push(Suppressed {
                    plugin: plugin.clone(),
                    cause,
                    count: std::mem::take(&mut last.suppressed),
                });
                last.at = now;
                return true;
            }
            !over
        });
        summaries.sort_by(|a, b| (&a.plugin, a.cause).cmp(&(&b.plugin, b.cause)));
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_is_said_its_repeats_counted_and_the_next_line_says_how_many() {
        let start = Instant::now();
        let log = FaultLog::new(Duration::from_secs(10));
        assert_eq!(log.admit("storm", "events_cut", start), Some(0));
        for n in 1..=10_002u64 {
            let at = start + Duration::from_micros(n);
            assert_eq!(log.admit("storm", "events_cut", at), None);
        }
        // Another plugin, or another cause, has lines of its own.
        assert_eq!(log.admit("other", "events_cut", start), Some(0));
        assert_eq!(log.admit("storm", "timed_out", start), Some(0));
        // After the window, the next fault's line carries the count.
        let later = start + Duration::from_secs(11);
        assert_eq!(log.admit("storm", "events_cut", later), Some(10_002));
        assert_eq!(log.admit("storm", "events_cut", later), None);
    }

    #[test]
    fn a_summary_says_what_was_left_out_once_the_window_is_over() {
        let start = Instant::now();
        let log = FaultLog::new(Duration::from_secs(10));
        log.admit("storm", "events_cut", start);
        log.admit("storm", "events_cut", start);
        log.admit("quiet", "timed_out", start);
        assert!(log.take_suppressed(start, false).is_empty());
        let over = start + Duration::from_secs(10);
        assert_eq!(
            log.take_suppressed(over, false),
            vec![Suppressed {
                plugin: "storm".into(),
                cause: "events_cut",
                count: 1
            }]
        );
        // Said: nothing is left to say, and the quiet fault is forgotten.
        assert!(log.take_suppressed(over, true).is_empty());
        assert_eq!(log.admit("quiet", "timed_out", over), Some(0));
        // At the end, everything left out is said, window or not.
        log.admit("quiet", "timed_out", over);
        assert_eq!(log.take_suppressed(over, true).len(), 1);
    }
}
