//! Loading a plugin folder: discover, open, validate, resolve, start.
//!
//! The steps, in order: find library files; open each from a private copy and
//! check its ABI (in parallel); validate every manifest; reject duplicate
//! names; resolve dependencies; then, level by level in dependency order (the
//! plugins of one level in parallel): start the lazy plugins it depends on
//! that have not started, create the instance, register it, run `on_load`,
//! register and start its services. A lazy plugin (`lazy_plugins`) stops
//! after the checks: it waits in the registry's pending list, with a
//! [`Starter`] that runs these same steps when it is first needed. A failure
//! at any step takes down that plugin and its dependents, never the host or
//! unrelated plugins.

pub(crate) mod discovery;
pub(crate) mod dispatch;
mod error;
mod ffi_host;
mod image;
pub(crate) mod library;
pub(crate) mod private_copy;
pub(crate) mod report;
#[cfg(test)]
mod tests;

pub use error::{LoadError, OpenError};

use crate::config::{effective_config, AgentConfig};
use crate::dependencies::{resolve, Candidate, Unresolved};
use crate::load::discovery::discover;
use crate::load::private_copy::ShadowDir;
use crate::load::report::{LoadFailure, LoadReport, LoadedPlugin};
use crate::pipeline::triggers::PluginTriggers;
use crate::plugin::PluginInstance;
use crate::plugin::{CreateContext, InstanceParts, PluginSource};
use crate::registry::callbacks::PluginCallbacks;
use crate::registry::lazy::{PendingPlugin, Starter};
use crate::registry::lifecycle::{IfLate, Step};
use crate::registry::{LivePlugin, Registry};
use crate::trust::TrustPolicy;
use agent_host_plugin_sdk::manifest::{Dependency, Manifest, ValidManifest};
use semver::Version;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One plugin of one library, validated and ready to resolve.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) source: Arc<dyn PluginSource>,
    pub(crate) index: u32,
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) version: Version,
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) triggers: Arc<PluginTriggers>,
}

/// The manifest checks the host makes before it runs any code of a plugin:
/// [`Manifest::validate`], then the compilation of its action triggers. The
/// error is one line naming the field and the cause.
pub(crate) fn check_manifest(
    manifest: &Manifest,
) -> Result<(ValidManifest, Arc<PluginTriggers>), String> {
    let valid = manifest.validate().map_err(|e| e.to_string())?;
    let triggers = PluginTriggers::compile(manifest).map_err(|e| e.to_string())?;
    Ok((valid, Arc::new(triggers)))
}

impl Prepared {
    pub(crate) fn failure(&self, error: LoadError) -> LoadFailure {
        LoadFailure {
            file: self.source.file().to_path_buf(),
            plugin: Some(self.manifest.name.clone()),
            error: Box::new(error),
        }
    }
}

/// Runs `work` over `items` on up to `available_parallelism` threads, keeping order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = work(item);
                results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}

/// Opens one plugin file from a fresh private copy that `trust` admitted:
/// in the host when every plugin runs in process, else through a probe
/// worker (`isolation`), so that no code of a plugin the operator isolated
/// ever runs in the host.
pub(crate) fn open_source(
    file: &Path,
    shadow: &ShadowDir,
    config: &AgentConfig,
    trust: &TrustPolicy,
) -> Result<Arc<dyn PluginSource>, OpenError> {
    let max_bytes = config.host.max_plugin_bytes;
    if config.isolation.any_process() {
        let settings = Arc::new(config.isolation.clone());
        return crate::plugin::probed::open(file, shadow, max_bytes, &settings, trust)
            .map(|probed| Arc::new(probed) as Arc<dyn PluginSource>);
    }
    library::open(file, shadow, max_bytes, trust)
        .map(|library| Arc::new(library) as Arc<dyn PluginSource>)
}

/// Opens plugin files (in parallel), each from a fresh private copy. A file
/// that fails is in the report; no plugin code runs in the host beyond the
/// manifest functions of files opened in process.
fn open_files(
    files: &[PathBuf],
    shadow: &ShadowDir,
    config: &AgentConfig,
    trust: &TrustPolicy,
    report: &mut LoadReport,
) -> Vec<Arc<dyn PluginSource>> {
    let opened = parallel_map(files, |file| open_source(file, shadow, config, trust));
    let mut sources: Vec<Arc<dyn PluginSource>> = Vec::new();
    for (file, outcome) in files.iter().zip(opened) {
        match outcome {
            Ok(source) => sources.push(source),
            Err(error) => report.failures.push(LoadFailure {
                file: file.clone(),
                plugin: None,
                error: Box::new(LoadError::Open(error)),
            }),
        }
    }
    sources
}

/// Checks every manifest of every source ([`check_manifest`]).
fn prepare(sources: &[Arc<dyn PluginSource>], report: &mut LoadReport) -> Vec<Prepared> {
    let mut prepared = Vec::new();
    for source in sources {
        for (index, manifest) in source.manifests().iter().enumerate() {
            match check_manifest(manifest) {
                Ok((valid, triggers)) => prepared.push(Prepared {
                    source: Arc::clone(source),
                    index: index as u32,
                    manifest: Arc::new(manifest.clone()),
                    version: valid.version,
                    dependencies: valid.dependencies,
                    triggers,
                }),
                Err(error) => report.failures.push(LoadFailure {
                    file: source.file().to_path_buf(),
                    plugin: (!manifest.name.is_empty()).then(|| manifest.name.clone()),
                    error: Box::new(LoadError::Manifest(error)),
                }),
            }
        }
    }
    prepared
}

/// Rejects every plugin whose name appears in more than one place. Silently
/// picking one could run the wrong code; the operator must remove the extra file.
fn reject_duplicates(prepared: Vec<Prepared>, report: &mut LoadReport) -> Vec<Prepared> {
    let mut by_name: BTreeMap<String, Vec<Prepared>> = BTreeMap::new();
    for p in prepared {
        by_name.entry(p.manifest.name.clone()).or_default().push(p);
    }
    let mut unique = Vec::new();
    for (_, mut group) in by_name {
        if group.len() == 1 {
            unique.append(&mut group);
            continue;
        }
        let files: Vec<PathBuf> = group
            .iter()
            .map(|p| p.source.file().to_path_buf())
            .collect();
        for p in &group {
            report.failures.push(p.failure(LoadError::Duplicate {
                files: files.clone(),
            }));
        }
    }
    unique
}

/// Creates a new generation of one plugin: its config (validated), its
/// permissions, the instance, and its accounting of mapped images. Runs no
/// hook and registers nothing.
pub(crate) fn instantiate(
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
    let context = CreateContext {
        permissions: permissions.patterns(),
        announce: core.announcer(),
        lifecycle_timeout: std::time::Duration::from_millis(core.settings.lifecycle_timeout_ms),
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
        &core.provider_version,
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

/// Subscribes to every subscribable provider of a started plugin, each
/// within the lifecycle deadline; a failure is logged, and the plugin
/// serves on.
pub(crate) fn subscribe_providers(core: &Registry, live: &Arc<LivePlugin>) {
    for (index, provider) in live.instance.manifest.providers.iter().enumerate() {
        if provider.subscribable {
            let index = index as u32;
            let subscribed = core.run_step(
                live,
                Step::Subscribe(index, true),
                IfLate::ServeOn,
                move |instance| instance.set_subscribed(index, true),
            );
            if let Err(error) = subscribed {
                tracing::warn!("{error}");
            }
        }
    }
}

/// Creates, registers and starts one plugin, each step of its start within
/// the lifecycle deadline. On failure everything it set up is undone and
/// the plugin is unregistered; a plugin that missed a deadline is called no
/// more.
fn start(
    core: &Arc<Registry>,
    p: &Prepared,
    order: usize,
    agent: &AgentConfig,
) -> Result<Arc<LivePlugin>, LoadFailure> {
    let name = p.manifest.name.as_str();
    let live = instantiate(core, p, order, agent)?;
    core.register(Arc::clone(&live));
    let loaded = core.run_step(&live, Step::OnLoad, IfLate::GiveUp, |instance| {
        instance.on_load()
    });
    if let Err(error) = loaded {
        core.unregister(name);
        return Err(p.failure(LoadError::OnLoad(error)));
    }
    let mut started = Vec::new();
    for (index, service) in p.manifest.services.iter().enumerate() {
        let index = index as u32;
        let outcome = core.add_service(&live, index).and_then(|()| {
            core.run_step(
                &live,
                Step::StartService(index),
                IfLate::GiveUp,
                move |instance| instance.start_service(index),
            )
            .map_err(|e| e.message)
        });
        match outcome {
            Ok(()) => {
                core.set_service_running(&service.name, true);
                started.push(index);
            }
            Err(cause) => {
                if !live.is_given_up() {
                    for &index in started.iter().rev() {
                        let stopped = core.run_step(
                            &live,
                            Step::StopService(index),
                            IfLate::GiveUp,
                            move |instance| instance.stop_service(index),
                        );
                        if let Err(error) = stopped {
                            tracing::warn!("{error}");
                        }
                    }
                    let unloaded =
                        core.run_step(&live, Step::OnUnload, IfLate::GiveUp, |instance| {
                            instance.on_unload()
                        });
                    if let Err(error) = unloaded {
                        tracing::warn!("{error}");
                    }
                }
                core.unregister(name);
                return Err(p.failure(LoadError::StartService {
                    service: service.name.clone(),
                    cause,
                }));
            }
        }
    }
    subscribe_providers(core, &live);
    core.metrics.plugins_loaded.inc();
    Ok(live)
}

/// Starts the lazy plugins `p` depends on that have not started yet; fails
/// `p` when a required dependency is not running (it could not start).
fn start_pending_dependencies(core: &Registry, p: &Prepared) -> Result<(), LoadFailure> {
    for dependency in &p.dependencies {
        if core.pending_named(&dependency.name).is_some() {
            // A failure is logged by the start and shows below.
            let _ = core.start_pending(&dependency.name);
        }
        if !dependency.optional && core.plugin(&dependency.name).is_none() {
            let failed = Unresolved::DependencyFailed {
                dependency: dependency.name.clone(),
            };
            return Err(p.failure(LoadError::Dependencies(failed)));
        }
    }
    Ok(())
}

/// A lazy plugin, checked, waiting to be started: its starter runs the
/// steps of an eager start (dependencies first) and announces it.
fn pending(p: &Prepared, order: usize, config: &Arc<AgentConfig>) -> PendingPlugin {
    let prepared = p.clone();
    let permissions = config.effective_permissions(&p.manifest).0;
    let config = Arc::clone(config);
    let start: Starter = Box::new(move |core| {
        start_pending_dependencies(core, &prepared)?;
        let live = start(core, &prepared, order, &config)?;
        let m = &prepared.manifest;
        core.emit(
            "host",
            "plugin:loaded",
            json!({"plugin": m.name, "version": m.version, "lazy": true}),
        );
        Ok(live)
    });
    PendingPlugin {
        manifest: Arc::clone(&p.manifest),
        version: p.version.clone(),
        dependencies: p.dependencies.clone(),
        file: p.source.file().to_path_buf(),
        image_bytes: p.source.image_bytes(),
        sha256: p.source.sha256().to_string(),
        load_order: order,
        permissions: permissions.patterns().to_vec(),
        triggers: Arc::clone(&p.triggers),
        start,
    }
}

fn describe(p: &Prepared, order: usize, lazy: bool) -> LoadedPlugin {
    let m = &p.manifest;
    let names = |list: Vec<&String>| list.into_iter().cloned().collect::<Vec<_>>();
    LoadedPlugin {
        name: m.name.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        file: p.source.file().to_path_buf(),
        order,
        dependencies: p
            .dependencies
            .iter()
            .map(|d| {
                if d.optional {
                    format!("{d}?")
                } else {
                    d.to_string()
                }
            })
            .collect(),
        actions: names(m.actions.iter().map(|a| &a.name).collect()),
        providers: names(m.providers.iter().map(|a| &a.name).collect()),
        evaluators: names(m.evaluators.iter().map(|a| &a.name).collect()),
        services: names(m.services.iter().map(|a| &a.name).collect()),
        image_bytes: p.source.image_bytes(),
        lazy,
    }
}

/// Loads every plugin in `dir` into `core`, with the operator's `config`,
/// from the files `trust` admits. Only an unreadable folder is an error;
/// every plugin failure is in the report.
pub fn load_dir(
    core: &Arc<Registry>,
    shadow: &ShadowDir,
    dir: &Path,
    config: &AgentConfig,
    trust: &TrustPolicy,
) -> std::io::Result<LoadReport> {
    let found = discover(dir)?;
    let mut report = load_files(core, shadow, &found.files, config, trust);
    let mut known: Vec<String> = core
        .plugins()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    known.extend(core.pending().iter().map(|p| p.name().to_string()));
    known.extend(report.failures.iter().filter_map(|f| f.plugin.clone()));
    report.unknown_config = config.unknown_plugins(&known);
    for line in &report.unknown_config {
        tracing::warn!("{line}");
    }
    for (file, cause) in found.broken {
        report.failures.push(LoadFailure {
            file,
            plugin: None,
            error: Box::new(LoadError::Open(OpenError::Io {
                doing: "cannot follow the link",
                cause,
            })),
        });
    }
    Ok(report)
}

/// Loads the plugins in `files` next to those already loaded: a loaded
/// plugin satisfies a dependency like a new one, and a new plugin whose name
/// is already loaded is refused as a duplicate.
pub fn load_files(
    core: &Arc<Registry>,
    shadow: &ShadowDir,
    files: &[PathBuf],
    config: &AgentConfig,
    trust: &TrustPolicy,
) -> LoadReport {
    let mut report = LoadReport::default();
    let sources = open_files(files, shadow, config, trust, &mut report);
    load_sources(core, &sources, config, &mut report);
    report
}

/// Loads the plugins of opened sources next to those already loaded; every
/// failure goes into `report`.
pub(crate) fn load_sources(
    core: &Arc<Registry>,
    sources: &[Arc<dyn PluginSource>],
    config: &AgentConfig,
    report: &mut LoadReport,
) {
    let prepared = prepare(sources, report);
    // Started plugins and lazy ones waiting to start: (name, version, file, order).
    let mut loaded: Vec<(String, Version, PathBuf, usize)> = core
        .plugins()
        .iter()
        .map(|l| {
            let i = &l.instance;
            (
                l.name().to_string(),
                i.version.clone(),
                i.file.clone(),
                l.load_order,
            )
        })
        .collect();
    loaded.extend(core.pending().iter().map(|p| {
        (
            p.name().to_string(),
            p.version.clone(),
            p.file.clone(),
            p.load_order,
        )
    }));
    let prepared: Vec<Prepared> = prepared
        .into_iter()
        .filter(|p| match loaded.iter().find(|l| l.0 == p.manifest.name) {
            Some((_, _, file, _)) => {
                report
                    .failures
                    .push(p.failure(LoadError::AlreadyLoaded { from: file.clone() }));
                false
            }
            None => true,
        })
        .collect();
    let prepared = reject_duplicates(prepared, report);

    let failed_names: BTreeSet<String> = report
        .failures
        .iter()
        .filter_map(|f| f.plugin.clone())
        .collect();
    // The loaded plugins come first: resolved already, they are never started again.
    let k = loaded.len();
    let mut candidates: Vec<Candidate> = loaded
        .iter()
        .map(|(name, version, _, _)| Candidate {
            name: name.clone(),
            version: version.clone(),
            dependencies: Vec::new(),
        })
        .collect();
    candidates.extend(prepared.iter().map(|p| Candidate {
        name: p.manifest.name.clone(),
        version: p.version.clone(),
        dependencies: p.dependencies.clone(),
    }));
    let resolution = resolve(&candidates, &failed_names);
    for (i, reason) in resolution.failed.iter().filter(|(i, _)| *i >= k) {
        report
            .failures
            .push(prepared[i - k].failure(LoadError::Dependencies(reason.clone())));
    }
    for (i, warning) in resolution.ignored_optional.iter().filter(|(i, _)| *i >= k) {
        report.warnings.push(format!(
            "plugin '{}': {warning}",
            prepared[i - k].manifest.name
        ));
    }

    let failed_at_start: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
    let base_order = loaded.iter().map(|l| l.3 + 1).max().unwrap_or(0);
    let lazy_config = prepared
        .iter()
        .any(|p| config.host.is_lazy(&p.manifest.name))
        .then(|| Arc::new(config.clone()));
    let mut order_of = vec![0; candidates.len()];
    for (order, i) in resolution.order().filter(|&i| i >= k).enumerate() {
        order_of[i] = base_order + order;
    }
    for level in &resolution.levels {
        let (lazy, level): (Vec<usize>, Vec<usize>) =
            level.iter().copied().filter(|&i| i >= k).partition(|&i| {
                lazy_config.is_some() && config.host.is_lazy(&prepared[i - k].manifest.name)
            });
        if let Some(shared) = lazy_config.as_ref() {
            // Checked, not started: one registration for the whole level.
            let failed = failed_at_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let mut waiting = Vec::with_capacity(lazy.len());
            for &i in &lazy {
                let p = &prepared[i - k];
                if let Some(d) = resolution.failed_requirement(&candidates, i, &failed) {
                    let skipped = Unresolved::DependencyFailed {
                        dependency: candidates[d].name.clone(),
                    };
                    failed_at_start
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(i);
                    report
                        .failures
                        .push(p.failure(LoadError::Dependencies(skipped)));
                    continue;
                }
                waiting.push(pending(p, order_of[i], shared));
                report.loaded.push(describe(p, order_of[i], true));
            }
            core.add_pending(waiting);
        }
        let outcomes = parallel_map(&level, |&i| {
            let p = &prepared[i - k];
            let failed = failed_at_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(d) = resolution.failed_requirement(&candidates, i, &failed) {
                let skipped = Unresolved::DependencyFailed {
                    dependency: candidates[d].name.clone(),
                };
                return Err(p.failure(LoadError::Dependencies(skipped)));
            }
            start_pending_dependencies(core, p)?;
            start(core, p, order_of[i], config)
        });
        for (&i, outcome) in level.iter().zip(outcomes) {
            let p = &prepared[i - k];
            match outcome {
                Ok(_) => {
                    report.loaded.push(describe(p, order_of[i], false));
                    core.emit(
                        "host",
                        "plugin:loaded",
                        json!({"plugin": p.manifest.name, "version": p.manifest.version}),
                    );
                }
                Err(failure) => {
                    failed_at_start
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(i);
                    report.failures.push(failure);
                }
            }
        }
    }
    report.loaded.sort_by_key(|p| p.order);
    for failure in &report.failures {
        // A refused file has had its line (`event = "file_refused"`).
        if !matches!(&*failure.error, LoadError::Open(OpenError::Refused(_))) {
            tracing::error!("{failure}");
        }
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
}
