//! The bridge between the SDK's plain-Rust plugin and the frozen FFI surface.
//!
//! Everything that enters plugin code from the host passes through
//! [`guard`], which turns a panic into a [`codes::PANICKED`] error value:
//! a panic that crossed the boundary would end the host process.

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::object::{guard, install_panic_hook, not_found, PluginObject};
use crate::plugin::Plugin;
use crate::runtime::{Host, Level};
use agent_host_plugin_abi::abi_stable::prefix_type::PrefixTypeTrait;
use agent_host_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use agent_host_plugin_abi::abi_stable::std_types::{
    RResult, RSlice, RSliceMut, RStr, RString, RVec,
};
use agent_host_plugin_abi::{
    CallControl, EvaluationView, FfiResult, HostBox, MessageView, PluginApi, PluginApi_TO,
    PluginModule,
};

fn ffi<T>(result: Result<T>) -> FfiResult<T> {
    match result {
        Ok(value) => RResult::ROk(value),
        Err(error) => RResult::RErr(error.into_ffi()),
    }
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

/// The FFI face of a plugin instance: each method converts the borrowed FFI
/// types, calls the instance (which catches panics), and converts back.
/// Conversions that could fail run inside [`guard`] too.
impl PluginApi for PluginObject {
    fn on_load(&self) -> FfiResult<()> {
        ffi(PluginObject::on_load(self))
    }

    fn on_unload(&self) -> FfiResult<()> {
        ffi(PluginObject::on_unload(self))
    }

    fn validate(&self, action: u32, message: &MessageView<'_>) -> FfiResult<bool> {
        ffi(PluginObject::validate(self, action, &message_of(message)))
    }

    fn handle(
        &self,
        action: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<RString> {
        ffi(guard(|| {
            to_json(&PluginObject::handle(
                self,
                action,
                &message_of(message),
                control,
            )?)
        }))
    }

    fn provide(
        &self,
        provider: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<RString> {
        ffi(guard(|| {
            to_json(&PluginObject::provide(
                self,
                provider,
                &message_of(message),
                control,
            )?)
        }))
    }

    fn set_subscribed(&self, provider: u32, subscribed: bool) -> FfiResult<()> {
        ffi(PluginObject::set_subscribed(self, provider, subscribed))
    }

    fn evaluate(
        &self,
        evaluator: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<EvaluationView> {
        // `PluginObject::evaluate` guards the plugin's code; turning its
        // verdict into the view serializes a `serde_json::Value`, which
        // cannot panic, so no second guard (a thread-local update each way,
        // on every evaluator of every message) wraps it.
        ffi(
            PluginObject::evaluate(self, evaluator, &message_of(message), control)
                .and_then(evaluation_view),
        )
    }

    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: RSlice<'_, MessageView<'_>>,
        control: &CallControl,
    ) -> FfiResult<RVec<EvaluationView>> {
        ffi(guard(|| {
            let messages: Vec<Message<'_>> = messages.iter().map(message_of).collect();
            PluginObject::evaluate_batch(self, evaluator, &messages, control)?
                .into_iter()
                .map(evaluation_view)
                .collect()
        }))
    }

    fn start_service(&self, service: u32) -> FfiResult<()> {
        ffi(PluginObject::start_service(self, service))
    }

    fn stop_service(&self, service: u32) -> FfiResult<()> {
        ffi(PluginObject::stop_service(self, service))
    }

    fn call_service(
        &self,
        service: u32,
        method: RStr<'_>,
        args_json: RStr<'_>,
        control: &CallControl,
    ) -> FfiResult<RString> {
        ffi(
            PluginObject::call_service(self, service, method.as_str(), args_json.as_str(), control)
                .map(RString::from),
        )
    }

    fn on_event(
        &self,
        subscription: u64,
        event: RStr<'_>,
        payload_json: RStr<'_>,
    ) -> FfiResult<()> {
        ffi(PluginObject::on_event(
            self,
            subscription,
            event.as_str(),
            payload_json.as_str(),
        ))
    }

    fn on_timer(&self, timer: u64) -> FfiResult<()> {
        ffi(PluginObject::on_timer(self, timer))
    }

    fn export_state(&self) -> FfiResult<RString> {
        ffi(guard(|| to_json(&PluginObject::export_state(self)?)))
    }

    fn import_state(&self, state_json: RStr<'_>) -> FfiResult<()> {
        ffi(guard(|| {
            let state = serde_json::from_str(state_json.as_str())?;
            PluginObject::import_state(self, state)
        }))
    }

    fn invoke(&self, request: RStr<'_>, _payload_json: RStr<'_>) -> FfiResult<RString> {
        ffi(Err(Error::new(
            ErrorKind::NotFound,
            format!("unknown request '{}'", request.as_str()),
        )))
    }

    // The batched entries (ABI 1.1): one crossing per plugin per phase, the
    // message read once. Each component's call catches its own panics, so
    // one failing component fails only its own slot.

    fn validate_each(
        &self,
        actions: RSlice<'_, u32>,
        message: &MessageView<'_>,
        mut verdicts: RSliceMut<'_, FfiResult<bool>>,
    ) {
        let message = message_of(message);
        for (verdict, &action) in verdicts.iter_mut().zip(actions.iter()) {
            fill(verdict, ffi(PluginObject::validate(self, action, &message)));
        }
    }

    fn evaluate_each(
        &self,
        evaluators: RSlice<'_, u32>,
        message: &MessageView<'_>,
        control: &CallControl,
        mut verdicts: RSliceMut<'_, FfiResult<EvaluationView>>,
    ) {
        let message = message_of(message);
        for (verdict, &evaluator) in verdicts.iter_mut().zip(evaluators.iter()) {
            fill(
                verdict,
                ffi(PluginObject::evaluate(self, evaluator, &message, control)
                    .and_then(evaluation_view)),
            );
        }
    }

    fn provide_each(
        &self,
        providers: RSlice<'_, u32>,
        message: &MessageView<'_>,
        control: &CallControl,
        mut values: RSliceMut<'_, FfiResult<RString>>,
    ) {
        let message = message_of(message);
        for (value, &provider) in values.iter_mut().zip(providers.iter()) {
            fill(
                value,
                ffi(guard(|| {
                    to_json(&PluginObject::provide(self, provider, &message, control)?)
                })),
            );
        }
    }
}

/// Puts an answer into a slot of a batched entry. The host's slots own no
/// memory (ABI 1.1), so the value there is forgotten rather than dropped,
/// which spares a call through its string's function table per slot.
fn fill<T>(slot: &mut T, answer: T) {
    std::mem::forget(std::mem::replace(slot, answer));
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

    fn current_call(&self) -> Option<(u64, bool)> {
        let answer = self
            .0
            .invoke(
                RStr::from_str(agent_host_plugin_abi::requests::CURRENT_CALL),
                RStr::from_str(""),
            )
            .into_result()
            .ok()?;
        let call: serde_json::Value = serde_json::from_str(answer.as_str()).ok()?;
        Some((
            call.get("deadline_unix_ms")?.as_u64()?,
            call.get("cancelled")?.as_bool()?,
        ))
    }

    fn event_source(&self) -> Option<String> {
        let answer = self
            .0
            .invoke(
                RStr::from_str(agent_host_plugin_abi::requests::EVENT_SOURCE),
                RStr::from_str(""),
            )
            .into_result()
            .ok()?;
        serde_json::from_str::<Option<String>>(answer.as_str()).ok()?
    }

    fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>> {
        let payload = serde_json::json!({"host": host, "port": port}).to_string();
        let answer = from_ffi(self.0.invoke(
            RStr::from_str(agent_host_plugin_abi::requests::RESOLVE),
            RStr::from_str(&payload),
        ))?;
        serde_json::from_str(answer.as_str()).map_err(|e| {
            Error::new(
                ErrorKind::Failed,
                format!("the host's answer to a name resolution: {e}"),
            )
        })
    }
}

/// Implementation details of [`crate::export_plugin!`]. Not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    pub use crate::object::PluginObject;
    pub use agent_host_plugin_abi::abi_stable;
    pub use agent_host_plugin_abi::abi_stable::library::{LibHeader, RootModuleResult};
    pub use agent_host_plugin_abi::abi_stable::std_types::RString;
    pub use agent_host_plugin_abi::{FfiResult, HostBox, PluginBox, PluginModuleRef};

    /// The builders' manifests as one JSON array.
    pub fn manifests(builders: &[fn() -> Plugin]) -> FfiResult<RString> {
        install_panic_hook();
        ffi(guard(|| {
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
        }))
    }

    /// Builds plugin `index` and wraps it for the host.
    pub fn create(builders: &[fn() -> Plugin], index: u32, host: HostBox) -> FfiResult<PluginBox> {
        install_panic_hook();
        ffi(guard(|| {
            let build = builders
                .get(index as usize)
                .ok_or_else(|| not_found("plugin", index))?;
            let object = PluginObject::new(build(), Box::new(FfiHost(host)));
            Ok(PluginApi_TO::from_value(object, TD_Opaque))
        }))
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
/// not compile. (A library built to abort by another route records it, in
/// the symbol `agent_host_panic_strategy`, and the host refuses to run it in
/// process.) The macro exports one `#[no_mangle]` symbol, so a crate that
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
