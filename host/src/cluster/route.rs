//! A front end's message into the cluster: published to the agent's
//! stream, its reply awaited on the message's reply subject.
//!
//! For each message ([`ClusterRoute`]'s `answer`): an id when it has none
//! (this host's name, the time it started and a counter, so unique across
//! hosts and restarts); a subscription to the reply subject, taken FIRST,
//! so a reply published from now on is not missed; the message published
//! to the inbox through JetStream with a `Nats-Msg-Id` header (the server
//! drops a second publish of the same id within the stream's duplicate
//! window) and its publish acknowledgement awaited; then the reply,
//! awaited at most `reply_timeout_ms`.
//!
//! Only a publish the server calls a duplicate looks in the replies
//! bucket: the first run of that id may be over (its reply is kept there)
//! or still running (its reply comes to the subscription). A retry after
//! the duplicate window is a new publish, and the host that takes it finds
//! the kept reply before running anything. A new message thus costs no
//! look in the bucket on its way in.

use super::names::message_key;
use super::replies::Replies;
use super::{ClusterError, ClusterNode};
use crate::host::{MessageRoute, RouteError, RoutedReply};
use crate::pipeline::{InboundMessage, Reply};
use crate::PluginHost;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header JetStream deduplicates publishes by.
const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// Sends the front ends' messages of `host` through the cluster.
pub(super) async fn install(
    node: &Arc<ClusterNode>,
    host: &Arc<PluginHost>,
) -> Result<(), ClusterError> {
    let replies = Replies::open(node).await?;
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    host.route_messages(Arc::new(ClusterRoute {
        node: Arc::clone(node),
        replies,
        id_prefix: format!("{}-{started_ms:x}", node.host_name),
        next_id: AtomicU64::new(1),
    }));
    Ok(())
}

/// The route of one host's front ends into its agent's stream.
struct ClusterRoute {
    node: Arc<ClusterNode>,
    replies: Replies,
    /// This host's name and the time it started, in ms (hex).
    id_prefix: String,
    next_id: AtomicU64,
}

impl ClusterRoute {
    /// A message's id, unique across the hosts and restarts of the agent.
    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }

    /// The steps of the module's header, for one message with an id.
    async fn send(&self, message: InboundMessage) -> Result<Reply, RouteError> {
        let id = message.id.clone();
        let unavailable =
            |cause: Box<dyn std::error::Error + Send + Sync>| RouteError::Unavailable {
                id: id.clone(),
                cause,
            };
        let key = message_key(&id);
        let names = &self.node.names;
        let mut replies = self
            .node
            .client
            .subscribe(names.reply_subject(&key))
            .await
            .map_err(|e| unavailable(Box::new(e)))?;
        let payload = serde_json::to_vec(&message).map_err(|e| unavailable(Box::new(e)))?;
        let mut headers = async_nats::HeaderMap::new();
        // The key, not the id: an id is the client's and may hold any
        // character, a header value may not.
        headers.insert(MESSAGE_ID_HEADER, key.as_str());
        let acknowledged = self
            .node
            .jetstream
            .publish_with_headers(names.inbox_subject.clone(), headers, payload.into())
            .await
            .map_err(|e| unavailable(Box::new(e)))?
            .await
            .map_err(|e| unavailable(Box::new(e)))?;
        if acknowledged.duplicate {
            tracing::debug!(
                id,
                "sent again within the duplicate window; its reply is kept or coming"
            );
            match self.replies.get(&key).await {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                // The first run's reply still comes to the subscription.
                Err(error) => tracing::warn!("{error}"),
            }
        }
        let waited_ms = self.node.settings.reply_timeout_ms;
        let timed_out = || RouteError::TimedOut {
            id: id.clone(),
            waited_ms,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(waited_ms);
        loop {
            let published = tokio::time::timeout_at(deadline, replies.next())
                .await
                .map_err(|_| timed_out())?
                .ok_or_else(|| {
                    unavailable("the connection to the server closed before the reply came".into())
                })?;
            match serde_json::from_slice::<Reply>(&published.payload) {
                Ok(reply) => return Ok(reply),
                Err(error) => tracing::warn!(
                    id,
                    "a publish on the reply subject of message '{id}' is no reply, skipped: \
                     {error}"
                ),
            }
        }
    }
}

impl MessageRoute for ClusterRoute {
    fn answer(&self, mut message: InboundMessage) -> RoutedReply<'_> {
        if message.id.is_empty() {
            message.id = self.new_id();
        }
        Box::pin(self.send(message))
    }
}
