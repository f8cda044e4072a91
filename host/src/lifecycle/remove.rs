//! A plugin file removed: its plugins, and every plugin that depends on
//! them, leave service once the calls in flight have drained.

use super::generation::leave_service;
use crate::load::discovery::same_place;
use crate::registry::Registry;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Stops the plugins loaded from `file`, after draining the calls in
/// flight, together with every plugin that depends on them (they cannot
/// work without it; a later rescan brings them back when the file
/// returns). Returns the names stopped, dependents first.
pub(crate) fn remove_file(core: &Registry, file: &Path) -> Vec<String> {
    let mut doomed: Vec<String> = core
        .plugins()
        .iter()
        .filter(|p| same_place(&p.instance.file, file))
        .map(|p| p.name().to_string())
        .collect();
    doomed.extend(
        core.pending()
            .iter()
            .filter(|p| same_place(&p.file, file))
            .map(|p| p.name().to_string()),
    );
    doomed.extend(crate::dependencies::dependents(&core.candidates(), &doomed));
    // A file that is gone has failed to load no longer.
    core.forget_failed_load(file);
    if doomed.is_empty() {
        return doomed;
    }
    let drain = Duration::from_millis(core.settings.reload_drain_timeout_ms);
    let closed = core.admission.close(drain);
    if let Err(still) = &closed {
        tracing::warn!("{still} call(s) still in flight after the drain timeout; stopping anyway");
    }
    let mut stopped = Vec::new();
    // Lazy plugins not started yet have nothing to stop; the others are
    // read again now that no entry can start one.
    for plugin in core.pending().iter().rev() {
        if doomed.iter().any(|d| d == plugin.name()) && core.remove_pending(plugin.name()).is_some()
        {
            tracing::warn!(plugin = %plugin.name(), "dropped before it started: its file or a dependency was removed");
            stopped.push(plugin.name().to_string());
        }
    }
    let plugins = core.plugins();
    for plugin in plugins
        .iter()
        .rev()
        .filter(|p| doomed.iter().any(|d| d == p.name()))
    {
        let name = plugin.name().to_string();
        let services = plugin.instance.manifest.services.len();
        for error in leave_service(core, plugin, services) {
            tracing::warn!("{error}");
        }
        core.unregister(&name);
        core.metrics.plugins_loaded.dec();
        let reason = if same_place(&plugin.instance.file, file) {
            format!("its file {} was removed", file.display())
        } else {
            "a plugin it depends on was removed".to_string()
        };
        tracing::warn!(plugin = %name, "stopped: {reason}");
        core.emit(
            "host",
            "plugin:unloaded",
            json!({"plugin": name, "reason": reason}),
        );
        stopped.push(name);
    }
    drop(closed);
    stopped
}
