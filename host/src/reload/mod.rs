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
//! 3. Export the old generation's state, stop its services (old services
//!    stop before new ones start: what a service holds is never held by two
//!    generations), import the state into the new one, run the new one's
//!    `on_load`, start its services, subscribe its providers. A failure
//!    from here on starts the old generation's services again.
//! 4. Swap: the new generation takes the old one's place and services.
//! 5. Reopen the gate; the held calls go to the new generation.
//! 6. Retire the old generation: unsubscribe its providers, run its
//!    `on_unload`, drop its subscriptions and timers.
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
use crate::dependencies::check_replacement;
use crate::lifecycle::check::Prepared;
use crate::lifecycle::generation::{
    create, leave_service, on_load, start_services, stop_services, subscribe_providers,
};
use crate::lifecycle::LoadError;
use crate::load::OpenError;
use crate::metrics::ReloadLabels;
use crate::plugin::PluginSource;
use crate::registry::step::{IfLate, Step};
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
/// limit), counting `file` at its size, before anything is opened. The
/// placement read is the serving generation's, the one live value (the
/// config, read once when the host is made, puts the new one in the same
/// place).
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

/// Reloads the plugin named `name` from its file (or `file`), which `open`
/// turns into a source (a fresh private copy of a library, in the host),
/// at the request of `origin`. Callers serialize reloads.
///
/// The steps: [`open_new_generation`] (open, check, create), then
/// [`hand_over`] with the admission gate closed (the old generation's state
/// and services to the new one, which enters service in its place), then
/// the old generation leaves service; [`record`] puts the outcome in the
/// audit trail.
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
    let outcome = if when_unchanged == WhenUnchanged::Skip
        && is_unchanged(&old, &file, config.host.max_plugin_bytes)
    {
        Ok(Reloaded::unchanged(&old, &origin, started))
    } else {
        replace(core, config, &old, &file, &origin, open, started)
    };
    let outcome = outcome.map_err(|error| ReloadFailure {
        plugin: name.to_string(),
        file: file.clone(),
        error: Box::new(error),
    });
    record(core, name, &file, &origin, &outcome);
    outcome
}

/// Puts a new generation from `file` in the place of `old`.
fn replace(
    core: &Arc<Registry>,
    config: &AgentConfig,
    old: &Arc<LivePlugin>,
    file: &Path,
    origin: &ReloadOrigin,
    open: impl FnOnce(&Path) -> Result<Arc<dyn PluginSource>, OpenError>,
    started: Instant,
) -> Result<Reloaded, ReloadError> {
    check_mapped_limit(core, config, old, file)?;
    let new = open_new_generation(core, config, old, file, open)?;
    let handed = hand_over(core, old, &new)?;
    let retire_errors = handed
        .stop_errors
        .iter()
        .chain(&leave_service(core, old, 0))
        .map(ToString::to_string)
        .collect();
    Ok(Reloaded {
        plugin: old.name().to_string(),
        from_version: old.instance.manifest.version.clone(),
        to_version: new.instance.manifest.version.clone(),
        from_sha256: old.instance.sha256.clone(),
        to_sha256: new.instance.sha256.clone(),
        origin: origin.clone(),
        generation: new.generation,
        state_bytes: handed.state_bytes,
        paused_us: handed.paused_us,
        total_us: micros(started),
        retire_errors,
        unchanged: false,
    })
}

/// Opens `file`, checks the build (the same plugin in it, its manifest,
/// its dependencies and its dependents' requirements) and creates its new
/// generation, which runs no hook yet. A build refused after it was opened
/// stays mapped all the same (libraries are never unloaded), and is counted.
fn open_new_generation(
    core: &Arc<Registry>,
    config: &AgentConfig,
    old: &LivePlugin,
    file: &Path,
    open: impl FnOnce(&Path) -> Result<Arc<dyn PluginSource>, OpenError>,
) -> Result<Arc<LivePlugin>, ReloadError> {
    let name = old.name();
    let opened = open(file).map_err(ReloadError::Open)?;
    let refuse_mapped = |error: ReloadError| {
        core.count_mapped(name, opened.image_bytes());
        error
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
    let prepared =
        Prepared::check(&opened, index).map_err(|e| refuse_mapped(ReloadError::Manifest(e)))?;
    check_replacement(&core.candidates(), &prepared.candidate())
        .map_err(|e| refuse_mapped(ReloadError::Dependencies(e)))?;
    create(core, &prepared, old.load_order, config).map_err(|f| {
        refuse_mapped(match *f.error {
            LoadError::Config(error) => ReloadError::Config(error),
            other => ReloadError::Create(other.to_string()),
        })
    })
}

/// What the hand-over measured.
struct HandedOver {
    state_bytes: usize,
    paused_us: u64,
    /// Errors stopping the old generation's services.
    stop_errors: Vec<crate::plugin::CallError>,
}

/// With the admission gate closed (the calls in flight drained): the old
/// generation's state exported, its services stopped (so that a resource
/// a service holds is never held by two generations at once), the state
/// imported into the new generation, which then runs `on_load`, starts its
/// services and subscribes its providers, and takes the old one's place.
/// A failure from the stop on starts the old services again: the old
/// generation serves on as it was, and the new one is dropped.
fn hand_over(
    core: &Registry,
    old: &Arc<LivePlugin>,
    new: &Arc<LivePlugin>,
) -> Result<HandedOver, ReloadError> {
    let drain_ms = core.settings.reload_drain_timeout_ms;
    let paused = Instant::now();
    let closed = core
        .admission
        .close(Duration::from_millis(drain_ms))
        .map_err(|in_flight| ReloadError::Drain {
            in_flight,
            timeout_ms: drain_ms,
        })?;
    let state = if old.instance.manifest.state_hooks {
        core.run_step(old, Step::ExportState, IfLate::ServeOn, |instance| {
            instance.export_state()
        })
        .map_err(ReloadError::ExportState)?
    } else {
        "null".to_string()
    };
    let services = old.instance.manifest.services.len();
    let stop_errors = stop_services(core, old, services, IfLate::ServeOn);
    if let Err(error) = enter_in_place(core, new, &state) {
        if let Err((service, cause)) = start_services(core, old, IfLate::ServeOn) {
            tracing::error!(
                plugin = old.name(),
                service,
                "the serving generation's service did not start again after the failed reload: {cause}"
            );
        }
        return Err(error);
    }
    core.swap(Arc::clone(new));
    drop(closed);
    Ok(HandedOver {
        state_bytes: state.len(),
        paused_us: micros(paused),
        stop_errors,
    })
}

/// The new generation enters service (not yet in the registry's list):
/// the handed `state` imported, `on_load`, its services started, its
/// providers subscribed. On failure what it set up is undone.
fn enter_in_place(core: &Registry, new: &Arc<LivePlugin>, state: &str) -> Result<(), ReloadError> {
    if new.instance.manifest.state_hooks && state != "null" {
        let handed = state.to_string();
        let imported = core.run_step(new, Step::ImportState, IfLate::GiveUp, move |instance| {
            instance.import_state(&handed)
        });
        if let Err(error) = imported {
            core.drop_generation(new.name(), new.generation);
            return Err(ReloadError::ImportState(error));
        }
    }
    if let Err(error) = on_load(core, new, IfLate::GiveUp) {
        core.drop_generation(new.name(), new.generation);
        return Err(ReloadError::OnLoad(error));
    }
    if let Err((service, cause)) = start_services(core, new, IfLate::GiveUp) {
        for error in leave_service(core, new, 0) {
            tracing::warn!("{error}");
        }
        return Err(ReloadError::StartService { service, cause });
    }
    subscribe_providers(core, new, true);
    Ok(())
}

impl Reloaded {
    /// The answer to a reload skipped because the file is byte-identical to
    /// the serving generation's.
    fn unchanged(old: &LivePlugin, origin: &ReloadOrigin, started: Instant) -> Self {
        Reloaded {
            plugin: old.name().to_string(),
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
        }
    }
}

/// The audit trail of one reload: `agent_host_reloads_total{origin,
/// outcome}`, one log event, and a bus event.
fn record(
    core: &Registry,
    name: &str,
    file: &Path,
    origin: &ReloadOrigin,
    outcome: &Result<Reloaded, ReloadFailure>,
) {
    let outcome_label = match outcome {
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
    match outcome {
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
}
