//! The steps before any hook runs: open a plugin file from a fresh private
//! copy (its ABI checked), and check each manifest it holds.

use super::parallel::parallel_map;
use super::report::{LoadFailure, LoadReport};
use super::LoadError;
use crate::config::AgentConfig;
use crate::load::private_copy::ShadowDir;
use crate::load::{library, OpenError};
use crate::plugin::PluginSource;
use crate::triggers::{PatternError, PluginTriggers};
use crate::trust::TrustPolicy;
use agent_host_plugin_sdk::manifest::{Dependency, Manifest, ManifestError, ValidManifest};
use semver::Version;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One plugin of one opened file, its manifest checked: what the later
/// steps (resolve, create, enter) start from.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) source: Arc<dyn PluginSource>,
    pub(crate) index: u32,
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) version: Version,
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) triggers: Arc<PluginTriggers>,
}

impl Prepared {
    /// Checks plugin number `index` of `source` ([`check_manifest`]).
    pub(crate) fn check(
        source: &Arc<dyn PluginSource>,
        index: usize,
    ) -> Result<Self, ManifestCheckError> {
        let manifest = &source.manifests()[index];
        let (valid, triggers) = check_manifest(manifest)?;
        Ok(Prepared {
            source: Arc::clone(source),
            index: index as u32,
            manifest: Arc::new(manifest.clone()),
            version: valid.version,
            dependencies: valid.dependencies,
            triggers,
        })
    }

    /// This plugin as the dependency rules see it.
    pub(crate) fn candidate(&self) -> crate::dependencies::Candidate {
        crate::dependencies::Candidate {
            name: self.manifest.name.clone(),
            version: self.version.clone(),
            dependencies: self.dependencies.clone(),
        }
    }

    /// A failure of this plugin, naming its file.
    pub(crate) fn failure(&self, error: LoadError) -> LoadFailure {
        LoadFailure {
            file: self.source.file().to_path_buf(),
            plugin: Some(self.manifest.name.clone()),
            error: Box::new(error),
        }
    }
}

/// Why a manifest was refused before any code of its plugin ran. It prints
/// as one line naming the field and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestCheckError {
    /// A field failed [`Manifest::validate`].
    #[error("{0}")]
    Invalid(#[source] ManifestError),
    /// An action's trigger pattern does not compile.
    #[error("{0}")]
    Pattern(#[source] PatternError),
}

/// The manifest checks the host makes before it runs any code of a plugin:
/// [`Manifest::validate`], then the compilation of its action triggers.
pub(crate) fn check_manifest(
    manifest: &Manifest,
) -> Result<(ValidManifest, Arc<PluginTriggers>), ManifestCheckError> {
    let valid = manifest.validate().map_err(ManifestCheckError::Invalid)?;
    let triggers = PluginTriggers::compile(manifest).map_err(ManifestCheckError::Pattern)?;
    Ok((valid, Arc::new(triggers)))
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
pub(super) fn open_files(
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
pub(super) fn check_all(
    sources: &[Arc<dyn PluginSource>],
    report: &mut LoadReport,
) -> Vec<Prepared> {
    let mut prepared = Vec::new();
    for source in sources {
        for (index, manifest) in source.manifests().iter().enumerate() {
            match Prepared::check(source, index) {
                Ok(checked) => prepared.push(checked),
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
pub(super) fn reject_duplicates(prepared: Vec<Prepared>, report: &mut LoadReport) -> Vec<Prepared> {
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
