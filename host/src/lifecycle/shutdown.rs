//! Every plugin leaves service, in reverse load order, once the calls in
//! flight have finished or the grace period has run out.

use super::generation::leave_service;
use super::report::ShutdownError;
use crate::registry::Registry;
use serde_json::json;
use std::time::{Duration, Instant};

/// Shuts the admission gate, waits for the calls in flight to finish (at
/// most `grace`), then takes every plugin out of service in reverse load
/// order: its services (in reverse), then `on_unload`. Failures are
/// returned, and never stop the rest.
///
/// Calls still running when the grace period expires are named in the log
/// (plugin, entry point, how long), and the plugins stop anyway: such a
/// plugin's `on_unload` then runs while a call is still in it, which one
/// warning line says.
pub(crate) fn stop_all(core: &Registry, grace: Duration) -> Vec<ShutdownError> {
    let deadline = Instant::now() + grace;
    let admitted = core.admission.shut(deadline);
    for plugin in core.pending() {
        // Never started: nothing to stop.
        core.remove_pending(plugin.name());
    }
    let plugins = core.plugins();
    // A handler past its timeout still runs on its own thread, after its
    // message has left the gate: wait for each plugin's own calls too.
    while plugins.iter().any(|p| p.in_flight.count() > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let stuck: usize = plugins.iter().map(|p| p.in_flight.count()).sum();
    if admitted > 0 || stuck > 0 {
        tracing::warn!(
            "the shutdown grace period of {} ms expired with {stuck} plugin call(s) and \
             {admitted} message(s) or host call(s) still running; stopping the plugins anyway",
            grace.as_millis()
        );
        for plugin in &plugins {
            for (entry, running) in plugin.in_flight.calls() {
                let entry = entry.describe(&plugin.instance);
                tracing::warn!(
                    plugin = %plugin.name(),
                    entry = %entry,
                    running_ms = running.as_millis(),
                    "still in flight after the shutdown grace period: plugin '{}' {entry}, \
                     running for {} ms",
                    plugin.name(),
                    running.as_millis()
                );
            }
        }
    }
    let mut errors = Vec::new();
    for plugin in plugins.iter().rev() {
        let name = plugin.name().to_string();
        let still = plugin.in_flight.count();
        if still > 0 {
            tracing::warn!(
                plugin = %name,
                "plugin '{name}': on_unload runs with {still} call(s) still in it: \
                 the shutdown grace period expired"
            );
        }
        let services = plugin.instance.manifest.services.len();
        errors.extend(leave_service(core, plugin, services));
        core.unregister(&name);
        core.emit("host", "plugin:unloaded", json!({"plugin": name}));
        tracing::info!(plugin = %name, "unloaded");
    }
    for error in &errors {
        tracing::warn!("{error}");
    }
    // The faults left out of the log are said before the host goes.
    core.say_suppressed_faults(true);
    errors
}
