//! `agent-host lock DIR`: pin every plugin file of a folder in a lock file
//! (file name, SHA-256, the plugins it exports), or re-pin one with
//! `--update NAME`, keeping the others.
//!
//! Each file is opened the way a load opens it (a private copy, through a
//! probe worker when `[isolation]` may isolate its plugins), its manifests
//! read, and the hash taken of the copy; no plugin is created or started.
//! The config's trusted keys apply: with keys configured, an unsigned file
//! is not pinned. The lock is written only when every file opened.

use crate::config::AgentConfig;
use crate::load::discovery::plugin_files;
use crate::load::private_copy::{CopyGauges, ShadowDir};
use crate::load::OpenError;
use crate::trust::lock::{LockFile, LockedFile, LockedPlugin, DEFAULT_LOCK_NAME};
use crate::trust::{TrustPolicy, TrustSettings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The lock file of `dir` when none is named: `DIR/plugins.lock`.
pub fn default_lock_path(dir: &Path) -> PathBuf {
    dir.join(DEFAULT_LOCK_NAME)
}

/// Pins the files of `dir` (all of them, or the one `update` names: a file
/// name or a plugin name) in the lock file at `output`.
pub fn lock(
    dir: &Path,
    output: Option<&Path>,
    update: Option<&str>,
    config: &AgentConfig,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let output = output.map_or_else(|| default_lock_path(dir), Path::to_path_buf);
    // The lock being written is not the one checked against; the keys are.
    let trust = TrustPolicy::load(&TrustSettings {
        lock: None,
        ..config.trust.clone()
    })?;
    let shadow = ShadowDir::create(CopyGauges::default())?;
    let files = plugin_files(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let (mut lock, chosen) = match update {
        None => (LockFile::new(), files),
        Some(name) => {
            let lock = LockFile::read(&output)
                .map_err(|e| format!("{e} (--update re-pins in an existing lock)"))?;
            let chosen = choose(&lock, &files, name, &shadow, config, &trust)?;
            (lock, vec![chosen])
        }
    };
    let mut failed = 0;
    for file in &chosen {
        match pin(file, &shadow, config, &trust) {
            Ok(entry) => {
                let plugins: Vec<String> = entry
                    .plugins
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.version))
                    .collect();
                println!(
                    "pinned {} sha256 {} ({})",
                    entry.name,
                    entry.sha256,
                    plugins.join(", ")
                );
                lock.pin(entry);
            }
            Err(cause) => {
                println!("FAIL  {}: {cause}", file.display());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        println!(
            "{failed} file(s) could not be pinned; {} not written",
            output.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    lock.write(&output)
        .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    println!("wrote {} ({} files)", output.display(), lock.files.len());
    Ok(ExitCode::SUCCESS)
}

/// Opens `file` as a load would and describes it for the lock.
fn pin(
    file: &Path,
    shadow: &ShadowDir,
    config: &AgentConfig,
    trust: &TrustPolicy,
) -> Result<LockedFile, OpenError> {
    let source = crate::lifecycle::open_source(file, shadow, config, trust)?;
    Ok(LockedFile {
        name: file_name(file),
        sha256: source.sha256().to_string(),
        plugins: source
            .manifests()
            .iter()
            .map(|m| LockedPlugin {
                name: m.name.clone(),
                version: m.version.clone(),
            })
            .collect(),
    })
}

fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file `name` means: a file of that name in the folder, the file the
/// lock pins for a plugin of that name, or else the file in the folder
/// that exports a plugin of that name (which opens every file).
fn choose(
    lock: &LockFile,
    files: &[PathBuf],
    name: &str,
    shadow: &ShadowDir,
    config: &AgentConfig,
    trust: &TrustPolicy,
) -> Result<PathBuf, NothingNamed> {
    let by_name = |wanted: &str| files.iter().find(|f| file_name(f) == wanted).cloned();
    if let Some(file) = by_name(name) {
        return Ok(file);
    }
    if let Some(file) = lock.file_named_or_exporting(name).and_then(by_name) {
        return Ok(file);
    }
    for file in files {
        if let Ok(source) = crate::lifecycle::open_source(file, shadow, config, trust) {
            if source.manifests().iter().any(|m| m.name == name) {
                return Ok(file.clone());
            }
        }
    }
    Err(NothingNamed(name.to_string()))
}

/// `--update NAME` names no file of the folder and no plugin one exports.
#[derive(Debug, thiserror::Error)]
#[error("no plugin file named '{0}' and no file exporting a plugin '{0}' in the folder")]
struct NothingNamed(String);
