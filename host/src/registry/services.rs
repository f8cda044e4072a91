//! The service table: which plugin provides each service, whether it runs,
//! and calls to it (the caller's permission checked).

use super::{read, write, HostError, LiveCaller, LivePlugin, Registry};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::ErrorKind;
use std::sync::Arc;

/// A service registered by a plugin.
#[derive(Clone)]
pub(super) struct ServiceSlot {
    pub(super) plugin: Arc<LivePlugin>,
    pub(super) index: u32,
    pub(super) running: bool,
}

impl Registry {
    /// Registers a plugin's service, stopped. Fails if another plugin already
    /// provides a service of that name.
    pub fn add_service(&self, plugin: &Arc<LivePlugin>, index: u32) -> Result<(), String> {
        let name = plugin
            .instance
            .manifest
            .services
            .get(index as usize)
            .map(|s| s.name.clone())
            .ok_or_else(|| format!("no service number {index}"))?;
        let mut services = write(&self.services);
        if let Some(existing) = services.get(&name) {
            return Err(format!(
                "service '{name}' is already provided by plugin '{}'",
                existing.plugin.name()
            ));
        }
        services.insert(
            name,
            ServiceSlot {
                plugin: Arc::clone(plugin),
                index,
                running: false,
            },
        );
        Ok(())
    }

    /// Marks a service running or stopped.
    pub fn set_service_running(&self, name: &str, running: bool) {
        if let Some(slot) = write(&self.services).get_mut(name) {
            slot.running = running;
        }
    }

    /// Names of registered services with their plugin and whether they run.
    pub fn services(&self) -> Vec<(String, String, bool)> {
        let mut list: Vec<_> = read(&self.services)
            .iter()
            .map(|(name, slot)| (name.clone(), slot.plugin.name().to_string(), slot.running))
            .collect();
        list.sort();
        list
    }

    /// Calls a service method. `caller` is the plugin making the call (its
    /// permissions are checked), or `None` for the host itself.
    pub fn call_service(
        &self,
        caller: Option<&LiveCaller<'_>>,
        service: &str,
        method: &str,
        args_json: &str,
    ) -> Result<String, HostError> {
        let slot = read(&self.services).get(service).cloned();
        // A plugin may always call its own services; any other needs `service:NAME`.
        if let Some(caller) = caller {
            let own = slot
                .as_ref()
                .is_some_and(|s| s.plugin.name() == caller.name);
            let permission = format!("service:{service}");
            if !own && !caller.permissions.allows(&permission) {
                return Err(self.deny(caller.name, &permission));
            }
        }
        // A lazy plugin that provides the service starts on its first call.
        let slot = slot.or_else(|| {
            self.start_pending_for_service(service)
                .then(|| read(&self.services).get(service).cloned())
                .flatten()
        });
        let Some(slot) = slot else {
            let known: Vec<String> = read(&self.services).keys().cloned().collect();
            return Err(HostError::new(
                ErrorKind::NotFound,
                format!(
                    "no service named '{service}' is loaded (loaded: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        if !slot.running {
            return Err(HostError::new(
                ErrorKind::Unavailable,
                format!(
                    "service '{service}' of plugin '{}' is stopped",
                    slot.plugin.name()
                ),
            ));
        }
        if slot.plugin.is_quarantined() {
            return Err(HostError::new(
                ErrorKind::Unavailable,
                format!(
                    "service '{service}' is out of service: plugin '{}' is quarantined",
                    slot.plugin.name()
                ),
            ));
        }
        let control = CallControl::default();
        let _call = slot.plugin.in_flight.enter(super::inflight::Entry::Service(
            slot.index,
            method.to_string(),
        ));
        slot.plugin
            .instance
            .call_service(slot.index, method, args_json, &control)
            .map_err(|error| {
                self.record_error(&slot.plugin, &error);
                HostError::from(error)
            })
    }
}
