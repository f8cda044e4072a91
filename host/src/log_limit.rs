//! Plugin log lines, bounded: a token bucket per plugin
//! ([`LINES_PER_SECOND`] lines a second, [`BURST_LINES`] at once) and a cap
//! on one line's length ([`MAX_LINE_BYTES`]). A plugin that floods the log
//! loses the lines over its rate; how many is reported in the log at most
//! once every [`REPORT_EVERY`] while the flood lasts, by the first line
//! that passes after it, and when the plugin instance goes.

use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The lines a second a plugin may log, over time.
pub(crate) const LINES_PER_SECOND: f64 = 100.0;
/// The lines a plugin may log at once, after a quiet time.
pub(crate) const BURST_LINES: f64 = 200.0;
/// The longest log line kept whole, in bytes; the rest is cut.
pub(crate) const MAX_LINE_BYTES: usize = 4096;
/// How often, at most, the count of dropped lines is reported.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One plugin's token bucket.
pub(crate) struct LogLimiter {
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last report.
    dropped: u64,
    reported: Instant,
}

/// What to do with one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Whether the line is logged.
    pub log: bool,
    /// Lines dropped before it, to report now (first).
    pub report_dropped: Option<u64>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl LogLimiter {
    /// A full bucket at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(Bucket {
                tokens: BURST_LINES,
                refilled: now,
                dropped: 0,
                reported: now,
            }),
        }
    }

    /// The verdict on a line logged at `now`.
    pub(crate) fn admit(&self, now: Instant) -> Verdict {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * LINES_PER_SECOND).min(BURST_LINES);
        bucket.refilled = now;
        let log = bucket.tokens >= 1.0;
        if log {
            bucket.tokens -= 1.0;
        } else {
            bucket.dropped += 1;
        }
        let due = now.saturating_duration_since(bucket.reported) >= REPORT_EVERY;
        let report_dropped = if bucket.dropped > 0 && (due || (log && bucket.tokens >= 1.0)) {
            bucket.reported = now;
            Some(std::mem::take(&mut bucket.dropped))
        } else {
            None
        };
        Verdict {
            log,
            report_dropped,
        }
    }

    /// The lines dropped and not reported yet (when the plugin goes).
    pub(crate) fn take_dropped(&self) -> u64 {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut bucket.dropped)
    }
}

/// `line` as one line of the host's log: its line breaks written as `\n`
/// and `\r` (a plugin's text must not start a line that reads like the
/// host's own), cut to [`MAX_LINE_BYTES`] (at a character boundary) with a
/// note of how many bytes were cut.
pub(crate) fn cut(line: &str) -> Cow<'_, str> {
    let line: Cow<'_, str> = if line.contains(['\n', '\r']) {
        Cow::Owned(line.replace('\n', "\\n").replace('\r', "\\r"))
    } else {
        Cow::Borrowed(line)
    };
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... ({} more bytes cut)",
        &line[..end],
        line.len() - end
    ))
}

#[cfg(test)]
mod one_line {
    use super::cut;

    #[test]
    fn a_plugin_line_cannot_start_another_line_of_the_log() {
        let forged = "done\n2026-12-07T00:00:00Z ERROR agent_host: forged\r";
        assert_eq!(
            cut(forged),
            "done\\n2026-12-07T00:00:00Z ERROR agent_host: forged\\r"
        );
        assert!(matches!(cut("plain"), std::borrow::Cow::Borrowed("plain")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_the_burst_then_the_rate_and_reports_what_it_dropped() {
        let start = Instant::now();
        let limiter = LogLimiter::new(start);
        let mut logged = 0;
        let mut reported = 0;
        // 100,000 lines in 2 s.
        for n in 0..100_000u64 {
            let verdict = limiter.admit(start + Duration::from_micros(n * 20));
            logged += u64::from(verdict.log);
            reported += verdict.report_dropped.unwrap_or(0);
        }
        // The burst, and 100 lines a second for 2 s.
        assert!((390..=401).contains(&logged), "{logged}");
        // Reported once a second while the flood lasts; the rest is held.
        let held = limiter.take_dropped();
        assert_eq!(logged + reported + held, 100_000);
        assert!(reported > 0 && held > 0, "{reported} {held}");
        // After the flood, the first line that passes reports the rest.
        let mut limiter = LogLimiter::new(start);
        for _ in 0..300 {
            limiter.admit(start);
        }
        let verdict = limiter.admit(start + Duration::from_millis(500));
        assert_eq!(
            verdict,
            Verdict {
                log: true,
                report_dropped: Some(100)
            }
        );
        assert_eq!(limiter.take_dropped(), 0);
        limiter = LogLimiter::new(start);
        assert_eq!(limiter.take_dropped(), 0);
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary_with_a_note() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(3000);
        let cut = cut(&long);
        assert!(cut.len() < MAX_LINE_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with("... (1904 more bytes cut)"), "{cut}");
    }
}
