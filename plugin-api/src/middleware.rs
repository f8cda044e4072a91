//! Middleware: code that runs around a component's calls, inside the plugin.
//!
//! A middleware gets the [`Call`] it wraps (which component, the message,
//! the runtime) and a [`Next`], the rest of the chain down to the author's
//! closure. It may run code before and after [`Next::run`], run it more than
//! once (a retry), or not at all (a short-circuit), and it returns what the
//! call returns.
//!
//! Two ways to apply one:
//!
//! * [`Plugin::middleware`](crate::Plugin::middleware) takes a value that
//!   implements [`Middleware`], and wraps every action handler, provider
//!   `get` and evaluator (its batch form included) of the plugin, those
//!   added before and after it alike. Such a middleware is generic over
//!   what the call returns: it can observe, time, retry or refuse a call,
//!   not make up its result.
//! * [`Action::wrap`](crate::Action::wrap) and
//!   [`Provider::wrap`](crate::Provider::wrap) take a closure that wraps one
//!   component and knows its result type, so it can also answer in the
//!   handler's place.
//!
//! **Order: outermost first.** The plugin's middleware run first, in the
//! order they were added, then the component's own wraps, in the order they
//! were added, then the author's closure. With `.middleware(a)
//! .middleware(b)` and `Action::new(..).wrap(c).wrap(d)`, a handler call
//! runs `a` → `b` → `c` → `d` → handler, and the result comes back
//! `d` → `c` → `b` → `a`.
//!
//! Middleware is part of the plugin: it runs wherever the plugin runs, in
//! the host's process or in a worker, the same way. It runs inside the
//! SDK's boundary, so an error it returns is the call's error and a panic in
//! it is caught and reported like a panic of the handler itself. It does not
//! wrap `validate`, which has no runtime and runs for every message, nor
//! services, hooks, event handlers or timers.
//!
//! ```
//! use agent_host_plugin_sdk::middleware::{Call, Logging, Middleware, Next};
//! use agent_host_plugin_sdk::{testing::TestHost, Action, ActionResult, Error, Plugin, Result};
//!
//! /// Refuses every call from a sender named `mallory`, for any component.
//! struct NoMallory;
//!
//! impl Middleware for NoMallory {
//!     fn call<T>(&self, call: &Call<'_>, next: Next<'_, T>) -> Result<T> {
//!         if call.message().sender() == "mallory" {
//!             return Err(Error::msg(format!("{} refused for mallory", call.describe())));
//!         }
//!         next.run()
//!     }
//! }
//!
//! let plugin = Plugin::new("greeter", "1.0.0")
//!     .middleware(Logging::new())
//!     .middleware(NoMallory)
//!     .action(
//!         Action::new("GREET")
//!             .validate(|m| m.text().contains("hello"))
//!             // Answers in the handler's place when the text is a question.
//!             .wrap(|call, next| {
//!                 if call.message().text().ends_with('?') {
//!                     return Ok(ActionResult::text("Hello to you too!"));
//!                 }
//!                 next.run()
//!             })
//!             .handler(|m, _rt| Ok(ActionResult::text(format!("Hello, {}!", m.sender())))),
//!     );
//! let host = TestHost::new("greeter");
//! let loaded = host.load(plugin).unwrap();
//! let alice = agent_host_plugin_sdk::Message::new("hello").with_sender("alice");
//! assert_eq!(loaded.handle_message("GREET", &alice).unwrap().text, "Hello, alice!");
//! assert_eq!(loaded.handle("GREET", "hello?").unwrap().text, "Hello to you too!");
//! let mallory = agent_host_plugin_sdk::Message::new("hello").with_sender("mallory");
//! let refused = loaded.handle_message("GREET", &mallory).unwrap_err();
//! assert!(refused.message().ends_with("action 'GREET' refused for mallory"));
//! // Logging, outermost, saw all three calls and the refusal.
//! let logs: Vec<String> = host.logs().into_iter().map(|(_, line)| line).collect();
//! assert_eq!(logs[0], "action 'GREET' started");
//! assert!(logs[1].starts_with("action 'GREET' completed in "));
//! assert!(logs[5].starts_with("action 'GREET' failed after "));
//! ```

use crate::error::Result;
use crate::message::Message;
use crate::runtime::{Level, Runtime};
use crate::{ActionResult, Evaluation};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Which kind of component a wrapped call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// An action's handler.
    Action,
    /// A provider's `get`.
    Provider,
    /// An evaluator, on one message or on a batch.
    Evaluator,
}

impl Component {
    /// A short lowercase name: `action`, `provider`, `evaluator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Action => "action",
            Component::Provider => "provider",
            Component::Evaluator => "evaluator",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The call a middleware wraps: which component, the message (or the
/// messages of an evaluator's batch), and the call's runtime.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    component: Component,
    name: &'a str,
    messages: &'a [Message<'a>],
    batch: bool,
    rt: Runtime<'a>,
}

impl<'a> Call<'a> {
    /// A call to one component on one message.
    pub(crate) fn one(
        component: Component,
        name: &'a str,
        message: &'a Message<'a>,
        rt: Runtime<'a>,
    ) -> Self {
        Self {
            component,
            name,
            messages: std::slice::from_ref(message),
            batch: false,
            rt,
        }
    }

    /// An evaluator's batch form on `messages`.
    pub(crate) fn batch(name: &'a str, messages: &'a [Message<'a>], rt: Runtime<'a>) -> Self {
        Self {
            component: Component::Evaluator,
            name,
            messages,
            batch: true,
            rt,
        }
    }

    /// The kind of component called.
    pub fn component(&self) -> Component {
        self.component
    }

    /// The component's name, such as `GET_WEATHER`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The component and its name, as log lines and errors say it:
    /// `action 'GET_WEATHER'`, or `evaluator 'length' (batch of 3)`.
    pub fn describe(&self) -> String {
        if self.batch {
            format!(
                "{} '{}' (batch of {})",
                self.component,
                self.name,
                self.messages.len()
            )
        } else {
            format!("{} '{}'", self.component, self.name)
        }
    }

    /// The message; for an evaluator's batch, its first message (an empty
    /// one when the batch is empty).
    pub fn message(&self) -> &'a Message<'a> {
        static EMPTY: std::sync::OnceLock<Message<'static>> = std::sync::OnceLock::new();
        self.messages
            .first()
            .unwrap_or_else(|| EMPTY.get_or_init(|| Message::new("")))
    }

    /// Every message of the call: one, or an evaluator's batch.
    pub fn messages(&self) -> &'a [Message<'a>] {
        self.messages
    }

    /// Whether this is an evaluator's batch form.
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    /// The call's runtime: logging, config, services, its cancellation.
    pub fn runtime(&self) -> &Runtime<'a> {
        &self.rt
    }
}

/// The rest of the chain: the middleware after this one, and at its end the
/// author's closure. [`Next::run`] may be called any number of times: not
/// at all (a short-circuit), once, or again after an error (a retry).
pub struct Next<'a, T> {
    rest: &'a dyn Fn() -> Result<T>,
}

impl<T> Next<'_, T> {
    /// Runs the rest of the chain and returns its result.
    pub fn run(&self) -> Result<T> {
        (self.rest)()
    }
}

/// A middleware for every component of a plugin; applied with
/// [`Plugin::middleware`](crate::Plugin::middleware). See the
/// [module docs](self) for the order and an example.
///
/// It is generic over what the call returns (`T`: an action's
/// [`ActionResult`], a provider's JSON value, an [`Evaluation`], or a batch's
/// evaluations), so one implementation serves every kind of component. To
/// answer in a component's place, wrap that component with a closure
/// instead ([`Action::wrap`](crate::Action::wrap)).
pub trait Middleware: Send + Sync + 'static {
    /// Runs around one call: call `next.run()` to go on down the chain.
    fn call<T>(&self, call: &Call<'_>, next: Next<'_, T>) -> Result<T>;
}

/// One layer around calls that return `T`.
pub(crate) type Wrap<T> = Arc<dyn Fn(&Call<'_>, Next<'_, T>) -> Result<T> + Send + Sync>;

/// A component's chain: the plugin's middleware (outer), then its own wraps.
pub(crate) struct Layers<T> {
    outer: Vec<Wrap<T>>,
    own: Vec<Wrap<T>>,
}

impl<T> Default for Layers<T> {
    fn default() -> Self {
        Self {
            outer: Vec::new(),
            own: Vec::new(),
        }
    }
}

impl<T> Layers<T> {
    /// Adds a wrap of the component's own, inside those before it.
    pub(crate) fn wrap(&mut self, wrap: Wrap<T>) {
        self.own.push(wrap);
    }

    /// Adds a plugin middleware, inside the plugin's earlier ones and
    /// outside every wrap of the component's own.
    pub(crate) fn surround(&mut self, wrap: Wrap<T>) {
        self.outer.push(wrap);
    }

    /// Makes the plugin's middleware the component's own, outermost: when a
    /// composed plugin takes the component, its own middleware go outside.
    pub(crate) fn settle(&mut self) {
        let mut own = std::mem::take(&mut self.outer);
        own.append(&mut self.own);
        self.own = own;
    }

    /// Runs `inner` through every layer, outermost first.
    pub(crate) fn run(&self, call: &Call<'_>, inner: &dyn Fn() -> Result<T>) -> Result<T> {
        self.run_from(0, call, inner)
    }

    fn run_from(&self, index: usize, call: &Call<'_>, inner: &dyn Fn() -> Result<T>) -> Result<T> {
        let layer = match index.checked_sub(self.outer.len()) {
            None => self.outer.get(index),
            Some(own) => self.own.get(own),
        };
        match layer {
            None => inner(),
            Some(layer) => {
                let rest = || self.run_from(index + 1, call, inner);
                layer(call, Next { rest: &rest })
            }
        }
    }
}

/// One [`Middleware`] as the layer of each kind of component.
#[derive(Clone)]
pub(crate) struct PluginLayer {
    pub(crate) action: Wrap<ActionResult>,
    pub(crate) provider: Wrap<Value>,
    pub(crate) evaluation: Wrap<Evaluation>,
    pub(crate) batch: Wrap<Vec<Evaluation>>,
}

impl PluginLayer {
    pub(crate) fn new<M: Middleware>(middleware: M) -> Self {
        let middleware = Arc::new(middleware);
        let (a, p, e, b) = (
            Arc::clone(&middleware),
            Arc::clone(&middleware),
            Arc::clone(&middleware),
            middleware,
        );
        Self {
            action: Arc::new(move |call, next| a.call(call, next)),
            provider: Arc::new(move |call, next| p.call(call, next)),
            evaluation: Arc::new(move |call, next| e.call(call, next)),
            batch: Arc::new(move |call, next| b.call(call, next)),
        }
    }
}

/// Logs every call it wraps through the host's log, with how long it took:
/// `action 'GREET' started`, then `action 'GREET' completed in 1.2 ms` or
/// `action 'GREET' failed after 1.2 ms: CAUSE` (at error level).
///
/// The lines go through [`Runtime::log`], so the host tags them with the
/// plugin's name, and counts them against the plugin's log rate limit (100
/// lines a second): on a busy agent, log at [`Level::Debug`] with
/// [`Logging::level`]. A panic passes through it unlogged (the host reports
/// it, as for any panic).
///
/// ```
/// use agent_host_plugin_sdk::middleware::Logging;
/// use agent_host_plugin_sdk::{testing::TestHost, Level, Plugin, Provider};
///
/// let plugin = Plugin::new("clock", "1.0.0")
///     .middleware(Logging::new().level(Level::Debug))
///     .provider(Provider::new("hour").get(|_m, _rt| Ok(12)));
/// let host = TestHost::new("clock");
/// let loaded = host.load(plugin).unwrap();
/// assert_eq!(loaded.provide("hour", "").unwrap(), 12);
/// let logs = host.logs();
/// assert_eq!(logs[0], (Level::Debug, "provider 'hour' started".to_string()));
/// assert!(logs[1].1.starts_with("provider 'hour' completed in "));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Logging {
    level: Level,
}

impl Logging {
    /// Logs at [`Level::Info`] (failures at [`Level::Error`]).
    pub fn new() -> Self {
        Self { level: Level::Info }
    }

    /// The level of the `started` and `completed` lines (failures are
    /// always logged at [`Level::Error`]).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

impl Default for Logging {
    fn default() -> Self {
        Self::new()
    }
}

impl Middleware for Logging {
    fn call<T>(&self, call: &Call<'_>, next: Next<'_, T>) -> Result<T> {
        let rt = call.runtime();
        let what = call.describe();
        rt.log(self.level, format!("{what} started"));
        let started = Instant::now();
        let outcome = next.run();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match &outcome {
            Ok(_) => rt.log(self.level, format!("{what} completed in {ms:.1} ms")),
            Err(error) => rt.error(format!("{what} failed after {ms:.1} ms: {error}")),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;
    use crate::{Action, Evaluator, Plugin};
    use std::sync::Mutex;

    /// Records `name` as each call passes, with the call's description.
    struct Record(&'static str, Arc<Mutex<Vec<String>>>);

    impl Middleware for Record {
        fn call<T>(&self, call: &Call<'_>, next: Next<'_, T>) -> Result<T> {
            let line = format!("{} {}", self.0, call.describe());
            self.1.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            next.run()
        }
    }

    fn seen(record: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        record.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn a_composed_plugins_middleware_runs_outside_its_parts() {
        let record = Arc::new(Mutex::new(Vec::new()));
        let part = Plugin::new("part", "1.0.0")
            .middleware(Record("part", Arc::clone(&record)))
            .action(
                Action::new("GO")
                    .validate(|_m| true)
                    .handler(|_m, _rt| Ok(ActionResult::text("gone"))),
            );
        let whole = Plugin::compose("whole", "1.0.0", vec![part])
            .middleware(Record("whole", Arc::clone(&record)));
        let host = TestHost::new("whole");
        let loaded = host.load(whole).expect("loads");
        assert_eq!(loaded.handle("GO", "go").expect("runs").text, "gone");
        assert_eq!(seen(&record), ["whole action 'GO'", "part action 'GO'"]);
    }

    #[test]
    fn a_batch_passes_the_plugins_middleware_once() {
        let record = Arc::new(Mutex::new(Vec::new()));
        let plugin = Plugin::new("scores", "1.0.0")
            .middleware(Record("mw", Arc::clone(&record)))
            .evaluator(
                Evaluator::new("one")
                    .evaluate(|_m, _rt| Ok(Evaluation::new(1.0, true)))
                    .evaluate_batch(|messages, _rt| {
                        Ok(messages
                            .iter()
                            .map(|_| Evaluation::new(1.0, true))
                            .collect())
                    }),
            )
            .evaluator(Evaluator::new("each").evaluate(|_m, _rt| Ok(Evaluation::new(0.5, true))));
        let host = TestHost::new("scores");
        let loaded = host.load(plugin).expect("loads");
        assert_eq!(
            loaded
                .evaluate_batch("one", &["a", "b"])
                .expect("scores")
                .len(),
            2
        );
        assert_eq!(
            loaded
                .evaluate_batch("each", &["a", "b"])
                .expect("scores")
                .len(),
            2
        );
        assert_eq!(
            seen(&record),
            [
                "mw evaluator 'one' (batch of 2)",
                "mw evaluator 'each'",
                "mw evaluator 'each'"
            ]
        );
    }
}
