//! Loading a plugin folder: discover, open, validate, resolve, start.
//!
//! The steps, in order: find library files; open each from a private copy and
//! check its ABI (in parallel); validate every manifest; reject duplicate
//! names; resolve dependencies; then, level by level in dependency order (the
//! plugins of one level in parallel): create the instance, register it, run
//! `on_load`, register and start its services. A failure at any step takes
//! down that plugin and its dependents, never the host or unrelated plugins.

pub(crate) mod discovery;
pub(crate) mod library;
pub(crate) mod private_copy;
pub(crate) mod report;

use crate::config::{effective_config, AgentConfig};
use crate::dependencies::{resolve, Candidate};
use crate::load::discovery::plugin_files;
use crate::load::library::OpenedLibrary;
use crate::load::private_copy::ShadowDir;
use crate::load::report::{LoadFailure, LoadReport, LoadedPlugin, Stage};
use crate::plugin::PluginInstance;
use crate::registry::callbacks::PluginCallbacks;
use crate::registry::{LivePlugin, Registry};
use agent_host_plugin_sdk::manifest::{Dependency, Manifest};
use semver::Version;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One plugin of one library, validated and ready to resolve.
pub(crate) struct Prepared {
    pub(crate) library: Arc<OpenedLibrary>,
    pub(crate) index: u32,
    pub(crate) manifest: Manifest,
    pub(crate) version: Version,
    pub(crate) dependencies: Vec<Dependency>,
}

impl Prepared {
    pub(crate) fn failure(&self, stage: Stage, cause: impl Into<String>) -> LoadFailure {
        LoadFailure {
            file: self.library.file.clone(),
            plugin: Some(self.manifest.name.clone()),
            stage,
            cause: cause.into(),
            detail: None,
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

/// Opens every plugin file of `dir` and validates its manifests, without
/// running any plugin code beyond the manifest functions.
pub(crate) fn prepare(
    files: &[PathBuf],
    shadow: &ShadowDir,
    report: &mut LoadReport,
) -> Vec<Prepared> {
    let opened = parallel_map(files, |file| library::open(file, shadow));
    let mut prepared = Vec::new();
    for (file, outcome) in files.iter().zip(opened) {
        let library = match outcome {
            Ok(library) => Arc::new(library),
            Err(error) => {
                report.failures.push(LoadFailure {
                    file: file.clone(),
                    plugin: None,
                    stage: Stage::Open,
                    cause: error.cause,
                    detail: error.detail,
                });
                continue;
            }
        };
        for (index, manifest) in library.manifests.iter().enumerate() {
            match manifest.validate() {
                Ok(valid) => prepared.push(Prepared {
                    library: Arc::clone(&library),
                    index: index as u32,
                    manifest: manifest.clone(),
                    version: valid.version,
                    dependencies: valid.dependencies,
                }),
                Err(error) => report.failures.push(LoadFailure {
                    file: file.clone(),
                    plugin: (!manifest.name.is_empty()).then(|| manifest.name.clone()),
                    stage: Stage::Manifest,
                    cause: error.to_string(),
                    detail: None,
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
    for (name, mut group) in by_name {
        if group.len() == 1 {
            unique.append(&mut group);
            continue;
        }
        let files: Vec<String> = group
            .iter()
            .map(|p| p.library.file.display().to_string())
            .collect();
        for p in &group {
            report.failures.push(p.failure(
                Stage::Duplicate,
                format!(
                    "duplicate plugin name '{name}' (found in {}): none of them is loaded; remove all but one",
                    files.join(", ")
                ),
            ));
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
        .map_err(|e| p.failure(Stage::Config, e.0))?;
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
    let object = (p.library.module.create())(p.index, host)
        .into_result()
        .map_err(|e| p.failure(Stage::Create, format!("create: {}", e.message)))?;
    let instance = PluginInstance::new(
        p.manifest.clone(),
        p.version.clone(),
        p.library.file.clone(),
        p.library.image_bytes,
        object,
    );
    let live = Arc::new(LivePlugin::new(
        instance,
        permissions,
        order,
        generation,
        &core.metrics,
        &core.provider_version,
    ));
    core.count_mapped(name, p.library.image_bytes);
    Ok(live)
}

/// Subscribes to every subscribable provider of a started plugin.
pub(crate) fn subscribe_providers(live: &LivePlugin) {
    for (index, provider) in live.instance.manifest.providers.iter().enumerate() {
        if provider.subscribable {
            if let Err(error) = live.instance.set_subscribed(index as u32, true) {
                tracing::warn!("{error}");
            }
        }
    }
}

/// Creates, registers and starts one plugin. On failure everything it set up
/// is undone and the plugin is unregistered.
fn start(
    core: &Arc<Registry>,
    p: &Prepared,
    order: usize,
    agent: &AgentConfig,
) -> Result<Arc<LivePlugin>, LoadFailure> {
    let name = p.manifest.name.as_str();
    let live = instantiate(core, p, order, agent)?;
    core.register(Arc::clone(&live));
    if let Err(error) = live.instance.on_load() {
        core.unregister(name);
        return Err(p.failure(Stage::OnLoad, format!("on_load: {}", error.message)));
    }
    let mut started = Vec::new();
    for (index, service) in p.manifest.services.iter().enumerate() {
        let index = index as u32;
        let outcome = core
            .add_service(&live, index)
            .and_then(|()| live.instance.start_service(index).map_err(|e| e.message));
        match outcome {
            Ok(()) => {
                core.set_service_running(&service.name, true);
                started.push(index);
            }
            Err(cause) => {
                for &index in started.iter().rev() {
                    if let Err(error) = live.instance.stop_service(index) {
                        tracing::warn!("{error}");
                    }
                }
                if let Err(error) = live.instance.on_unload() {
                    tracing::warn!("{error}");
                }
                core.unregister(name);
                return Err(p.failure(
                    Stage::StartService,
                    format!("service '{}' failed to start: {cause}", service.name),
                ));
            }
        }
    }
    subscribe_providers(&live);
    core.metrics.plugins_loaded.inc();
    Ok(live)
}

fn describe(p: &Prepared, order: usize) -> LoadedPlugin {
    let m = &p.manifest;
    let names = |list: Vec<&String>| list.into_iter().cloned().collect::<Vec<_>>();
    LoadedPlugin {
        name: m.name.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        file: p.library.file.clone(),
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
        image_bytes: p.library.image_bytes,
    }
}

/// Loads every plugin in `dir` into `core`, with the operator's `config`.
/// Only an unreadable folder is an error; every plugin failure is in the
/// report.
pub fn load_dir(
    core: &Arc<Registry>,
    shadow: &ShadowDir,
    dir: &Path,
    config: &AgentConfig,
) -> std::io::Result<LoadReport> {
    Ok(load_files(core, shadow, &plugin_files(dir)?, config))
}

/// Loads the plugins in `files` next to those already loaded: a loaded
/// plugin satisfies a dependency like a new one, and a new plugin whose name
/// is already loaded is refused as a duplicate.
pub fn load_files(
    core: &Arc<Registry>,
    shadow: &ShadowDir,
    files: &[PathBuf],
    config: &AgentConfig,
) -> LoadReport {
    let mut report = LoadReport::default();
    let prepared = prepare(files, shadow, &mut report);
    let loaded = core.plugins();
    let prepared: Vec<Prepared> = prepared
        .into_iter()
        .filter(
            |p| match loaded.iter().find(|l| l.name() == p.manifest.name) {
                Some(existing) => {
                    report.failures.push(p.failure(
                        Stage::Duplicate,
                        format!(
                            "duplicate plugin name '{}': it is already loaded from {}",
                            p.manifest.name,
                            existing.instance.file.display()
                        ),
                    ));
                    false
                }
                None => true,
            },
        )
        .collect();
    let prepared = reject_duplicates(prepared, &mut report);

    let failed_names: BTreeSet<String> = report
        .failures
        .iter()
        .filter_map(|f| f.plugin.clone())
        .collect();
    // The loaded plugins come first: resolved already, they are never started again.
    let k = loaded.len();
    let mut candidates: Vec<Candidate> = loaded
        .iter()
        .map(|l| Candidate {
            name: l.name().to_string(),
            version: l.instance.version.clone(),
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
            .push(prepared[i - k].failure(Stage::Dependencies, reason.to_string()));
    }
    for (i, warning) in resolution.ignored_optional.iter().filter(|(i, _)| *i >= k) {
        report.warnings.push(format!(
            "plugin '{}': {warning}",
            prepared[i - k].manifest.name
        ));
    }

    let failed_at_start: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
    let base_order = loaded.iter().map(|l| l.load_order + 1).max().unwrap_or(0);
    let mut order_of = vec![0; candidates.len()];
    for (order, i) in resolution.order().filter(|&i| i >= k).enumerate() {
        order_of[i] = base_order + order;
    }
    for level in &resolution.levels {
        let level: Vec<usize> = level.iter().copied().filter(|&i| i >= k).collect();
        let outcomes = parallel_map(&level, |&i| {
            let p = &prepared[i - k];
            let failed_dependency = resolution.edges[i].iter().find(|d| {
                failed_at_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(d)
            });
            if let Some(&d) = failed_dependency {
                let failed_name = &candidates[d].name;
                let optional = p
                    .dependencies
                    .iter()
                    .any(|dep| dep.optional && &dep.name == failed_name);
                if !optional {
                    return Err(p.failure(
                        Stage::Dependencies,
                        format!("skipped because its dependency '{failed_name}' failed to load"),
                    ));
                }
            }
            start(core, p, order_of[i], config)
        });
        for (&i, outcome) in level.iter().zip(outcomes) {
            let p = &prepared[i - k];
            match outcome {
                Ok(_) => {
                    report.loaded.push(describe(p, order_of[i]));
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
        tracing::error!("{failure}");
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    report
}
