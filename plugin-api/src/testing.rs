//! Test plugin code in-process, without a host and without dynamic loading.
//!
//! [`TestHost`] stands in for the host: it holds the plugin's config, answers
//! service calls with the plugin's own services or with fakes you register,
//! records logs, emitted events and pushed provider values, and delivers
//! events and fires timers on demand.
//!
//! What it checks as the host does:
//!
//! * **Permissions.** [`TestHost::load`] records the permissions the plugin
//!   requests ([`Plugin::permission`]); from then on every callback needs
//!   one, matched as the host matches (exactly, or by a trailing `*`):
//!   `config:KEY` or `config:*` to read a config key, `config:*` for the
//!   whole config, `service:NAME` to call a fake service (the plugin's own
//!   services need none), `event:emit:NAME` to emit. A refusal is an
//!   [`ErrorKind::PermissionDenied`] error that names the plugin and the
//!   permission. Subscribing, logging and timers need none. Every requested
//!   permission counts as granted, as in a host whose config has no
//!   `[grants]` table.
//! * **Subscriptions match patterns.** [`TestHost::deliver`] runs every
//!   handler whose pattern matches the event: the exact name, or a prefix
//!   ending in `*` (`weather:*`).
//! * **One-shot timers fire once.** [`TestHost::fire_timers`] fires every
//!   timer set, then drops those made with [`Runtime::after`]; those made
//!   with [`Runtime::every`] fire on every call.
//!
//! * **Errors read as the host's.** A service call's error names the
//!   service's plugin, the service and the method before the cause
//!   (`plugin 'kv': service 'kv' method 'get': ...`; a fake counts as the
//!   service of a plugin named like the service), and the host's texts for
//!   a refused permission, a missing or a stopped service; a panic in plugin
//!   code is an [`ErrorKind::Panicked`] error naming where it happened, as
//!   the SDK reports it to the host.
//! * **Config.** The plugin's default config goes under the configured one,
//!   then its schema's `default`s fill the keys still missing
//!   ([`crate::schema_defaults`]).
//!
//! It is not the real host: it does not apply the operator's grants or the
//! senders' permissions, does not validate the manifest or the config
//! against the plugin's schema, runs no `validate` before a handler (call
//! [`LoadedPlugin::validate`] yourself), gives handlers no deadline, and
//! does not subscribe providers. Run the built library in the real host
//! too, with the `agent-host-plugin-testing` crate (or `agent-host
//! check`).
//!
//! ```
//! use agent_host_plugin_sdk::{Action, ActionResult, Plugin, testing::TestHost};
//!
//! let plugin = Plugin::new("echo", "1.0.0").action(
//!     Action::new("ECHO")
//!         .validate(|m| m.text().starts_with("echo "))
//!         .handler(|m, rt| {
//!             rt.info("echoing");
//!             Ok(ActionResult::text(&m.text()[5..]))
//!         }),
//! );
//! let host = TestHost::new("echo");
//! let loaded = host.load(plugin).unwrap();
//! assert!(loaded.validate("ECHO", "echo hi").unwrap());
//! assert_eq!(loaded.handle("ECHO", "echo hi").unwrap().text, "hi");
//! assert_eq!(host.logs()[0].1, "echoing");
//! ```

use crate::action::ActionResult;
use crate::error::{Error, ErrorKind, Result};
use crate::evaluator::Evaluation;
use crate::message::Message;
use crate::panic_report::{catch, guard, install_linked_panic_hook};
use crate::plugin::Plugin;
use crate::runtime::{Event, Host, Level, Runtime, Shared};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

type FakeService = Arc<dyn Fn(&str, Value) -> Result<Value> + Send + Sync>;

#[derive(Default)]
struct Recorded {
    config: Map<String, Value>,
    services: HashMap<String, FakeService>,
    logs: Vec<(Level, String)>,
    emitted: Vec<Event>,
    subscriptions: HashMap<u64, String>,
    next_subscription: u64,
    pushed: Vec<(u32, Value)>,
    timers: HashMap<u64, (u64, u64)>,
    /// The loaded plugin's requested permissions, checked like the host
    /// does once a plugin is loaded (`None` before: everything is allowed).
    permissions: Option<(String, Vec<String>)>,
}

/// Whether `pattern` (exact, or ending in `*`) matches `name`, as the host matches.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Recorded {
    /// Refuses what the loaded plugin did not request, in the host's words.
    fn check(&self, permission: &str) -> Result<()> {
        match &self.permissions {
            Some((plugin, held)) if !held.iter().any(|p| matches(p, permission)) => {
                Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("plugin '{plugin}' lacks permission '{permission}'"),
                ))
            }
            _ => Ok(()),
        }
    }
}

struct TestHostInner {
    recorded: Mutex<Recorded>,
    plugin: Mutex<Option<Arc<Plugin>>>,
    /// The plugin's link to this host, for the runtime of its own service
    /// calls (weak: the link holds this host).
    shared: OnceLock<Weak<Shared>>,
}

impl TestHostInner {
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls a service as the host does, with the host's errors: the
    /// caller's `service:NAME` permission first (unless `as_plugin` is
    /// false: the test calls as the host, or the service is the plugin's
    /// own), then the service, whose errors name its plugin, the service
    /// and the method (`plugin 'kv': service 'kv' method 'get': ...`). A
    /// fake counts as the service of a plugin named like the service.
    fn call_service(
        &self,
        as_plugin: bool,
        service: &str,
        method: &str,
        args_json: &str,
    ) -> Result<String> {
        let fake = self.recorded().services.get(service).cloned();
        let plugin = self
            .plugin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let own = plugin.filter(|p| p.service_named(service).is_some());
        if as_plugin && (fake.is_some() || own.is_none()) {
            self.recorded().check(&format!("service:{service}"))?;
        }
        let in_service = |owner: &str| {
            let entry = format!("plugin '{owner}': service '{service}' method '{method}'");
            move |error: Error| Error::new(error.kind(), format!("{entry}: {}", error.message()))
        };
        if let Some(fake) = fake {
            let args = if args_json.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(args_json)?
            };
            return guard(|| fake(method, args))
                .map(|answer| answer.to_string())
                .map_err(in_service(service));
        }
        let Some(plugin) = own else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no service named '{service}' is loaded (loaded: {})",
                    self.known_services()
                ),
            ));
        };
        let running = plugin
            .service_named(service)
            .filter(|s| s.is_running())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "service '{service}' of plugin '{}' is stopped",
                        plugin.name()
                    ),
                )
            })?;
        let shared = self
            .shared
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "the host is shutting down"))?;
        let rt = Runtime::new(&shared, None);
        guard(|| running.call_json(method, args_json, &rt)).map_err(in_service(plugin.name()))
    }

    /// The services a call can reach, as the host lists them in an error.
    fn known_services(&self) -> String {
        let mut known: Vec<String> = self.recorded().services.keys().cloned().collect();
        if let Some(plugin) = &*self.plugin.lock().unwrap_or_else(PoisonError::into_inner) {
            known.extend(plugin.services().iter().map(|s| s.name().to_string()));
        }
        known.sort();
        known.dedup();
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    }
}

struct TestHostCallbacks(Arc<TestHostInner>);

/// A stand-in host for unit tests. See the [module docs](self).
pub struct TestHost {
    inner: Arc<TestHostInner>,
    shared: Arc<Shared>,
}

impl TestHost {
    /// A host for a plugin named `plugin`, with an empty config.
    pub fn new(plugin: &str) -> Self {
        install_linked_panic_hook();
        let inner = Arc::new(TestHostInner {
            recorded: Mutex::new(Recorded::default()),
            plugin: Mutex::new(None),
            shared: OnceLock::new(),
        });
        let shared = Shared::new(
            plugin.to_string(),
            Box::new(TestHostCallbacks(Arc::clone(&inner))),
        );
        let _ = inner.shared.set(Arc::downgrade(&shared));
        Self { inner, shared }
    }

    /// Sets the plugin's config (a JSON object; other values are ignored), as
    /// the operator's `[plugins.NAME]` section would. [`TestHost::load`]
    /// merges the plugin's default config under it.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost, Plugin};
    ///
    /// let host = TestHost::new("weather").with_config(json!({"units": "imperial"}));
    /// let plugin = Plugin::new("weather", "1.0.0")
    ///     .permission("config:*")
    ///     .default_config(json!({"units": "metric", "cache_minutes": 10}));
    /// let _loaded = host.load(plugin).unwrap();
    /// assert_eq!(host.runtime().config_value("units").unwrap(), "imperial");
    /// assert_eq!(host.runtime().config_value("cache_minutes").unwrap(), 10);
    /// ```
    pub fn with_config(self, config: Value) -> Self {
        if let Value::Object(map) = config {
            self.inner.recorded().config = map;
        }
        self
    }

    /// Answers calls to another plugin's service with `fake(method, args)`.
    /// A fake takes precedence over the plugin's own service of that name;
    /// a call to a service that is neither fails with `NotFound`. See
    /// [`ServiceClient::call`](crate::ServiceClient::call) for an example.
    pub fn with_service(
        self,
        name: &str,
        fake: impl Fn(&str, Value) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        self.inner
            .recorded()
            .services
            .insert(name.to_string(), Arc::new(fake));
        self
    }

    /// A runtime for calling plugin code directly.
    pub fn runtime(&self) -> Runtime<'_> {
        Runtime::new(&self.shared, None)
    }

    /// Merges the plugin's default config under the configured one, fills
    /// in the `default`s of its config schema for the keys still missing
    /// ([`crate::schema_defaults`]), runs `on_load` and starts its services,
    /// as the host would. Load one plugin per `TestHost`.
    pub fn load(&self, plugin: Plugin) -> Result<LoadedPlugin<'_>> {
        let manifest = plugin.manifest();
        {
            let mut recorded = self.inner.recorded();
            if let Some(Value::Object(defaults)) = manifest.default_config {
                for (key, value) in defaults {
                    recorded.config.entry(key).or_insert(value);
                }
            }
            if let Some(schema) = &manifest.config_schema {
                crate::schema_defaults::fill_defaults(schema, &mut recorded.config);
            }
            recorded.permissions = Some((manifest.name.clone(), manifest.permissions.clone()));
        }
        let plugin = Arc::new(plugin);
        *self
            .inner
            .plugin
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&plugin));
        let rt = self.runtime();
        guard(|| plugin.load(&rt))?;
        for service in plugin.services() {
            guard(|| service.start(&rt))?;
        }
        Ok(LoadedPlugin { host: self, plugin })
    }

    /// Log lines written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.inner.recorded().logs.clone()
    }

    /// Events emitted so far.
    pub fn emitted(&self) -> Vec<Event> {
        self.inner.recorded().emitted.clone()
    }

    /// Provider values pushed so far, as (provider index, value). Only a
    /// [`ProviderPush`](crate::ProviderPush) records here, and only the host
    /// makes one (when it subscribes a provider), so in a `TestHost` this
    /// stays empty: test the code a subscription runs on its own.
    pub fn pushed(&self) -> Vec<(u32, Value)> {
        self.inner.recorded().pushed.clone()
    }

    /// Timers currently set, as (timer id, after ms, every ms; 0 for a
    /// one-shot timer).
    pub fn timers(&self) -> Vec<(u64, u64, u64)> {
        let mut timers: Vec<_> = self
            .inner
            .recorded()
            .timers
            .iter()
            .map(|(id, (after, every))| (*id, *after, *every))
            .collect();
        timers.sort_unstable();
        timers
    }

    /// Delivers an event to the plugin's handlers registered with
    /// [`Runtime::on`] whose pattern matches its name, as in the host: the
    /// exact name, or a prefix ending in `*` (`action:*` gets
    /// `action:completed`). Returns how many handlers ran; the first handler
    /// error is returned.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost, Plugin};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// let completed = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&completed);
    /// let plugin = Plugin::new("audit", "1.0.0").on_load(move |rt| {
    ///     let counter = Arc::clone(&counter);
    ///     rt.on("action:completed", move |_event, _rt| {
    ///         counter.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     })?;
    ///     rt.on("plugin:*", |event, rt| {
    ///         rt.info(format!("saw {}", event.name));
    ///         Ok(())
    ///     })?;
    ///     Ok(())
    /// });
    /// let host = TestHost::new("audit");
    /// let _loaded = host.load(plugin).unwrap();
    /// assert_eq!(host.deliver("action:completed", json!({"action": "GREET"})).unwrap(), 1);
    /// assert_eq!(host.deliver("action:failed", json!({})).unwrap(), 0);
    /// assert_eq!(completed.load(Ordering::SeqCst), 1);
    /// assert_eq!(host.deliver("plugin:loaded", json!({})).unwrap(), 1);
    /// assert_eq!(host.logs()[0].1, "saw plugin:loaded");
    /// ```
    pub fn deliver(&self, event: &str, payload: Value) -> Result<usize> {
        let ids: Vec<u64> = self
            .inner
            .recorded()
            .subscriptions
            .iter()
            .filter(|(_, pattern)| matches(pattern, event))
            .map(|(id, _)| *id)
            .collect();
        let delivered = Event {
            name: event.to_string(),
            source: "host".to_string(),
            payload,
        };
        for id in &ids {
            if let Some(handler) = self.shared.event_handler(*id) {
                guard(|| handler(&delivered, &self.runtime()))?;
            }
        }
        Ok(ids.len())
    }

    /// Fires every timer once, as if its time had come; a one-shot timer
    /// made with [`Runtime::after`] is then gone, as in the host. The first
    /// handler error is returned.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{testing::TestHost, Plugin};
    /// use std::time::Duration;
    ///
    /// let plugin = Plugin::new("ticker", "1.0.0")
    ///     .permission("event:emit:ticker:*")
    ///     .on_load(|rt| {
    ///         rt.every(Duration::from_secs(60), |rt| rt.emit("ticker:tick", &()))?;
    ///         rt.after(Duration::from_secs(1), |rt| rt.emit("ticker:once", &()))?;
    ///         Ok(())
    ///     });
    /// let host = TestHost::new("ticker");
    /// let _loaded = host.load(plugin).unwrap();
    /// let timers = host.timers();
    /// assert_eq!((timers[0].1, timers[0].2), (60_000, 60_000));
    /// assert_eq!((timers[1].1, timers[1].2), (1_000, 0));
    /// host.fire_timers().unwrap();
    /// host.fire_timers().unwrap();
    /// let names: Vec<String> = host.emitted().into_iter().map(|e| e.name).collect();
    /// assert_eq!(names, ["ticker:tick", "ticker:once", "ticker:tick"]);
    ///
    /// // Without the permission the test fails, as the host would refuse it.
    /// let quiet = Plugin::new("quiet", "1.0.0")
    ///     .on_load(|rt| rt.emit("quiet:hello", &()));
    /// let error = TestHost::new("quiet").load(quiet).err().unwrap();
    /// assert!(error.message().contains("lacks permission 'event:emit:quiet:hello'"));
    /// ```
    pub fn fire_timers(&self) -> Result<()> {
        for (id, _, every) in self.timers() {
            if every == 0 {
                self.inner.recorded().timers.remove(&id);
            }
            if let Some(handler) = self.shared.timer_handler(id) {
                guard(|| handler(&self.runtime()))?;
            }
        }
        Ok(())
    }
}

impl Host for TestHostCallbacks {
    fn log(&self, level: Level, message: &str) {
        self.0.recorded().logs.push((level, message.to_string()));
    }

    fn config(&self, key: &str) -> Result<String> {
        let recorded = self.0.recorded();
        recorded.check(&if key.is_empty() {
            "config:*".to_string()
        } else {
            format!("config:{key}")
        })?;
        let value = if key.is_empty() {
            Value::Object(recorded.config.clone())
        } else {
            recorded.config.get(key).cloned().unwrap_or(Value::Null)
        };
        Ok(value.to_string())
    }

    fn call_service(&self, service: &str, method: &str, args_json: &str) -> Result<String> {
        self.0.call_service(true, service, method, args_json)
    }

    fn emit(&self, event: &str, payload_json: &str) -> Result<()> {
        self.0.recorded().check(&format!("event:emit:{event}"))?;
        let payload = serde_json::from_str(payload_json)?;
        self.0.recorded().emitted.push(Event {
            name: event.to_string(),
            source: String::new(),
            payload,
        });
        Ok(())
    }

    fn subscribe(&self, event: &str) -> Result<u64> {
        let mut recorded = self.0.recorded();
        recorded.next_subscription += 1;
        let id = recorded.next_subscription;
        recorded.subscriptions.insert(id, event.to_string());
        Ok(id)
    }

    fn unsubscribe(&self, subscription: u64) -> Result<()> {
        self.0.recorded().subscriptions.remove(&subscription);
        Ok(())
    }

    fn push_provider_value(&self, provider: u32, value_json: &str) -> Result<()> {
        let value = serde_json::from_str(value_json)?;
        self.0.recorded().pushed.push((provider, value));
        Ok(())
    }

    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> Result<()> {
        self.0.recorded().timers.insert(timer, (after_ms, every_ms));
        Ok(())
    }

    fn clear_timer(&self, timer: u64) -> Result<()> {
        self.0.recorded().timers.remove(&timer);
        Ok(())
    }

    fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>> {
        use std::net::ToSocketAddrs;
        self.0
            .recorded()
            .check(&format!("network:connect:{port}"))?;
        let addresses = (host, port).to_socket_addrs().map_err(|e| {
            Error::new(ErrorKind::NotFound, format!("cannot resolve '{host}': {e}"))
        })?;
        Ok(addresses.collect())
    }
}

/// A plugin loaded into a [`TestHost`]: call its components by name.
pub struct LoadedPlugin<'h> {
    host: &'h TestHost,
    plugin: Arc<Plugin>,
}

impl LoadedPlugin<'_> {
    fn find<'p, T>(
        items: &'p [T],
        name: &str,
        kind: &str,
        name_of: impl Fn(&T) -> &str,
    ) -> Result<&'p T> {
        items
            .iter()
            .find(|item| name_of(item) == name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no {kind} named '{name}'")))
    }

    /// The plugin under test.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Runs an action's `validate` on a text (a message with an empty context;
    /// for a sender or state, call `plugin().actions()[i].check(&message)`).
    pub fn validate(&self, action: &str, text: &str) -> Result<bool> {
        let action = Self::find(self.plugin.actions(), action, "action", |a| a.name())?;
        catch(|| action.check(&Message::new(text)))
    }

    /// Runs an action's handler on a text (without checking `validate`).
    pub fn handle(&self, action: &str, text: &str) -> Result<ActionResult> {
        self.handle_message(action, &Message::new(text))
    }

    /// Runs an action's handler on a full message, built with the
    /// [`Message`] builders (sender, permissions, state).
    pub fn handle_message(&self, action: &str, message: &Message<'_>) -> Result<ActionResult> {
        let action = Self::find(self.plugin.actions(), action, "action", |a| a.name())?;
        guard(|| action.run(message, &self.host.runtime()))
    }

    /// Runs a provider's `get` (no cache involved).
    pub fn provide(&self, provider: &str, text: &str) -> Result<Value> {
        let provider = Self::find(self.plugin.providers(), provider, "provider", |p| p.name())?;
        guard(|| provider.fetch(&Message::new(text), &self.host.runtime()))
    }

    /// Runs an evaluator on one text.
    pub fn evaluate(&self, evaluator: &str, text: &str) -> Result<Evaluation> {
        let evaluator = Self::find(self.plugin.evaluators(), evaluator, "evaluator", |e| {
            e.name()
        })?;
        guard(|| evaluator.run(&Message::new(text), &self.host.runtime()))
    }

    /// Runs an evaluator's batch form on several texts.
    pub fn evaluate_batch(&self, evaluator: &str, texts: &[&str]) -> Result<Vec<Evaluation>> {
        let evaluator = Self::find(self.plugin.evaluators(), evaluator, "evaluator", |e| {
            e.name()
        })?;
        let messages: Vec<Message<'_>> = texts.iter().map(|t| Message::new(t)).collect();
        guard(|| evaluator.run_batch(&messages, &self.host.runtime()))
    }

    /// Calls a service method as the host calls one (no permission
    /// needed): the plugin's own service, or a fake, with the host's errors
    /// (`plugin 'kv': service 'kv' method 'get': ...`).
    pub fn call_service(&self, service: &str, method: &str, args: Value) -> Result<Value> {
        let result = self
            .host
            .inner
            .call_service(false, service, method, &args.to_string())?;
        Ok(serde_json::from_str(&result)?)
    }

    /// Stops services and runs `on_unload`, as the host would.
    pub fn unload(self) -> Result<()> {
        let rt = self.host.runtime();
        for service in self.plugin.services().iter().rev() {
            guard(|| service.stop(&rt))?;
        }
        guard(|| self.plugin.unload(&rt))
    }
}
