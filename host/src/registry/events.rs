//! The event bus: plugins and the host emit and subscribe to named events.
//!
//! Delivery never holds the bus lock while calling a handler, because a
//! handler calls back into the host: it may emit or subscribe. A plugin's
//! handler runs on the blocking pool and the emitter waits for it at most
//! `event_timeout_ms` (see `Registry::deliver`). One failing handler is logged and
//! reported; the others still run. A cascade (a handler emitting an event whose
//! handler emits...) is bounded twice: in depth, so a loop cannot overflow the
//! stack, and in deliveries per top-level emit, so a handler that emits twice
//! per delivery cannot multiply its events without end. A cut is logged,
//! counted, and reported to the emitter that crossed the bound.

use crate::permissions::matches;
use crate::plugin::CallError;
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::broadcast;

/// How deep events may nest on one thread.
pub const MAX_NESTING: u32 = 16;

/// How many handlers one top-level emit may reach, its cascade included.
pub const MAX_DELIVERIES: u32 = 10_000;

/// An event on the bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusEvent {
    /// The event's name, such as `action:completed`.
    pub name: String,
    /// Who emitted it: a plugin name, or `host`.
    pub source: String,
    /// The payload.
    pub payload: Value,
}

/// Why a handler registered by the host failed: whatever error it returns.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A handler registered by the host itself.
pub type HostHandler = Arc<dyn Fn(&BusEvent) -> Result<(), HandlerError> + Send + Sync>;

/// Who receives an event.
#[derive(Clone)]
pub enum Listener {
    /// A plugin's handler: the plugin's name and generation (the
    /// subscription id identifies the handler inside it).
    Plugin(String, u64),
    /// A host-side handler.
    Host(HostHandler),
}

#[derive(Clone)]
struct Subscriber {
    id: u64,
    pattern: String,
    listener: Listener,
}

/// A handler that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryFailure {
    /// The subscription whose handler failed (0 when the event was cut).
    pub subscription: u64,
    /// What went wrong.
    pub error: String,
    /// Whether the event was not delivered at all: its cascade crossed a
    /// bound ([`MAX_NESTING`], [`MAX_DELIVERIES`]).
    pub cut: bool,
}

/// Where the events plugins emit here also go: the other hosts of a
/// cluster. Implemented above the registry (cluster mode), which never
/// names it. `relay` is called on the emitting thread and must not block.
pub trait EventRelay: Send + Sync {
    /// Sends `event`, emitted by a plugin of this host `depth` events deep
    /// in its cascade, to the other hosts.
    fn relay(&self, event: &BusEvent, depth: u32);
}

/// The bus.
pub struct EventBus {
    next_id: AtomicU64,
    subscribers: RwLock<Vec<Subscriber>>,
    tap: broadcast::Sender<BusEvent>,
    /// The other hosts, in cluster mode.
    relay: std::sync::OnceLock<Arc<dyn EventRelay>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

/// The prefixes of the events the host emits (`action:completed`,
/// `plugin:loaded`, ...): no grant lets a plugin emit an event so named, so
/// a subscriber can trust them.
pub const RESERVED_PREFIXES: [&str; 3] = ["action:", "plugin:", "host:"];

/// Whether `event` is one of the host's own names.
pub fn is_reserved(event: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|prefix| event.starts_with(prefix))
}

/// Where a thread is in a cascade of events: how deep, and the count of
/// deliveries shared by the whole cascade of one top-level emit.
#[derive(Clone, Default)]
pub(crate) struct Nesting {
    depth: u32,
    deliveries: Option<Arc<AtomicU32>>,
}

thread_local! {
    static NESTING: RefCell<Nesting> = RefCell::new(Nesting::default());
}

impl Nesting {
    /// A cascade another host began, `depth` events deep there: events
    /// crossing hosts stay bounded in depth as they would on one host.
    pub(crate) fn from_elsewhere(depth: u32) -> Self {
        Self {
            depth,
            deliveries: None,
        }
    }
}

/// Where this thread is in a cascade now.
pub(crate) fn nesting() -> Nesting {
    NESTING.with(|n| n.borrow().clone())
}

/// Runs `deliver` on this thread (a delivery moved to another thread) where
/// the thread that emitted was in its cascade, so that a handler loop stays
/// bounded across threads.
pub(crate) fn nested<T>(nesting: Nesting, deliver: impl FnOnce() -> T) -> T {
    let previous = NESTING.with(|n| n.replace(nesting));
    let result = deliver();
    NESTING.with(|n| *n.borrow_mut() = previous);
    result
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            subscribers: RwLock::new(Vec::new()),
            tap: broadcast::channel(1024).0,
            relay: std::sync::OnceLock::new(),
        }
    }

    /// Sends the events plugins emit to `relay` too (the first caller
    /// wins: a host joins one cluster).
    pub fn relay_to(&self, relay: Arc<dyn EventRelay>) {
        let _ = self.relay.set(relay);
    }

    /// Hands `event` to the relay, if there is one, unless it is the
    /// host's own (emitted by `host`, or a reserved name: those describe
    /// this host only) or its cascade is already too deep to deliver.
    pub fn relay_out(&self, event: &BusEvent) {
        let Some(relay) = self.relay.get() else {
            return;
        };
        let depth = nesting().depth;
        if event.source == "host" || is_reserved(&event.name) || depth >= MAX_NESTING {
            return;
        }
        relay.relay(event, depth);
    }

    /// Subscribes to events whose name matches `pattern` (exact, or a prefix
    /// ending in `*`); returns the subscription id.
    pub fn subscribe(&self, pattern: &str, listener: Listener) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Subscriber {
                id,
                pattern: pattern.to_string(),
                listener,
            });
        id
    }

    /// Ends a subscription; returns whether it existed. With `owner`, only
    /// that plugin's subscription is removed.
    pub fn unsubscribe(&self, id: u64, owner: Option<&str>) -> bool {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let before = subscribers.len();
        subscribers.retain(|s| {
            let owned = match (&s.listener, owner) {
                (_, None) => true,
                (Listener::Plugin(plugin, _), Some(owner)) => plugin == owner,
                (Listener::Host(_), Some(_)) => false,
            };
            !(s.id == id && owned)
        });
        subscribers.len() != before
    }

    /// Removes every subscription of a plugin.
    pub fn unsubscribe_plugin(&self, plugin: &str) {
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| !matches!(&s.listener, Listener::Plugin(p, _) if p == plugin));
    }

    /// Removes every subscription of one generation of a plugin.
    pub fn unsubscribe_generation(&self, plugin: &str, generation: u64) {
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| !matches!(&s.listener, Listener::Plugin(p, g) if p == plugin && *g == generation));
    }

    /// Whether anyone would receive an event of this name: a subscriber whose
    /// pattern matches, or a live stream. Lets emitters skip building a
    /// payload nobody reads.
    pub fn is_observed(&self, name: &str) -> bool {
        self.tap.receiver_count() > 0
            || self
                .subscribers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|s| matches(&s.pattern, name))
    }

    /// A live stream of every event, for observers such as the HTTP API.
    pub fn tap(&self) -> broadcast::Receiver<BusEvent> {
        self.tap.subscribe()
    }

    /// Delivers `event` to every matching subscriber. `deliver_to_plugin` runs
    /// a plugin's handler. Returns the handlers that failed.
    pub fn emit(
        &self,
        event: &BusEvent,
        deliver_to_plugin: impl Fn(&str, u64, u64, &BusEvent) -> Result<(), CallError>,
    ) -> Vec<DeliveryFailure> {
        let outer = nesting();
        if outer.depth >= MAX_NESTING {
            return self.cut(
                event,
                format!("events nested more than {MAX_NESTING} deep (a handler loop?)"),
            );
        }
        if self.tap.receiver_count() > 0 {
            let _ = self.tap.send(event.clone());
        }
        let targets: Vec<Subscriber> = self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| matches(&s.pattern, &event.name))
            .cloned()
            .collect();
        let deliveries = outer.deliveries.clone().unwrap_or_default();
        let reached = deliveries.fetch_add(targets.len() as u32, Ordering::Relaxed);
        if reached.saturating_add(targets.len() as u32) > MAX_DELIVERIES {
            return self.cut(
                event,
                format!(
                    "its cascade reached more than {MAX_DELIVERIES} handlers (a handler that \
                     emits more events than it handles?)"
                ),
            );
        }
        NESTING.with(|n| {
            *n.borrow_mut() = Nesting {
                depth: outer.depth + 1,
                deliveries: Some(deliveries),
            }
        });
        let mut failures = Vec::new();
        for subscriber in targets {
            // Whether the failure is a fault (a missed deadline, a panic),
            // which the registry's fault funnel says once (`faults.rs`).
            let outcome = match &subscriber.listener {
                Listener::Plugin(plugin, generation) => {
                    deliver_to_plugin(plugin, *generation, subscriber.id, event).map_err(|e| {
                        let fault = super::faults::FaultCause::of_call(e.kind).is_some();
                        (fault, e.into())
                    })
                }
                Listener::Host(handler) => handler(event).map_err(|e| (false, e)),
            };
            if let Err((fault, error)) = outcome {
                if !fault {
                    tracing::warn!(event = %event.name, subscription = subscriber.id, "event handler failed: {error}");
                }
                failures.push(DeliveryFailure {
                    subscription: subscriber.id,
                    error: error.to_string(),
                    cut: false,
                });
            }
        }
        NESTING.with(|n| *n.borrow_mut() = outer);
        failures
    }

    /// An event not delivered because its cascade crossed a bound: reported
    /// as the one failure of the emit (the registry counts it and says it
    /// in the log, once per emitter: `registry/faults.rs`).
    fn cut(&self, event: &BusEvent, why: String) -> Vec<DeliveryFailure> {
        let error = format!("event '{}' not delivered: {why}", event.name);
        vec![DeliveryFailure {
            subscription: 0,
            error,
            cut: true,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn event(name: &str) -> BusEvent {
        BusEvent {
            name: name.into(),
            source: "host".into(),
            payload: Value::Null,
        }
    }

    #[test]
    fn a_failing_handler_does_not_stop_the_others() {
        let bus = EventBus::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |tag: &'static str| {
            let seen = Arc::clone(&seen);
            Listener::Host(Arc::new(move |e: &BusEvent| {
                seen.lock().unwrap().push(format!("{tag}:{}", e.name));
                Ok(())
            }))
        };
        bus.subscribe("a:*", record("first"));
        bus.subscribe("a:x", Listener::Host(Arc::new(|_| Err("boom".into()))));
        bus.subscribe("*", record("last"));
        bus.subscribe("b", record("never"));
        let failures = bus.emit(&event("a:x"), |_, _, _, _| Ok(()));
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].error, "boom");
        assert_eq!(*seen.lock().unwrap(), vec!["first:a:x", "last:a:x"]);
    }

    #[test]
    fn unsubscribe_stops_delivery_and_respects_the_owner() {
        let bus = EventBus::new();
        let id = bus.subscribe("x", Listener::Plugin("p".into(), 1));
        assert!(!bus.unsubscribe(id, Some("other")));
        let delivered = Mutex::new(0);
        bus.emit(&event("x"), |_, _, _, _| {
            *delivered.lock().unwrap() += 1;
            Ok(())
        });
        assert!(bus.unsubscribe(id, Some("p")));
        bus.emit(&event("x"), |_, _, _, _| {
            *delivered.lock().unwrap() += 1;
            Ok(())
        });
        assert_eq!(*delivered.lock().unwrap(), 1);
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, u32)>>);

    impl EventRelay for Recorded {
        fn relay(&self, event: &BusEvent, depth: u32) {
            self.0.lock().unwrap().push((event.name.clone(), depth));
        }
    }

    #[test]
    fn only_plugin_events_are_relayed_and_their_depth_travels_with_them() {
        let bus = EventBus::new();
        let relay = Arc::new(Recorded::default());
        bus.relay_to(Arc::clone(&relay) as Arc<dyn EventRelay>);
        let from = |source: &str, name: &str| BusEvent {
            name: name.into(),
            source: source.into(),
            payload: Value::Null,
        };
        bus.relay_out(&from("host", "custom:thing"));
        bus.relay_out(&from("weather", "plugin:loaded"));
        bus.relay_out(&from("weather", "weather:reported"));
        nested(Nesting::from_elsewhere(3), || {
            bus.relay_out(&from("notes", "notes:remembered"))
        });
        nested(Nesting::from_elsewhere(MAX_NESTING), || {
            bus.relay_out(&from("notes", "notes:too-deep"))
        });
        assert_eq!(
            *relay.0.lock().unwrap(),
            vec![
                ("weather:reported".to_string(), 0),
                ("notes:remembered".to_string(), 3)
            ]
        );
    }

    #[test]
    fn a_handler_that_emits_does_not_deadlock_and_loops_are_bounded() {
        let bus = Arc::new(EventBus::new());
        let count = Arc::new(AtomicU64::new(0));
        let inner_bus = Arc::clone(&bus);
        let inner_count = Arc::clone(&count);
        bus.subscribe(
            "loop",
            Listener::Host(Arc::new(move |e| {
                inner_count.fetch_add(1, Ordering::SeqCst);
                let failures = inner_bus.emit(e, |_, _, _, _| Ok(()));
                if failures.is_empty() {
                    Ok(())
                } else {
                    Err(failures[0].error.clone().into())
                }
            })),
        );
        let failures = bus.emit(&event("loop"), |_, _, _, _| Ok(()));
        assert_eq!(count.load(Ordering::SeqCst), u64::from(MAX_NESTING));
        assert_eq!(failures.len(), 1);
    }
}
