//! The plugin files that failed to load (or were refused) and why, for the
//! status (`GET /v1/plugins`'s `failed`) and the health check: an entry is
//! kept until a later load of the same file succeeds, or the file is
//! removed.

use super::faults::{FaultCause, FaultEntry};
use super::Registry;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

/// A plugin file that failed to load, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedLoad {
    /// The file in the plugin folder.
    pub file: PathBuf,
    /// The plugin, when its name is known.
    pub plugin: Option<String>,
    /// Why it did not load.
    pub reason: String,
}

impl Registry {
    /// Notes the outcome of one load of the files `tried`: every earlier
    /// failure of those files goes, and `failures` take their place (each
    /// counted as a fault; the load's report says it in the log).
    pub(crate) fn note_load_outcome(&self, tried: &[&Path], failures: Vec<FailedLoad>) {
        for failure in &failures {
            let label = match &failure.plugin {
                Some(plugin) => plugin.clone(),
                None => failure
                    .file
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            };
            self.count_fault(&label, FaultEntry::Load, FaultCause::LoadFailed);
        }
        let mut failed = self
            .failed_loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let replaced = |file: &Path| {
            tried
                .iter()
                .copied()
                .chain(failures.iter().map(|n| n.file.as_path()))
                .any(|t| crate::load::discovery::same_place(file, t))
        };
        failed.retain(|f| !replaced(&f.file));
        failed.extend(failures);
    }

    /// Forgets the failures of a file that is gone from the folder.
    pub(crate) fn forget_failed_load(&self, file: &Path) {
        self.failed_loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|f| !crate::load::discovery::same_place(&f.file, file));
    }

    /// The files that failed to load, and why.
    pub fn failed_loads(&self) -> Vec<FailedLoad> {
        self.failed_loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
