//! Plugin events crossing hosts: an event a plugin emits here reaches the
//! subscribed plugins of every other host of the agent.
//!
//! The registry hands each plugin event to [`Relay`] as it is emitted
//! (host events, `action:*`, `plugin:*`, `host:*` and those the host emits
//! itself, never); a task publishes them in that order on the agent's
//! events subject, with core NATS. Every host subscribes to the subject and
//! delivers the events of the other hosts to its own subscribers, one at a
//! time, in the order they arrive (NATS keeps one publisher's order), with
//! the source `plugin@host`. Delivery across hosts is at most once: a host
//! cut off from the server misses what was published meanwhile, and an
//! event emitted faster than the server takes it is dropped once
//! [`QUEUE`] events wait (the log says so).

use super::{ClusterError, ClusterNode};
use crate::registry::events::{is_reserved, BusEvent, EventRelay};
use crate::PluginHost;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many events may wait to be published before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Who emitted an event that crossed hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The plugin that emitted it.
    pub plugin: String,
    /// The host it runs on.
    pub host: String,
}

/// An event as it crosses hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedEvent {
    /// The event's name.
    pub name: String,
    /// Its payload.
    pub payload: Value,
    /// Who emitted it, where.
    pub source: Source,
    /// How deep in a cascade of events it was emitted, so that handlers
    /// emitting across hosts stay bounded as on one host.
    #[serde(default)]
    pub depth: u32,
}

impl RelayedEvent {
    /// The event as this host's subscribers see it: its source is
    /// `plugin@host`.
    fn into_bus_event(self) -> BusEvent {
        BusEvent {
            name: self.name,
            source: format!("{}@{}", self.source.plugin, self.source.host),
            payload: self.payload,
        }
    }
}

/// The registry's way out to the other hosts.
struct Relay {
    host_name: String,
    queue: mpsc::Sender<Vec<u8>>,
    dropping: AtomicBool,
}

impl EventRelay for Relay {
    fn relay(&self, event: &BusEvent, depth: u32) {
        let relayed = RelayedEvent {
            name: event.name.clone(),
            payload: event.payload.clone(),
            source: Source {
                plugin: event.source.clone(),
                host: self.host_name.clone(),
            },
            depth,
        };
        let Ok(body) = serde_json::to_vec(&relayed) else {
            return;
        };
        match self.queue.try_send(body) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("events reach the other hosts again");
                }
            }
            // The cluster stopped: this host leaves, nothing to say.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        event = event.name,
                        "{QUEUE} events wait for the NATS server: this one and the next are not \
                         sent to the other hosts until it catches up"
                    );
                }
            }
        }
    }
}

/// Starts relaying events between this host and the others.
pub(super) async fn start(
    node: &Arc<ClusterNode>,
    host: &Arc<PluginHost>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    let subject = node.names.events_subject.clone();
    let mut incoming = node.subscribe(&subject).await?;
    let (queue, mut outgoing) = mpsc::channel::<Vec<u8>>(QUEUE);
    host.relay_events_to(Arc::new(Relay {
        host_name: node.host_name.clone(),
        queue,
        dropping: AtomicBool::new(false),
    }));
    let client = node.client.clone();
    let publish_to = subject.clone();
    let publishing = tokio::spawn(async move {
        while let Some(body) = outgoing.recv().await {
            if let Err(error) = client.publish(publish_to.clone(), body.into()).await {
                tracing::warn!("an event was not sent to the other hosts: {error}");
            }
        }
    });
    let own = node.host_name.clone();
    let host = Arc::clone(host);
    Ok(tokio::spawn(async move {
        // Aborting this task ends the publisher too.
        let _publishing = AbortOnDrop(publishing);
        while let Some(message) = incoming.next().await {
            let event: RelayedEvent = match serde_json::from_slice(&message.payload) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!("not an event on {subject}, dropped: {error}");
                    continue;
                }
            };
            if event.source.host == own {
                continue;
            }
            if event.source.plugin == "host" || is_reserved(&event.name) {
                tracing::warn!(
                    event = event.name,
                    from = event.source.host,
                    "a host event on {subject}: hosts never relay their own events, dropped"
                );
                continue;
            }
            let depth = event.depth;
            let bus_event = event.into_bus_event();
            let host = Arc::clone(&host);
            // One at a time, in arrival order; plugin code runs on the
            // blocking pool.
            let delivered =
                tokio::task::spawn_blocking(move || host.deliver_from_elsewhere(bus_event, depth))
                    .await;
            if let Err(error) = delivered {
                tracing::warn!("delivering an event from another host failed: {error}");
            }
        }
    }))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_event_names_its_plugin_and_host() {
        let relayed = RelayedEvent {
            name: "notes:remembered".into(),
            payload: serde_json::json!({"id": 1}),
            source: Source {
                plugin: "notes".into(),
                host: "web-2".into(),
            },
            depth: 0,
        };
        let body = serde_json::to_string(&relayed).expect("serializes");
        let back: RelayedEvent = serde_json::from_str(&body).expect("reads back");
        let event = back.into_bus_event();
        assert_eq!(event.source, "notes@web-2");
        assert_eq!(event.name, "notes:remembered");
        assert_eq!(event.payload["id"], 1);
    }
}
