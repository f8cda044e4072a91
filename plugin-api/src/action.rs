//! Actions: how a plugin responds to a message.

use crate::error::{Error, Result};
use crate::manifest::{ActionSpec, Example, RateLimit, Triggers};
use crate::message::Message;
use crate::middleware::{Call, Component, Layers, Next, Wrap};
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

type Validator = Box<dyn Fn(&Message<'_>) -> bool + Send + Sync>;
type Handler = Box<dyn Fn(&Message<'_>, &Runtime<'_>) -> Result<ActionResult> + Send + Sync>;

/// What an action's handler returns: the reply text, structured data and
/// metadata. The host copies all three into its reply (`text`, `data`,
/// `metadata`).
///
/// ```
/// use agent_host_plugin_sdk::{json, ActionResult};
///
/// let result = ActionResult::text("It is 14.2°C and cloudy in London.")
///     .with_data(json!({"temperature": 14.2, "conditions": "cloudy"}))?
///     .with_metadata("source", "api")
///     .with_metadata("confidence", 0.9);
/// assert_eq!(result.data["temperature"], 14.2);
/// assert_eq!(result.metadata["source"], "api");
///
/// // What crosses to the host: a JSON object with the three fields.
/// let wire = serde_json::to_value(&result)?;
/// assert_eq!(wire["text"], "It is 14.2°C and cloudy in London.");
/// # Ok::<(), agent_host_plugin_sdk::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionResult {
    /// The reply text.
    pub text: String,
    /// Structured data for programmatic clients.
    pub data: Value,
    /// Extra facts about the result (confidence, sources...).
    pub metadata: Map<String, Value>,
}

impl ActionResult {
    /// A result with just a text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Attaches structured data (any `Serialize` value); fails only if the
    /// value cannot be serialized to JSON.
    pub fn with_data(mut self, data: impl Serialize) -> Result<Self> {
        self.data = serde_json::to_value(data)?;
        Ok(self)
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// An action: `validate` decides whether it applies to a message, `handler`
/// answers it. The host runs the handler only after `validate` returned true.
///
/// For each message the host asks every action's `validate`, picks the valid
/// action with the highest [`priority`](Action::priority) (ties go to the
/// plugin earlier in load order, then to the action added first), checks
/// that the sender holds the action's [`permission`](Action::permission)s,
/// checks its [`rate_limit`](Action::rate_limit), then runs its handler on a
/// blocking thread with its [`timeout`](Action::timeout).
///
/// ```
/// use agent_host_plugin_sdk::{Action, ActionResult, Message};
///
/// let action = Action::new("ECHO")
///     .description("Repeats what was said")
///     .priority(1)
///     .validate(|msg| msg.text().starts_with("echo "))
///     .handler(|msg, _rt| Ok(ActionResult::text(&msg.text()[5..])));
/// assert!(action.check(&Message::new("echo hi")));
/// ```
pub struct Action {
    pub(crate) spec: ActionSpec,
    validator: Option<Validator>,
    handler: Option<Handler>,
    pub(crate) layers: Layers<ActionResult>,
}

impl Action {
    /// A new action with a name unique within the plugin, such as `GET_WEATHER`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: ActionSpec {
                name: name.into(),
                description: String::new(),
                examples: Vec::new(),
                priority: 0,
                timeout_ms: None,
                rate_limit: None,
                permissions: Vec::new(),
                triggers: None,
                idempotent: false,
            },
            validator: None,
            handler: None,
            layers: Layers::default(),
        }
    }

    /// Says what the action does.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Adds an example exchange.
    pub fn example(mut self, input: impl Into<String>, output: impl Into<String>) -> Self {
        self.spec.examples.push(Example {
            input: input.into(),
            output: output.into(),
        });
        self
    }

    /// Among the actions that accept a message, the highest priority runs
    /// (default 0). On a tie, the action of the plugin earlier in load order
    /// runs, then the one added first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.spec.priority = priority;
        self
    }

    /// How long the handler may run before the host gives up on it (default:
    /// the host's `action_timeout_ms`, 30 s). When it passes the host cancels
    /// the call ([`Runtime::is_cancelled`] turns true), answers "Sorry, NAME
    /// took too long." and moves on; the handler's thread is not stopped, so
    /// long handlers should call [`Runtime::check_cancelled`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// At most `max_requests` runs per `window`, counted per action across
    /// all senders. Past the limit the host does not run the handler and
    /// answers that the action is busy. Both numbers must be greater than 0.
    pub fn rate_limit(mut self, max_requests: u32, window: Duration) -> Self {
        self.spec.rate_limit = Some(RateLimit {
            max_requests,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        });
        self
    }

    /// A permission the message's sender must hold, such as `data:analyze`.
    /// The host compares it exactly (no `*` patterns) with the sender's
    /// permissions (from the operator's `[senders]` table, or what the client
    /// claims when there is none); without it the handler does not run and
    /// the reply says which permission is missing.
    pub fn permission(mut self, permission: impl Into<String>) -> Self {
        self.spec.permissions.push(permission.into());
        self
    }

    /// Keywords that let a message through to `validate`: the host asks
    /// `validate` only about messages whose text contains one of them,
    /// ignoring case (Unicode lowercase of both; a substring, not a whole
    /// word), or that match the [`pattern`](Action::pattern). Without
    /// keywords or a pattern, `validate` is asked about every message.
    ///
    /// The host checks keywords itself, without calling the plugin, so
    /// messages that cannot concern the action cost it nothing, and a lazy
    /// plugin starts only when a message may concern it. `validate` still
    /// decides: keep it as strict as before.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Action, ActionResult};
    ///
    /// let action = Action::new("GET_WEATHER")
    ///     .keywords(["weather", "forecast"])
    ///     .pattern(r"(?i)\b(rain|snow)ing\b")
    ///     .validate(|msg| msg.text().to_lowercase().contains("weather"))
    ///     .handler(|_msg, _rt| Ok(ActionResult::text("sunny")));
    /// let triggers = action.spec().triggers.clone().unwrap();
    /// assert_eq!(triggers.keywords, ["weather", "forecast"]);
    /// assert!(triggers.pattern.is_some());
    /// ```
    pub fn keywords<I, S>(mut self, keywords: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec
            .triggers
            .get_or_insert_with(Triggers::default)
            .keywords
            .extend(keywords.into_iter().map(Into::into));
        self
    }

    /// A regular expression (the Rust `regex` crate's syntax) that lets a
    /// message through to `validate` when it matches anywhere in the text;
    /// see [`keywords`](Action::keywords). Anchor it with `^` and `$`,
    /// ignore case with `(?i)`. The host refuses to load a plugin whose
    /// pattern does not compile, naming the action and the cause. A second
    /// call replaces the first pattern.
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.spec
            .triggers
            .get_or_insert_with(Triggers::default)
            .pattern = Some(pattern.into());
        self
    }

    /// Says the handler may run twice for one message without harm: if its
    /// worker process dies while it runs (an isolated plugin's worker
    /// killed or crashed), the host runs it again on the new worker within
    /// the message's deadline. Without it such a handler's message fails
    /// with the crash's cause. Mark only handlers whose effects, if any,
    /// are the same when made twice (a lookup, a computation, a write of
    /// the same value); a handler in the host's own process is never run
    /// twice.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Action, ActionResult};
    ///
    /// let action = Action::new("GET_WEATHER")
    ///     .idempotent()
    ///     .handler(|_msg, _rt| Ok(ActionResult::text("sunny")));
    /// assert!(action.spec().idempotent);
    /// ```
    pub fn idempotent(mut self) -> Self {
        self.spec.idempotent = true;
        self
    }

    /// The action's description as the manifest carries it.
    pub fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    /// Decides whether the action applies. Keep it cheap: it runs for every
    /// message, before any handler. It gets no runtime: it cannot log, read
    /// config or call services. The message's context (sender, state) is
    /// parsed only if `validate` reads it.
    pub fn validate(
        mut self,
        validate: impl Fn(&Message<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Box::new(validate));
        self
    }

    /// Answers a message the action accepted. The message's
    /// [`state`](Message::state) holds the providers' values.
    pub fn handler(
        mut self,
        handler: impl Fn(&Message<'_>, &Runtime<'_>) -> Result<ActionResult> + Send + Sync + 'static,
    ) -> Self {
        self.handler = Some(Box::new(handler));
        self
    }

    /// Wraps the handler in a middleware closure, which gets the
    /// [`Call`] and the [`Next`] step of the chain and returns the action's
    /// result: it may run code around `next.run()`, run it again (a retry)
    /// or answer without it (a short-circuit). Several wraps run in the
    /// order they were added, the first outermost, inside the plugin's
    /// [`middleware`](crate::Plugin::middleware); see [`crate::middleware`].
    ///
    /// ```
    /// use agent_host_plugin_sdk::{testing::TestHost, Action, ActionResult, ErrorKind, Plugin};
    ///
    /// let action = Action::new("FLAKY")
    ///     .validate(|_m| true)
    ///     // Retries once a call that failed for want of its service.
    ///     .wrap(|_call, next| match next.run() {
    ///         Err(e) if e.kind() == ErrorKind::Unavailable => next.run(),
    ///         other => other,
    ///     })
    ///     .handler(|_m, rt| {
    ///         let answer: String = rt.service("clock").call("now", &())?;
    ///         Ok(ActionResult::text(answer))
    ///     });
    /// let calls = std::sync::atomic::AtomicU32::new(0);
    /// let host = TestHost::new("flaky").with_service("clock", move |_method, _args| {
    ///     match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
    ///         0 => Err(agent_host_plugin_sdk::Error::new(ErrorKind::Unavailable, "warming up")),
    ///         _ => Ok("noon".into()),
    ///     }
    /// });
    /// let loaded = host.load(Plugin::new("flaky", "1.0.0").permission("service:clock").action(action)).unwrap();
    /// assert_eq!(loaded.handle("FLAKY", "now?").unwrap().text, "noon");
    /// ```
    pub fn wrap(
        mut self,
        wrap: impl Fn(&Call<'_>, Next<'_, ActionResult>) -> Result<ActionResult> + Send + Sync + 'static,
    ) -> Self {
        let wrap: Wrap<ActionResult> = std::sync::Arc::new(wrap);
        self.layers.wrap(wrap);
        self
    }

    /// The action's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Runs `validate`; `false` when there is none.
    pub fn check(&self, message: &Message<'_>) -> bool {
        self.validator.as_ref().is_some_and(|v| v(message))
    }

    /// Runs the handler through its middleware (without asking
    /// `validate`); an error when there is none.
    pub fn run(&self, message: &Message<'_>, rt: &Runtime<'_>) -> Result<ActionResult> {
        let Some(handler) = &self.handler else {
            return Err(Error::msg(format!(
                "action '{}' has no handler",
                self.spec.name
            )));
        };
        let call = Call::one(Component::Action, &self.spec.name, message, *rt);
        self.layers.run(&call, &|| handler(message, rt))
    }

    pub(crate) fn missing_parts(&self) -> Option<String> {
        match (self.validator.is_some(), self.handler.is_some()) {
            (true, true) => None,
            (false, _) => Some(format!("action '{}' has no validate", self.spec.name)),
            (_, false) => Some(format!("action '{}' has no handler", self.spec.name)),
        }
    }
}
