//! Hot reload: put a new build of a plugin in the place of the running one
//! while the agent serves, with nothing failed and nothing lost.
//!
//! 1. Open the plugin's file again, from a fresh private copy (a new
//!    generation), and check it: ABI and layout, manifest, the same plugin
//!    name, its own dependencies satisfied by the loaded plugins (and no
//!    cycle through them), and its dependents' version requirements still
//!    met by the new version. Create the instance with its config validated.
//! 2. Close the admission gate: wait for the calls in flight to finish (at
//!    most the drain timeout; then give up) and hold new ones.
//! 3. Export the old generation's state, import it into the new one, run
//!    the new one's `on_load`, start its services, subscribe its providers.
//! 4. Swap: the new generation takes the old one's place and services.
//! 5. Reopen the gate; the held calls go to the new generation.
//! 6. Retire the old generation: unsubscribe its providers, stop its
//!    services, run its `on_unload`, drop its subscriptions and timers.
//!
//! Any failure before the swap undoes the new generation and leaves the old
//! one serving, with one line saying why. The old library stays mapped (it
//! is never unloaded); the host counts it.

pub(crate) mod watch;

use crate::config::AgentConfig;
use crate::load::library;
use crate::load::private_copy::ShadowDir;
use crate::load::{instantiate, subscribe_providers, Prepared};
use crate::plugin::CallError;
use crate::registry::{LivePlugin, Registry};
use agent_host_plugin_sdk::manifest::Dependency;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reload that succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reloaded {
    /// The plugin.
    pub plugin: String,
    /// The version that served before.
    pub from_version: String,
    /// The version that serves now.
    pub to_version: String,
    /// The new generation's number.
    pub generation: u64,
    /// Bytes of state handed from the old generation to the new one.
    pub state_bytes: usize,
    /// How long new calls were held (gate closed), in microseconds.
    pub paused_us: u64,
    /// The whole reload, in microseconds.
    pub total_us: u64,
    /// Errors while retiring the old generation (it is replaced regardless).
    pub retire_errors: Vec<String>,
}

/// A reload that failed: the old generation keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadFailure {
    /// The plugin.
    pub plugin: String,
    /// The file the new build was read from.
    pub file: PathBuf,
    /// Why it was refused.
    pub cause: String,
}

impl std::fmt::Display for ReloadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}: ", self.file.display())?;
        }
        write!(
            f,
            "plugin '{}': reload refused, the running generation keeps serving: {}",
            self.plugin, self.cause
        )
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Whether `from` reaches `target` through the loaded plugins' required and
/// optional dependencies.
fn reaches(core: &Registry, from: &str, target: &str, seen: &mut Vec<String>) -> bool {
    if from == target {
        return true;
    }
    if seen.iter().any(|s| s == from) {
        return false;
    }
    seen.push(from.to_string());
    let Some(plugin) = core.plugin(from) else {
        return false;
    };
    let manifest = &plugin.instance.manifest;
    manifest
        .dependencies
        .iter()
        .chain(&manifest.optional_dependencies)
        .filter_map(|d| Dependency::parse(d, false).ok())
        .any(|d| reaches(core, &d.name, target, seen))
}

/// Checks the new build against the loaded plugins: its dependencies, and
/// its dependents' requirements.
fn check_dependencies(core: &Registry, prepared: &Prepared) -> Result<(), String> {
    let name = prepared.manifest.name.as_str();
    for dependency in &prepared.dependencies {
        match core.plugin(&dependency.name) {
            Some(found)
                if dependency.requirement.matches(&found.instance.version)
                    && reaches(core, &dependency.name, name, &mut Vec::new()) =>
            {
                return Err(format!(
                    "dependency cycle between {name} and {}",
                    dependency.name
                ));
            }
            Some(found) if dependency.requirement.matches(&found.instance.version) => {}
            Some(found) if !dependency.optional => {
                return Err(format!(
                    "unmet dependency '{dependency}': the plugin loaded has version {}",
                    found.instance.version
                ))
            }
            None if !dependency.optional => {
                return Err(format!(
                    "missing dependency '{dependency}': no plugin of that name is loaded"
                ))
            }
            _ => {}
        }
    }
    for dependent in core.plugins() {
        if dependent.name() == name {
            continue;
        }
        let manifest = &dependent.instance.manifest;
        let requirements = manifest
            .dependencies
            .iter()
            .map(|d| (d, false))
            .chain(manifest.optional_dependencies.iter().map(|d| (d, true)));
        for (text, optional) in requirements {
            let Ok(requirement) = Dependency::parse(text, optional) else {
                continue;
            };
            if requirement.name == name && !requirement.requirement.matches(&prepared.version) {
                return Err(format!(
                    "plugin '{}' requires {requirement}, which the new version {} does not meet",
                    dependent.name(),
                    prepared.version
                ));
            }
        }
    }
    Ok(())
}

/// Stops a generation that is not (or no longer) serving: providers
/// unsubscribed, services stopped in reverse, `on_unload`, its subscriptions
/// and timers dropped. Returns the errors, which never stop the rest.
pub fn retire(core: &Registry, plugin: &LivePlugin, services_started: usize) -> Vec<CallError> {
    let mut errors = Vec::new();
    for (index, provider) in plugin.instance.manifest.providers.iter().enumerate() {
        if provider.subscribable {
            if let Err(error) = plugin.instance.set_subscribed(index as u32, false) {
                errors.push(error);
            }
        }
    }
    for index in (0..services_started).rev() {
        if let Err(error) = plugin.instance.stop_service(index as u32) {
            errors.push(error);
        }
    }
    if let Err(error) = plugin.instance.on_unload() {
        errors.push(error);
    }
    core.drop_generation(plugin.name(), plugin.generation);
    errors
}

/// Starts a new generation's services; on failure stops those it started.
fn start_services(new: &LivePlugin) -> Result<(), String> {
    for (index, service) in new.instance.manifest.services.iter().enumerate() {
        if let Err(error) = new.instance.start_service(index as u32) {
            for started in (0..index).rev() {
                let _ = new.instance.stop_service(started as u32);
            }
            return Err(format!(
                "service '{}' failed to start: {}",
                service.name, error.message
            ));
        }
    }
    Ok(())
}

/// Reloads the plugin named `name` from its file. Callers serialize reloads.
pub fn reload(
    core: &Arc<Registry>,
    shadow: &ShadowDir,
    config: &AgentConfig,
    name: &str,
    file: Option<&Path>,
) -> Result<Reloaded, ReloadFailure> {
    let started = Instant::now();
    let Some(old) = core.plugin(name) else {
        return Err(ReloadFailure {
            plugin: name.to_string(),
            file: file.map(Path::to_path_buf).unwrap_or_default(),
            cause: "no plugin of that name is loaded".into(),
        });
    };
    let file = file.map_or_else(|| old.instance.file.clone(), Path::to_path_buf);
    let fail = |cause: String| ReloadFailure {
        plugin: name.to_string(),
        file: file.clone(),
        cause,
    };
    let outcome = (|| {
        let opened = library::open(&file, shadow).map_err(|e| fail(e.cause))?;
        let index = opened
            .manifests
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = opened.manifests.iter().map(|m| m.name.as_str()).collect();
                fail(format!(
                    "the new build holds no plugin named '{name}' (it holds: {})",
                    names.join(", ")
                ))
            })?;
        let manifest = opened.manifests[index].clone();
        let valid = manifest.validate().map_err(|e| fail(e.to_string()))?;
        let prepared = Prepared {
            library: Arc::new(opened),
            index: index as u32,
            manifest,
            version: valid.version,
            dependencies: valid.dependencies,
        };
        check_dependencies(core, &prepared).map_err(fail)?;
        let new =
            instantiate(core, &prepared, old.load_order, config).map_err(|f| fail(f.cause))?;

        let drain = Duration::from_millis(core.settings.reload_drain_timeout_ms);
        let paused = Instant::now();
        let closed = core.admission.close(drain).map_err(|still| {
            fail(format!(
                "{still} call(s) still in flight after the {} ms drain timeout",
                drain.as_millis()
            ))
        })?;
        let state = if old.instance.manifest.state_hooks {
            old.instance
                .export_state()
                .map_err(|e| fail(e.to_string()))?
        } else {
            "null".to_string()
        };
        let undo = |new: &LivePlugin, services: usize| {
            for error in retire(core, new, services) {
                tracing::warn!("{error}");
            }
        };
        if new.instance.manifest.state_hooks && state != "null" {
            if let Err(error) = new.instance.import_state(&state) {
                core.drop_generation(name, new.generation);
                return Err(fail(error.to_string()));
            }
        }
        if let Err(error) = new.instance.on_load() {
            core.drop_generation(name, new.generation);
            return Err(fail(format!("on_load: {}", error.message)));
        }
        if let Err(cause) = start_services(&new) {
            undo(&new, 0);
            return Err(fail(cause));
        }
        subscribe_providers(&new);
        core.swap(Arc::clone(&new));
        drop(closed);
        let paused_us = micros(paused);

        let retire_errors = retire(core, &old, old.instance.manifest.services.len())
            .iter()
            .map(ToString::to_string)
            .collect();
        Ok(Reloaded {
            plugin: name.to_string(),
            from_version: old.instance.manifest.version.clone(),
            to_version: new.instance.manifest.version.clone(),
            generation: new.generation,
            state_bytes: state.len(),
            paused_us,
            total_us: micros(started),
            retire_errors,
        })
    })();
    match &outcome {
        Ok(done) => {
            let mapped = core.mapped(name);
            tracing::info!(
                plugin = name,
                from = %done.from_version,
                to = %done.to_version,
                generation = done.generation,
                paused_us = done.paused_us,
                total_us = done.total_us,
                mapped_generations = mapped.generations,
                mapped_bytes = mapped.bytes,
                "reloaded"
            );
            core.emit(
                "host",
                "plugin:reloaded",
                json!({
                    "plugin": name,
                    "from_version": done.from_version,
                    "to_version": done.to_version,
                    "generation": done.generation,
                    "state_bytes": done.state_bytes,
                    "paused_us": done.paused_us,
                    "total_us": done.total_us,
                }),
            );
        }
        Err(failure) => {
            tracing::error!("{failure}");
            core.emit(
                "host",
                "plugin:reload_failed",
                json!({
                    "plugin": name,
                    "file": failure.file,
                    "error": failure.cause,
                }),
            );
        }
    }
    outcome
}
