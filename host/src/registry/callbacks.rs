//! The host callbacks each plugin instance receives: logging, config,
//! services, events, provider pushes and timers, each checked against the
//! calling plugin's permissions.
//!
//! Each instance gets its own callbacks object carrying its name, generation,
//! config and permissions, so every callback knows who is calling. They are
//! the SDK's [`Host`] trait, whatever runs the plugin: the place that runs it
//! carries them to the plugin (as an FFI object for a loaded library).
//!
//! A plugin's log lines pass its rate limit first (`log_limit`), in process
//! and in a worker alike: a worker's log lines arrive here too.

use crate::log_limit::{self, LogLimiter};
use crate::permissions::Permissions;
use crate::registry::{HostError, LiveCaller, Registry};
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use std::sync::{Arc, Weak};
use std::time::Instant;

/// The callbacks of one plugin instance.
pub struct PluginCallbacks {
    plugin: String,
    generation: u64,
    permissions: Permissions,
    config: Arc<Value>,
    core: Weak<Registry>,
    log_limit: LogLimiter,
    log_lines_dropped: Counter,
}

impl PluginCallbacks {
    /// Callbacks for `plugin`, boxed for the place that runs it.
    pub fn boxed(
        plugin: &str,
        generation: u64,
        permissions: Permissions,
        config: Arc<Value>,
        core: &Arc<Registry>,
    ) -> Box<dyn Host> {
        Box::new(Self {
            plugin: plugin.to_string(),
            generation,
            permissions,
            config,
            core: Arc::downgrade(core),
            log_limit: LogLimiter::default(),
            log_lines_dropped: core.metrics.log_lines_dropped(plugin),
        })
    }

    fn report_dropped(&self, lines: u64) {
        let plugin = self.plugin.as_str();
        tracing::warn!(
            target: "plugin",
            plugin,
            "plugin '{plugin}': {lines} log lines dropped (rate limit)"
        );
    }

    fn core(&self) -> Result<Arc<Registry>, HostError> {
        self.core
            .upgrade()
            .ok_or_else(|| HostError::new(ErrorKind::Unavailable, "the host is shutting down"))
    }

    fn caller(&self) -> LiveCaller<'_> {
        LiveCaller {
            name: &self.plugin,
            permissions: &self.permissions,
        }
    }

    fn deny(&self, permission: &str) -> HostError {
        match self.core.upgrade() {
            Some(core) => core.deny(&self.plugin, permission),
            None => HostError::new(
                ErrorKind::PermissionDenied,
                format!("plugin '{}' lacks permission '{permission}'", self.plugin),
            ),
        }
    }
}

fn parse_json(json: &str, what: &str) -> Result<Value, HostError> {
    if json.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(json).map_err(|e| {
        HostError::new(
            ErrorKind::InvalidInput,
            format!("{what} is not valid JSON: {e}"),
        )
    })
}

type HostResult<T> = agent_host_plugin_sdk::Result<T>;

/// The SDK's error for a host error, keeping its kind. (The SDK's blanket
/// `From` for any error would make every kind `Failed`.)
fn sdk<T>(result: Result<T, HostError>) -> HostResult<T> {
    result.map_err(|error| agent_host_plugin_sdk::Error::new(error.kind, error.message))
}

impl Host for PluginCallbacks {
    fn log(&self, level: Level, message: &str) {
        let verdict = self.log_limit.admit(Instant::now());
        if let Some(lines) = verdict.report_dropped {
            self.report_dropped(lines);
        }
        if !verdict.log {
            self.log_lines_dropped.inc();
            return;
        }
        let message = log_limit::cut(message);
        let plugin = self.plugin.as_str();
        match level {
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
        }
    }

    fn config(&self, key: &str) -> HostResult<String> {
        sdk(self.read_config(key))
    }

    fn call_service(&self, service: &str, method: &str, args_json: &str) -> HostResult<String> {
        sdk(self
            .core()
            .and_then(|core| core.call_service(Some(&self.caller()), service, method, args_json)))
    }

    fn emit(&self, event: &str, payload_json: &str) -> HostResult<()> {
        sdk(self.emit_checked(event, payload_json))
    }

    fn subscribe(&self, event: &str) -> HostResult<u64> {
        let core = sdk(self.core())?;
        Ok(core.bus.subscribe(
            event,
            crate::registry::events::Listener::Plugin(self.plugin.clone(), self.generation),
        ))
    }

    fn unsubscribe(&self, subscription: u64) -> HostResult<()> {
        let core = sdk(self.core())?;
        if core.bus.unsubscribe(subscription, Some(&self.plugin)) {
            Ok(())
        } else {
            sdk(Err(HostError::new(
                ErrorKind::NotFound,
                format!(
                    "plugin '{}' has no subscription {subscription}",
                    self.plugin
                ),
            )))
        }
    }

    fn push_provider_value(&self, provider: u32, value_json: &str) -> HostResult<()> {
        sdk(self.push_checked(provider, value_json))
    }

    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> HostResult<()> {
        sdk(self.core())?.set_timer(&self.plugin, self.generation, timer, after_ms, every_ms);
        Ok(())
    }

    fn clear_timer(&self, timer: u64) -> HostResult<()> {
        sdk(self.core())?.clear_timer(&self.plugin, self.generation, timer);
        Ok(())
    }

    fn current_call(&self) -> Option<(u64, bool)> {
        super::current_call::inherited()
    }

    fn event_source(&self) -> Option<String> {
        crate::current_call::current_source()
    }

    fn resolve(&self, host: &str, port: u16) -> HostResult<Vec<std::net::SocketAddr>> {
        sdk(self.resolve_checked(host, port))
    }
}

impl PluginCallbacks {
    /// Name resolution for a plugin that may connect to `port`: the answer
    /// for any other port would only help it reach what it may not.
    fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, HostError> {
        use std::net::ToSocketAddrs;
        let permission = format!("network:connect:{port}");
        if !self.permissions.allows(&permission) {
            return Err(self.deny(&permission));
        }
        let addresses = (host, port).to_socket_addrs().map_err(|e| {
            HostError::new(ErrorKind::NotFound, format!("cannot resolve '{host}': {e}"))
        })?;
        Ok(addresses.collect())
    }
}

impl Drop for PluginCallbacks {
    /// The instance is gone: the lines its last flood lost are reported.
    fn drop(&mut self) {
        let lines = self.log_limit.take_dropped();
        if lines > 0 {
            self.report_dropped(lines);
        }
    }
}

impl PluginCallbacks {
    fn read_config(&self, key: &str) -> Result<String, HostError> {
        let permission = if key.is_empty() {
            "config:*".to_string()
        } else {
            format!("config:{key}")
        };
        if !self.permissions.allows(&permission) {
            return Err(self.deny(&permission));
        }
        let value = if key.is_empty() {
            (*self.config).clone()
        } else {
            self.config.get(key).cloned().unwrap_or(Value::Null)
        };
        Ok(value.to_string())
    }

    fn emit_checked(&self, event: &str, payload_json: &str) -> Result<(), HostError> {
        if super::events::is_reserved(event) {
            tracing::warn!(plugin = %self.plugin, event, "refused: a host event name");
            self.core()?
                .metrics
                .denied(&self.plugin, &format!("event:emit:{event}"));
            return Err(HostError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "event '{event}' is the host's own (names starting with {}): \
                     no grant lets a plugin emit it",
                    super::events::RESERVED_PREFIXES.join(", ")
                ),
            ));
        }
        let permission = format!("event:emit:{event}");
        if !self.permissions.allows(&permission) {
            return Err(self.deny(&permission));
        }
        let payload = parse_json(payload_json, "the event payload")?;
        let failures = self.core()?.emit(&self.plugin, event, payload);
        // A failing handler is the handler's problem; a cut cascade is the
        // emitter's, which it must hear about.
        match failures.into_iter().find(|f| f.cut) {
            Some(cut) => Err(HostError::new(ErrorKind::Unavailable, cut.error)),
            None => Ok(()),
        }
    }

    fn push_checked(&self, provider: u32, value_json: &str) -> Result<(), HostError> {
        serde_json::from_str::<serde::de::IgnoredAny>(value_json).map_err(|e| {
            HostError::new(
                ErrorKind::InvalidInput,
                format!("the provider value is not valid JSON: {e}"),
            )
        })?;
        self.core()?.store_provider_value(
            &self.plugin,
            self.generation,
            provider,
            value_json.into(),
        )
    }
}
