//! The agent's reply to one message, as its JSON line carries it.

use serde_json::Value;

/// The reply to one message: the fields a test reads most, and the whole
/// JSON line in [`Reply::json`] (`data`, `metadata`, `evaluations`,
/// `timings`, as `docs/operating.md` of agent-host lists them).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The reply text.
    pub text: String,
    /// Whether no call failed while the message was served.
    pub ok: bool,
    /// The plugin whose action answered, if one did.
    pub plugin: Option<String>,
    /// The action that answered, if one did.
    pub action: Option<String>,
    /// What failed, one line each, naming the plugin and the entry point
    /// (`plugin 'x': action 'Y' handler: ...`).
    pub errors: Vec<String>,
    /// The whole reply.
    pub json: Value,
}

impl Reply {
    /// Reads a reply line; `None` when it is no reply.
    pub(crate) fn from_json(json: Value) -> Option<Self> {
        let text = json.get("text")?.as_str()?.to_string();
        let answered = |field: &str| {
            json.get("action")
                .and_then(|action| action.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Some(Self {
            ok: json.get("ok").and_then(Value::as_bool).unwrap_or(false),
            plugin: answered("plugin"),
            action: answered("action"),
            errors: json
                .get("errors")
                .and_then(Value::as_array)
                .map(|errors| {
                    errors
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            text,
            json,
        })
    }
}
