//! The host callbacks each plugin instance receives (the `HostApi` side of the FFI).
//!
//! Each instance gets its own callbacks object carrying its name, config and
//! permissions, so every callback knows who is calling. Every method catches
//! panics of host code: one escaping into the plugin's FFI shim would end the
//! process.

use crate::registry::permissions::Permissions;
use crate::registry::{HostError, LiveCaller, Registry};
use agent_host_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use agent_host_plugin_abi::abi_stable::std_types::{RResult, RStr, RString};
use agent_host_plugin_abi::{codes, FfiError, FfiResult, HostApi, HostApi_TO, HostBox};
use agent_host_plugin_sdk::{ErrorKind, Level};
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};

/// The callbacks of one plugin instance.
pub struct PluginCallbacks {
    plugin: String,
    generation: u64,
    permissions: Permissions,
    config: Arc<Value>,
    core: Weak<Registry>,
}

impl PluginCallbacks {
    /// Callbacks for `plugin`, boxed for the FFI.
    pub fn boxed(
        plugin: &str,
        generation: u64,
        permissions: Permissions,
        config: Arc<Value>,
        core: &Arc<Registry>,
    ) -> HostBox {
        HostApi_TO::from_value(
            Self {
                plugin: plugin.to_string(),
                generation,
                permissions,
                config,
                core: Arc::downgrade(core),
            },
            TD_Opaque,
        )
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

fn guarded<T>(body: impl FnOnce() -> Result<T, HostError>) -> FfiResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(FfiError::new(error.kind.code(), error.message)),
        Err(_) => RResult::RErr(FfiError::new(
            codes::FAILED,
            "internal host error (see the host log)",
        )),
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

impl HostApi for PluginCallbacks {
    fn log(&self, level: u8, message: RStr<'_>) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let plugin = self.plugin.as_str();
            let message = message.as_str();
            match Level::from_number(level) {
                Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
                Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
                Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
                Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
                Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            }
        }));
    }

    fn config(&self, key: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            let permission = if key.is_empty() {
                "config:*".to_string()
            } else {
                format!("config:{}", key.as_str())
            };
            if !self.permissions.allows(&permission) {
                return Err(self.deny(&permission));
            }
            let value = if key.is_empty() {
                (*self.config).clone()
            } else {
                self.config
                    .get(key.as_str())
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            Ok(RString::from(value.to_string()))
        })
    }

    fn call_service(
        &self,
        service: RStr<'_>,
        method: RStr<'_>,
        args_json: RStr<'_>,
    ) -> FfiResult<RString> {
        guarded(|| {
            let core = self.core()?;
            core.call_service(
                Some(&self.caller()),
                service.as_str(),
                method.as_str(),
                args_json.as_str(),
            )
            .map(RString::from)
        })
    }

    fn emit(&self, event: RStr<'_>, payload_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| {
            let permission = format!("event:emit:{}", event.as_str());
            if !self.permissions.allows(&permission) {
                return Err(self.deny(&permission));
            }
            let payload = parse_json(payload_json.as_str(), "the event payload")?;
            let core = self.core()?;
            core.emit(&self.plugin, event.as_str(), payload);
            Ok(())
        })
    }

    fn subscribe(&self, event: RStr<'_>) -> FfiResult<u64> {
        guarded(|| {
            let core = self.core()?;
            Ok(core.bus.subscribe(
                event.as_str(),
                crate::registry::events::Listener::Plugin(self.plugin.clone(), self.generation),
            ))
        })
    }

    fn unsubscribe(&self, subscription: u64) -> FfiResult<()> {
        guarded(|| {
            let core = self.core()?;
            if core.bus.unsubscribe(subscription, Some(&self.plugin)) {
                Ok(())
            } else {
                Err(HostError::new(
                    ErrorKind::NotFound,
                    format!(
                        "plugin '{}' has no subscription {subscription}",
                        self.plugin
                    ),
                ))
            }
        })
    }

    fn push_provider_value(&self, provider: u32, value_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| {
            serde_json::from_str::<serde::de::IgnoredAny>(value_json.as_str()).map_err(|e| {
                HostError::new(
                    ErrorKind::InvalidInput,
                    format!("the provider value is not valid JSON: {e}"),
                )
            })?;
            self.core()?.store_provider_value(
                &self.plugin,
                self.generation,
                provider,
                value_json.as_str().into(),
            )
        })
    }

    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> FfiResult<()> {
        guarded(|| {
            self.core()?
                .set_timer(&self.plugin, self.generation, timer, after_ms, every_ms);
            Ok(())
        })
    }

    fn clear_timer(&self, timer: u64) -> FfiResult<()> {
        guarded(|| {
            self.core()?
                .clear_timer(&self.plugin, self.generation, timer);
            Ok(())
        })
    }

    fn invoke(&self, request: RStr<'_>, _payload_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            Err(HostError::new(
                ErrorKind::NotFound,
                format!("this host does not know the request '{}'", request.as_str()),
            ))
        })
    }
}
