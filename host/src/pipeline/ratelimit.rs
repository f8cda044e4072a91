//! Per-action rate limits: at most `max_requests` runs in any window of
//! `window_ms`, kept as a sliding log of run times.

use agent_host_plugin_sdk::manifest::RateLimit;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The run logs of every rate-limited action.
#[derive(Default)]
pub struct RateLimiter {
    logs: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Records a run of `plugin`'s `action` at `now` if the limit allows it;
    /// otherwise returns how long until the next run would be allowed.
    pub fn try_acquire(
        &self,
        plugin: &str,
        action: &str,
        limit: RateLimit,
        now: Instant,
    ) -> Result<(), Duration> {
        let window = Duration::from_millis(limit.window_ms);
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let log = logs
            .entry((plugin.to_string(), action.to_string()))
            .or_default();
        while log
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            log.pop_front();
        }
        if log.len() >= limit.max_requests as usize {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        log.push_back(now);
        Ok(())
    }

    /// Keeps the logs of the plugins `keep` says yes to, and forgets the
    /// others (a plugin no longer loaded starts afresh when it returns).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(plugin, _), _| keep(plugin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_per_window() {
        let limiter = RateLimiter::default();
        let limit = RateLimit {
            max_requests: 2,
            window_ms: 1000,
        };
        let start = Instant::now();
        assert!(limiter.try_acquire("p", "A", limit, start).is_ok());
        assert!(limiter
            .try_acquire("p", "A", limit, start + Duration::from_millis(10))
            .is_ok());
        let wait = limiter
            .try_acquire("p", "A", limit, start + Duration::from_millis(20))
            .expect_err("third run in the window is refused");
        assert_eq!(wait, Duration::from_millis(980));
        assert!(
            limiter.try_acquire("p", "B", limit, start).is_ok(),
            "limits are per action"
        );
        assert!(limiter
            .try_acquire("p", "A", limit, start + Duration::from_millis(1001))
            .is_ok());
    }
}
