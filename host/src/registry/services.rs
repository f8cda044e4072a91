//! The service table: which plugin provides each service, whether it runs,
//! and calls to it (the caller's permission checked, within the plugin's
//! bulkhead, with a deadline: what is left of the caller's when plugin code
//! calls from inside another call, else `service_timeout_ms`).

use super::call_chain;
use super::inflight::InFlightCall;
use super::{read, write, HostError, LiveCaller, LivePlugin, Registry};
use crate::current_call;
use crate::plugin::CallError;
use crate::watchdog::{unix_ms_after, unix_ms_now};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

/// A service registered by a plugin.
#[derive(Clone)]
pub(super) struct ServiceSlot {
    pub(super) plugin: Arc<LivePlugin>,
    pub(super) index: u32,
    pub(super) running: bool,
}

/// Why a plugin's service did not enter service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceStartError {
    /// Another plugin already provides a service of that name.
    #[error("service '{service}' is already provided by plugin '{provider}'")]
    Taken {
        /// The service.
        service: String,
        /// The plugin that provides it.
        provider: String,
    },
    /// The plugin's manifest has no service of that number.
    #[error("no service number {index}")]
    Unknown {
        /// The number asked for.
        index: u32,
    },
    /// The plugin's `start_service` failed.
    #[error("{}", .0.message)]
    Start(#[source] CallError),
}

impl Registry {
    /// Registers a plugin's service, stopped. Fails if another plugin already
    /// provides a service of that name.
    pub fn add_service(
        &self,
        plugin: &Arc<LivePlugin>,
        index: u32,
    ) -> Result<(), ServiceStartError> {
        let name = plugin
            .instance
            .manifest
            .services
            .get(index as usize)
            .map(|s| s.name.clone())
            .ok_or(ServiceStartError::Unknown { index })?;
        let mut services = write(&self.services);
        if let Some(existing) = services.get(&name) {
            return Err(ServiceStartError::Taken {
                service: name,
                provider: existing.plugin.name().to_string(),
            });
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

    /// Marks service `index` of `plugin` running or stopped, where the table
    /// holds it for this generation (a new generation's services join the
    /// table when it takes the old one's place).
    pub fn mark_service(&self, plugin: &LivePlugin, index: u32, running: bool) {
        let Some(spec) = plugin.instance.manifest.services.get(index as usize) else {
            return;
        };
        if let Some(slot) = write(&self.services).get_mut(&spec.name) {
            if slot.plugin.generation == plugin.generation {
                slot.running = running;
            }
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
        let slot = self.serving_slot(caller, service)?;
        let entry = || format!("service '{service}' method '{method}'",);
        let _link = call_chain::enter(&format!("{service}.{method}")).map_err(|why| {
            let error =
                slot.plugin
                    .instance
                    .host_error(entry(), ErrorKind::Unavailable, why.to_string());
            self.record_error(&slot.plugin, &error);
            HostError::from(error)
        })?;
        let limit = self.settings.max_calls_in_flight;
        let Some(call) = slot.plugin.in_flight.try_enter(
            super::inflight::Entry::Service(slot.index, method.to_string()),
            limit,
        ) else {
            return Err(HostError::from(
                slot.plugin.instance.refused(entry(), limit),
            ));
        };
        let outcome = match current_call::inherited() {
            Some(caller) => {
                self.call_within_caller(&slot, caller, service, method, args_json, call)
            }
            None => Ok(self.call_on_pool(&slot, method, args_json, call)),
        };
        outcome?.map_err(|error| {
            self.record_error(&slot.plugin, &error);
            HostError::from(error)
        })
    }

    /// The slot of `service`, when `caller` may call it (a plugin may always
    /// call its own services; any other needs `service:NAME`) and it serves:
    /// started (a lazy plugin that provides it starts now), running, not
    /// quarantined.
    fn serving_slot(
        &self,
        caller: Option<&LiveCaller<'_>>,
        service: &str,
    ) -> Result<ServiceSlot, HostError> {
        let slot = read(&self.services).get(service).cloned();
        if let Some(caller) = caller {
            let own = slot
                .as_ref()
                .is_some_and(|s| s.plugin.name() == caller.name);
            let permission = format!("service:{service}");
            if !own && !caller.permissions.allows(&permission) {
                return Err(self.deny(caller.name, &permission));
            }
        }
        let slot = slot.or_else(|| {
            self.start_pending_for_service(service)
                .then(|| read(&self.services).get(service).cloned())
                .flatten()
        });
        let Some(slot) = slot else {
            let mut known: Vec<String> = read(&self.services).keys().cloned().collect();
            known.sort();
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
        Ok(slot)
    }

    /// A service call from inside another call (`caller`: its deadline and
    /// whether it was cancelled): run on this thread, with at most what is
    /// left of the caller's deadline, which so bounds the whole chain. Not
    /// called at all (the outer error) once that deadline has passed.
    fn call_within_caller(
        &self,
        slot: &ServiceSlot,
        (caller_deadline, cancelled): (u64, bool),
        service: &str,
        method: &str,
        args_json: &str,
        call: InFlightCall,
    ) -> Result<Result<String, CallError>, HostError> {
        let own_deadline = unix_ms_after(Duration::from_millis(self.settings.service_timeout_ms));
        let deadline = match caller_deadline {
            0 => own_deadline,
            caller => caller.min(own_deadline),
        };
        if cancelled || unix_ms_now() >= deadline {
            return Err(HostError::new(
                ErrorKind::Cancelled,
                format!(
                    "service '{service}' method '{method}' not called: the calling call's deadline has passed"
                ),
            ));
        }
        let control = CallControl::with_deadline(deadline);
        let outcome = current_call::within(&control, || {
            slot.plugin
                .instance
                .call_service(slot.index, method, args_json, &control)
        });
        drop(call);
        Ok(outcome)
    }

    /// A service call from a plugin's own thread or from the host: run on
    /// the blocking pool, and abandoned (cancelled, reported) at the
    /// service timeout.
    fn call_on_pool(
        &self,
        slot: &ServiceSlot,
        method: &str,
        args_json: &str,
        call: InFlightCall,
    ) -> Result<String, CallError> {
        let timeout = Duration::from_millis(self.settings.service_timeout_ms);
        let control = Arc::new(CallControl::with_deadline(unix_ms_after(timeout)));
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let (plugin, index) = (Arc::clone(&slot.plugin), slot.index);
        let (method_owned, args) = (method.to_string(), args_json.to_string());
        let control_bg = Arc::clone(&control);
        self.runtime().spawn_blocking(move || {
            let _call = call;
            let outcome = current_call::within(&control_bg, || {
                plugin
                    .instance
                    .call_service(index, &method_owned, &args, &control_bg)
            });
            let _ = sender.send(outcome);
        });
        receiver.recv_timeout(timeout).unwrap_or_else(|_| {
            control.cancel();
            let entry = format!(
                "service '{}' method '{method}'",
                slot.plugin.instance.service_name(slot.index)
            );
            Err(slot
                .plugin
                .instance
                .timed_out(entry, self.settings.service_timeout_ms))
        })
    }
}
