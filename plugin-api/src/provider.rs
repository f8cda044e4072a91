//! Providers: dynamic context composed into the agent's state for a message.

use crate::error::{Error, Result};
use crate::manifest::{CacheConfig, ProviderSpec};
use crate::message::Message;
use crate::runtime::{ProviderPush, Runtime};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

type Getter = Box<dyn Fn(&Message<'_>, &Runtime<'_>) -> Result<Value> + Send + Sync>;
type Subscriber = Box<dyn Fn(ProviderPush, &Runtime<'_>) -> Result<Unsubscribe> + Send + Sync>;

/// Ends a provider subscription; returned by the `subscribe` callback.
pub type Unsubscribe = Box<dyn FnOnce() + Send>;

/// A provider: `get` supplies a value that the host puts into the state under
/// the provider's name. Optionally cached, optionally pushing fresh values.
///
/// ```
/// use plugin_api::{Provider, testing::TestHost, Message};
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
            },
            getter: None,
            subscriber: None,
        }
    }

    /// Says what the provider supplies.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Caches the value for `ttl`; with `stale_while_revalidate` the host
    /// serves a stale value at once and refreshes it in the background.
    pub fn cache(mut self, ttl: Duration, stale_while_revalidate: bool) -> Self {
        self.spec.cache = Some(CacheConfig {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            stale_while_revalidate,
        });
        self
    }

    /// Supplies the value for a message.
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
    pub fn subscribe(
        mut self,
        subscribe: impl Fn(ProviderPush, &Runtime<'_>) -> Result<Unsubscribe> + Send + Sync + 'static,
    ) -> Self {
        self.spec.subscribable = true;
        self.subscriber = Some(Box::new(subscribe));
        self
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Runs `get`.
    pub fn fetch(&self, message: &Message<'_>, rt: &Runtime<'_>) -> Result<Value> {
        match &self.getter {
            Some(get) => get(message, rt),
            None => Err(Error::msg(format!(
                "provider '{}' has no get",
                self.spec.name
            ))),
        }
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
