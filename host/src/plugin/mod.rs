//! One loaded plugin instance, and the typed, error-naming calls into it.
//!
//! Every call returns a [`CallError`] that names the plugin and the entry point
//! when plugin code fails or panics; the SDK inside the plugin has already
//! turned the panic into a value (DESIGN fact 4).

use agent_host_plugin_abi::abi_stable::std_types::{RSlice, RStr};
use agent_host_plugin_abi::{CallControl, EvaluationView, FfiError, MessageView, PluginBox};
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ErrorKind, Evaluation};
use semver::Version;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// A failed call into a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallError {
    /// The plugin called.
    pub plugin: String,
    /// The entry point, such as `action 'GET_WEATHER' handler`.
    pub entry: String,
    /// What kind of failure (`panicked`, `failed`, `not_found`...).
    #[serde(serialize_with = "serialize_kind")]
    pub kind: ErrorKind,
    /// The plugin's message.
    pub message: String,
}

fn serialize_kind<S: serde::Serializer>(kind: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin '{}': {}: {}",
            self.plugin, self.entry, self.message
        )
    }
}

impl std::error::Error for CallError {}

/// A plugin instance created from a loaded library.
pub struct PluginInstance {
    /// The plugin's manifest.
    pub manifest: Manifest,
    /// The parsed version.
    pub version: Version,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Bytes of the library image this generation keeps mapped.
    pub image_bytes: u64,
    object: PluginBox,
}

impl PluginInstance {
    pub(crate) fn new(
        manifest: Manifest,
        version: Version,
        file: PathBuf,
        image_bytes: u64,
        object: PluginBox,
    ) -> Self {
        Self {
            manifest,
            version,
            file,
            image_bytes,
            object,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    fn fail(&self, entry: impl Into<String>, error: FfiError) -> CallError {
        CallError {
            plugin: self.manifest.name.clone(),
            entry: entry.into(),
            kind: ErrorKind::from_code(error.code),
            message: error.message.into_string(),
        }
    }

    fn action_name(&self, action: u32) -> &str {
        self.manifest
            .actions
            .get(action as usize)
            .map_or("?", |a| a.name.as_str())
    }

    fn provider_name(&self, provider: u32) -> &str {
        self.manifest
            .providers
            .get(provider as usize)
            .map_or("?", |p| p.name.as_str())
    }

    fn evaluator_name(&self, evaluator: u32) -> &str {
        self.manifest
            .evaluators
            .get(evaluator as usize)
            .map_or("?", |e| e.name.as_str())
    }

    fn service_name(&self, service: u32) -> &str {
        self.manifest
            .services
            .get(service as usize)
            .map_or("?", |s| s.name.as_str())
    }

    /// Runs `on_load`.
    pub fn on_load(&self) -> Result<(), CallError> {
        self.object
            .on_load()
            .into_result()
            .map_err(|e| self.fail("on_load", e))
    }

    /// Runs `on_unload`.
    pub fn on_unload(&self) -> Result<(), CallError> {
        self.object
            .on_unload()
            .into_result()
            .map_err(|e| self.fail("on_unload", e))
    }

    /// Runs an action's `validate`.
    #[inline]
    pub fn validate(&self, action: u32, message: &MessageView<'_>) -> Result<bool, CallError> {
        self.object
            .validate(action, message)
            .into_result()
            .map_err(|e| self.fail(format!("action '{}' validate", self.action_name(action)), e))
    }

    /// Runs an action's handler; returns its JSON result.
    pub fn handle(
        &self,
        action: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> Result<String, CallError> {
        self.object
            .handle(action, message, control)
            .into_result()
            .map(|s| s.into_string())
            .map_err(|e| self.fail(format!("action '{}' handler", self.action_name(action)), e))
    }

    /// Runs a provider's `get`; returns its JSON value.
    pub fn provide(
        &self,
        provider: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> Result<String, CallError> {
        self.object
            .provide(provider, message, control)
            .into_result()
            .map(|s| s.into_string())
            .map_err(|e| {
                self.fail(
                    format!("provider '{}' get", self.provider_name(provider)),
                    e,
                )
            })
    }

    /// Starts or ends a provider's subscription.
    pub fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<(), CallError> {
        self.object
            .set_subscribed(provider, subscribed)
            .into_result()
            .map_err(|e| {
                self.fail(
                    format!("provider '{}' subscribe", self.provider_name(provider)),
                    e,
                )
            })
    }

    /// Runs an evaluator on one message. A score outside 0..=1 is the
    /// plugin's error.
    pub fn evaluate(
        &self,
        evaluator: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, CallError> {
        let entry = || format!("evaluator '{}' evaluate", self.evaluator_name(evaluator));
        let view = self
            .object
            .evaluate(evaluator, message, control)
            .into_result()
            .map_err(|e| self.fail(entry(), e))?;
        self.evaluation(view, entry)
    }

    /// Runs an evaluator on many messages; one result per message.
    pub fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[MessageView<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>, CallError> {
        let entry = || {
            format!(
                "evaluator '{}' evaluate_batch",
                self.evaluator_name(evaluator)
            )
        };
        let views = self
            .object
            .evaluate_batch(evaluator, RSlice::from_slice(messages), control)
            .into_result()
            .map_err(|e| self.fail(entry(), e))?;
        if views.len() != messages.len() {
            return Err(self.invalid(
                entry(),
                format!(
                    "returned {} results for {} messages",
                    views.len(),
                    messages.len()
                ),
            ));
        }
        views
            .into_iter()
            .map(|view| self.evaluation(view, entry))
            .collect()
    }

    fn invalid(&self, entry: String, message: String) -> CallError {
        CallError {
            plugin: self.manifest.name.clone(),
            entry,
            kind: ErrorKind::InvalidInput,
            message,
        }
    }

    fn evaluation(
        &self,
        view: EvaluationView,
        entry: impl Fn() -> String,
    ) -> Result<Evaluation, CallError> {
        if !(0.0..=1.0).contains(&view.score) {
            return Err(self.invalid(entry(), format!("score {} is outside 0..1", view.score)));
        }
        let metadata = if view.metadata_json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(view.metadata_json.as_str())
                .map_err(|e| self.invalid(entry(), format!("metadata is not valid JSON: {e}")))?
        };
        Ok(Evaluation {
            score: view.score,
            passed: view.passed,
            metadata,
        })
    }

    /// Starts a service.
    pub fn start_service(&self, service: u32) -> Result<(), CallError> {
        self.object
            .start_service(service)
            .into_result()
            .map_err(|e| self.fail(format!("service '{}' start", self.service_name(service)), e))
    }

    /// Stops a service.
    pub fn stop_service(&self, service: u32) -> Result<(), CallError> {
        self.object
            .stop_service(service)
            .into_result()
            .map_err(|e| self.fail(format!("service '{}' stop", self.service_name(service)), e))
    }

    /// Calls a service method; returns its JSON result.
    pub fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String, CallError> {
        self.object
            .call_service(
                service,
                RStr::from_str(method),
                RStr::from_str(args_json),
                control,
            )
            .into_result()
            .map(|s| s.into_string())
            .map_err(|e| {
                self.fail(
                    format!("service '{}' method '{method}'", self.service_name(service)),
                    e,
                )
            })
    }

    /// Delivers an event to one of the plugin's subscriptions.
    pub fn on_event(
        &self,
        subscription: u64,
        event: &str,
        payload_json: &str,
    ) -> Result<(), CallError> {
        self.object
            .on_event(
                subscription,
                RStr::from_str(event),
                RStr::from_str(payload_json),
            )
            .into_result()
            .map_err(|e| self.fail(format!("event handler for '{event}'"), e))
    }

    /// Fires one of the plugin's timers.
    pub fn on_timer(&self, timer: u64) -> Result<(), CallError> {
        self.object
            .on_timer(timer)
            .into_result()
            .map_err(|e| self.fail(format!("timer {timer}"), e))
    }

    /// Exports the plugin's state as JSON.
    pub fn export_state(&self) -> Result<String, CallError> {
        self.object
            .export_state()
            .into_result()
            .map(|s| s.into_string())
            .map_err(|e| self.fail("export_state", e))
    }

    /// Imports state exported by an earlier generation.
    pub fn import_state(&self, state_json: &str) -> Result<(), CallError> {
        self.object
            .import_state(RStr::from_str(state_json))
            .into_result()
            .map_err(|e| self.fail("import_state", e))
    }
}
