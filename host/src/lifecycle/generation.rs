//! The steps of one generation's life: created, entering service, leaving
//! it. Each call into the plugin is a [`Step`] run within the lifecycle
//! deadline; once the host gives up on a generation (a step missed its
//! deadline while it was being started or stopped), no further step of it
//! is called.

use super::check::Prepared;
use super::report::LoadFailure;
use super::LoadError;
use crate::config::{effective_config, AgentConfig};
use crate::plugin::{CallError, CreateContext, InstanceParts, PluginInstance};
use crate::registry::callbacks::PluginCallbacks;
use crate::registry::step::{IfLate, Step};
use crate::registry::{LivePlugin, Registry, ServiceStartError};
use std::sync::Arc;

/// Creates a new generation of one plugin: its config (validated), its
/// permissions, the instance, and its accounting of mapped images. Runs no
/// hook and registers nothing.
pub(crate) fn create(
    core: &Arc<Registry>,
    p: &Prepared,
    order: usize,
    agent: &AgentConfig,
) -> Result<Arc<LivePlugin>, LoadFailure> {
    let name = p.manifest.name.as_str();
    let config = effective_config(&p.manifest, agent.plugins.get(name))
        .map_err(|e| p.failure(LoadError::Config(e)))?;
    let config = Arc::new(config);
    let (permissions, denied) = agent.effective_permissions(&p.manifest);
    if !denied.is_empty() {
        tracing::warn!(
            plugin = name,
            "permissions requested but not granted: {}",
            denied.join(", ")
        );
    }
    let generation = core.next_generation();
    let host = PluginCallbacks::boxed(
        name,
        generation,
        permissions.clone(),
        Arc::clone(&config),
        core,
    );
    let grants = |manifest: &agent_host_plugin_sdk::manifest::Manifest| {
        agent.effective_permissions(manifest).0.patterns().to_vec()
    };
    let context = CreateContext {
        permissions: permissions.patterns(),
        announce: core.announcer(),
        lifecycle_timeout: std::time::Duration::from_millis(core.settings.lifecycle_timeout_ms),
        grants: &grants,
        places: &core.worker_places,
    };
    let backend = p
        .source
        .create(p.index, host, &context)
        .map_err(|e| p.failure(LoadError::Create(e.message().to_string())))?;
    let instance = PluginInstance::new(
        InstanceParts {
            manifest: (*p.manifest).clone(),
            version: p.version.clone(),
            dependencies: p.dependencies.clone(),
            file: p.source.file().to_path_buf(),
            image_bytes: p.source.image_bytes(),
            sha256: p.source.sha256().to_string(),
        },
        backend,
    );
    if instance.placement().is_in_process() {
        warn_unenforceable(name, permissions.patterns());
    }
    let live = Arc::new(LivePlugin::new(
        instance,
        Arc::clone(&p.triggers),
        permissions,
        order,
        generation,
        &core.metrics,
    ));
    core.count_mapped(name, p.source.image_bytes());
    Ok(live)
}

/// Warns, once per load, that an in-process plugin holds `filesystem:` or
/// `network:` permissions, which only a worker's sandbox can enforce.
fn warn_unenforceable(plugin: &str, permissions: &[String]) {
    let words = crate::isolation::unenforceable_in_process(permissions);
    if !words.is_empty() {
        tracing::warn!(
            plugin,
            "holds {} but runs in process, where they cannot be enforced: run it \
             isolated ([isolation] process = [\"{plugin}\"]) to enforce them",
            words.join(", ")
        );
    }
}

/// Creates one plugin and brings it into service: registered (so that the
/// events and timers its `on_load` sets up reach it), `on_load`, its
/// services registered and started, its providers subscribed. On failure
/// everything it set up is undone and it is unregistered.
pub(crate) fn enter_service(
    core: &Arc<Registry>,
    p: &Prepared,
    order: usize,
    agent: &AgentConfig,
) -> Result<Arc<LivePlugin>, LoadFailure> {
    let live = create(core, p, order, agent)?;
    core.register(Arc::clone(&live));
    if let Err(error) = on_load(core, &live, IfLate::GiveUp) {
        core.unregister(live.name());
        return Err(p.failure(LoadError::OnLoad(error)));
    }
    let services =
        register_services(core, &live).and_then(|()| start_services(core, &live, IfLate::GiveUp));
    if let Err((service, cause)) = services {
        if !live.is_given_up() {
            if let Err(error) = on_unload(core, &live) {
                tracing::warn!("{error}");
            }
        }
        core.unregister(live.name());
        return Err(p.failure(LoadError::StartService { service, cause }));
    }
    subscribe_providers(core, &live, true);
    core.metrics.plugins_loaded.inc();
    Ok(live)
}

/// Takes a generation out of service (one that no longer serves, or never
/// did): providers unsubscribed, its first `services_started` services
/// stopped in reverse, `on_unload`, its subscriptions and timers dropped.
/// Returns the errors, which never stop the rest.
pub(crate) fn leave_service(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    services_started: usize,
) -> Vec<CallError> {
    let mut errors = subscribe_providers(core, plugin, false);
    errors.extend(stop_services(
        core,
        plugin,
        services_started,
        IfLate::GiveUp,
    ));
    if !plugin.is_given_up() {
        errors.extend(on_unload(core, plugin).err());
    }
    core.drop_generation(plugin.name(), plugin.generation);
    errors
}

/// Runs a generation's `on_load`.
pub(crate) fn on_load(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    if_late: IfLate,
) -> Result<(), CallError> {
    core.run_step(plugin, Step::OnLoad, if_late, |instance| instance.on_load())
}

/// Runs a generation's `on_unload`; the host gives up on it if it is late.
fn on_unload(core: &Registry, plugin: &Arc<LivePlugin>) -> Result<(), CallError> {
    core.run_step(plugin, Step::OnUnload, IfLate::GiveUp, |instance| {
        instance.on_unload()
    })
}

/// A service that did not enter service, and why.
pub(crate) type ServiceFailure = (String, ServiceStartError);

/// Registers every service of a generation in the service table, stopped.
fn register_services(core: &Registry, plugin: &Arc<LivePlugin>) -> Result<(), ServiceFailure> {
    for (index, service) in plugin.instance.manifest.services.iter().enumerate() {
        core.add_service(plugin, index as u32)
            .map_err(|cause| (service.name.clone(), cause))?;
    }
    Ok(())
}

/// Starts a generation's services in order, each marked running (where the
/// service table holds it for this generation). On failure stops those it
/// started (unless the host gave up on the generation) and returns the
/// service and why.
pub(crate) fn start_services(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    if_late: IfLate,
) -> Result<(), ServiceFailure> {
    for (index, service) in plugin.instance.manifest.services.iter().enumerate() {
        let index = index as u32;
        let started = core.run_step(
            plugin,
            Step::StartService(index),
            if_late,
            move |instance| instance.start_service(index),
        );
        if let Err(error) = started {
            // Their own errors add nothing to the one that failed the start.
            for stop_error in stop_services(core, plugin, index as usize, if_late) {
                tracing::warn!("{stop_error}");
            }
            return Err((service.name.clone(), ServiceStartError::Start(error)));
        }
        core.mark_service(plugin, index, true);
    }
    Ok(())
}

/// Stops the first `started` services of a generation, in reverse order;
/// returns the errors, which never stop the rest (none is called once the
/// host gave up on the generation).
pub(crate) fn stop_services(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    started: usize,
    if_late: IfLate,
) -> Vec<CallError> {
    let mut errors = Vec::new();
    for index in (0..started as u32).rev() {
        if plugin.is_given_up() {
            break;
        }
        let stopped = core.run_step(plugin, Step::StopService(index), if_late, move |instance| {
            instance.stop_service(index)
        });
        core.mark_service(plugin, index, false);
        errors.extend(stopped.err());
    }
    errors
}

/// Starts (`on`) or ends the subscription of every subscribable provider of
/// a generation. A failed start is logged and the plugin serves on; the
/// errors of an end are returned.
pub(crate) fn subscribe_providers(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    on: bool,
) -> Vec<CallError> {
    let mut errors = Vec::new();
    for (index, provider) in plugin.instance.manifest.providers.iter().enumerate() {
        if !provider.subscribable || (!on && plugin.is_given_up()) {
            continue;
        }
        let index = index as u32;
        let if_late = if on { IfLate::ServeOn } else { IfLate::GiveUp };
        let done = core.run_step(
            plugin,
            Step::Subscribe(index, on),
            if_late,
            move |instance| instance.set_subscribed(index, on),
        );
        match done {
            Err(error) if on => tracing::warn!("{error}"),
            Err(error) => errors.push(error),
            Ok(()) => {}
        }
    }
    errors
}
