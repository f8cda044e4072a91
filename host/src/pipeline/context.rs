//! What a plugin sees of a message: its text, and one JSON object with the
//! rest of its context (sender, permissions, metadata, the composed state).

use super::InboundMessage;
use crate::plugin::MessageRef;
use serde_json::json;

/// The JSON context plugins see with a message: sender, permissions and
/// metadata, then (once providers ran) the composed state, already JSON.
pub(super) fn context_json(message: &InboundMessage, state_json: Option<&str>) -> String {
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
/// and may outlive the message (a timed-out handler, a background refresh).
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
