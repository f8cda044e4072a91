//! A plugin: its manifest, its components and its lifecycle hooks.

use crate::action::Action;
use crate::error::Result;
use crate::evaluator::Evaluator;
use crate::manifest::Manifest;
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
/// use plugin_api::{Action, ActionResult, Plugin};
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
}

impl Plugin {
    /// A plugin with a unique kebab-case name and a semantic version.
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
                sdk_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            actions: Vec::new(),
            providers: Vec::new(),
            evaluators: Vec::new(),
            services: Vec::new(),
            on_load: Vec::new(),
            on_unload: Vec::new(),
            export_state: None,
            import_state: None,
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

    /// A plugin that must load first: `name` or `name@<semver requirement>`.
    pub fn dependency(mut self, dependency: impl Into<String>) -> Self {
        self.manifest.dependencies.push(dependency.into());
        self
    }

    /// A plugin loaded first when present, such as `geolocation@^1`.
    pub fn optional_dependency(mut self, dependency: impl Into<String>) -> Self {
        self.manifest.optional_dependencies.push(dependency.into());
        self
    }

    /// A permission the plugin asks the operator for, such as `service:weather`
    /// or `event:emit:weather:*`.
    pub fn permission(mut self, permission: impl Into<String>) -> Self {
        self.manifest.permissions.push(permission.into());
        self
    }

    /// The JSON Schema the plugin's config must satisfy.
    pub fn config_schema(mut self, schema: Value) -> Self {
        self.manifest.config_schema = Some(schema);
        self
    }

    /// Config used where the operator's config says nothing.
    pub fn default_config(mut self, config: Value) -> Self {
        self.manifest.default_config = Some(config);
        self
    }

    /// Adds an action.
    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Adds a provider.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.providers.push(provider);
        self
    }

    /// Adds an evaluator.
    pub fn evaluator(mut self, evaluator: Evaluator) -> Self {
        self.evaluators.push(evaluator);
        self
    }

    /// Adds a service.
    pub fn service(mut self, service: impl Into<Service>) -> Self {
        self.services.push(service.into());
        self
    }

    /// Runs when the plugin is loaded, before its services start. An error
    /// here stops the plugin from loading.
    pub fn on_load(
        mut self,
        hook: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_load.push(Box::new(hook));
        self
    }

    /// Runs when the plugin is unloaded, after its services stopped.
    pub fn on_unload(
        mut self,
        hook: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_unload.push(Box::new(hook));
        self
    }

    /// Hands state from one generation to the next on hot reload: `export`
    /// runs on the old generation, `import` on the new one before it serves.
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
            ] {
                for item in list {
                    let dep_name = item.split('@').next().unwrap_or_default();
                    if !part_names.iter().any(|n| n == dep_name) && !target.contains(&item) {
                        target.push(item);
                    }
                }
            }
            composed.actions.extend(actions);
            composed.providers.extend(providers);
            composed.evaluators.extend(evaluators);
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

    /// Components that lack a required part (an action without a handler...).
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

    /// Runs the `on_load` hooks.
    pub fn load(&self, rt: &Runtime<'_>) -> Result<()> {
        self.on_load.iter().try_for_each(|hook| hook(rt))
    }

    /// Runs the `on_unload` hooks.
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
