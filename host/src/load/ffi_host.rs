//! The host's callbacks for one plugin, as the FFI trait object its
//! library receives when an instance is created: each callback of the
//! SDK's [`Host`] trait, carried over the frozen FFI surface, with every
//! panic of host code caught before it reaches the plugin.

use crate::call::Failure;
use agent_host_plugin_abi::abi_stable::std_types::{RResult, RStr, RString};
use agent_host_plugin_abi::{codes, FfiError, FfiResult, HostApi};
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The host's callbacks for one plugin, as the FFI trait object the
/// plugin's library receives. Every method catches panics of host code: one
/// escaping into the plugin's FFI shim would end the process.
pub(crate) struct FfiCallbacks(pub(crate) Box<dyn Host>);

fn guarded<T>(body: impl FnOnce() -> Result<T, Failure>) -> FfiResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(FfiError::new(error.kind().code(), error.message())),
        Err(_) => RResult::RErr(FfiError::new(
            codes::FAILED,
            "internal host error (see the host log)",
        )),
    }
}

impl HostApi for FfiCallbacks {
    fn log(&self, level: u8, message: RStr<'_>) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            self.0.log(Level::from_number(level), message.as_str())
        }));
    }

    fn config(&self, key: RStr<'_>) -> FfiResult<RString> {
        guarded(|| self.0.config(key.as_str()).map(RString::from))
    }

    fn call_service(
        &self,
        service: RStr<'_>,
        method: RStr<'_>,
        args_json: RStr<'_>,
    ) -> FfiResult<RString> {
        guarded(|| {
            self.0
                .call_service(service.as_str(), method.as_str(), args_json.as_str())
                .map(RString::from)
        })
    }

    fn emit(&self, event: RStr<'_>, payload_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| self.0.emit(event.as_str(), payload_json.as_str()))
    }

    fn subscribe(&self, event: RStr<'_>) -> FfiResult<u64> {
        guarded(|| self.0.subscribe(event.as_str()))
    }

    fn unsubscribe(&self, subscription: u64) -> FfiResult<()> {
        guarded(|| self.0.unsubscribe(subscription))
    }

    fn push_provider_value(&self, provider: u32, value_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| self.0.push_provider_value(provider, value_json.as_str()))
    }

    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> FfiResult<()> {
        guarded(|| self.0.set_timer(timer, after_ms, every_ms))
    }

    fn clear_timer(&self, timer: u64) -> FfiResult<()> {
        guarded(|| self.0.clear_timer(timer))
    }

    fn invoke(&self, request: RStr<'_>, payload_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| match request.as_str() {
            agent_host_plugin_abi::requests::RESOLVE => {
                #[derive(serde::Deserialize)]
                struct Resolve {
                    host: String,
                    port: u16,
                }
                let asked: Resolve = serde_json::from_str(payload_json.as_str()).map_err(|e| {
                    Failure::new(
                        ErrorKind::InvalidInput,
                        format!("a name resolution request: {e}"),
                    )
                })?;
                let addresses = self.0.resolve(&asked.host, asked.port)?;
                serde_json::to_string(&addresses)
                    .map(RString::from)
                    .map_err(|e| Failure::msg(e.to_string()))
            }
            agent_host_plugin_abi::requests::CURRENT_CALL => Ok(self
                .0
                .current_call()
                .map_or_else(
                    || "null".to_string(),
                    |(deadline, cancelled)| {
                        format!("{{\"deadline_unix_ms\":{deadline},\"cancelled\":{cancelled}}}")
                    },
                )
                .into()),
            agent_host_plugin_abi::requests::EVENT_SOURCE => {
                Ok(serde_json::to_string(&self.0.event_source())
                    .unwrap_or_else(|_| "null".to_string())
                    .into())
            }
            other => Err(Failure::new(
                ErrorKind::NotFound,
                format!("this host does not know the request '{other}'"),
            )),
        })
    }
}
