//! What a plugin sees of a message: its text, and one JSON object with the
//! rest of its context (sender, permissions, metadata, the composed state,
//! and which of its values are stale).

use super::InboundMessage;
use crate::plugin::MessageRef;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, PoisonError};

/// The last context composed with a state, reused for the next message
/// from the same sender with the same permissions and metadata while the
/// state is the same: a message then costs no copy of a large state.
#[derive(Default)]
pub struct ContextCache(Mutex<Option<CachedContext>>);

struct CachedContext {
    sender: String,
    permissions: Vec<String>,
    metadata: Map<String, Value>,
    state: Arc<str>,
    json: Arc<str>,
}

impl ContextCache {
    /// The context of `message` with `state` (no stale values).
    pub(super) fn compose(&self, message: &InboundMessage, state: &Arc<str>) -> Arc<str> {
        let mut cached = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cached.as_ref() {
            if Arc::ptr_eq(&cached.state, state)
                && cached.sender == message.sender
                && cached.permissions == message.permissions
                && cached.metadata == message.metadata
            {
                return Arc::clone(&cached.json);
            }
        }
        let json: Arc<str> = Arc::from(context_json(message, Some(state), &[]));
        *cached = Some(CachedContext {
            sender: message.sender.clone(),
            permissions: message.permissions.clone(),
            metadata: message.metadata.clone(),
            state: Arc::clone(state),
            json: Arc::clone(&json),
        });
        json
    }
}

/// The JSON context plugins see with a message: sender, permissions and
/// metadata, then (once providers ran) the composed state, already JSON,
/// and the names of the providers whose values in it are stale (served
/// from their cache because the provider could not answer in time).
pub(super) fn context_json(
    message: &InboundMessage,
    state_json: Option<&str>,
    stale_providers: &[&str],
) -> String {
    let mut context = json!({
        "sender": message.sender,
        "permissions": message.permissions,
        "metadata": message.metadata,
    })
    .to_string();
    if let Some(state) = state_json {
        context.pop();
        context.push_str(",\"state\":");
        context.push_str(state);
        if !stale_providers.is_empty() {
            context.push_str(",\"stale_providers\":");
            context.push_str(&json!(stale_providers).to_string());
        }
        context.push('}');
    }
    context
}

pub(super) fn view_of<'a>(message: &'a InboundMessage, context_json: &'a str) -> MessageRef<'a> {
    MessageRef {
        id: &message.id,
        text: &message.text,
        context_json,
    }
}

/// A message's parts copied out, for a call that runs on another thread
/// and may outlive the message (a background refresh).
pub(super) struct OwnedMessage {
    id: String,
    text: String,
    context: String,
}

impl OwnedMessage {
    pub(super) fn of(message: &InboundMessage, context: &str) -> Self {
        Self {
            id: message.id.clone(),
            text: message.text.clone(),
            context: context.to_string(),
        }
    }

    pub(super) fn view(&self) -> MessageRef<'_> {
        MessageRef {
            id: &self.id,
            text: &self.text,
            context_json: &self.context,
        }
    }
}
