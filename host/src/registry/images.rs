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
    /// unmapped) and warns each time the total crosses a multiple of the
    /// configured warning, not on every reload after the first.
    pub fn count_mapped(&self, plugin: &str, bytes: u64) -> MappedImages {
        let mut mapped = self.mapped.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = mapped.entry(plugin.to_string()).or_default();
        let before = entry.bytes;
        entry.generations += 1;
        entry.bytes += bytes;
        if crossed(before, entry.bytes, self.settings.mapped_bytes_warning) {
            tracing::warn!(
                plugin,
                generations = entry.generations,
                "plugin keeps {} bytes of library images mapped (over {} times the {} byte warning): every in-process reload maps a new image that is never unmapped; restart the host to reclaim them, or run the plugin isolated ([isolation] process = [\"{plugin}\"]), whose reloads give their memory back",
                entry.bytes,
                entry.bytes / self.settings.mapped_bytes_warning.max(1),
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

/// Whether going from `before` to `after` bytes crosses a multiple of
/// `step` (0: never).
fn crossed(before: u64, after: u64, step: u64) -> bool {
    step != 0 && before / step < after / step
}

#[cfg(test)]
mod tests {
    use super::crossed;

    #[test]
    fn the_warning_comes_once_per_multiple_crossed() {
        let step = 100;
        let mut total = 0;
        let mut warnings = Vec::new();
        for _ in 0..10 {
            let before = total;
            total += 45;
            if crossed(before, total, step) {
                warnings.push(total);
            }
        }
        // 45, 90, 135 (crossed 100), 180, 225 (200), 270, 315 (300), 360, 405 (400), 450.
        assert_eq!(warnings, vec![135, 225, 315, 405]);
        assert!(!crossed(0, 1000, 0));
    }
}
