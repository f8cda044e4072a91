//! The runtime handle plugin code talks to the host through.

use crate::error::{Error, ErrorKind, Result};
use agent_host_plugin_abi::CallControl;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A log level, as passed to [`Runtime::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something is wrong but the plugin goes on.
    Warn = 2,
    /// Normal operation worth telling the operator.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
    /// Very fine detail.
    Trace = 5,
}

impl Level {
    /// The level for a wire number; out-of-range numbers are `Trace`.
    pub fn from_number(number: u8) -> Self {
        match number {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// What the host does for a plugin. The SDK implements it over the real
/// host's callbacks; [`crate::testing::TestHost`] implements it for unit tests.
/// Plugin authors use [`Runtime`] rather than calling this directly.
pub trait Host: Send + Sync {
    /// Writes a log line tagged with the plugin's name.
    fn log(&self, level: Level, message: &str);
    /// The plugin's config as JSON: the whole object for an empty key, else the value at `key`.
    fn config(&self, key: &str) -> Result<String>;
    /// Calls another plugin's service method with JSON arguments.
    fn call_service(&self, service: &str, method: &str, args_json: &str) -> Result<String>;
    /// Emits an event.
    fn emit(&self, event: &str, payload_json: &str) -> Result<()>;
    /// Subscribes to an event; returns the subscription id.
    fn subscribe(&self, event: &str) -> Result<u64>;
    /// Ends a subscription.
    fn unsubscribe(&self, subscription: u64) -> Result<()>;
    /// Pushes a fresh provider value.
    fn push_provider_value(&self, provider: u32, value_json: &str) -> Result<()>;
    /// Sets a timer that fires [`crate::Plugin`]'s timer handler.
    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> Result<()>;
    /// Clears a timer.
    fn clear_timer(&self, timer: u64) -> Result<()>;
    /// The host's call this thread is in, for an entry point whose FFI
    /// signature carries no cancellation signal (an event handler, a
    /// timer): its deadline (milliseconds since the Unix epoch, 0 for none)
    /// and whether the host cancelled it. `None` outside such a call, or
    /// from a host that does not say.
    fn current_call(&self) -> Option<(u64, bool)> {
        None
    }
    /// Who emitted the event whose handler this thread runs (a plugin's
    /// name, or `host`); `None` outside an event handler, or from a host
    /// that does not say.
    fn event_source(&self) -> Option<String> {
        None
    }
    /// The socket addresses of `host` (a name or an address) at `port`, as
    /// the host resolves them. The host answers only for a port the plugin
    /// may connect to (`network:connect:PORT` or `network:*`); a host that
    /// does not resolve names says so with [`ErrorKind::NotFound`].
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>> {
        let _ = (host, port);
        Err(Error::new(
            ErrorKind::NotFound,
            "this host does not resolve names for plugins",
        ))
    }
}

/// An event as delivered to a handler registered with [`Runtime::on`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name, such as `action:completed`.
    pub name: String,
    /// Who emitted it: a plugin's name, or `host` for the host's own events
    /// (which no plugin may emit); empty from a host that does not say.
    pub source: String,
    /// The event's payload.
    pub payload: Value,
}

pub(crate) type EventHandler = Arc<dyn Fn(&Event, &Runtime<'_>) -> Result<()> + Send + Sync>;
pub(crate) type TimerHandler = Arc<dyn Fn(&Runtime<'_>) -> Result<()> + Send + Sync>;

/// One plugin instance's link to its host, shared by every call.
pub(crate) struct Shared {
    pub(crate) plugin: String,
    pub(crate) host: Box<dyn Host>,
    event_handlers: Mutex<HashMap<u64, EventHandler>>,
    timer_handlers: Mutex<HashMap<u64, TimerHandler>>,
    next_timer: AtomicU64,
}

impl Shared {
    pub(crate) fn new(plugin: String, host: Box<dyn Host>) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            host,
            event_handlers: Mutex::new(HashMap::new()),
            timer_handlers: Mutex::new(HashMap::new()),
            next_timer: AtomicU64::new(1),
        })
    }

    pub(crate) fn event_handler(&self, subscription: u64) -> Option<EventHandler> {
        lock(&self.event_handlers).get(&subscription).cloned()
    }

    pub(crate) fn timer_handler(&self, timer: u64) -> Option<TimerHandler> {
        lock(&self.timer_handlers).get(&timer).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A handler panicking while the map is locked cannot leave it half-written
    // (inserts and removes are single operations), so a poisoned map is usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What plugin code gets in every call: logging, config, services, events,
/// timers, and the call's cancellation signal.
///
/// A `Runtime<'_>` is borrowed for one call and cannot be kept after it
/// returns; code that runs later (a thread, a stored callback) takes an owned
/// [`RuntimeHandle`] from [`Runtime::handle`] instead. Every callback goes
/// through the host, which checks the plugin's permissions: reading config
/// needs `config:KEY` (or `config:*`), emitting needs `event:emit:NAME`, and
/// calling another plugin's service needs `service:NAME`.
/// [`crate::testing::TestHost`] gives a runtime for unit tests (it checks no
/// permissions):
///
/// ```
/// use agent_host_plugin_sdk::{json, testing::TestHost, Value};
///
/// let host = TestHost::new("greeter").with_config(json!({"home": "Paris"}));
/// let rt = host.runtime();
///
/// // Config: one top-level value, `Value::Null` when absent.
/// assert_eq!(rt.config_value("home").unwrap(), "Paris");
/// assert_eq!(rt.config_value("missing").unwrap(), Value::Null);
///
/// // Events: emit, subscribe, unsubscribe.
/// rt.emit("greeter:greeted", &json!({"who": "alice"})).unwrap();
/// assert_eq!(host.emitted()[0].name, "greeter:greeted");
/// let subscription = rt
///     .on("greeter:ping", |event, rt| {
///         rt.info(format!("ping {}", event.payload));
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(host.deliver("greeter:ping", json!(1)).unwrap(), 1);
/// rt.off(subscription).unwrap();
/// assert_eq!(host.deliver("greeter:ping", json!(2)).unwrap(), 0);
/// assert_eq!(host.logs()[0].1, "ping 1");
///
/// // Outside an action handler there is no cancellation signal.
/// assert!(!rt.is_cancelled());
/// assert!(rt.check_cancelled().is_ok());
/// ```
#[derive(Clone, Copy)]
pub struct Runtime<'a> {
    shared: &'a Arc<Shared>,
    control: Option<&'a CallControl>,
}

impl<'a> Runtime<'a> {
    pub(crate) fn new(shared: &'a Arc<Shared>, control: Option<&'a CallControl>) -> Self {
        Self { shared, control }
    }

    /// The name of the plugin this runtime belongs to.
    pub fn plugin_name(&self) -> &str {
        &self.shared.plugin
    }

    /// An owned handle that outlives this call (for threads and stored callbacks).
    /// It carries no cancellation signal.
    ///
    /// ```
    /// use agent_host_plugin_sdk::testing::TestHost;
    ///
    /// let host = TestHost::new("worker");
    /// let handle = host.runtime().handle();
    /// std::thread::spawn(move || handle.runtime().info("from a thread"))
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(host.logs()[0].1, "from a thread");
    /// ```
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            shared: Arc::clone(self.shared),
        }
    }

    /// Writes a line into the host's log, tagged with the plugin's name.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        self.shared.host.log(level, message.as_ref());
    }

    /// Logs at error level.
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(Level::Error, message);
    }

    /// Logs at warn level.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(Level::Warn, message);
    }

    /// Logs at info level.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Logs at debug level.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// The plugin's whole config, deserialized into `T`.
    ///
    /// In the host this needs the `config:*` permission (the whole config is
    /// read at once). The config is the plugin's default config with the
    /// operator's `[plugins.NAME]` section merged over it (secrets from
    /// `{ env = "VAR" }` resolved), already validated against the plugin's
    /// JSON Schema.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost};
    /// use std::collections::BTreeMap;
    ///
    /// let host = TestHost::new("example").with_config(json!({"a": 1, "b": 2}));
    /// let config: BTreeMap<String, u32> = host.runtime().config().unwrap();
    /// assert_eq!(config["b"], 2);
    /// ```
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        let json = self.shared.host.config("")?;
        serde_json::from_str(&json)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("config: {e}")))
    }

    /// One top-level config value; `Value::Null` when the key is absent.
    ///
    /// In the host this needs `config:KEY` or `config:*`; without it the call
    /// returns an [`ErrorKind::PermissionDenied`] error.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost, Value};
    ///
    /// let host = TestHost::new("weather").with_config(json!({"units": "metric"}));
    /// let rt = host.runtime();
    /// assert_eq!(rt.config_value("units").unwrap(), "metric");
    /// assert_eq!(rt.config_value("base_url").unwrap(), Value::Null);
    /// ```
    pub fn config_value(&self, key: &str) -> Result<Value> {
        let json = self.shared.host.config(key)?;
        serde_json::from_str(&json)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("config `{key}`: {e}")))
    }

    /// The socket addresses of `host` at `port`, resolved by the host.
    ///
    /// An isolated plugin's sandbox has no name resolution of its own (no
    /// UDP, so no DNS): a plugin that connects to servers by name resolves
    /// through the host, which answers for the ports the plugin may connect
    /// to (`network:connect:PORT` or `network:*`) and refuses the others
    /// with [`ErrorKind::PermissionDenied`]. In process it is the same
    /// call, so a plugin works unchanged in either place.
    ///
    /// ```
    /// use agent_host_plugin_sdk::testing::TestHost;
    ///
    /// let host = TestHost::new("fetcher");
    /// let addresses = host.runtime().resolve("127.0.0.1", 8080).unwrap();
    /// assert_eq!(addresses[0].to_string(), "127.0.0.1:8080");
    /// ```
    pub fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>> {
        self.shared.host.resolve(host, port)
    }

    /// A client for another plugin's service, such as `rt.service("weather")`.
    ///
    /// Calling a service of another plugin needs the `service:NAME`
    /// permission; a plugin's own services are always allowed. See
    /// [`ServiceClient::call`].
    pub fn service(&self, name: &'a str) -> ServiceClient<'a> {
        ServiceClient {
            shared: self.shared,
            name,
        }
    }

    /// Emits an event with a payload (any `Serialize` value; `&()` for none).
    ///
    /// In the host this needs `event:emit:NAME` (a granted pattern such as
    /// `event:emit:weather:*` covers every name it prefixes). `emit` returns
    /// once every handler has run, each on the host's blocking pool, or has
    /// missed its deadline (the host's `event_timeout_ms`); a failing or late
    /// handler is logged and does not stop the others, nor fail the `emit`.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost};
    ///
    /// let host = TestHost::new("weather");
    /// host.runtime()
    ///     .emit("weather:reported", &json!({"location": "London"}))
    ///     .unwrap();
    /// let emitted = host.emitted();
    /// assert_eq!(emitted[0].name, "weather:reported");
    /// assert_eq!(emitted[0].payload["location"], "London");
    /// ```
    pub fn emit(&self, event: &str, payload: &impl Serialize) -> Result<()> {
        let json = serde_json::to_string(payload)?;
        self.shared.host.emit(event, &json)
    }

    /// Calls `handler` for every `event` until [`Runtime::off`] or unload.
    ///
    /// Subscribing needs no permission. In the host `event` may end in `*`
    /// to match every name it prefixes (`weather:*`);
    /// [`TestHost::deliver`](crate::testing::TestHost::deliver) matches names
    /// exactly. Subscriptions belong to one generation of the plugin: make
    /// them in `on_load` (or later), so that a hot-reloaded generation makes
    /// its own.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost};
    ///
    /// let host = TestHost::new("audit");
    /// let rt = host.runtime();
    /// rt.on("action:completed", |event, rt| {
    ///     rt.info(format!("{} completed", event.payload["action"]));
    ///     Ok(())
    /// })
    /// .unwrap();
    /// assert_eq!(host.deliver("action:completed", json!({"action": "GREET"})).unwrap(), 1);
    /// assert_eq!(host.logs()[0].1, "\"GREET\" completed");
    /// ```
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(&Event, &Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<Subscription> {
        let id = self.shared.host.subscribe(event)?;
        lock(&self.shared.event_handlers).insert(id, Arc::new(handler));
        Ok(Subscription(id))
    }

    /// Ends a subscription made with [`Runtime::on`].
    pub fn off(&self, subscription: Subscription) -> Result<()> {
        lock(&self.shared.event_handlers).remove(&subscription.0);
        self.shared.host.unsubscribe(subscription.0)
    }

    /// Calls `handler` every `period`, first after one period, until
    /// [`Runtime::cancel_timer`] or unload. Timers run on the host's threads:
    /// a plugin has no async runtime of its own.
    ///
    /// Timers belong to one generation of the plugin: a retired generation's
    /// timers stop, and a generation being hot-reloaded in fires its timers
    /// only once it serves. An error from `handler` is logged; the timer
    /// keeps running.
    ///
    /// ```
    /// use agent_host_plugin_sdk::testing::TestHost;
    /// use std::time::Duration;
    ///
    /// let host = TestHost::new("ticker");
    /// let rt = host.runtime();
    /// let timer = rt
    ///     .every(Duration::from_secs(60), |rt| rt.emit("ticker:tick", &()))
    ///     .unwrap();
    /// host.fire_timers().unwrap();
    /// assert_eq!(host.emitted().len(), 1);
    /// rt.cancel_timer(timer).unwrap();
    /// assert!(host.timers().is_empty());
    /// ```
    pub fn every(
        &self,
        period: Duration,
        handler: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<Timer> {
        self.timer(period, period, handler)
    }

    /// Calls `handler` once after `delay`. Like [`Runtime::every`], it runs on
    /// a host thread and belongs to the current generation.
    pub fn after(
        &self,
        delay: Duration,
        handler: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<Timer> {
        self.timer(delay, Duration::ZERO, handler)
    }

    fn timer(
        &self,
        after: Duration,
        every: Duration,
        handler: impl Fn(&Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<Timer> {
        let id = self.shared.next_timer.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.timer_handlers).insert(id, Arc::new(handler));
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Err(error) = self.shared.host.set_timer(id, millis(after), millis(every)) {
            lock(&self.shared.timer_handlers).remove(&id);
            return Err(error);
        }
        Ok(Timer(id))
    }

    /// Cancels a timer made with [`Runtime::every`] or [`Runtime::after`].
    pub fn cancel_timer(&self, timer: Timer) -> Result<()> {
        lock(&self.shared.timer_handlers).remove(&timer.0);
        self.shared.host.clear_timer(timer.0)
    }

    /// Whether the host has cancelled this call (its timeout passed). Long
    /// handlers should check it and stop early.
    ///
    /// Action handlers, providers, evaluators and service methods get a
    /// cancellation signal: the host raises it when the call runs past its
    /// deadline (an action's [`timeout`](crate::Action::timeout), a
    /// provider's [`timeout`](crate::Provider::timeout), else the host's
    /// defaults). Handlers, providers and service methods also get the
    /// deadline itself, and a service called from inside another call gets
    /// at most what is left of its caller's. Event handlers, timers and, in
    /// process, the hooks of a plugin's life (`on_load`, `on_unload`, a
    /// service's start and stop, the state hooks) ask the host, which
    /// answers with their deadline; `validate` runs without a signal, and
    /// this returns `false` there (the host still abandons it at its
    /// deadline). A plugin in a worker process that misses a hook's
    /// deadline has its worker killed. The host
    /// does not stop a thread that ignores the signal: the call goes on
    /// until it returns, counted against the plugin's limit of calls in
    /// flight.
    pub fn is_cancelled(&self) -> bool {
        let (deadline, cancelled) = match self.control {
            Some(c) => (c.deadline_unix_ms(), c.is_cancelled()),
            // An event handler or a timer: the host says, when asked.
            None => match self.shared.host.current_call() {
                Some(call) => call,
                None => return false,
            },
        };
        cancelled || (deadline != 0 && now_unix_ms() >= deadline)
    }

    /// Returns a [`ErrorKind::Cancelled`] error if the call was cancelled, so
    /// a handler can stop with `rt.check_cancelled()?`. The host reports a
    /// handler that returns this error as timed out.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Action, ActionResult};
    ///
    /// let action = Action::new("COUNT")
    ///     .validate(|msg| msg.text().starts_with("count"))
    ///     .handler(|_msg, rt| {
    ///         let mut total = 0u64;
    ///         for chunk in 0..1_000u64 {
    ///             rt.check_cancelled()?; // stop early once the timeout passed
    ///             total += chunk;
    ///         }
    ///         Ok(ActionResult::text(total.to_string()))
    ///     });
    /// # let host = agent_host_plugin_sdk::testing::TestHost::new("x");
    /// # assert_eq!(action.run(&agent_host_plugin_sdk::Message::new("count"), &host.runtime()).unwrap().text, "499500");
    /// ```
    pub fn check_cancelled(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::new(ErrorKind::Cancelled, "the call was cancelled"))
        } else {
            Ok(())
        }
    }

    /// The call's deadline, if it has one (handlers, providers, service
    /// methods, event handlers and timers have one).
    pub fn deadline(&self) -> Option<SystemTime> {
        let deadline = match self.control {
            Some(c) => c.deadline_unix_ms(),
            None => self.shared.host.current_call()?.0,
        };
        (deadline != 0).then(|| UNIX_EPOCH + Duration::from_millis(deadline))
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An owned runtime handle, for code that runs outside one call: a thread
/// the plugin started, a provider subscription's stop function, a callback
/// stored for later. Get one with [`Runtime::handle`].
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
}

impl RuntimeHandle {
    /// A runtime for use now (without a cancellation signal). Its permissions
    /// are the plugin's, as for any other call.
    pub fn runtime(&self) -> Runtime<'_> {
        Runtime::new(&self.shared, None)
    }
}

/// A subscription made with [`Runtime::on`]; pass it to [`Runtime::off`] to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription(pub(crate) u64);

/// A timer made with [`Runtime::every`] or [`Runtime::after`]; pass it to
/// [`Runtime::cancel_timer`] to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer(pub(crate) u64);

/// Calls another plugin's service through the host; made by [`Runtime::service`].
pub struct ServiceClient<'a> {
    shared: &'a Arc<Shared>,
    name: &'a str,
}

impl ServiceClient<'_> {
    /// Calls `method` with typed arguments and a typed result.
    ///
    /// The arguments are serialized to JSON (`&()` sends `null`) and the
    /// answer is deserialized into `R`. Errors keep their kind: a missing
    /// service or method is [`ErrorKind::NotFound`], a missing `service:NAME`
    /// permission [`ErrorKind::PermissionDenied`], a stopped or quarantined
    /// service [`ErrorKind::Unavailable`], an answer that does not fit `R`
    /// [`ErrorKind::InvalidInput`]. In tests,
    /// [`TestHost::with_service`](crate::testing::TestHost::with_service)
    /// registers a fake:
    ///
    /// ```
    /// use agent_host_plugin_sdk::{json, testing::TestHost, Error, ErrorKind, Value};
    ///
    /// let host = TestHost::new("weather").with_service("geolocation", |method, args| {
    ///     match method {
    ///         "locate" => Ok(json!({"name": "Paris", "asked": args["text"]})),
    ///         other => Err(Error::new(ErrorKind::NotFound, format!("no method {other}"))),
    ///     }
    /// });
    /// let rt = host.runtime();
    /// let geo = rt.service("geolocation");
    ///
    /// let place: Value = geo.call("locate", &json!({"text": "paris"})).unwrap();
    /// assert_eq!(place["name"], "Paris");
    ///
    /// let error = geo.call::<Value>("teleport", &()).unwrap_err();
    /// assert_eq!(error.kind(), ErrorKind::NotFound);
    ///
    /// // An answer that does not fit the requested type.
    /// let error = geo.call::<u32>("locate", &json!({"text": "x"})).unwrap_err();
    /// assert_eq!(error.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn call<R: DeserializeOwned>(&self, method: &str, args: &impl Serialize) -> Result<R> {
        let args = serde_json::to_string(args)?;
        let result = self.shared.host.call_service(self.name, method, &args)?;
        serde_json::from_str(&result).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "service '{}' method '{method}' returned unexpected JSON: {e}",
                    self.name
                ),
            )
        })
    }

    /// Calls `method` with JSON arguments and a JSON result; the same as
    /// `call::<Value>(method, args)`.
    pub fn call_json(&self, method: &str, args: &Value) -> Result<Value> {
        self.call(method, args)
    }
}

/// Pushes fresh values for one subscribable provider into the host's cache.
///
/// The host hands one to the provider's
/// [`subscribe`](crate::Provider::subscribe) callback; it is `Clone + Send`
/// and may be moved into a timer or a thread. A value pushed by a generation
/// that is not serving (one being hot-reloaded in, or one retired) is dropped.
#[derive(Clone)]
pub struct ProviderPush {
    pub(crate) shared: Arc<Shared>,
    pub(crate) provider: u32,
}

impl ProviderPush {
    /// Pushes a value; the host replaces its cached value with it, and the
    /// next message's state uses it.
    pub fn push(&self, value: &impl Serialize) -> Result<()> {
        let json = serde_json::to_string(value)?;
        self.shared.host.push_provider_value(self.provider, &json)
    }
}
