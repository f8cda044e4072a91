//! Unit tests only: plugins built as SDK values and called directly, with
//! no library built or loaded. The host's decisions (choosing an action,
//! provider caching, quarantine, reload rollback, dependencies) can then be
//! tested in milliseconds with plugins written inline in the test.

use super::{Backend, Failure, MessageRef, PluginSource};
use crate::call::{Answer, Call};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::__private::PluginObject;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{Host, Message, Plugin};
use std::path::{Path, PathBuf};

/// A plugin builder, as an in-memory source holds it.
pub(crate) type Builder = Box<dyn Fn() -> Plugin + Send + Sync>;

/// Plugin values standing in for one plugin file.
pub(crate) struct InMemorySource {
    file: PathBuf,
    builders: Vec<Builder>,
    manifests: Vec<Manifest>,
}

impl InMemorySource {
    /// A "file" named `file` holding the plugins `builders` make.
    pub(crate) fn new(file: impl Into<PathBuf>, builders: Vec<Builder>) -> Self {
        let manifests = builders.iter().map(|build| build().manifest()).collect();
        Self {
            file: file.into(),
            builders,
            manifests,
        }
    }
}

impl PluginSource for InMemorySource {
    fn file(&self) -> &Path {
        &self.file
    }

    fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    fn image_bytes(&self) -> u64 {
        0
    }

    fn sha256(&self) -> &str {
        ""
    }

    fn create(
        &self,
        index: u32,
        host: Box<dyn Host>,
        _context: &super::CreateContext<'_>,
    ) -> Result<Box<dyn Backend>, Failure> {
        let build = self
            .builders
            .get(index as usize)
            .ok_or_else(|| Failure::msg(format!("no plugin number {index}")))?;
        Ok(Box::new(InMemory(PluginObject::new(build(), host))))
    }
}

struct InMemory(PluginObject);

fn sdk_message<'a>(message: MessageRef<'a>) -> Message<'a> {
    Message::from_parts(message.id, message.text, message.context_json)
}

fn json(value: &serde_json::Value) -> String {
    value.to_string()
}

impl Backend for InMemory {
    fn call(&self, call: Call<'_>, control: Option<&CallControl>) -> Result<Answer, Failure> {
        let unbounded = CallControl::with_deadline(0);
        let control = control.unwrap_or(&unbounded);
        let p = &self.0;
        Ok(match call {
            Call::OnLoad => p.on_load().map(|()| Answer::Done)?,
            Call::OnUnload => p.on_unload().map(|()| Answer::Done)?,
            Call::Validate { action, message } => {
                Answer::Accepted(p.validate(action, &sdk_message(message))?)
            }
            Call::ValidateEach { actions, message } => Answer::Validated(
                actions
                    .iter()
                    .map(|&action| p.validate(action, &sdk_message(message)))
                    .collect(),
            ),
            Call::Handle { action, message } => Answer::Handled(Box::new(p.handle(
                action,
                &sdk_message(message),
                control,
            )?)),
            Call::Provide { provider, message } => Answer::Provided(json(&p.provide(
                provider,
                &sdk_message(message),
                control,
            )?)),
            Call::ProvideEach { providers, message } => Answer::ProvidedEach(
                providers
                    .iter()
                    .map(|&provider| {
                        p.provide(provider, &sdk_message(message), control)
                            .map(|value| json(&value))
                    })
                    .collect(),
            ),
            Call::SetSubscribed {
                provider,
                subscribed,
            } => p
                .set_subscribed(provider, subscribed)
                .map(|()| Answer::Done)?,
            Call::Evaluate { evaluator, message } => {
                Answer::Evaluated(p.evaluate(evaluator, &sdk_message(message), control)?)
            }
            Call::EvaluateBatch {
                evaluator,
                messages,
            } => {
                let messages: Vec<Message<'_>> = messages.iter().map(|m| sdk_message(*m)).collect();
                Answer::EvaluatedBatch(p.evaluate_batch(evaluator, &messages, control)?)
            }
            Call::StartService { service } => p.start_service(service).map(|()| Answer::Done)?,
            Call::StopService { service } => p.stop_service(service).map(|()| Answer::Done)?,
            Call::ServiceMethod {
                service,
                method,
                args_json,
            } => Answer::Text(p.call_service(service, method, args_json, control)?),
            Call::OnEvent {
                subscription,
                event,
                payload_json,
            } => p
                .on_event(subscription, event, payload_json)
                .map(|()| Answer::Done)?,
            Call::OnTimer { timer } => p.on_timer(timer).map(|()| Answer::Done)?,
            Call::ExportState => Answer::Text(json(&p.export_state()?)),
            Call::ImportState { state_json } => {
                let state = serde_json::from_str(state_json)
                    .map_err(|e| Failure::msg(format!("state is not valid JSON: {e}")))?;
                p.import_state(state).map(|()| Answer::Done)?
            }
        })
    }
}

/// One in-memory "file" holding the plugin `build` makes.
pub(crate) fn source(
    file: &str,
    build: impl Fn() -> Plugin + Send + Sync + 'static,
) -> std::sync::Arc<dyn PluginSource> {
    std::sync::Arc::new(InMemorySource::new(file, vec![Box::new(build)]))
}

/// A host (with `config`) loaded with one in-memory source per plugin.
pub(crate) fn host_with(
    config: &str,
    plugins: Vec<std::sync::Arc<dyn PluginSource>>,
) -> (crate::PluginHost, crate::LoadReport) {
    let config = crate::AgentConfig::parse(config).expect("the test's config parses");
    let host = crate::PluginHost::new(crate::HostOptions {
        config,
        ..crate::HostOptions::default()
    })
    .expect("a host");
    let report = host.load_sources(&plugins);
    (host, report)
}

/// A message from `sender` with no claimed permissions.
pub(crate) fn message(text: &str) -> crate::InboundMessage {
    crate::InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..crate::InboundMessage::default()
    }
}
