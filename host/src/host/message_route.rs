//! Where a front end's messages go when they are not run by this host's
//! pipeline: in cluster mode, through the agent's stream to whichever host
//! takes them. The facade only knows this trait; `cluster` implements it,
//! so no lower layer imports the cluster.

use crate::pipeline::{InboundMessage, Reply};
use std::future::Future;
use std::pin::Pin;

/// The reply a route waits for, once it arrives.
pub type RoutedReply<'a> = Pin<Box<dyn Future<Output = Result<Reply, RouteError>> + Send + 'a>>;

/// A way for front ends' messages to be answered elsewhere than in this
/// host's pipeline. Installed once, with [`PluginHost::route_messages`];
/// [`PluginHost::answer`] keeps running messages here.
///
/// [`PluginHost::route_messages`]: crate::PluginHost::route_messages
/// [`PluginHost::answer`]: crate::PluginHost::answer
pub trait MessageRoute: Send + Sync {
    /// Sends `message` (its sender already set by the front end; an empty
    /// id is given one) where it is answered, and waits for its reply.
    fn answer(&self, message: InboundMessage) -> RoutedReply<'_>;
}

/// Why a routed message has no reply.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The message was handed over but its reply did not come in time. It
    /// may still be answered: the same id sent again returns that reply
    /// without running the message twice.
    #[error(
        "no reply to message '{id}' within {waited_ms} ms; it may still be answered: send it \
         again with the same id to get its reply (it does not run twice)"
    )]
    TimedOut {
        /// The message's id.
        id: String,
        /// How long the front end waited.
        waited_ms: u64,
    },
    /// The message could not be handed over (the server is unreachable or
    /// refused it); it was not run.
    #[error("message '{id}' could not be handed to the cluster: {cause}")]
    Unavailable {
        /// The message's id.
        id: String,
        /// The client's or the server's error.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RouteError {
    /// The id of the message without a reply.
    pub fn id(&self) -> &str {
        match self {
            RouteError::TimedOut { id, .. } | RouteError::Unavailable { id, .. } => id,
        }
    }

    /// The error as a reply, for a front end that answers with replies
    /// only (a batch): not ok, the error its one error.
    pub fn into_reply(self) -> Reply {
        Reply {
            id: self.id().to_string(),
            text: "Sorry, something went wrong.".to_string(),
            errors: vec![self.to_string()],
            ..Reply::default()
        }
    }
}
