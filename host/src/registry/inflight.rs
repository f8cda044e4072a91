//! Calls in flight into one plugin: an atomic count, and a short list of
//! what each call is and since when. The count is the plugin's bulkhead (a
//! call beyond the limit is refused at once); the list lets a shutdown wait
//! for a plugin's calls before its `on_unload` and name those still stuck
//! when its grace period expires.
//!
//! Tracked at the level of a top-level call into the plugin (an action's
//! handler, a service call, an event delivery, a timer, a provider fetch,
//! a step of its life).
//! The brief per-message calls (`validate`, evaluators) are not entered one
//! by one: they only look at the count, and are entered when the watchdog
//! abandons one at its deadline, until it returns. Entering costs one short
//! lock and no allocation beyond a service method's or an event's name.

use crate::plugin::PluginInstance;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Which entry point a call is in; named against the plugin's manifest only
/// when it is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An action's handler, by index.
    Handler(u32),
    /// A service method, by service index and method name.
    Service(u32, String),
    /// The handler of an event, by event name.
    Event(String),
    /// A timer, by the plugin's timer id.
    Timer(u64),
    /// A provider's `get`, by index.
    Provider(u32),
    /// Several providers' `get` for one message.
    Providers,
    /// An action's `validate` for one message.
    Validate,
    /// An evaluator, by index.
    Evaluator(u32),
    /// A step of the plugin's life (`on_load`, a service start...).
    Lifecycle(Step),
}

impl Entry {
    /// The entry point's name, as errors name it.
    pub fn describe(&self, instance: &PluginInstance) -> String {
        match self {
            Entry::Handler(i) => format!("action '{}' handler", instance.action_name(*i)),
            Entry::Service(i, method) => {
                format!("service '{}' method '{method}'", instance.service_name(*i))
            }
            Entry::Event(event) => format!("event handler for '{event}'"),
            Entry::Timer(timer) => format!("timer {timer}"),
            Entry::Provider(i) => format!("provider '{}' get", instance.provider_name(*i)),
            Entry::Providers => "providers' get".to_string(),
            Entry::Validate => "actions' validate".to_string(),
            Entry::Evaluator(i) => format!("evaluator '{}' evaluate", instance.evaluator_name(*i)),
            Entry::Lifecycle(step) => step.describe(instance),
        }
    }
}

struct Call {
    id: u64,
    entry: Entry,
    started: Instant,
}

/// The calls in flight into one plugin.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    next_id: AtomicU64,
    calls: Mutex<Vec<Call>>,
}

/// One call in flight; leaves the list when dropped.
pub struct InFlightCall {
    calls: Arc<InFlight>,
    id: u64,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a call into `entry` until the returned value is dropped.
    pub fn enter(self: &Arc<Self>, entry: Entry) -> InFlightCall {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Call {
            id,
            entry,
            started: Instant::now(),
        });
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightCall {
            calls: Arc::clone(self),
            id,
        }
    }

    /// Records a call into `entry` unless `limit` calls are in flight
    /// already (the plugin's bulkhead is full): then `None`, at once.
    pub fn try_enter(self: &Arc<Self>, entry: Entry, limit: usize) -> Option<InFlightCall> {
        if self.is_full(limit) {
            return None;
        }
        Some(self.enter(entry))
    }

    /// Whether `limit` calls or more are in flight.
    #[inline]
    pub fn is_full(&self, limit: usize) -> bool {
        self.count.load(Ordering::Acquire) >= limit
    }

    /// How many calls are in flight.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The calls in flight: their entry point and how long each has run.
    pub fn calls(&self) -> Vec<(Entry, Duration)> {
        self.lock()
            .iter()
            .map(|call| (call.entry.clone(), call.started.elapsed()))
            .collect()
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        let mut calls = self.calls.lock();
        if let Some(position) = calls.iter().position(|call| call.id == self.id) {
            calls.swap_remove(position);
        }
        drop(calls);
        self.calls.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One step of a plugin's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `on_load`.
    OnLoad,
    /// `on_unload`.
    OnUnload,
    /// The start of a service, by index.
    StartService(u32),
    /// The stop of a service, by index.
    StopService(u32),
    /// A provider's subscription started (`true`) or ended, by index.
    Subscribe(u32, bool),
    /// `export_state`.
    ExportState,
    /// `import_state`.
    ImportState,
}

impl Step {
    /// The step's entry point, as errors name it.
    pub fn describe(&self, instance: &PluginInstance) -> String {
        match self {
            Step::OnLoad => "on_load".to_string(),
            Step::OnUnload => "on_unload".to_string(),
            Step::StartService(i) => format!("service '{}' start", instance.service_name(*i)),
            Step::StopService(i) => format!("service '{}' stop", instance.service_name(*i)),
            Step::Subscribe(i, _) => format!("provider '{}' subscribe", instance.provider_name(*i)),
            Step::ExportState => "export_state".to_string(),
            Step::ImportState => "import_state".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_and_listed_until_they_end() {
        let flight = Arc::new(InFlight::default());
        let first = flight.enter(Entry::Timer(7));
        let second = flight.enter(Entry::Event("a:b".into()));
        assert_eq!(flight.count(), 2);
        drop(first);
        let calls = flight.calls();
        assert_eq!(flight.count(), 1);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, Entry::Event("a:b".into()));
        drop(second);
        assert_eq!(flight.count(), 0);
        assert!(flight.calls().is_empty());
    }
}
