//! Unit tests only: plugins built as SDK values and called directly, with
//! no library built or loaded. The host's decisions (choosing an action,
//! provider caching, quarantine, reload rollback, dependencies) can then be
//! tested in milliseconds with plugins written inline in the test.

use super::{Backend, Failure, MessageRef, PluginSource};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::__private::PluginObject;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ActionResult, Evaluation, Host, Message, Plugin};
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
    fn on_load(&self) -> Result<(), Failure> {
        self.0.on_load()
    }

    fn on_unload(&self) -> Result<(), Failure> {
        self.0.on_unload()
    }

    fn validate(&self, action: u32, m: MessageRef<'_>) -> Result<bool, Failure> {
        self.0.validate(action, &sdk_message(m))
    }

    fn handle(
        &self,
        action: u32,
        m: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<ActionResult, Failure> {
        self.0.handle(action, &sdk_message(m), control)
    }

    fn provide(
        &self,
        provider: u32,
        m: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<String, Failure> {
        self.0
            .provide(provider, &sdk_message(m), control)
            .map(|value| json(&value))
    }

    fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<(), Failure> {
        self.0.set_subscribed(provider, subscribed)
    }

    fn evaluate(
        &self,
        evaluator: u32,
        m: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, Failure> {
        self.0.evaluate(evaluator, &sdk_message(m), control)
    }

    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[MessageRef<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>, Failure> {
        let messages: Vec<Message<'_>> = messages.iter().map(|m| sdk_message(*m)).collect();
        self.0.evaluate_batch(evaluator, &messages, control)
    }

    fn start_service(&self, service: u32) -> Result<(), Failure> {
        self.0.start_service(service)
    }

    fn stop_service(&self, service: u32) -> Result<(), Failure> {
        self.0.stop_service(service)
    }

    fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String, Failure> {
        self.0.call_service(service, method, args_json, control)
    }

    fn on_event(&self, subscription: u64, event: &str, payload_json: &str) -> Result<(), Failure> {
        self.0.on_event(subscription, event, payload_json)
    }

    fn on_timer(&self, timer: u64) -> Result<(), Failure> {
        self.0.on_timer(timer)
    }

    fn export_state(&self) -> Result<String, Failure> {
        self.0.export_state().map(|value| json(&value))
    }

    fn import_state(&self, state_json: &str) -> Result<(), Failure> {
        let state = serde_json::from_str(state_json)
            .map_err(|e| Failure::msg(format!("state is not valid JSON: {e}")))?;
        self.0.import_state(state)
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
