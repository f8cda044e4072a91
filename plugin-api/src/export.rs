//! The bridge between the SDK's plain-Rust plugin and the frozen FFI surface.
//!
//! Everything that enters plugin code from the host passes through
//! [`guard`], which turns a panic into a [`codes::PANICKED`] error value:
//! a panic that crossed the boundary would end the host process.

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::plugin::Plugin;
use crate::provider::Unsubscribe;
use crate::runtime::{Event, Host, Level, ProviderPush, Runtime, Shared};
use agent_host_plugin_abi::abi_stable::prefix_type::PrefixTypeTrait;
use agent_host_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use agent_host_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use agent_host_plugin_abi::{
    codes, CallControl, EvaluationView, FfiError, FfiResult, HostBox, MessageView, PluginApi,
    PluginApi_TO, PluginModule,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Once, PoisonError};

thread_local! {
    static LAST_PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces this library's panic hook (each plugin library has its own copy
/// of std, so this never touches the host's hook) with one that records where
/// the panic happened instead of printing it; [`guard`] reports it.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LAST_PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
        }));
    });
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_string()
    };
    match LAST_PANIC_LOCATION.with(|slot| slot.borrow_mut().take()) {
        Some(location) => format!("panicked at {location}: {text}"),
        None => format!("panicked: {text}"),
    }
}

/// Runs plugin code, turning errors and panics into FFI errors.
pub(crate) fn guard<T>(body: impl FnOnce() -> Result<T>) -> FfiResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(error.into_ffi()),
        Err(payload) => RResult::RErr(FfiError::new(codes::PANICKED, panic_message(payload))),
    }
}

fn not_found(kind: &str, index: u32) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("the plugin has no {kind} number {index}"),
    )
}

fn to_json(value: &impl serde::Serialize) -> Result<RString> {
    Ok(RString::from(serde_json::to_string(value)?))
}

fn evaluation_view(evaluation: crate::Evaluation) -> Result<EvaluationView> {
    let metadata_json = if evaluation.metadata.is_null() {
        RString::new()
    } else {
        RString::from(serde_json::to_string(&evaluation.metadata)?)
    };
    Ok(EvaluationView {
        score: evaluation.score,
        passed: evaluation.passed,
        metadata_json,
    })
}

fn message_of<'a>(view: &MessageView<'a>) -> Message<'a> {
    Message::from_parts(
        view.id.as_str(),
        view.text.as_str(),
        view.context_json.as_str(),
    )
}

/// One live plugin instance behind the FFI trait object.
struct Instance {
    plugin: Plugin,
    shared: Arc<Shared>,
    subscriptions: Mutex<HashMap<u32, Unsubscribe>>,
}

impl Instance {
    fn runtime<'a>(&'a self, control: Option<&'a CallControl>) -> Runtime<'a> {
        Runtime::new(&self.shared, control)
    }

    fn action(&self, index: u32) -> Result<&crate::Action> {
        self.plugin
            .actions
            .get(index as usize)
            .ok_or_else(|| not_found("action", index))
    }

    fn provider(&self, index: u32) -> Result<&crate::Provider> {
        self.plugin
            .providers
            .get(index as usize)
            .ok_or_else(|| not_found("provider", index))
    }

    fn evaluator(&self, index: u32) -> Result<&crate::Evaluator> {
        self.plugin
            .evaluators
            .get(index as usize)
            .ok_or_else(|| not_found("evaluator", index))
    }

    fn service(&self, index: u32) -> Result<&crate::Service> {
        self.plugin
            .services
            .get(index as usize)
            .ok_or_else(|| not_found("service", index))
    }
}

impl PluginApi for Instance {
    fn on_load(&self) -> FfiResult<()> {
        guard(|| self.plugin.load(&self.runtime(None)))
    }

    fn on_unload(&self) -> FfiResult<()> {
        guard(|| {
            let pending: Vec<Unsubscribe> = self
                .subscriptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .map(|(_, stop)| stop)
                .collect();
            pending.into_iter().for_each(|stop| stop());
            self.plugin.unload(&self.runtime(None))
        })
    }

    // The hot path: it runs for every action on every message, so it skips
    // the general `guard` and its `Result` plumbing, but not `catch_unwind`.
    fn validate(&self, action: u32, message: &MessageView<'_>) -> FfiResult<bool> {
        let Some(action) = self.plugin.actions.get(action as usize) else {
            return RResult::RErr(not_found("action", action).into_ffi());
        };
        match catch_unwind(AssertUnwindSafe(|| action.check(&message_of(message)))) {
            Ok(valid) => RResult::ROk(valid),
            Err(payload) => RResult::RErr(FfiError::new(codes::PANICKED, panic_message(payload))),
        }
    }

    fn handle(
        &self,
        action: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<RString> {
        guard(|| {
            let action = self.action(action)?;
            to_json(&action.run(&message_of(message), &self.runtime(Some(control)))?)
        })
    }

    fn provide(
        &self,
        provider: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<RString> {
        guard(|| {
            let provider = self.provider(provider)?;
            to_json(&provider.fetch(&message_of(message), &self.runtime(Some(control)))?)
        })
    }

    fn set_subscribed(&self, provider: u32, subscribed: bool) -> FfiResult<()> {
        guard(|| {
            let spec = self.provider(provider)?;
            let previous = self
                .subscriptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&provider);
            if let Some(stop) = previous {
                stop();
            }
            if subscribed {
                let push = ProviderPush {
                    shared: Arc::clone(&self.shared),
                    provider,
                };
                let stop = spec.start_subscription(push, &self.runtime(None))?;
                self.subscriptions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(provider, stop);
            }
            Ok(())
        })
    }

    fn evaluate(
        &self,
        evaluator: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<EvaluationView> {
        guard(|| {
            let evaluator = self.evaluator(evaluator)?;
            evaluation_view(evaluator.run(&message_of(message), &self.runtime(Some(control)))?)
        })
    }

    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: RSlice<'_, MessageView<'_>>,
        control: &CallControl,
    ) -> FfiResult<RVec<EvaluationView>> {
        guard(|| {
            let evaluator = self.evaluator(evaluator)?;
            let messages: Vec<Message<'_>> = messages.iter().map(message_of).collect();
            evaluator
                .run_batch(&messages, &self.runtime(Some(control)))?
                .into_iter()
                .map(evaluation_view)
                .collect()
        })
    }

    fn start_service(&self, service: u32) -> FfiResult<()> {
        guard(|| {
            let service = self.service(service)?;
            service.start(&self.runtime(None))
        })
    }

    fn stop_service(&self, service: u32) -> FfiResult<()> {
        guard(|| {
            let service = self.service(service)?;
            service.stop(&self.runtime(None))
        })
    }

    fn call_service(
        &self,
        service: u32,
        method: RStr<'_>,
        args_json: RStr<'_>,
        control: &CallControl,
    ) -> FfiResult<RString> {
        guard(|| {
            let service = self.service(service)?;
            let result = service.call_json(
                method.as_str(),
                args_json.as_str(),
                &self.runtime(Some(control)),
            )?;
            Ok(RString::from(result))
        })
    }

    fn on_event(
        &self,
        subscription: u64,
        event: RStr<'_>,
        payload_json: RStr<'_>,
    ) -> FfiResult<()> {
        guard(|| {
            let Some(handler) = self.shared.event_handler(subscription) else {
                return Ok(());
            };
            let payload = if payload_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(payload_json.as_str())?
            };
            let event = Event {
                name: event.as_str().to_string(),
                payload,
            };
            handler(&event, &self.runtime(None))
        })
    }

    fn on_timer(&self, timer: u64) -> FfiResult<()> {
        guard(|| match self.shared.timer_handler(timer) {
            Some(handler) => handler(&self.runtime(None)),
            None => Ok(()),
        })
    }

    fn export_state(&self) -> FfiResult<RString> {
        guard(|| to_json(&self.plugin.export_state(&self.runtime(None))?))
    }

    fn import_state(&self, state_json: RStr<'_>) -> FfiResult<()> {
        guard(|| {
            let state = serde_json::from_str(state_json.as_str())?;
            self.plugin.import_state(state, &self.runtime(None))
        })
    }

    fn invoke(&self, request: RStr<'_>, _payload_json: RStr<'_>) -> FfiResult<RString> {
        guard(|| {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("unknown request '{}'", request.as_str()),
            ))
        })
    }
}

/// The real host's callbacks, seen through the SDK's [`Host`] trait.
struct FfiHost(HostBox);

fn from_ffi<T>(result: FfiResult<T>) -> Result<T> {
    result.into_result().map_err(Error::from_ffi)
}

impl Host for FfiHost {
    fn log(&self, level: Level, message: &str) {
        self.0.log(level as u8, RStr::from_str(message));
    }

    fn config(&self, key: &str) -> Result<String> {
        from_ffi(self.0.config(key.into())).map(RString::into_string)
    }

    fn call_service(&self, service: &str, method: &str, args_json: &str) -> Result<String> {
        from_ffi(
            self.0
                .call_service(service.into(), method.into(), args_json.into()),
        )
        .map(RString::into_string)
    }

    fn emit(&self, event: &str, payload_json: &str) -> Result<()> {
        from_ffi(self.0.emit(event.into(), payload_json.into()))
    }

    fn subscribe(&self, event: &str) -> Result<u64> {
        from_ffi(self.0.subscribe(event.into()))
    }

    fn unsubscribe(&self, subscription: u64) -> Result<()> {
        from_ffi(self.0.unsubscribe(subscription))
    }

    fn push_provider_value(&self, provider: u32, value_json: &str) -> Result<()> {
        from_ffi(self.0.push_provider_value(provider, value_json.into()))
    }

    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> Result<()> {
        from_ffi(self.0.set_timer(timer, after_ms, every_ms))
    }

    fn clear_timer(&self, timer: u64) -> Result<()> {
        from_ffi(self.0.clear_timer(timer))
    }
}

/// Implementation details of [`crate::export_plugin!`]. Not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    pub use agent_host_plugin_abi::abi_stable;
    pub use agent_host_plugin_abi::abi_stable::library::{LibHeader, RootModuleResult};
    pub use agent_host_plugin_abi::abi_stable::std_types::RString;
    pub use agent_host_plugin_abi::{FfiResult, HostBox, PluginBox, PluginModuleRef};

    /// The builders' manifests as one JSON array.
    pub fn manifests(builders: &[fn() -> Plugin]) -> FfiResult<RString> {
        install_panic_hook();
        guard(|| {
            let mut manifests = Vec::with_capacity(builders.len());
            for build in builders {
                let plugin = build();
                let problems = plugin.problems();
                if !problems.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("plugin '{}': {}", plugin.name(), problems.join("; ")),
                    ));
                }
                manifests.push(plugin.manifest());
            }
            to_json(&manifests)
        })
    }

    /// Builds plugin `index` and wraps it for the host.
    pub fn create(builders: &[fn() -> Plugin], index: u32, host: HostBox) -> FfiResult<PluginBox> {
        install_panic_hook();
        guard(|| {
            let build = builders
                .get(index as usize)
                .ok_or_else(|| not_found("plugin", index))?;
            let plugin = build();
            let shared = Shared::new(plugin.name().to_string(), Box::new(FfiHost(host)));
            let instance = Instance {
                plugin,
                shared,
                subscriptions: Mutex::new(HashMap::new()),
            };
            Ok(PluginApi_TO::from_value(instance, TD_Opaque))
        })
    }

    /// The root module for the given entry points.
    pub fn module(
        manifests: extern "C" fn() -> FfiResult<RString>,
        create: extern "C" fn(u32, HostBox) -> FfiResult<PluginBox>,
    ) -> PluginModuleRef {
        PluginModule { manifests, create }.leak_into_prefix()
    }

    /// The library header `abi_stable` looks for, around `constructor`.
    pub const fn lib_header(constructor: extern "C" fn() -> RootModuleResult) -> LibHeader {
        // SAFETY: `constructor` returns the `PluginModuleRef` built by `module`
        // (through `__call_root_module_loader`), which is exactly the root
        // module type named here, so the header describes the real module.
        unsafe {
            LibHeader::from_constructor::<PluginModuleRef>(
                constructor,
                agent_host_plugin_abi::abi_stable::library::CheckTypeLayout::Yes,
            )
        }
    }
}

/// Exports one or more plugins from a `cdylib` crate.
///
/// Pass the functions that build them: `export_plugin!(plugin)`, or
/// `export_plugin!(weather, forecast)` for several plugins in one library
/// (each with its own name, manifest, config and permissions; the host loads,
/// orders and hot-reloads them as separate plugins, all from the same file).
/// Use the macro once per library. Each function may run more than once (to
/// read the manifests, then to create each instance), so keep it free of
/// side effects.
///
/// The example is compiled but not run as a test: the macro defines the
/// library's export symbol, which only means something in a `cdylib`. See
/// `docs/plugin-guide.md` for a complete plugin crate.
///
/// ```no_run
/// fn plugin() -> agent_host_plugin_sdk::Plugin {
///     agent_host_plugin_sdk::Plugin::new("hello", "1.0.0")
/// }
/// agent_host_plugin_sdk::export_plugin!(plugin);
/// ```
///
/// The crate must be built with `panic = "unwind"` (the default), or it does
/// not compile. The macro exports one `#[no_mangle]` symbol, so a crate that
/// uses it cannot `forbid(unsafe_code)`; `deny` works.
#[macro_export]
macro_rules! export_plugin {
    ($($build:path),+ $(,)?) => {
        #[cfg(not(panic = "unwind"))]
        compile_error!(
            "agent-host plugins must be built with panic = \"unwind\": the SDK turns a panic into an error, an aborting panic would take the host down"
        );

        const _: () = {
            static BUILDERS: &[fn() -> $crate::Plugin] = &[$($build),+];

            extern "C" fn manifests() -> $crate::__private::FfiResult<$crate::__private::RString> {
                $crate::__private::manifests(BUILDERS)
            }

            extern "C" fn create(
                index: u32,
                host: $crate::__private::HostBox,
            ) -> $crate::__private::FfiResult<$crate::__private::PluginBox> {
                $crate::__private::create(BUILDERS, index, host)
            }

            fn module() -> $crate::__private::PluginModuleRef {
                $crate::__private::module(manifests, create)
            }

            extern "C" fn constructor() -> $crate::__private::RootModuleResult {
                $crate::__private::abi_stable::library::__call_root_module_loader(module)
            }

            #[allow(unsafe_code)]
            #[no_mangle]
            pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader =
                $crate::__private::lib_header(constructor);
        };
    };
}
