//! Providers: dynamic context composed into the agent's state for a message.

use crate::error::{Error, Result};
use crate::manifest::{CacheConfig, ProviderSpec};
use crate::message::Message;
use crate::middleware::{Call, Component, Layers, Next, Wrap};
use crate::runtime::{ProviderPush, Runtime};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

type Getter = Box<dyn Fn(&Message<'_>, &Runtime<'_>) -> Result<Value> + Send + Sync>;
type Subscriber = Box<dyn Fn(ProviderPush, &Runtime<'_>) -> Result<Unsubscribe> + Send + Sync>;

/// Ends a provider subscription; returned by the `subscribe` callback. The
/// host calls it when it unsubscribes the provider, and when the plugin
/// unloads (before `on_unload`).
pub type Unsubscribe = Box<dyn FnOnce() + Send>;

/// A provider: `get` supplies a value that the host puts into the state under
/// the provider's name. Optionally cached, optionally pushing fresh values.
///
/// The state is a JSON object keyed by provider name, composed once per
/// message before any `validate` runs; handlers read it with
/// [`Message::state`]. Names are global: when two plugins have a provider of
/// the same name, the one earlier in load order wins and the other is left
/// out (with an error in the reply). A failing provider is left out of the
/// state; the message is still answered.
///
/// ```
/// use agent_host_plugin_sdk::{Provider, testing::TestHost, Message};
/// use std::time::Duration;
///
/// let clock = Provider::new("clock")
///     .cache(Duration::from_secs(1), true)
///     .get(|_msg, _rt| Ok(serde_json::json!({"hour": 12})));
/// let host = TestHost::new("example");
/// let value = clock.fetch(&Message::new("hi"), &host.runtime()).unwrap();
/// assert_eq!(value["hour"], 12);
/// ```
pub struct Provider {
    pub(crate) spec: ProviderSpec,
    getter: Option<Getter>,
    subscriber: Option<Subscriber>,
    pub(crate) layers: Layers<Value>,
}

impl Provider {
    /// A new provider; its name is the key of its value in the state.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: ProviderSpec {
                name: name.into(),
                description: String::new(),
                cache: None,
                subscribable: false,
                timeout_ms: None,
            },
            getter: None,
            subscriber: None,
            layers: Layers::default(),
        }
    }

    /// How long one `get` may take (default: the host's
    /// `provider_timeout_ms`, 5 s). When it passes, the host cancels the
    /// call (`rt.is_cancelled()` turns true, and `rt.deadline()` gives the
    /// instant), leaves the provider out of that message's state, and
    /// serves its last cached value instead, marked stale, if it has one.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout_ms = Some(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        self
    }

    /// Says what the provider supplies.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Caches the value for `ttl`; with `stale_while_revalidate` the host
    /// serves a stale value at once and refreshes it in the background.
    ///
    /// The cache holds one value per provider, not one per message or
    /// sender: a cached provider's `get` must not depend on the message.
    /// Without a cache (and without pushed values) `get` runs for every
    /// message.
    pub fn cache(mut self, ttl: Duration, stale_while_revalidate: bool) -> Self {
        self.spec.cache = Some(CacheConfig {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            stale_while_revalidate,
        });
        self
    }

    /// Supplies the value for a message (any `Serialize` value). Required.
    /// The message it gets carries the sender and metadata, but no state.
    pub fn get<T: Serialize>(
        mut self,
        get: impl Fn(&Message<'_>, &Runtime<'_>) -> Result<T> + Send + Sync + 'static,
    ) -> Self {
        self.getter = Some(Box::new(move |msg, rt| {
            Ok(serde_json::to_value(get(msg, rt)?)?)
        }));
        self
    }

    /// Starts pushing fresh values: called when the host subscribes, returns
    /// the function that stops the pushing.
    ///
    /// The host subscribes every subscribable provider after the plugin's
    /// services started, and stores each pushed value as the provider's
    /// current value (a subscribable provider without a cache is asked with
    /// `get` until the first push). A plugin has no async runtime: push from a
    /// timer, as here, or from a thread the stop function ends. On a hot
    /// reload the new generation is subscribed before it serves, and values it
    /// pushes before the swap are dropped, so do not rely on a push made
    /// inside this callback.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Provider, Unsubscribe};
    /// use std::time::Duration;
    ///
    /// let ticks = Provider::new("ticks")
    ///     .get(|_msg, _rt| Ok(0))
    ///     .subscribe(|push, rt| {
    ///         let count = std::sync::atomic::AtomicU64::new(0);
    ///         let timer = rt.every(Duration::from_secs(5), move |_rt| {
    ///             push.push(&count.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    ///         })?;
    ///         let handle = rt.handle();
    ///         let stop: Unsubscribe = Box::new(move || {
    ///             let _ = handle.runtime().cancel_timer(timer);
    ///         });
    ///         Ok(stop)
    ///     });
    /// assert!(ticks.fetch(&agent_host_plugin_sdk::Message::new(""), &agent_host_plugin_sdk::testing::TestHost::new("t").runtime()).is_ok());
    /// ```
    pub fn subscribe(
        mut self,
        subscribe: impl Fn(ProviderPush, &Runtime<'_>) -> Result<Unsubscribe> + Send + Sync + 'static,
    ) -> Self {
        self.spec.subscribable = true;
        self.subscriber = Some(Box::new(subscribe));
        self
    }

    /// Wraps `get` in a middleware closure, which gets the [`Call`] and the
    /// [`Next`] step of the chain and returns the provider's value (as
    /// JSON): it may run code around `next.run()`, retry it, or supply a
    /// value without it. Several wraps run in the order they were added,
    /// the first outermost, inside the plugin's
    /// [`middleware`](crate::Plugin::middleware); see [`crate::middleware`].
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost, Error, Plugin, Provider};
    ///
    /// let plugin = Plugin::new("weather", "1.0.0").provider(
    ///     Provider::new("forecast")
    ///         // A failed fetch leaves a placeholder in the state instead.
    ///         .wrap(|_call, next| next.run().or_else(|_| Ok(json!({"known": false}))))
    ///         .get(|_m, _rt| -> agent_host_plugin_sdk::Result<u32> { Err(Error::msg("offline")) }),
    /// );
    /// let host = TestHost::new("weather");
    /// let loaded = host.load(plugin).unwrap();
    /// assert_eq!(loaded.provide("forecast", "").unwrap(), json!({"known": false}));
    /// ```
    pub fn wrap(
        mut self,
        wrap: impl Fn(&Call<'_>, Next<'_, Value>) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        let wrap: Wrap<Value> = std::sync::Arc::new(wrap);
        self.layers.wrap(wrap);
        self
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Runs `get` through its middleware; an error when there is none.
    pub fn fetch(&self, message: &Message<'_>, rt: &Runtime<'_>) -> Result<Value> {
        let Some(get) = &self.getter else {
            return Err(Error::msg(format!(
                "provider '{}' has no get",
                self.spec.name
            )));
        };
        let call = Call::one(Component::Provider, &self.spec.name, message, *rt);
        self.layers.run(&call, &|| get(message, rt))
    }

    pub(crate) fn start_subscription(
        &self,
        push: ProviderPush,
        rt: &Runtime<'_>,
    ) -> Result<Unsubscribe> {
        match &self.subscriber {
            Some(subscribe) => subscribe(push, rt),
            None => Err(Error::new(
                crate::ErrorKind::NotFound,
                format!("provider '{}' cannot be subscribed to", self.spec.name),
            )),
        }
    }

    pub(crate) fn missing_parts(&self) -> Option<String> {
        self.getter
            .is_none()
            .then(|| format!("provider '{}' has no get", self.spec.name))
    }
}
