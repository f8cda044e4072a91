//! One live plugin instance, callable from Rust: the object behind the FFI
//! trait object, and what a host calls directly when it runs a plugin value
//! without loading a library (its unit tests do).
//!
//! Every entry point runs inside [`guard`]: a panic in plugin code becomes an
//! [`ErrorKind::Panicked`] error value here, in code the plugin compiles,
//! because a panic that escaped into the host through an FFI shim would end
//! the host's process.

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
pub(crate) use crate::panic_report::{catch, guard, install_panic_hook};
use crate::plugin::Plugin;
use crate::provider::Unsubscribe;
use crate::runtime::{Event, Host, ProviderPush, Runtime, Shared};
use crate::{ActionResult, Evaluation};
use agent_host_plugin_abi::CallControl;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

pub(crate) fn not_found(kind: &str, index: u32) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("the plugin has no {kind} number {index}"),
    )
}

/// One live plugin instance: the author's [`Plugin`] with its link to the
/// host. Components are addressed by their index in the plugin's manifest.
///
/// Hosts call this directly only to run a plugin value in their own unit
/// tests; loaded libraries are reached through the FFI trait object that
/// wraps it. Not a public API for plugin authors.
pub struct PluginObject {
    plugin: Plugin,
    shared: Arc<Shared>,
    subscriptions: Mutex<HashMap<u32, Unsubscribe>>,
}

impl PluginObject {
    /// The instance of `plugin` whose callbacks go to `host`. (A library's
    /// export installs the panic hook that records panic locations; a host
    /// calling this directly keeps its own hook.)
    pub fn new(plugin: Plugin, host: Box<dyn Host>) -> Self {
        let shared = Shared::new(plugin.name().to_string(), host);
        crate::panic_report::register(&shared);
        Self {
            plugin,
            shared,
            subscriptions: Mutex::new(HashMap::new()),
        }
    }

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

    /// Runs the plugin's `on_load` hook.
    pub fn on_load(&self) -> Result<()> {
        guard(|| self.plugin.load(&self.runtime(None)))
    }

    /// Ends every provider subscription, then runs the `on_unload` hook.
    pub fn on_unload(&self) -> Result<()> {
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

    /// Asks action `action` whether it accepts the message. The hot path:
    /// it runs for every action on every message, so it skips the general
    /// `guard`'s `Result` plumbing, but not its catching.
    #[inline]
    pub fn validate(&self, action: u32, message: &Message<'_>) -> Result<bool> {
        let Some(action) = self.plugin.actions.get(action as usize) else {
            return Err(not_found("action", action));
        };
        catch(|| action.check(message))
    }

    /// Runs action `action`'s handler.
    pub fn handle(
        &self,
        action: u32,
        message: &Message<'_>,
        control: &CallControl,
    ) -> Result<ActionResult> {
        guard(|| {
            self.action(action)?
                .run(message, &self.runtime(Some(control)))
        })
    }

    /// Runs provider `provider`'s `get`.
    pub fn provide(
        &self,
        provider: u32,
        message: &Message<'_>,
        control: &CallControl,
    ) -> Result<serde_json::Value> {
        guard(|| {
            self.provider(provider)?
                .fetch(message, &self.runtime(Some(control)))
        })
    }

    /// Starts (`true`) or ends (`false`) provider `provider`'s subscription.
    pub fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<()> {
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

    /// Runs evaluator `evaluator` on one message.
    pub fn evaluate(
        &self,
        evaluator: u32,
        message: &Message<'_>,
        control: &CallControl,
    ) -> Result<Evaluation> {
        guard(|| {
            self.evaluator(evaluator)?
                .run(message, &self.runtime(Some(control)))
        })
    }

    /// Runs evaluator `evaluator` on many messages; one result per message.
    pub fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[Message<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>> {
        guard(|| {
            self.evaluator(evaluator)?
                .run_batch(messages, &self.runtime(Some(control)))
        })
    }

    /// Starts service `service`.
    pub fn start_service(&self, service: u32) -> Result<()> {
        guard(|| self.service(service)?.start(&self.runtime(None)))
    }

    /// Stops service `service`.
    pub fn stop_service(&self, service: u32) -> Result<()> {
        guard(|| self.service(service)?.stop(&self.runtime(None)))
    }

    /// Calls `method` on service `service` with JSON arguments; returns JSON.
    pub fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String> {
        guard(|| {
            self.service(service)?
                .call_json(method, args_json, &self.runtime(Some(control)))
        })
    }

    /// Delivers an event to the handler of `subscription`.
    pub fn on_event(&self, subscription: u64, event: &str, payload_json: &str) -> Result<()> {
        guard(|| {
            let Some(handler) = self.shared.event_handler(subscription) else {
                return Ok(());
            };
            let payload = if payload_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(payload_json)?
            };
            let event = Event {
                name: event.to_string(),
                source: self.shared.host.event_source().unwrap_or_default(),
                payload,
            };
            handler(&event, &self.runtime(None))
        })
    }

    /// Fires timer `timer`.
    pub fn on_timer(&self, timer: u64) -> Result<()> {
        guard(|| match self.shared.timer_handler(timer) {
            Some(handler) => handler(&self.runtime(None)),
            None => Ok(()),
        })
    }

    /// The plugin's state, for a new generation to import.
    pub fn export_state(&self) -> Result<serde_json::Value> {
        guard(|| self.plugin.export_state(&self.runtime(None)))
    }

    /// Imports state exported by an earlier generation.
    pub fn import_state(&self, state: serde_json::Value) -> Result<()> {
        guard(|| self.plugin.import_state(state, &self.runtime(None)))
    }
}
