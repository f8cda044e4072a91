//! Services: long-lived shared functionality other plugins call by name.

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::ServiceSpec;
use crate::runtime::Runtime;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Hook<S> = Box<dyn Fn(&S, &Runtime<'_>) -> Result<()> + Send + Sync>;
type Method<S> = Box<dyn Fn(&S, &str, &Runtime<'_>) -> Result<String> + Send + Sync>;

/// Builds a [`Service`] with typed state `S` and named methods; made by
/// [`Service::new`], turned into a [`Service`] by `.into()` (or by
/// [`Plugin::service`](crate::Plugin::service), which takes either).
///
/// Methods run on the host's threads, possibly several at once, so `S`
/// shares its data through atomics or locks. Each method takes its arguments
/// deserialized from the caller's JSON and returns any `Serialize` value.
///
/// ```
/// use agent_host_plugin_sdk::{Service, testing::TestHost};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let counter: Service = Service::new("counter", AtomicU64::new(0))
///     .method("add", |count: &AtomicU64, n: u64, _rt| {
///         Ok(count.fetch_add(n, Ordering::SeqCst) + n)
///     })
///     .into();
/// let host = TestHost::new("example");
/// counter.start(&host.runtime()).unwrap();
/// assert_eq!(counter.call_json("add", "2", &host.runtime()).unwrap(), "2");
/// ```
pub struct ServiceBuilder<S> {
    spec: ServiceSpec,
    state: Arc<S>,
    on_start: Option<Hook<S>>,
    on_stop: Option<Hook<S>>,
    methods: BTreeMap<String, Method<S>>,
}

/// A service: long-lived shared functionality with a name unique across the
/// agent, which other plugins call by name through
/// [`Runtime::service`](crate::Runtime::service). Start building one with
/// [`Service::new`]; see [`ServiceBuilder`].
///
/// The host starts a plugin's services after its `on_load` and stops them
/// (in reverse order) before its `on_unload`. A call to a service that is not
/// running fails with [`ErrorKind::Unavailable`].
///
/// ```
/// use agent_host_plugin_sdk::{json, testing::TestHost, Plugin, Service};
/// use std::sync::Mutex;
///
/// let plugin = Plugin::new("kv", "1.0.0").service(
///     Service::new("kv", Mutex::new(Vec::<(String, String)>::new()))
///         .description("set [key, value]; get key -> value or null")
///         .on_start(|_store, rt| {
///             rt.info("kv started");
///             Ok(())
///         })
///         .method("set", |store: &Mutex<Vec<(String, String)>>, (key, value): (String, String), _rt| {
///             store.lock().unwrap().push((key, value));
///             Ok(())
///         })
///         .method("get", |store: &Mutex<Vec<(String, String)>>, key: String, _rt| {
///             let store = store.lock().unwrap();
///             Ok(store.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
///         }),
/// );
/// let host = TestHost::new("kv");
/// let loaded = host.load(plugin).unwrap(); // runs on_load, then starts the service
/// loaded.call_service("kv", "set", json!(["city", "Paris"])).unwrap();
/// assert_eq!(loaded.call_service("kv", "get", json!("city")).unwrap(), "Paris");
/// // A plugin's own services are reachable through the runtime, too.
/// let city: Option<String> = host.runtime().service("kv").call("get", &"town").unwrap();
/// assert_eq!(city, None);
/// ```
pub struct Service {
    pub(crate) spec: ServiceSpec,
    running: AtomicBool,
    inner: Box<dyn ErasedService>,
}

impl Service {
    /// A service named `name` (unique across the agent) over `state`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<S: Send + Sync + 'static>(name: impl Into<String>, state: S) -> ServiceBuilder<S> {
        ServiceBuilder {
            spec: ServiceSpec {
                name: name.into(),
                description: String::new(),
                methods: Vec::new(),
            },
            state: Arc::new(state),
            on_start: None,
            on_stop: None,
            methods: BTreeMap::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether the service has been started and not stopped.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Runs the start hook and marks the service running (the host does this;
    /// call it yourself only in tests without [`crate::testing::TestHost::load`]).
    pub fn start(&self, rt: &Runtime<'_>) -> Result<()> {
        self.inner.start(rt)?;
        self.running.store(true, Ordering::Release);
        Ok(())
    }

    /// Marks the service stopped and runs the stop hook.
    pub fn stop(&self, rt: &Runtime<'_>) -> Result<()> {
        self.running.store(false, Ordering::Release);
        self.inner.stop(rt)
    }

    /// Calls a method with JSON arguments (empty means `null`); returns JSON.
    /// Fails with [`ErrorKind::Unavailable`] when the service is not running,
    /// [`ErrorKind::NotFound`] for an unknown method and
    /// [`ErrorKind::InvalidInput`] for arguments that do not fit.
    pub fn call_json(&self, method: &str, args_json: &str, rt: &Runtime<'_>) -> Result<String> {
        if !self.is_running() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("service '{}' is not running", self.spec.name),
            ));
        }
        self.inner.call(method, args_json, rt)
    }
}

impl<S: Send + Sync + 'static> ServiceBuilder<S> {
    /// Says what the service offers.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Runs when the host starts the service (after the plugin's `on_load`).
    /// An error here fails the plugin's load (or its hot reload).
    ///
    /// In a hot reload the serving generation's services are stopped before
    /// the new generation's start (every call waits at the host's gate in
    /// between), so a resource a service opens here and closes in
    /// [`on_stop`](Self::on_stop), such as a database file, is never held by
    /// two generations at once. If the reload then fails, the serving
    /// generation's services are started again.
    pub fn on_start(
        mut self,
        hook: impl Fn(&S, &Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_start = Some(Box::new(hook));
        self
    }

    /// Runs when the host stops the service (before the plugin's `on_unload`).
    pub fn on_stop(
        mut self,
        hook: impl Fn(&S, &Runtime<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_stop = Some(Box::new(hook));
        self
    }

    /// Adds a method with typed arguments (deserialized from the caller's
    /// JSON; use `()` for none) and a typed result.
    pub fn method<A, R>(
        mut self,
        name: impl Into<String>,
        method: impl Fn(&S, A, &Runtime<'_>) -> Result<R> + Send + Sync + 'static,
    ) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let name = name.into();
        let label = format!("{}.{}", self.spec.name, name);
        self.spec.methods.push(name.clone());
        self.methods.insert(
            name,
            Box::new(move |state, args_json, rt| {
                let json = if args_json.is_empty() {
                    "null"
                } else {
                    args_json
                };
                let args: A = serde_json::from_str(json).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("{label}: bad arguments: {e}"),
                    )
                })?;
                Ok(serde_json::to_string(&method(state, args, rt)?)?)
            }),
        );
        self
    }
}

impl<S: Send + Sync + 'static> From<ServiceBuilder<S>> for Service {
    fn from(builder: ServiceBuilder<S>) -> Self {
        Service {
            spec: builder.spec.clone(),
            running: AtomicBool::new(false),
            inner: Box::new(builder),
        }
    }
}

trait ErasedService: Send + Sync {
    fn start(&self, rt: &Runtime<'_>) -> Result<()>;
    fn stop(&self, rt: &Runtime<'_>) -> Result<()>;
    fn call(&self, method: &str, args_json: &str, rt: &Runtime<'_>) -> Result<String>;
}

impl<S: Send + Sync + 'static> ErasedService for ServiceBuilder<S> {
    fn start(&self, rt: &Runtime<'_>) -> Result<()> {
        self.on_start
            .as_ref()
            .map_or(Ok(()), |hook| hook(&self.state, rt))
    }

    fn stop(&self, rt: &Runtime<'_>) -> Result<()> {
        self.on_stop
            .as_ref()
            .map_or(Ok(()), |hook| hook(&self.state, rt))
    }

    fn call(&self, method: &str, args_json: &str, rt: &Runtime<'_>) -> Result<String> {
        match self.methods.get(method) {
            Some(method) => method(&self.state, args_json, rt),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "service '{}' has no method '{method}' (it has: {})",
                    self.spec.name,
                    self.spec.methods.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn a_stopped_service_is_a_clear_error() {
        let service: Service = Service::new("clock", ())
            .method("now", |_, (): (), _rt| Ok(42))
            .into();
        let host = TestHost::new("example");
        let rt = host.runtime();
        let error = service
            .call_json("now", "null", &rt)
            .expect_err("not started");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(error.message(), "service 'clock' is not running");
        service.start(&rt).expect("start");
        assert_eq!(
            service.call_json("now", "null", &rt).expect("running"),
            "42"
        );
        service.stop(&rt).expect("stop");
        assert!(service.call_json("now", "null", &rt).is_err());
        let unknown = {
            service.start(&rt).expect("start again");
            service
                .call_json("later", "null", &rt)
                .expect_err("no such method")
        };
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        assert!(unknown
            .message()
            .contains("has no method 'later' (it has: now)"));
    }
}
