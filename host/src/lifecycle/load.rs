//! Loading plugins next to those already loaded: open, check, resolve,
//! then level by level in dependency order (the plugins of one level side
//! by side) enter service, each after the lazy plugins it depends on have
//! started. A lazy plugin (`lazy_plugins`) stops after the checks: it waits
//! in the registry's pending list with a starter that runs the same steps
//! when it is first needed. A failure at any step takes down that plugin
//! and its dependents, never the host or unrelated plugins.

use super::check::{check_all, open_files, reject_duplicates, Prepared};
use super::generation::enter_service;
use super::parallel::parallel_map;
use super::report::{LoadFailure, LoadReport, LoadedPlugin};
use super::LoadError;
use crate::config::AgentConfig;
use crate::dependencies::{resolve, Candidate, Unresolved};
use crate::load::discovery::{discover, plugin_files, same_place};
use crate::load::private_copy::ShadowDir;
use crate::load::OpenError;
use crate::plugin::PluginSource;
use crate::registry::lazy::{PendingPlugin, Starter};
use crate::registry::{FailedLoad, Registry};
use crate::trust::TrustPolicy;
use semver::Version;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

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
        let live = enter_service(core, &prepared, order, &config)?;
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
pub(crate) fn load_dir(
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
        let failure = LoadFailure {
            file,
            plugin: None,
            error: Box::new(LoadError::Open(OpenError::Io {
                doing: "cannot follow the link",
                cause: cause.into(),
            })),
        };
        core.note_load_outcome(&[], vec![failed_load(&failure)]);
        report.failures.push(failure);
    }
    Ok(report)
}

/// Loads the plugins in `files` next to those already loaded: a loaded
/// plugin satisfies a dependency like a new one, and a new plugin whose name
/// is already loaded is refused as a duplicate.
fn load_files(
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

/// Loads the plugin files in `dir` that no loaded plugin came from: new
/// files, and files whose plugins failed or were stopped (for instance
/// while waiting for a dependency that has now arrived).
pub(crate) fn rescan(
    core: &Arc<Registry>,
    shadow: &ShadowDir,
    dir: &Path,
    config: &AgentConfig,
    trust: &TrustPolicy,
) -> std::io::Result<LoadReport> {
    let mut loaded: Vec<PathBuf> = core
        .plugins()
        .iter()
        .map(|p| p.instance.file.clone())
        .collect();
    loaded.extend(core.pending().iter().map(|p| p.file.clone()));
    let files: Vec<PathBuf> = plugin_files(dir)?
        .into_iter()
        .filter(|f| !loaded.iter().any(|l| same_place(l, f)))
        .collect();
    Ok(load_files(core, shadow, &files, config, trust))
}

/// A plugin already loaded (started, or lazy and pending), as a new load
/// sees it.
struct Loaded {
    name: String,
    version: Version,
    file: PathBuf,
    order: usize,
}

/// The plugins already loaded, started and pending.
fn already_loaded(core: &Registry) -> Vec<Loaded> {
    let mut loaded: Vec<Loaded> = core
        .plugins()
        .iter()
        .map(|l| Loaded {
            name: l.name().to_string(),
            version: l.instance.version.clone(),
            file: l.instance.file.clone(),
            order: l.load_order,
        })
        .collect();
    loaded.extend(core.pending().iter().map(|p| Loaded {
        name: p.name().to_string(),
        version: p.version.clone(),
        file: p.file.clone(),
        order: p.load_order,
    }));
    loaded
}

/// Loads the plugins of opened sources next to those already loaded;
/// every failure goes into `report`.
pub(crate) fn load_sources(
    core: &Arc<Registry>,
    sources: &[Arc<dyn PluginSource>],
    config: &AgentConfig,
    report: &mut LoadReport,
) {
    let loaded = already_loaded(core);
    // Every file holding a group's members is known before any member
    // starts its group's worker, which opens them all.
    for source in sources {
        source.offer_to(&core.worker_places);
    }
    let prepared: Vec<Prepared> = check_all(sources, report)
        .into_iter()
        .filter(
            |p| match loaded.iter().find(|l| l.name == p.manifest.name) {
                Some(earlier) => {
                    report.failures.push(p.failure(LoadError::AlreadyLoaded {
                        from: earlier.file.clone(),
                    }));
                    false
                }
                None => true,
            },
        )
        .collect();
    let prepared = reject_duplicates(prepared, report);
    let mut levels = Levels::resolve(&loaded, prepared, report);
    for level in 0..levels.resolution.levels.len() {
        levels.start_level(level, core, config, report);
    }
    report.loaded.sort_by_key(|p| p.order);
    note_outcome(core, sources, report);
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

/// A load failure as the status keeps it.
fn failed_load(failure: &LoadFailure) -> FailedLoad {
    FailedLoad {
        file: failure.file.clone(),
        plugin: failure.plugin.clone(),
        reason: failure.error.to_string(),
    }
}

/// Notes which files of this load failed, and that the others loaded
/// (their earlier failures go).
fn note_outcome(core: &Registry, sources: &[Arc<dyn PluginSource>], report: &LoadReport) {
    let mut tried: Vec<&Path> = sources.iter().map(|s| s.file()).collect();
    tried.extend(report.loaded.iter().map(|p| p.file.as_path()));
    core.note_load_outcome(&tried, report.failures.iter().map(failed_load).collect());
}

/// The checked plugins of one load, resolved against those already loaded
/// into levels of dependency order. Candidate `i` is loaded plugin `i`
/// below `loaded` and new plugin `i - loaded` from there on.
struct Levels {
    prepared: Vec<Prepared>,
    candidates: Vec<Candidate>,
    resolution: crate::dependencies::Resolution,
    /// How many candidates were loaded before (they are never started again).
    loaded: usize,
    /// Each candidate's place in the load order.
    order_of: Vec<usize>,
    /// The candidates that failed to start so far.
    failed: Mutex<BTreeSet<usize>>,
}

impl Levels {
    /// Resolves the dependencies of `prepared` among themselves and the
    /// plugins `loaded` before; the failures go into `report`.
    fn resolve(loaded: &[Loaded], prepared: Vec<Prepared>, report: &mut LoadReport) -> Self {
        let failed_names: BTreeSet<String> = report
            .failures
            .iter()
            .filter_map(|f| f.plugin.clone())
            .collect();
        let k = loaded.len();
        // The loaded plugins come first: resolved already.
        let mut candidates: Vec<Candidate> = loaded
            .iter()
            .map(|l| Candidate {
                name: l.name.clone(),
                version: l.version.clone(),
                dependencies: Vec::new(),
            })
            .collect();
        candidates.extend(prepared.iter().map(Prepared::candidate));
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
        let base_order = loaded.iter().map(|l| l.order + 1).max().unwrap_or(0);
        let mut order_of = vec![0; candidates.len()];
        for (order, i) in resolution.order().filter(|&i| i >= k).enumerate() {
            order_of[i] = base_order + order;
        }
        Levels {
            prepared,
            candidates,
            resolution,
            loaded: k,
            order_of,
            failed: Mutex::new(BTreeSet::new()),
        }
    }

    fn plugin(&self, i: usize) -> &Prepared {
        &self.prepared[i - self.loaded]
    }

    /// The failure of candidate `i` when a dependency it requires failed
    /// to start.
    fn dependency_failed(&self, i: usize) -> Option<LoadFailure> {
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let d = self
            .resolution
            .failed_requirement(&self.candidates, i, &failed)?;
        let skipped = Unresolved::DependencyFailed {
            dependency: self.candidates[d].name.clone(),
        };
        Some(self.plugin(i).failure(LoadError::Dependencies(skipped)))
    }

    fn mark_failed(&self, i: usize) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(i);
    }

    /// Starts the new plugins of level `level` side by side; a lazy one is
    /// checked and left pending, with one registration for the level.
    fn start_level(
        &mut self,
        level: usize,
        core: &Arc<Registry>,
        config: &AgentConfig,
        report: &mut LoadReport,
    ) {
        let (lazy, eager): (Vec<usize>, Vec<usize>) = self.resolution.levels[level]
            .iter()
            .copied()
            .filter(|&i| i >= self.loaded)
            .partition(|&i| config.host.is_lazy(&self.plugin(i).manifest.name));
        if !lazy.is_empty() {
            let shared = Arc::new(config.clone());
            let mut waiting = Vec::with_capacity(lazy.len());
            for &i in &lazy {
                if let Some(failure) = self.dependency_failed(i) {
                    self.mark_failed(i);
                    report.failures.push(failure);
                    continue;
                }
                waiting.push(pending(self.plugin(i), self.order_of[i], &shared));
                report
                    .loaded
                    .push(describe(self.plugin(i), self.order_of[i], true));
            }
            core.add_pending(waiting);
        }
        let outcomes = parallel_map(&eager, |&i| {
            if let Some(failure) = self.dependency_failed(i) {
                return Err(failure);
            }
            let p = self.plugin(i);
            start_pending_dependencies(core, p)?;
            enter_service(core, p, self.order_of[i], config)
        });
        for (&i, outcome) in eager.iter().zip(outcomes) {
            let p = self.plugin(i);
            match outcome {
                Ok(_) => {
                    report.loaded.push(describe(p, self.order_of[i], false));
                    core.emit(
                        "host",
                        "plugin:loaded",
                        json!({"plugin": p.manifest.name, "version": p.manifest.version}),
                    );
                }
                Err(failure) => {
                    self.mark_failed(i);
                    report.failures.push(failure);
                }
            }
        }
    }
}
