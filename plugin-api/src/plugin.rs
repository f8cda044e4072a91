//! A plugin: its manifest, its components and its lifecycle hooks.

use crate::action::Action;
use crate::error::Result;
use crate::evaluator::Evaluator;
use crate::manifest::Manifest;
use crate::middleware::{Middleware, PluginLayer};
use crate::provider::Provider;
use crate::runtime::Runtime;
use crate::service::Service;
use serde_json::Value;

type Hook = Box<dyn Fn(&Runtime<'_>) -> Result<()> + Send + Sync>;
type ExportState = Box<dyn Fn(&Runtime<'_>) -> Result<Value> + Send + Sync>;
type ImportState = Box<dyn Fn(Value, &Runtime<'_>) -> Result<()> + Send + Sync>;

/// A plugin, built with chained calls and exported with [`crate::export_plugin!`].
///
/// The function that builds it may run more than once (to read the manifest,
/// then to create the instance): keep it free of side effects and do real
/// work in `on_load` and in services' `on_start`.
///
/// ```
/// use agent_host_plugin_sdk::{Action, ActionResult, Plugin};
///
/// fn plugin() -> Plugin {
///     Plugin::new("greeter", "1.0.0")
///         .description("Says hello")
///         .dependency("http-client@^1.2")
///         .action(
///             Action::new("GREET")
///                 .validate(|msg| msg.text().contains("hello"))
///                 .handler(|_msg, _rt| Ok(ActionResult::text("Hello!"))),
///         )
/// }
/// let manifest = plugin().manifest();
/// assert_eq!(manifest.actions[0].name, "GREET");
/// assert!(manifest.validate().is_ok());
/// ```
pub struct Plugin {
    manifest: Manifest,
    pub(crate) actions: Vec<Action>,
    pub(crate) providers: Vec<Provider>,
    pub(crate) evaluators: Vec<Evaluator>,
    pub(crate) services: Vec<Service>,
    on_load: Vec<Hook>,
    on_unload: Vec<Hook>,
    export_state: Option<ExportState>,
    import_state: Option<ImportState>,
    middleware: Vec<PluginLayer>,
}

impl Plugin {
    /// A plugin with a unique kebab-case name and a semantic version
    /// (checked by [`Manifest::validate`] when the host loads it).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            manifest: Manifest {
                name: name.into(),
                version: version.into(),
                description: String::new(),
                author: String::new(),
                license: String::new(),
                dependencies: Vec::new(),
                optional_dependencies: Vec::new(),
                permissions: Vec::new(),
                config_schema: None,
                default_config: None,
                actions: Vec::new(),
                providers: Vec::new(),
                evaluators: Vec::new(),
                services: Vec::new(),
                state_hooks: false,
                subscribes_to: Vec::new(),
                sdk_version: crate::SDK_VERSION.to_string(),
            },
            actions: Vec::new(),
            providers: Vec::new(),
            evaluators: Vec::new(),
            services: Vec::new(),
            on_load: Vec::new(),
            on_unload: Vec::new(),
            export_state: None,
            import_state: None,
            middleware: Vec::new(),
        }
    }

    /// Says what the plugin does.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.manifest.description = text.into();
        self
    }

    /// Who wrote it.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.manifest.author = author.into();
        self
    }

    /// Its SPDX license.
    pub fn license(mut self, license: impl Into<String>) -> Self {
        self.manifest.license = license.into();
        self
    }

    /// A plugin that must load first: `name` or `name@<semver requirement>`
    /// (see [`crate::manifest::Dependency::parse`]). Without it the plugin
    /// fails to load.
    pub fn dependency(mut self, dependency: impl Into<String>) -> Self {
        self.manifest.dependencies.push(dependency.into());
        self
    }

    /// A plugin loaded first when present, such as `geolocation@^1`.
    pub fn optional_dependency(mut self, dependency: impl Into<String>) -> Self {
        self.manifest.optional_dependencies.push(dependency.into());
        self
    }

    /// A permission the plugin asks the operator for, such as `service:weather`,
    /// `event:emit:weather:*`, `config:*` or `config:api_key`. The operator
    /// grants it in the `[grants]` table of the host's config; the host checks
    /// it on every callback.
    pub fn permission(mut self, permission: impl Into<String>) -> Self {
        self.manifest.permissions.push(permission.into());
        self
    }

    /// Declares an event the plugin subscribes to (an exact name, or a
    /// prefix ending in `*`, as [`Runtime::on`](crate::Runtime::on) takes
    /// it). The subscription itself is still made with `rt.on` in
    /// `on_load`; the declaration lets the host start a lazy plugin (one the
    /// operator lists in `lazy_plugins`) when a matching event is emitted,
    /// and deliver that event to it, without running its code before.
    ///
    /// ```
    /// use agent_host_plugin_sdk::Plugin;
    ///
    /// let plugin = Plugin::new("alerts", "1.0.0")
    ///     .subscribes_to("weather:*")
    ///     .on_load(|rt| {
    ///         rt.on("weather:*", |event, rt| {
    ///             rt.info(format!("got {}", event.name));
    ///             Ok(())
    ///         })?;
    ///         Ok(())
    ///     });
    /// assert_eq!(plugin.manifest().subscribes_to, ["weather:*"]);
    /// ```
    pub fn subscribes_to(mut self, pattern: impl Into<String>) -> Self {
        self.manifest.subscribes_to.push(pattern.into());
        self
    }

    /// The JSON Schema the plugin's config must satisfy (a JSON object). The
    /// host validates the merged config against it before `on_load`; a config
    /// that fails fails this plugin only.
    pub fn config_schema(mut self, schema: Value) -> Self {
        self.manifest.config_schema = Some(schema);
        self
    }

    /// Config used where the operator's config says nothing (a JSON object;
    /// the operator's `[plugins.NAME]` section is merged over it key by key).
    pub fn default_config(mut self, config: Value) -> Self {
        self.manifest.default_config = Some(config);
        self
    }

    /// Adds an action (inside the plugin's [`middleware`](Plugin::middleware)).
    pub fn action(mut self, mut action: Action) -> Self {
        for layer in &self.middleware {
            action.layers.surround(layer.action.clone());
        }
        self.actions.push(action);
        self
    }

    /// Adds a provider (inside the plugin's [`middleware`](Plugin::middleware)).
    pub fn provider(mut self, mut provider: Provider) -> Self {
        for layer in &self.middleware {
            provider.layers.surround(layer.provider.clone());
        }
        self.providers.push(provider);
        self
    }

    /// Adds an evaluator (inside the plugin's [`middleware`](Plugin::middleware)).
    pub fn evaluator(mut self, mut evaluator: Evaluator) -> Self {
        for layer in &self.middleware {
            evaluator.layers.surround(layer.evaluation.clone());
            evaluator.batch_layers.surround(layer.batch.clone());
        }
        self.evaluators.push(evaluator);
        self
    }

    /// Wraps every action handler, provider `get` and evaluator of the
    /// plugin (those added before this call and after it) in `middleware`.
    /// Several run in the order they were added, the first outermost, and
    /// all of them outside each component's own wraps
    /// ([`Action::wrap`], [`Provider::wrap`]). See [`crate::middleware`]
    /// for the order, and [`crate::middleware::Logging`] for the logging
    /// and timing middleware the SDK ships.
    ///
    /// ```
    /// use agent_host_plugin_sdk::middleware::{Call, Middleware, Next};
    /// use agent_host_plugin_sdk::{testing::TestHost, Action, ActionResult, Plugin, Result};
    /// use std::sync::{Arc, Mutex};
    ///
    /// /// Records the order in which layers run.
    /// struct Trace(&'static str, Arc<Mutex<Vec<String>>>);
    ///
    /// impl Middleware for Trace {
    ///     fn call<T>(&self, _call: &Call<'_>, next: Next<'_, T>) -> Result<T> {
    ///         self.1.lock().unwrap().push(format!("{} in", self.0));
    ///         let result = next.run();
    ///         self.1.lock().unwrap().push(format!("{} out", self.0));
    ///         result
    ///     }
    /// }
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let (inner, handler) = (Arc::clone(&seen), Arc::clone(&seen));
    /// let plugin = Plugin::new("ordered", "1.0.0")
    ///     .middleware(Trace("a", Arc::clone(&seen)))
    ///     .action(
    ///         Action::new("GO")
    ///             .validate(|_m| true)
    ///             .wrap(move |_call, next| {
    ///                 inner.lock().unwrap().push("c".into());
    ///                 next.run()
    ///             })
    ///             .handler(move |_m, _rt| {
    ///                 handler.lock().unwrap().push("handler".into());
    ///                 Ok(ActionResult::text("done"))
    ///             }),
    ///     )
    ///     .middleware(Trace("b", Arc::clone(&seen)));
    /// let host = TestHost::new("ordered");
    /// host.load(plugin).unwrap().handle("GO", "go").unwrap();
    /// assert_eq!(*seen.lock().unwrap(), ["a in", "b in", "c", "handler", "b out", "a out"]);
    /// ```
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        let layer = PluginLayer::new(middleware);
        for action in &mut self.actions {
            action.layers.surround(layer.action.clone());
        }
        for provider in &mut self.providers {
            provider.layers.surround(layer.provider.clone());
        }
        for evaluator in &mut self.evaluators {
            evaluator.layers.surround(layer.evaluation.clone());
            evaluator.batch_layers.surround(layer.batch.clone());
        }
        self.middleware.push(layer);
        self
    }

    /// Adds a service.
    pub fn service(mut self, service: impl Into<Service>) -> Self {
        self.services.push(service.into());
        self
    }

    /// Runs when the plugin is loaded, before its services start. An error
    /// here stops the plugin from loading. Several hooks run in the order they
    /// were added. This is the place for real work (subscriptions, timers,
    /// opening files): the function that builds the plugin may run more than
    /// once.
    pub fn on_load(
        mut self,
        hook: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_load.push(Box::new(hook));
        self
    }

    /// Runs when the plugin is unloaded, after its services stopped: at
    /// shutdown, when its file is removed, and on the old generation after a
    /// hot reload. The library itself stays mapped: stop every thread the
    /// plugin started.
    pub fn on_unload(
        mut self,
        hook: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_unload.push(Box::new(hook));
        self
    }

    /// Hands state from one generation to the next on hot reload: `export`
    /// runs on the old generation, `import` on the new one before it serves.
    ///
    /// The host's order on reload: wait for calls in flight to finish and hold
    /// new ones; `export` on the old generation; the old generation's
    /// services stop (old services stop before new ones start); `import` on
    /// the new one (only when both generations have state hooks and `export`
    /// returned something other than `null`); the new generation's
    /// `on_load`; its services start and its providers are subscribed; the
    /// swap; the held calls go to the new generation; the old one's
    /// providers are unsubscribed and it runs `on_unload`. An error from
    /// `export` or `import` refuses the reload and the old generation keeps
    /// serving (its services started again). Keep the state JSON small and versioned: the
    /// new build may be older or newer than the one that exported it.
    ///
    /// Test the hand-over by running both hooks yourself, in the host's order
    /// (`import` before `on_load`):
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost, Action, ActionResult, Plugin};
    /// use std::sync::{Arc, Mutex};
    ///
    /// fn plugin() -> Plugin {
    ///     let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    ///     let (add, list) = (Arc::clone(&notes), Arc::clone(&notes));
    ///     let (export, import) = (Arc::clone(&notes), Arc::clone(&notes));
    ///     Plugin::new("notes", "1.0.0")
    ///         .action(
    ///             Action::new("REMEMBER")
    ///                 .validate(|m| m.text().starts_with("remember "))
    ///                 .handler(move |m, _rt| {
    ///                     add.lock().unwrap().push(m.text()[9..].to_string());
    ///                     Ok(ActionResult::text("noted"))
    ///                 }),
    ///         )
    ///         .action(
    ///             Action::new("RECALL")
    ///                 .validate(|m| m.text() == "recall")
    ///                 .handler(move |_m, _rt| Ok(ActionResult::text(list.lock().unwrap().join(", ")))),
    ///         )
    ///         .state_hooks(
    ///             move |_rt| Ok(json!({"v": 1, "notes": export.lock().unwrap().clone()})),
    ///             move |state, _rt| {
    ///                 *import.lock().unwrap() = serde_json::from_value(state["notes"].clone())?;
    ///                 Ok(())
    ///             },
    ///         )
    /// }
    ///
    /// let old_host = TestHost::new("notes");
    /// let old = old_host.load(plugin()).unwrap();
    /// old.handle("REMEMBER", "remember buy milk").unwrap();
    /// let state = old.plugin().export_state(&old_host.runtime()).unwrap();
    ///
    /// let new_host = TestHost::new("notes");
    /// let next = plugin();
    /// assert!(next.manifest().state_hooks);
    /// next.import_state(state, &new_host.runtime()).unwrap();
    /// let new = new_host.load(next).unwrap();
    /// assert_eq!(new.handle("RECALL", "recall").unwrap().text, "buy milk");
    /// ```
    pub fn state_hooks(
        mut self,
        export: impl Fn(&Runtime<'_>) -> Result<Value> + Send + Sync + 'static,
        import: impl Fn(Value, &Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.manifest.state_hooks = true;
        self.export_state = Some(Box::new(export));
        self.import_state = Some(Box::new(import));
        self
    }

    /// One plugin made of several: their components side by side, their
    /// `on_load` hooks in order and `on_unload` hooks in reverse order. The
    /// parts' dependencies and permissions are merged; a dependency on one of
    /// the parts themselves is dropped.
    ///
    /// Only that is carried over: the parts' descriptions, authors, licenses,
    /// config schemas, default configs and state hooks are not (set them on
    /// the composed plugin). The parts share one config, one set of
    /// permissions and one name, and component names must stay unique across
    /// them ([`Manifest::validate`] rejects duplicates). Calls between the
    /// parts' services are calls to the plugin's own services, which need no
    /// permission. A part's [`middleware`](Plugin::middleware) stays on the
    /// part's own components; the composed plugin's middleware wraps every
    /// component, outside the parts' own.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Action, ActionResult, Plugin, Provider};
    ///
    /// fn greeter() -> Plugin {
    ///     Plugin::new("greeter", "1.0.0")
    ///         .dependency("clock@^1")
    ///         .dependency("geolocation@^1")
    ///         .permission("service:geolocation")
    ///         .action(
    ///             Action::new("GREET")
    ///                 .validate(|m| m.text().contains("hello"))
    ///                 .handler(|_m, _rt| Ok(ActionResult::text("Hello!"))),
    ///         )
    /// }
    ///
    /// fn clock() -> Plugin {
    ///     Plugin::new("clock", "1.0.0")
    ///         .provider(Provider::new("clock").get(|_m, _rt| Ok(12)))
    /// }
    ///
    /// let assistant = Plugin::compose("assistant", "1.0.0", vec![greeter(), clock()]);
    /// let manifest = assistant.manifest();
    /// // The dependency on the `clock` part is dropped; the others stay.
    /// assert_eq!(manifest.dependencies, ["geolocation@^1"]);
    /// assert_eq!(manifest.permissions, ["service:geolocation"]);
    /// assert_eq!(manifest.actions[0].name, "GREET");
    /// assert_eq!(manifest.providers[0].name, "clock");
    /// assert!(manifest.validate().is_ok());
    /// ```
    pub fn compose(
        name: impl Into<String>,
        version: impl Into<String>,
        parts: Vec<Plugin>,
    ) -> Self {
        let mut composed = Plugin::new(name, version);
        let part_names: Vec<String> = parts.iter().map(|p| p.manifest.name.clone()).collect();
        let mut unloads = Vec::new();
        for part in parts {
            let Plugin {
                manifest,
                actions,
                providers,
                evaluators,
                services,
                on_load,
                on_unload,
                ..
            } = part;
            for (list, target) in [
                (manifest.dependencies, &mut composed.manifest.dependencies),
                (
                    manifest.optional_dependencies,
                    &mut composed.manifest.optional_dependencies,
                ),
                (manifest.permissions, &mut composed.manifest.permissions),
                (manifest.subscribes_to, &mut composed.manifest.subscribes_to),
            ] {
                for item in list {
                    let dep_name = item.split('@').next().unwrap_or_default();
                    if !part_names.iter().any(|n| n == dep_name) && !target.contains(&item) {
                        target.push(item);
                    }
                }
            }
            for mut action in actions {
                action.layers.settle();
                composed = composed.action(action);
            }
            for mut provider in providers {
                provider.layers.settle();
                composed = composed.provider(provider);
            }
            for mut evaluator in evaluators {
                evaluator.layers.settle();
                evaluator.batch_layers.settle();
                composed = composed.evaluator(evaluator);
            }
            composed.services.extend(services);
            composed.on_load.extend(on_load);
            unloads.push(on_unload);
        }
        composed.on_unload = unloads.into_iter().rev().flatten().collect();
        composed
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The full manifest, with every component's description.
    pub fn manifest(&self) -> Manifest {
        let mut manifest = self.manifest.clone();
        manifest.actions = self.actions.iter().map(|a| a.spec.clone()).collect();
        manifest.providers = self.providers.iter().map(|p| p.spec.clone()).collect();
        manifest.evaluators = self.evaluators.iter().map(|e| e.spec.clone()).collect();
        manifest.services = self.services.iter().map(|s| s.spec.clone()).collect();
        manifest
    }

    /// Components that lack a required part (an action without a handler or a
    /// `validate`, a provider without `get`, an evaluator without `evaluate`).
    /// The export macro refuses to report a manifest while this is not empty,
    /// so the host rejects the library.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Action, Plugin};
    ///
    /// let plugin = Plugin::new("broken", "1.0.0").action(Action::new("NOTHING"));
    /// assert_eq!(plugin.problems(), ["action 'NOTHING' has no validate"]);
    /// ```
    pub fn problems(&self) -> Vec<String> {
        let actions = self.actions.iter().filter_map(Action::missing_parts);
        let providers = self.providers.iter().filter_map(Provider::missing_parts);
        let evaluators = self.evaluators.iter().filter_map(Evaluator::missing_parts);
        actions.chain(providers).chain(evaluators).collect()
    }

    /// The actions, in index order.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The providers, in index order.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The evaluators, in index order.
    pub fn evaluators(&self) -> &[Evaluator] {
        &self.evaluators
    }

    /// The services, in index order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Finds a service by name.
    pub fn service_named(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name() == name)
    }

    /// Runs the `on_load` hooks, in order, stopping at the first error.
    pub fn load(&self, rt: &Runtime<'_>) -> Result<()> {
        self.on_load.iter().try_for_each(|hook| hook(rt))
    }

    /// Runs the `on_unload` hooks, in order, stopping at the first error.
    pub fn unload(&self, rt: &Runtime<'_>) -> Result<()> {
        self.on_unload.iter().try_for_each(|hook| hook(rt))
    }

    /// Runs the export state hook; `Value::Null` when there is none.
    pub fn export_state(&self, rt: &Runtime<'_>) -> Result<Value> {
        self.export_state
            .as_ref()
            .map_or(Ok(Value::Null), |export| export(rt))
    }

    /// Runs the import state hook; does nothing when there is none.
    pub fn import_state(&self, state: Value, rt: &Runtime<'_>) -> Result<()> {
        self.import_state
            .as_ref()
            .map_or(Ok(()), |import| import(state, rt))
    }
}
