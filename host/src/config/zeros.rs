//! Zeros that turn a protection off. A zero that makes no sense (a
//! deadline of no time at all, which every call would miss; a bulkhead of
//! no call) is refused, with an error naming the field and the cause; a
//! zero that is a real choice (no quarantine, no provider back-off, no
//! wait at shutdown) is accepted, and the host warns at start, naming what
//! it turns off.

use super::AgentConfig;

/// A zero that is refused: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefusedZero {
    /// The field, with its table (`[host] action_timeout_ms`).
    pub field: &'static str,
    /// Why zero cannot work.
    pub cause: &'static str,
}

const NO_TIME: &str = "a deadline of 0 ms would fail every call before it starts";

impl AgentConfig {
    /// The first zero of the config that makes no sense, if any.
    pub(crate) fn refused_zero(&self) -> Option<RefusedZero> {
        let host = &self.host;
        let isolation = &self.isolation;
        let refused: [(&'static str, bool, &'static str); 14] = [
            (
                "[host] action_timeout_ms",
                host.action_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] validate_timeout_ms",
                host.validate_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] provider_timeout_ms",
                host.provider_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] evaluator_timeout_ms",
                host.evaluator_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] service_timeout_ms",
                host.service_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] event_timeout_ms",
                host.event_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] timer_timeout_ms",
                host.timer_timeout_ms == 0,
                NO_TIME,
            ),
            (
                "[host] http_header_timeout_ms",
                host.http_header_timeout_ms == 0,
                "no client could send a request in 0 ms",
            ),
            (
                "[host] http_body_timeout_ms",
                host.http_body_timeout_ms == 0,
                "no request body could arrive in 0 ms",
            ),
            (
                "[host] http_idle_timeout_ms",
                host.http_idle_timeout_ms == 0,
                "every connection would be closed before its next request",
            ),
            (
                "[host] max_calls_in_flight",
                host.max_calls_in_flight == 0,
                "a plugin allowed no call in flight would refuse every call",
            ),
            (
                "[host] quarantine_window_ms",
                host.quarantine_window_ms == 0 && host.quarantine_after_panics > 0,
                "no panic would stay in a window of 0 ms; to turn quarantine off, set \
                 quarantine_after_panics = 0",
            ),
            (
                "[isolation] quarantine_after_crashes",
                isolation.quarantine_after_crashes == 0,
                "a worker would be quarantined before its first crash is counted; 1 quarantines \
                 it at its first crash",
            ),
            (
                "[isolation] write_timeout_ms",
                isolation.write_timeout_ms == 0,
                "every write to a worker would time out and kill it",
            ),
        ];
        refused
            .into_iter()
            .find(|(_, zero, _)| *zero)
            .map(|(field, _, cause)| RefusedZero { field, cause })
    }

    /// One line for each zero that turns a protection off on purpose,
    /// naming what it turns off (the host warns with them at start).
    pub fn zero_warnings(&self) -> Vec<String> {
        let host = &self.host;
        let isolation = &self.isolation;
        let accepted: [(&str, bool, &str); 6] = [
            (
                "[host] quarantine_after_panics",
                host.quarantine_after_panics == 0,
                "quarantine is off: a plugin that keeps panicking stays in service",
            ),
            (
                "[host] provider_backoff_after",
                host.provider_backoff_after == 0,
                "provider back-off is off: a failing provider is asked on every message",
            ),
            (
                "[host] shutdown_grace_ms",
                host.shutdown_grace_ms == 0,
                "no grace at shutdown: plugins stop without waiting for the calls in flight",
            ),
            (
                "[host] reload_drain_timeout_ms",
                host.reload_drain_timeout_ms == 0,
                "a reload does not wait for the calls in flight to drain",
            ),
            (
                "[isolation] restart_backoff_ms",
                isolation.restart_backoff_ms == 0,
                "a crashed worker restarts at once, with no wait between crashes",
            ),
            (
                "[isolation] crash_window_ms",
                isolation.crash_window_ms == 0,
                "crashes are not counted together: a worker is quarantined for crashing only \
                 with quarantine_after_crashes = 1",
            ),
        ];
        accepted
            .into_iter()
            .filter(|(_, zero, _)| *zero)
            .map(|(field, _, what)| format!("{field} = 0: {what}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{AgentConfig, ConfigError};

    #[test]
    fn a_zero_deadline_is_refused_naming_the_file_the_field_and_the_cause() {
        for (text, field) in [
            (
                "[host]\naction_timeout_ms = 0\n",
                "[host] action_timeout_ms",
            ),
            (
                "[host]\nvalidate_timeout_ms = 0\n",
                "[host] validate_timeout_ms",
            ),
            ("[host]\nevent_timeout_ms = 0\n", "[host] event_timeout_ms"),
            (
                "[host]\nmax_calls_in_flight = 0\n",
                "[host] max_calls_in_flight",
            ),
            (
                "[isolation]\nquarantine_after_crashes = 0\n",
                "[isolation] quarantine_after_crashes",
            ),
        ] {
            let error = AgentConfig::parse(text).expect_err(text);
            assert!(matches!(error, ConfigError::Zero { .. }), "{error:?}");
            let line = error.to_string();
            assert!(line.contains(&format!("{field} = 0")), "{line}");
            assert!(line.contains("would"), "{line}");
        }
        let dir = tempfile::tempdir().expect("a folder");
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "[host]\nprovider_timeout_ms = 0\n").expect("write");
        let line = AgentConfig::load(&file).expect_err("refused").to_string();
        assert!(
            line.starts_with(&format!(
                "{}: [host] provider_timeout_ms = 0: ",
                file.display()
            )),
            "{line}"
        );
        assert!(line.contains("every call"), "{line}");
    }

    #[test]
    fn a_zero_that_turns_a_protection_off_is_accepted_with_a_warning_naming_it() {
        let config = AgentConfig::parse(
            "[host]\nquarantine_after_panics = 0\nquarantine_window_ms = 0\nshutdown_grace_ms = 0\n",
        )
        .expect("accepted");
        let warnings = config.zero_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("[host] quarantine_after_panics = 0: quarantine is off"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("shutdown_grace_ms = 0"),
            "{warnings:?}"
        );
        assert!(AgentConfig::default().zero_warnings().is_empty());
        assert!(AgentConfig::default().refused_zero().is_none());
    }
}
