//! Accounting of library images: every in-process generation stays mapped
//! (libraries are never unloaded), so the host counts them per plugin.

use super::Registry;
use std::sync::PoisonError;

/// The library images one plugin keeps mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MappedImages {
    /// How many generations were loaded (each stays mapped).
    pub generations: u64,
    /// Their image bytes in total.
    pub bytes: u64,
}

impl Registry {
    /// Counts a library image a plugin mapped (generations are never
    /// unmapped) and warns past the configured cap.
    pub fn count_mapped(&self, plugin: &str, bytes: u64) -> MappedImages {
        let mut mapped = self.mapped.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = mapped.entry(plugin.to_string()).or_default();
        entry.generations += 1;
        entry.bytes += bytes;
        if entry.bytes > self.settings.mapped_bytes_warning {
            tracing::warn!(
                plugin,
                generations = entry.generations,
                "plugin keeps {} bytes of library images mapped (over the {} byte warning): every reload maps a new image that is never unmapped; restart the host to reclaim them",
                entry.bytes,
                self.settings.mapped_bytes_warning
            );
        }
        *entry
    }

    /// The library images a plugin keeps mapped.
    pub fn mapped(&self, plugin: &str) -> MappedImages {
        self.mapped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
            .copied()
            .unwrap_or_default()
    }
}
