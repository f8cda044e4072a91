//! Metrics in the Prometheus text format, served at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::plugin_stats::PluginStats;

/// Labels of an action run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The plugin.
    pub plugin: String,
    /// The action.
    pub action: String,
    /// `completed`, `failed`, `timed_out`, `rate_limited` or `denied`.
    pub outcome: String,
}

/// Labels naming one plugin component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// The plugin.
    pub plugin: String,
    /// The component.
    pub component: String,
}

/// Labels of a permission denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// The plugin refused.
    pub plugin: String,
    /// The permission it lacked.
    pub permission: String,
}

/// Labels of a refused HTTP request (see [`crate::http`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// `missing_token`, `malformed_header`, `unknown_token`, `wrong_role` or
    /// `sender_mismatch`.
    pub reason: String,
}

/// Labels of a plugin error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The plugin.
    pub plugin: String,
    /// The error kind (`panicked`, `failed`, ...).
    pub kind: String,
}

/// Labels of a provider cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The plugin.
    pub plugin: String,
    /// The provider.
    pub provider: String,
    /// `hit`, `stale` or `miss`.
    pub result: String,
}

/// Labels of a plugin file the trust policy refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why: `not_in_lock`, `hash_differs`, `unsigned`,
    /// `unreadable_signature`, `untrusted_key` or `bad_signature`.
    pub reason: String,
}

/// Labels of a hot reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Who asked: `watcher`, `http`, `cli` or `api`.
    pub origin: String,
    /// `reloaded` or `refused`.
    pub outcome: String,
}

/// Labels of a plugin fault (see [`Metrics::fault`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// The plugin (`host` for an event the host emitted).
    pub plugin: String,
    /// The entry point: `provider`, `validate`, `handler`, `evaluator`,
    /// `service`, `event`, `timer`, `lifecycle`, `worker` or `load`.
    pub entry: String,
    /// `timed_out`, `panicked`, `crashed`, `restarted`, `quarantined`,
    /// `load_failed` or `events_cut`.
    pub cause: String,
}

/// Labels naming one plugin.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin.
    pub plugin: String,
}

/// One action's run counters by outcome, and its handler durations.
#[derive(Clone, Debug)]
pub struct ActionMetrics {
    /// Runs that completed.
    pub completed: Counter,
    /// Runs whose handler failed or panicked.
    pub failed: Counter,
    /// Runs that timed out.
    pub timed_out: Counter,
    /// Runs refused by the rate limit.
    pub rate_limited: Counter,
    /// Runs refused for the sender's lack of permission.
    pub denied: Counter,
    /// Handler durations.
    pub seconds: Histogram,
}

fn latency_histogram() -> Histogram {
    // 10 us to about 40 s.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    /// Messages answered.
    pub messages: Counter,
    /// Time to answer a message.
    pub message_seconds: Histogram,
    /// Messages whose state was an earlier composed one, reused whole
    /// (every provider value in it cached and fresh, or pushed).
    pub states_reused: Counter,
    /// Action runs by outcome.
    pub actions: Family<ActionLabels, Counter>,
    /// Handler durations.
    pub action_seconds: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    /// Permission denials on host callbacks.
    pub permission_denied: Family<DenialLabels, Counter>,
    /// Errors returned by plugin code, by kind.
    pub plugin_errors: Family<ErrorLabels, Counter>,
    /// Provider cache lookups.
    pub provider_cache: Family<CacheLabels, Counter>,
    /// Plugins loaded now.
    pub plugins_loaded: Gauge,
    /// Plugins quarantined now.
    pub plugins_quarantined: Gauge,
    /// Events not delivered because their cascade crossed a bound.
    pub events_cut: Counter,
    /// HTTP requests refused by the API's token check, by reason.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// Plugin files refused by the trust policy, by reason.
    pub files_refused: Family<RefusalLabels, Counter>,
    /// Hot reloads, by origin and outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Plugin log lines dropped by the log rate limit, by plugin.
    pub log_lines_dropped: Family<PluginLabels, Counter>,
    /// Plugin faults, by plugin, entry point and cause.
    pub plugin_faults: Family<FaultLabels, Counter>,
    /// Each plugin's counts for its status, by name.
    stats: Mutex<HashMap<String, Arc<PluginStats>>>,
    /// Private copies of plugin files on disk now.
    pub private_copies: Gauge,
    /// Their bytes.
    pub private_copies_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agent_host");
        let messages = Counter::default();
        let message_seconds = latency_histogram();
        let states_reused = Counter::default();
        let actions = Family::<ActionLabels, Counter>::default();
        let action_seconds =
            Family::<ComponentLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let permission_denied = Family::<DenialLabels, Counter>::default();
        let plugin_errors = Family::<ErrorLabels, Counter>::default();
        let provider_cache = Family::<CacheLabels, Counter>::default();
        let plugins_loaded = Gauge::default();
        let plugins_quarantined = Gauge::default();
        let events_cut = Counter::default();
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "HTTP requests refused for a missing or wrong API token, or a role it lacks",
            auth_failures.clone(),
        );
        let files_refused = Family::<RefusalLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "files_refused",
            "Plugin files refused by the trust policy (lock file, signatures)",
            files_refused.clone(),
        );
        registry.register(
            "reloads",
            "Hot reloads by who asked and outcome",
            reloads.clone(),
        );
        registry.register(
            "events_cut",
            "Events not delivered because their cascade was too deep or too wide",
            events_cut.clone(),
        );
        registry.register("messages", "Messages answered", messages.clone());
        registry.register(
            "message_seconds",
            "Time to answer a message",
            message_seconds.clone(),
        );
        registry.register(
            "states_reused",
            "Messages whose composed state was reused whole",
            states_reused.clone(),
        );
        registry.register("action_runs", "Action runs by outcome", actions.clone());
        registry.register(
            "action_seconds",
            "Action handler durations",
            action_seconds.clone(),
        );
        registry.register(
            "permission_denied",
            "Host callbacks refused for lack of permission",
            permission_denied.clone(),
        );
        registry.register(
            "plugin_errors",
            "Errors returned by plugin code",
            plugin_errors.clone(),
        );
        registry.register(
            "provider_cache",
            "Provider cache lookups",
            provider_cache.clone(),
        );
        registry.register("plugins_loaded", "Plugins loaded", plugins_loaded.clone());
        registry.register(
            "plugins_quarantined",
            "Plugins quarantined",
            plugins_quarantined.clone(),
        );
        let log_lines_dropped = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_log_lines_dropped",
            "Plugin log lines dropped by the log rate limit",
            log_lines_dropped.clone(),
        );
        let plugin_faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "plugin_faults",
            "Plugin faults (deadlines missed, panics, worker crashes, restarts and quarantines, \
             files that failed to load, event cascades cut) by plugin, entry point and cause",
            plugin_faults.clone(),
        );
        let private_copies = Gauge::default();
        let private_copies_bytes = Gauge::default();
        registry.register(
            "private_copies",
            "Private copies of plugin files on disk (an in-process copy is removed once mapped)",
            private_copies.clone(),
        );
        registry.register(
            "private_copies_bytes",
            "Bytes of the private copies of plugin files on disk",
            private_copies_bytes.clone(),
        );
        Self {
            registry,
            messages,
            message_seconds,
            states_reused,
            actions,
            action_seconds,
            permission_denied,
            plugin_errors,
            provider_cache,
            plugins_loaded,
            plugins_quarantined,
            events_cut,
            auth_failures,
            files_refused,
            reloads,
            log_lines_dropped,
            plugin_faults,
            stats: Mutex::default(),
            private_copies,
            private_copies_bytes,
        }
    }

    /// The counter of one plugin's log lines dropped by the rate limit, to
    /// keep and increment without a lookup.
    pub fn log_lines_dropped(&self, plugin: &str) -> Counter {
        self.log_lines_dropped
            .get_or_create(&PluginLabels {
                plugin: plugin.into(),
            })
            .clone()
    }

    /// The counters of one action, made once and kept by the plugin so that
    /// counting a run is an atomic increment.
    pub fn action_metrics(&self, plugin: &str, action: &str) -> ActionMetrics {
        let counter = |outcome: &str| {
            self.actions
                .get_or_create(&ActionLabels {
                    plugin: plugin.into(),
                    action: action.into(),
                    outcome: outcome.into(),
                })
                .clone()
        };
        ActionMetrics {
            completed: counter("completed"),
            failed: counter("failed"),
            timed_out: counter("timed_out"),
            rate_limited: counter("rate_limited"),
            denied: counter("denied"),
            seconds: self
                .action_seconds
                .get_or_create(&ComponentLabels {
                    plugin: plugin.into(),
                    component: action.into(),
                })
                .clone(),
        }
    }

    /// Counts one plugin fault.
    pub fn fault(&self, plugin: &str, entry: &str, cause: &str) {
        self.plugin_faults
            .get_or_create(&FaultLabels {
                plugin: plugin.into(),
                entry: entry.into(),
                cause: cause.into(),
            })
            .inc();
    }

    /// The counts of the plugin `name` for its status, made on first use
    /// and kept (a reload's new generation gets the same).
    pub fn plugin_stats(&self, name: &str) -> Arc<PluginStats> {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(stats.entry(name.to_string()).or_default())
    }

    /// The counts of the plugin `name`, if it has any.
    pub fn stats_of(&self, name: &str) -> Option<Arc<PluginStats>> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.get(name).cloned()
    }

    /// Counts a permission denial.
    pub fn denied(&self, plugin: &str, permission: &str) {
        self.permission_denied
            .get_or_create(&DenialLabels {
                plugin: plugin.into(),
                permission: permission.into(),
            })
            .inc();
    }

    /// Counts an HTTP request refused by the token check.
    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts an error from plugin code.
    pub fn plugin_error(&self, plugin: &str, kind: agent_host_plugin_sdk::ErrorKind) {
        self.plugin_errors
            .get_or_create(&ErrorLabels {
                plugin: plugin.into(),
                kind: kind.as_str().into(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_appear_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.messages.inc();
        let weather = metrics.action_metrics("weather", "GET_WEATHER");
        weather.completed.inc();
        weather
            .seconds
            .observe(Duration::from_millis(3).as_secs_f64());
        metrics.denied("panicky", "service:fixture");
        metrics.auth_failed("unknown_token");
        let text = metrics.render();
        assert!(text.contains("agent_host_messages_total 1"), "{text}");
        assert!(
            text.contains(r#"agent_host_action_runs_total{plugin="weather",action="GET_WEATHER",outcome="completed"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"agent_host_permission_denied_total{plugin="panicky",permission="service:fixture"} 1"#), "{text}");
        assert!(text.contains("agent_host_action_seconds_bucket"), "{text}");
        assert!(
            text.contains(r#"agent_host_auth_failures_total{reason="unknown_token"} 1"#),
            "{text}"
        );
    }
}
