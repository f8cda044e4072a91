//! A plugin whose library is loaded into this process: calls are function
//! calls through the frozen FFI surface (`agent-host-plugin-abi`), and the
//! host's callbacks reach the plugin as an FFI trait object.
//!
//! What it protects against: a panic in plugin code (the SDK inside the
//! plugin turns it into an error value before it reaches the boundary).
//! What it cannot: an abort, a segfault, a stack overflow or a call that
//! never returns, which all happen inside this process.

use super::{Backend, CreateContext, Failure, MessageRef, PluginSource};
use crate::load::library::OpenedLibrary;
use agent_host_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use agent_host_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr, RString};
use agent_host_plugin_abi::{
    codes, CallControl, EvaluationView, FfiError, FfiResult, HostApi, HostApi_TO, MessageView,
    PluginBox,
};
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ActionResult, ErrorKind, Evaluation, Host, Level};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

impl PluginSource for OpenedLibrary {
    fn file(&self) -> &Path {
        &self.file
    }

    fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn create(
        &self,
        index: u32,
        host: Box<dyn Host>,
        _context: &CreateContext<'_>,
    ) -> Result<Box<dyn Backend>, Failure> {
        let callbacks = HostApi_TO::from_value(FfiCallbacks(host), TD_Opaque);
        let object = (self.module.create())(index, callbacks)
            .into_result()
            .map_err(from_ffi)?;
        Ok(Box::new(InProcess { object }))
    }
}

/// One plugin instance of a loaded library.
struct InProcess {
    object: PluginBox,
}

/// A plugin's error, read where it lies in the FFI result.
fn failure_of(error: &FfiError) -> Failure {
    Failure::new(ErrorKind::from_code(error.code), error.message.as_str())
}

fn from_ffi(error: FfiError) -> Failure {
    failure_of(&error)
}

fn view<'a>(message: MessageRef<'a>) -> MessageView<'a> {
    MessageView {
        id: message.id.into(),
        text: message.text.into(),
        context_json: message.context_json.into(),
    }
}

fn evaluation(view: EvaluationView) -> Result<Evaluation, Failure> {
    super::evaluation_from(view.score, view.passed, view.metadata_json.as_str())
}

impl Backend for InProcess {
    fn on_load(&self) -> Result<(), Failure> {
        self.object.on_load().into_result().map_err(from_ffi)
    }

    fn on_unload(&self) -> Result<(), Failure> {
        self.object.on_unload().into_result().map_err(from_ffi)
    }

    #[inline]
    fn validate(&self, action: u32, message: MessageRef<'_>) -> Result<bool, Failure> {
        match &self.object.validate(action, &view(message)) {
            RResult::ROk(accepted) => Ok(*accepted),
            RResult::RErr(error) => Err(failure_of(error)),
        }
    }

    fn handle(
        &self,
        action: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<ActionResult, Failure> {
        let json = self
            .object
            .handle(action, &view(message), control)
            .into_result()
            .map_err(from_ffi)?;
        serde_json::from_str(json.as_str()).map_err(|e| {
            Failure::new(
                ErrorKind::InvalidInput,
                format!("returned invalid JSON: {e}"),
            )
        })
    }

    fn provide(
        &self,
        provider: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<String, Failure> {
        self.object
            .provide(provider, &view(message), control)
            .into_result()
            .map(RString::into_string)
            .map_err(from_ffi)
    }

    fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<(), Failure> {
        self.object
            .set_subscribed(provider, subscribed)
            .into_result()
            .map_err(from_ffi)
    }

    fn evaluate(
        &self,
        evaluator: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, Failure> {
        // Read in place: moving the verdict out of the FFI result first
        // cost a store-forwarding stall per move on the hot path.
        match &self.object.evaluate(evaluator, &view(message), control) {
            RResult::ROk(verdict) => super::evaluation_from(
                verdict.score,
                verdict.passed,
                verdict.metadata_json.as_str(),
            ),
            RResult::RErr(error) => Err(failure_of(error)),
        }
    }

    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[MessageRef<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>, Failure> {
        let views: Vec<MessageView<'_>> = messages.iter().map(|m| view(*m)).collect();
        self.object
            .evaluate_batch(evaluator, RSlice::from_slice(&views), control)
            .into_result()
            .map_err(from_ffi)?
            .into_iter()
            .map(evaluation)
            .collect()
    }

    fn start_service(&self, service: u32) -> Result<(), Failure> {
        self.object
            .start_service(service)
            .into_result()
            .map_err(from_ffi)
    }

    fn stop_service(&self, service: u32) -> Result<(), Failure> {
        self.object
            .stop_service(service)
            .into_result()
            .map_err(from_ffi)
    }

    fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String, Failure> {
        self.object
            .call_service(
                service,
                RStr::from_str(method),
                RStr::from_str(args_json),
                control,
            )
            .into_result()
            .map(RString::into_string)
            .map_err(from_ffi)
    }

    fn on_event(&self, subscription: u64, event: &str, payload_json: &str) -> Result<(), Failure> {
        self.object
            .on_event(
                subscription,
                RStr::from_str(event),
                RStr::from_str(payload_json),
            )
            .into_result()
            .map_err(from_ffi)
    }

    fn on_timer(&self, timer: u64) -> Result<(), Failure> {
        self.object.on_timer(timer).into_result().map_err(from_ffi)
    }

    fn export_state(&self) -> Result<String, Failure> {
        self.object
            .export_state()
            .into_result()
            .map(RString::into_string)
            .map_err(from_ffi)
    }

    fn import_state(&self, state_json: &str) -> Result<(), Failure> {
        self.object
            .import_state(RStr::from_str(state_json))
            .into_result()
            .map_err(from_ffi)
    }
}

/// The host's callbacks for one plugin, as the FFI trait object the
/// plugin's library receives. Every method catches panics of host code: one
/// escaping into the plugin's FFI shim would end the process.
struct FfiCallbacks(Box<dyn Host>);

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
