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
//!
//! Every reload is in the audit trail: who asked ([`ReloadOrigin`]), the
//! file, and the SHA-256 of the bytes before and after, as the log event
//! `plugin_reloaded` (or `plugin_reload_refused`, with the reason) and in
//! `agent_host_reloads_total{origin, outcome}`.

mod error;
mod origin;
#[cfg(test)]
mod tests;
pub(crate) mod watch;

pub use error::ReloadError;
pub use origin::ReloadOrigin;

use crate::config::AgentConfig;
use crate::dependencies::{check_replacement, Candidate};
use crate::load::{check_manifest, instantiate, subscribe_providers, Prepared};
use crate::load::{LoadError, OpenError};
use crate::metrics::ReloadLabels;
use crate::plugin::CallError;
use crate::plugin::PluginSource;
use crate::registry::lifecycle::{IfLate, Step};
use crate::registry::{LivePlugin, Registry};
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
    /// The SHA-256 of the bytes the old generation was loaded from.
    pub from_sha256: String,
    /// The SHA-256 of the bytes the new generation was loaded from.
    pub to_sha256: String,
    /// Who asked for the reload.
    #[serde(flatten)]
    pub origin: ReloadOrigin,
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
    /// The file was byte-identical to the serving generation's, so nothing
    /// was reloaded ([`WhenUnchanged::Skip`]): the generation and the
    /// versions are those that served, and serve on.
    pub unchanged: bool,
}

/// What a reload does when the file is byte-identical (the same SHA-256)
/// to the bytes the serving generation was loaded from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenUnchanged {
    /// Nothing: the reload is skipped and says so ([`Reloaded::unchanged`]).
    /// A file event that changed no byte, or a second request for the same
    /// build, costs no new generation.
    #[default]
    Skip,
    /// Reload all the same: the plugin restarts as a new generation of the
    /// same build, its state handed over.
    Reload,
}

/// A reload that failed: the old generation keeps serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// The plugin.
    pub plugin: String,
    /// The file the new build was read from (empty when none was).
    pub file: PathBuf,
    /// Why it was refused.
    pub error: Box<ReloadError>,
}

impl ReloadFailure {
    /// One line saying why, without the file and plugin names.
    pub fn cause(&self) -> String {
        self.error.to_string()
    }
}

impl Serialize for ReloadFailure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = serializer.serialize_struct("ReloadFailure", 3)?;
        fields.serialize_field("plugin", &self.plugin)?;
        fields.serialize_field("file", &self.file)?;
        fields.serialize_field("cause", &self.cause())?;
        fields.end()
    }
}

impl std::error::Error for ReloadFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

impl std::fmt::Display for ReloadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}: ", self.file.display())?;
        }
        write!(
            f,
            "plugin '{}': reload refused, the running generation keeps serving: {}",
            self.plugin, self.error
        )
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Stops a generation that is not (or no longer) serving: providers
/// unsubscribed, services stopped in reverse, `on_unload`, its subscriptions
/// and timers dropped. Each step has the lifecycle deadline; once one
/// misses it, the host gives up on the generation and calls no further
/// step. Returns the errors, which never stop the rest.
pub fn retire(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    services_started: usize,
) -> Vec<CallError> {
    let mut errors = Vec::new();
    for (index, provider) in plugin.instance.manifest.providers.iter().enumerate() {
        if provider.subscribable && !plugin.is_given_up() {
            let index = index as u32;
            let ended = core.run_step(
                plugin,
                Step::Subscribe(index, false),
                IfLate::GiveUp,
                move |instance| instance.set_subscribed(index, false),
            );
            errors.extend(ended.err());
        }
    }
    errors.extend(stop_services(
        core,
        plugin,
        services_started,
        IfLate::GiveUp,
    ));
    if !plugin.is_given_up() {
        let unloaded = core.run_step(plugin, Step::OnUnload, IfLate::GiveUp, |instance| {
            instance.on_unload()
        });
        errors.extend(unloaded.err());
    }
    core.drop_generation(plugin.name(), plugin.generation);
    errors
}

/// Whether `file` holds exactly the bytes `plugin` was loaded from. A file
/// that cannot be read (or is no regular file, or is over `max_bytes`: it
/// is read without waiting, under the `reloading` lock) is not unchanged:
/// the reload then says why.
fn is_unchanged(plugin: &LivePlugin, file: &Path, max_bytes: u64) -> bool {
    !plugin.instance.sha256.is_empty()
        && crate::regular_file::read(file, max_bytes)
            .is_ok_and(|bytes| crate::trust::digest::sha256_hex(&bytes) == plugin.instance.sha256)
}

/// Refuses a reload of `old`, running in process, that would take the
/// library images it keeps mapped past `host.mapped_bytes_limit` (0: no
/// limit), counting `file` at its size, before anything is opened.
fn check_mapped_limit(
    core: &Registry,
    config: &AgentConfig,
    old: &LivePlugin,
    file: &Path,
) -> Result<(), ReloadError> {
    let name = old.name();
    let limit = config.host.mapped_bytes_limit;
    if limit == 0 || !old.instance.placement().is_in_process() {
        return Ok(());
    }
    let mapped = core.mapped(name).bytes;
    let adding = std::fs::metadata(file).map_or(0, |m| m.len());
    if mapped.saturating_add(adding) > limit {
        return Err(ReloadError::MappedLimit {
            plugin: name.to_string(),
            mapped,
            limit,
        });
    }
    Ok(())
}

/// Stops the first `started` services of a generation, in reverse order,
/// each within the lifecycle deadline; returns the errors, which never stop
/// the rest (none is called once the host gave up on the generation).
fn stop_services(
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
        errors.extend(stopped.err());
    }
    errors
}

/// Starts a generation's services, each within the lifecycle deadline; on
/// failure stops those it started (unless the host gave up on the
/// generation). On failure, the service and why.
fn start_services(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    if_late: IfLate,
) -> Result<(), (String, String)> {
    for (index, service) in plugin.instance.manifest.services.iter().enumerate() {
        let index = index as u32;
        let started = core.run_step(
            plugin,
            Step::StartService(index),
            if_late,
            move |instance| instance.start_service(index),
        );
        if let Err(error) = started {
            // Those it started are stopped; their own errors add nothing
            // to the one that failed the start.
            drop(stop_services(core, plugin, index as usize, if_late));
            return Err((service.name.clone(), error.message));
        }
    }
    Ok(())
}

/// Reloads the plugin named `name` from its file (or `file`), which `open`
/// turns into a source (a fresh private copy of a library, in the host),
/// at the request of `origin`. Callers serialize reloads.
pub(crate) fn reload(
    core: &Arc<Registry>,
    config: &AgentConfig,
    name: &str,
    file: Option<&Path>,
    origin: ReloadOrigin,
    when_unchanged: WhenUnchanged,
    open: impl FnOnce(&Path) -> Result<Arc<dyn PluginSource>, OpenError>,
) -> Result<Reloaded, ReloadFailure> {
    let started = Instant::now();
    let Some(old) = core.plugin(name) else {
        return Err(ReloadFailure {
            plugin: name.to_string(),
            file: file.map(Path::to_path_buf).unwrap_or_default(),
            error: Box::new(ReloadError::NotLoaded),
        });
    };
    let file = file.map_or_else(|| old.instance.file.clone(), Path::to_path_buf);
    let fail = |error: ReloadError| ReloadFailure {
        plugin: name.to_string(),
        file: file.clone(),
        error: Box::new(error),
    };
    let outcome = (|| {
        if when_unchanged == WhenUnchanged::Skip
            && is_unchanged(&old, &file, config.host.max_plugin_bytes)
        {
            return Ok(Reloaded {
                plugin: name.to_string(),
                from_version: old.instance.manifest.version.clone(),
                to_version: old.instance.manifest.version.clone(),
                from_sha256: old.instance.sha256.clone(),
                to_sha256: old.instance.sha256.clone(),
                origin: origin.clone(),
                generation: old.generation,
                state_bytes: 0,
                paused_us: 0,
                total_us: micros(started),
                retire_errors: Vec::new(),
                unchanged: true,
            });
        }
        check_mapped_limit(core, config, &old, &file).map_err(fail)?;
        let opened = open(&file).map_err(|e| fail(ReloadError::Open(e)))?;
        // A build refused from here until its instance exists stays mapped
        // all the same (libraries are never unloaded): count it.
        let refuse_mapped = |error: ReloadError| {
            core.count_mapped(name, opened.image_bytes());
            fail(error)
        };
        let index = opened
            .manifests()
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| {
                refuse_mapped(ReloadError::NotInBuild {
                    found: opened.manifests().iter().map(|m| m.name.clone()).collect(),
                })
            })?;
        let manifest = opened.manifests()[index].clone();
        let (valid, triggers) =
            check_manifest(&manifest).map_err(|e| refuse_mapped(ReloadError::Manifest(e)))?;
        let source = Arc::clone(&opened);
        let prepared = Prepared {
            source,
            index: index as u32,
            manifest: Arc::new(manifest),
            version: valid.version,
            dependencies: valid.dependencies,
            triggers,
        };
        let candidate = Candidate {
            name: prepared.manifest.name.clone(),
            version: prepared.version.clone(),
            dependencies: prepared.dependencies.clone(),
        };
        check_replacement(&core.candidates(), &candidate)
            .map_err(|e| refuse_mapped(ReloadError::Dependencies(e)))?;
        let new = instantiate(core, &prepared, old.load_order, config).map_err(|f| {
            refuse_mapped(match *f.error {
                LoadError::Config(error) => ReloadError::Config(error),
                other => ReloadError::Create(other.to_string()),
            })
        })?;

        let drain = Duration::from_millis(core.settings.reload_drain_timeout_ms);
        let paused = Instant::now();
        let closed = core.admission.close(drain).map_err(|in_flight| {
            fail(ReloadError::Drain {
                in_flight,
                timeout_ms: core.settings.reload_drain_timeout_ms,
            })
        })?;
        let state = if old.instance.manifest.state_hooks {
            core.run_step(&old, Step::ExportState, IfLate::ServeOn, |instance| {
                instance.export_state()
            })
            .map_err(|e| fail(ReloadError::ExportState(e)))?
        } else {
            "null".to_string()
        };
        // The old generation's services stop before the new one's start, so
        // that a resource a service holds (a database file, a port) is never
        // held by two generations at once. The gate is closed: nothing can
        // call them in between. A reload that fails from here on starts them
        // again, and the old generation serves on as it was.
        let stop_errors = stop_services(
            core,
            &old,
            old.instance.manifest.services.len(),
            IfLate::ServeOn,
        );
        let give_back = |error: ReloadError| {
            if let Err((service, cause)) = start_services(core, &old, IfLate::ServeOn) {
                tracing::error!(
                    plugin = name,
                    service,
                    "the serving generation's service did not start again after the failed reload: {cause}"
                );
            }
            fail(error)
        };
        let undo = |new: &Arc<LivePlugin>, services: usize| {
            for error in retire(core, new, services) {
                tracing::warn!("{error}");
            }
        };
        if new.instance.manifest.state_hooks && state != "null" {
            let handed = state.clone();
            let imported =
                core.run_step(&new, Step::ImportState, IfLate::GiveUp, move |instance| {
                    instance.import_state(&handed)
                });
            if let Err(error) = imported {
                core.drop_generation(name, new.generation);
                return Err(give_back(ReloadError::ImportState(error)));
            }
        }
        let loaded = core.run_step(&new, Step::OnLoad, IfLate::GiveUp, |instance| {
            instance.on_load()
        });
        if let Err(error) = loaded {
            core.drop_generation(name, new.generation);
            return Err(give_back(ReloadError::OnLoad(error)));
        }
        if let Err((service, cause)) = start_services(core, &new, IfLate::GiveUp) {
            undo(&new, 0);
            return Err(give_back(ReloadError::StartService { service, cause }));
        }
        subscribe_providers(core, &new);
        core.swap(Arc::clone(&new));
        drop(closed);
        let paused_us = micros(paused);

        let retire_errors = stop_errors
            .iter()
            .chain(&retire(core, &old, 0))
            .map(ToString::to_string)
            .collect();
        Ok(Reloaded {
            plugin: name.to_string(),
            from_version: old.instance.manifest.version.clone(),
            to_version: new.instance.manifest.version.clone(),
            from_sha256: old.instance.sha256.clone(),
            to_sha256: new.instance.sha256.clone(),
            origin: origin.clone(),
            generation: new.generation,
            state_bytes: state.len(),
            paused_us,
            total_us: micros(started),
            retire_errors,
            unchanged: false,
        })
    })();
    let outcome_label = match &outcome {
        Ok(done) if done.unchanged => "unchanged",
        Ok(_) => "reloaded",
        Err(_) => "refused",
    };
    core.metrics
        .reloads
        .get_or_create(&ReloadLabels {
            origin: origin.label().to_string(),
            outcome: outcome_label.to_string(),
        })
        .inc();
    match &outcome {
        Ok(done) if done.unchanged => {
            tracing::info!(
                event = "plugin_reload_skipped",
                origin = origin.label(),
                identity = origin.identity(),
                plugin = name,
                file = %file.display(),
                sha256 = %done.to_sha256,
                generation = done.generation,
                "not reloaded: the file is byte-identical to the serving generation's"
            );
        }
        Ok(done) => {
            let mapped = core.mapped(name);
            tracing::info!(
                event = "plugin_reloaded",
                origin = origin.label(),
                identity = origin.identity(),
                plugin = name,
                file = %file.display(),
                from_sha256 = %done.from_sha256,
                to_sha256 = %done.to_sha256,
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
            tracing::error!(
                event = "plugin_reload_refused",
                origin = origin.label(),
                identity = origin.identity(),
                plugin = name,
                file = %failure.file.display(),
                reason = %failure.cause(),
                "{failure}"
            );
            core.emit(
                "host",
                "plugin:reload_failed",
                json!({
                    "plugin": name,
                    "file": failure.file,
                    "error": failure.cause(),
                }),
            );
        }
    }
    outcome
}
