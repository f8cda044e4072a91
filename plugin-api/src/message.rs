//! A message as plugin code sees it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// Everything about a message besides its text, as the host sends it (one
/// JSON object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Context {
    /// Who sent the message.
    pub sender: String,
    /// The permissions the operator gave the sender (from the `[senders]`
    /// table; what the client claims when the host's config has none).
    pub permissions: Vec<String>,
    /// Free-form metadata from the client.
    pub metadata: Map<String, Value>,
    /// The agent's state for this message, composed from providers: provider
    /// name to value.
    pub state: Map<String, Value>,
    /// Providers whose value in `state` is stale: the provider could not
    /// answer in time (or is backed off after failing), so the host served
    /// its last cached value instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_providers: Vec<String>,
}

/// A message handed to an action, provider or evaluator.
///
/// Inside the host it borrows the host's buffers; the context is parsed only
/// when plugin code first asks for it, so a `validate` that looks only at the
/// text costs no parsing.
///
/// In unit tests, build one with [`Message::new`] and the `with_*` builders:
///
/// ```
/// use agent_host_plugin_sdk::{json, Message};
///
/// let msg = Message::new("forecast for London?")
///     .with_id("m-1")
///     .with_sender("alice")
///     .with_permission("data:analyze")
///     .with_state("weather-context", json!({"temperature": 14.2}))
///     .with_metadata("channel", json!("cli"));
/// assert_eq!(msg.id(), "m-1");
/// assert_eq!(msg.text(), "forecast for London?");
/// assert_eq!(msg.sender(), "alice");
/// assert!(msg.sender_has("data:analyze"));
/// assert_eq!(msg.state("weather-context").unwrap()["temperature"], 14.2);
/// assert_eq!(msg.metadata()["channel"], "cli");
///
/// // As the host passes it: the context is JSON, parsed on first use.
/// let raw = Message::from_parts("m-2", "hi", r#"{"sender":"bob","permissions":[]}"#);
/// assert_eq!(raw.sender(), "bob");
/// assert!(raw.state("weather-context").is_none());
/// ```
#[derive(Debug)]
pub struct Message<'a> {
    id: &'a str,
    text: &'a str,
    context_json: &'a str,
    // Boxed so that a message nobody asks the context of stays a few words
    // long: building and dropping it is on the path of every `validate`.
    context: OnceLock<Box<Context>>,
}

impl<'a> Message<'a> {
    /// A message with the given text, an empty context and id `test`; add
    /// context with the builder methods. Meant for unit tests.
    pub fn new(text: &'a str) -> Self {
        Self::with_context(text, Context::default())
    }

    /// A message with the given text and context.
    pub fn with_context(text: &'a str, context: Context) -> Self {
        Self {
            id: "test",
            text,
            context_json: "",
            context: OnceLock::from(Box::new(context)),
        }
    }

    /// A message borrowing raw parts as the host passes them: the context is
    /// a JSON object, parsed on first use.
    pub fn from_parts(id: &'a str, text: &'a str, context_json: &'a str) -> Self {
        Self {
            id,
            text,
            context_json,
            context: OnceLock::new(),
        }
    }

    /// Sets the message id.
    pub fn with_id(mut self, id: &'a str) -> Self {
        self.id = id;
        self
    }

    /// Sets the sender.
    pub fn with_sender(mut self, sender: impl Into<String>) -> Self {
        self.context_mut().sender = sender.into();
        self
    }

    /// Adds a permission held by the sender.
    pub fn with_permission(mut self, permission: impl Into<String>) -> Self {
        self.context_mut().permissions.push(permission.into());
        self
    }

    /// Sets a state value, as a provider would.
    pub fn with_state(mut self, provider: impl Into<String>, value: Value) -> Self {
        self.context_mut().state.insert(provider.into(), value);
        self
    }

    /// Sets a metadata value.
    pub fn with_metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.context_mut().metadata.insert(key.into(), value);
        self
    }

    fn context_mut(&mut self) -> &mut Context {
        self.context();
        self.context
            .get_mut()
            .expect("context was just initialised")
    }

    /// The message's id.
    pub fn id(&self) -> &str {
        self.id
    }

    /// The message's text.
    pub fn text(&self) -> &str {
        self.text
    }

    /// The message's context, parsed on first use. A context the host sent
    /// malformed reads as empty.
    pub fn context(&self) -> &Context {
        self.context.get_or_init(|| {
            Box::new(if self.context_json.is_empty() {
                Context::default()
            } else {
                serde_json::from_str(self.context_json).unwrap_or_default()
            })
        })
    }

    /// Who sent the message.
    pub fn sender(&self) -> &str {
        &self.context().sender
    }

    /// Whether the sender holds `permission` (an exact match).
    pub fn sender_has(&self, permission: &str) -> bool {
        self.context().permissions.iter().any(|p| p == permission)
    }

    /// Client metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.context().metadata
    }

    /// The state value a provider supplied for this message, if any, by the
    /// provider's name. Action handlers and evaluators see the state;
    /// `validate` does too. Providers themselves get a message without it.
    pub fn state(&self, provider: &str) -> Option<&Value> {
        self.context().state.get(provider)
    }

    /// Whether the state value of `provider` is stale: its last cached
    /// value, served because the provider could not answer in time.
    pub fn is_stale(&self, provider: &str) -> bool {
        self.context().stale_providers.iter().any(|p| p == provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_parsed_lazily_from_json() {
        let json = r#"{"sender":"alice","permissions":["a"],"state":{"clock":1}}"#;
        let message = Message::from_parts("m1", "hi", json);
        assert_eq!(message.text(), "hi");
        assert!(message.context.get().is_none());
        assert_eq!(message.sender(), "alice");
        assert!(message.sender_has("a"));
        assert_eq!(message.state("clock"), Some(&Value::from(1)));
    }

    #[test]
    fn builder_sets_context() {
        let message = Message::new("x").with_sender("bob").with_permission("p");
        assert_eq!(message.sender(), "bob");
        assert!(message.sender_has("p"));
    }
}
