//! The shared durable consumer: every host takes the agent's messages from
//! it, so each message is handled by one host, and acknowledges a message
//! only after its reply is kept and published.
//!
//! A host pulls while its gate (`ClusterNode::taking_messages`) is open, at
//! most `max_in_flight` messages at once, in pull requests that expire
//! after [`PULL_EXPIRES`]. For each message ([`handle`]): a payload that is
//! no `InboundMessage` is acknowledged and logged (never redelivered for
//! ever); a reply already kept for its id (a redelivery, a retry) is
//! published again and the message acknowledged; otherwise this host's
//! pipeline runs it ([`PluginHost::answer_here`]), the reply is kept in
//! the replies bucket, published to the message's reply subject, and only
//! then the message is acknowledged, the server confirming the
//! acknowledgement. While it runs past half of `ack_wait_ms` the host tells
//! the server it is still at it, so it is not handed to another host. A
//! host that dies before the acknowledgement leaves the message to another
//! host once `ack_wait_ms` has passed.

use super::names::message_key;
use super::replies::Replies;
use super::{ClusterError, ClusterNode};
use crate::pipeline::{Answered, InboundMessage};
use crate::PluginHost;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// How long the server keeps the ids of published messages to drop a
/// second publish of one (a front end's retry).
pub(super) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long one pull request waits for messages: also how long a stopping
/// host may still take the messages of its last request.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The most messages the agent's hosts may hold unacknowledged together.
const MAX_ACK_PENDING: i64 = 10_000;

/// How long a host waits before pulling again after the server refused.
const RETRY_PULL: Duration = Duration::from_millis(500);

/// The consumer while it runs.
pub(super) struct Consumer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    grace: Duration,
}

impl Consumer {
    /// Stops pulling and waits for the messages in flight to be answered
    /// and acknowledged, at most the host's `shutdown_grace_ms`; the ones
    /// still running then are left to another host (not acknowledged).
    pub(super) async fn stop(self) {
        self.stop.send_replace(true);
        let mut task = self.task;
        if tokio::time::timeout(self.grace, &mut task).await.is_err() {
            tracing::warn!(
                "messages still running {} ms after the cluster stopped: left unacknowledged, \
                 another host will take them",
                self.grace.as_millis()
            );
            task.abort();
        }
    }
}

/// Creates or opens the inbox stream and the shared consumer, and starts
/// taking messages (while the gate is open).
pub(super) async fn start(
    node: &Arc<ClusterNode>,
    host: &Arc<PluginHost>,
) -> Result<Consumer, ClusterError> {
    let consumer = open(node).await?;
    let replies = Replies::open(node).await?;
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(take_messages(
        Arc::clone(node),
        Arc::clone(host),
        consumer,
        replies,
        stopping,
    ));
    Ok(Consumer {
        stop,
        task,
        grace: Duration::from_millis(host.settings().shutdown_grace_ms),
    })
}

/// The inbox stream (work queue, file storage, the duplicate window) and
/// the durable pull consumer every host shares. A consumer that exists
/// keeps the settings it was created with.
async fn open(node: &ClusterNode) -> Result<PullConsumer, ClusterError> {
    let names = &node.names;
    let setup = |what: String| {
        let url = node.settings.url.clone();
        move |cause: String| ClusterError::Setup { url, what, cause }
    };
    let stream = node
        .jetstream
        .get_or_create_stream(stream::Config {
            name: names.inbox_stream.clone(),
            subjects: vec![names.inbox_subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..stream::Config::default()
        })
        .await
        .map_err(|e| setup(format!("the inbox stream {}", names.inbox_stream))(e.to_string()))?;
    let ack_wait = Duration::from_millis(node.settings.ack_wait_ms);
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &names.consumer,
            pull::Config {
                durable_name: Some(names.consumer.clone()),
                description: Some(format!("the hosts of agent {}", names.agent)),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1,
                max_ack_pending: MAX_ACK_PENDING,
                ..pull::Config::default()
            },
        )
        .await
        .map_err(|e| setup(format!("the consumer {}", names.consumer))(e.to_string()))?;
    let mut consumer = consumer;
    if let Ok(info) = consumer.info().await {
        if info.config.ack_wait != ack_wait {
            tracing::warn!(
                "the shared consumer {} keeps the ack_wait it was created with ({} ms), not \
                 this host's ack_wait_ms ({} ms)",
                names.consumer,
                info.config.ack_wait.as_millis(),
                ack_wait.as_millis()
            );
        }
    }
    Ok(consumer)
}

/// Pulls messages while the gate is open, until stopped (or the
/// [`Consumer`] is dropped); then waits for the messages in flight.
async fn take_messages(
    node: Arc<ClusterNode>,
    host: Arc<PluginHost>,
    consumer: PullConsumer,
    replies: Replies,
    mut stopping: watch::Receiver<bool>,
) {
    let max_in_flight = node.settings.max_in_flight;
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut gate = node.taking_messages.subscribe();
    while !*stopping.borrow() {
        // Closed gate: wait for it to open, or for the stop.
        if !*gate.borrow_and_update() {
            tokio::select! {
                changed = gate.changed() => if changed.is_err() { break },
                changed = stopping.changed() => if changed.is_err() { break },
            }
            continue;
        }
        // Every slot busy: wait for one, or for the stop.
        let first = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            changed = stopping.changed() => if changed.is_err() { break } else { continue },
        };
        let mut free = vec![first];
        while let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            free.push(slot);
        }
        let batch = consumer
            .batch()
            .max_messages(free.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!("cannot pull from the shared consumer: {error}");
                tokio::time::sleep(RETRY_PULL).await;
                continue;
            }
        };
        // The request's messages are taken until it ends (its count or its
        // expiry), even when the gate closes or the host stops meanwhile.
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => {
                    let Some(slot) = free.pop() else {
                        // Cannot happen: the request asked for no more.
                        break;
                    };
                    let node = Arc::clone(&node);
                    let host = Arc::clone(&host);
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        handle(&node, &host, &replies, message).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::debug!("a pull from the shared consumer ended: {error}");
                    break;
                }
            }
        }
    }
    // Every slot back: the messages in flight are answered.
    let _ = slots.acquire_many(max_in_flight as u32).await;
}

/// One message taken: see the module's header.
async fn handle(node: &ClusterNode, host: &PluginHost, replies: &Replies, message: Message) {
    let inbound: InboundMessage = match serde_json::from_slice(&message.payload) {
        Ok(inbound) => inbound,
        Err(error) => {
            tracing::warn!(
                subject = %message.subject,
                "a message on the inbox is no message ({error}); acknowledged and dropped"
            );
            acknowledge(&message, "").await;
            return;
        }
    };
    if inbound.id.is_empty() {
        tracing::warn!("a message on the inbox has no id; acknowledged and dropped");
        acknowledge(&message, "").await;
        return;
    }
    let id = inbound.id.clone();
    tracing::debug!(id, "took message '{id}'");
    let key = message_key(&id);
    let reply_subject = node.names.reply_subject(&key);
    match replies.get(&key).await {
        Ok(Some(reply)) => {
            tracing::debug!(id, "answered before: its reply is published again");
            match serde_json::to_vec(&reply) {
                Ok(payload) => publish_reply(node, &id, reply_subject, payload.into()).await,
                Err(error) => tracing::warn!(id, "cannot write the reply of '{id}': {error}"),
            }
            acknowledge(&message, &id).await;
            return;
        }
        Ok(None) => {}
        Err(error) => {
            // Running it could run it twice: leave it for a moment.
            tracing::warn!(id, "{error}; message '{id}' is taken again later");
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_PULL))).await;
            return;
        }
    }
    let mut reply = match still_at_it(node, &message, host.answer_here(inbound)).await {
        Answered::Served(reply) => reply,
        Answered::ShuttingDown(_) => {
            // Not run: another host takes it at once.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
    };
    reply.host = Some(node.host_name.clone());
    let payload: tokio_util::bytes::Bytes = match serde_json::to_vec(&reply) {
        Ok(payload) => payload.into(),
        Err(error) => {
            tracing::warn!(id, "cannot write the reply of '{id}': {error}");
            acknowledge(&message, &id).await;
            return;
        }
    };
    if let Err(error) = replies.put(&key, payload.clone()).await {
        tracing::warn!(id, "{error}; a retry of '{id}' will run it again");
    }
    publish_reply(node, &id, reply_subject, payload).await;
    acknowledge(&message, &id).await;
}

/// Waits for `answer`, telling the server every half `ack_wait` that the
/// message is still being worked on.
async fn still_at_it<T>(
    node: &ClusterNode,
    message: &Message,
    answer: impl std::future::Future<Output = T>,
) -> T {
    let every = Duration::from_millis(node.settings.ack_wait_ms / 2).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(answer);
    loop {
        tokio::select! {
            done = &mut answer => return done,
            _ = ticks.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!("cannot tell the server a message is in progress: {error}");
                }
            }
        }
    }
}

/// Publishes a reply to the subject the front end listens on.
async fn publish_reply(
    node: &ClusterNode,
    id: &str,
    subject: String,
    payload: tokio_util::bytes::Bytes,
) {
    if let Err(error) = node.client.publish(subject, payload).await {
        tracing::warn!(id, "cannot publish the reply of '{id}': {error}");
    }
}

/// Acknowledges a message and waits for the server to confirm it; a
/// failure is logged (the message comes back after `ack_wait`, and its
/// kept reply is published again).
async fn acknowledge(message: &Message, id: &str) {
    match message.double_ack().await {
        Ok(()) => tracing::debug!(id, "acknowledged message '{id}'"),
        Err(error) => tracing::warn!(
            id,
            "cannot acknowledge message '{id}' ({error}); it will be delivered again"
        ),
    }
}
