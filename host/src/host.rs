//! `PluginHost`: the library's entry point. Loads a folder of plugins, answers
//! messages, calls services, emits events, and shuts everything down in
//! reverse load order once the calls in flight are done (or a grace period
//! has passed).

mod health;
mod message_route;

pub use health::Health;

pub(crate) use message_route::{MessageRoute, RouteError, RoutedReply};

use crate::config::AgentConfig;
use crate::lifecycle;
use crate::lifecycle::report::{LoadReport, ShutdownError};
use crate::load::private_copy::{CopyGauges, ShadowDir};
use crate::pipeline::{self, InboundMessage, Pipeline, Reply};
use crate::registry::events::{BusEvent, DeliveryFailure, EventRelay, Listener, Nesting};
use crate::registry::{HostError, Registry};
use crate::reload::watch::WatchedHost;
use crate::reload::ReloadOrigin;
use crate::trust::TrustPolicy;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What cluster mode says of the cluster, for `GET /v1/cluster`:
/// implemented above the facade (cluster mode), which never names it.
pub(crate) trait ClusterReport: Send + Sync {
    /// The cluster's hosts and accepted lock hashes, as JSON.
    fn status(&self) -> serde_json::Value;
}

/// Options for a [`PluginHost`].
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// The tokio runtime for timers and blocking calls; the host makes a small
    /// one of its own when this is `None`.
    pub runtime: Option<tokio::runtime::Handle>,
    /// The operator's config file, parsed.
    pub config: AgentConfig,
    /// Plugin configs set in code, by plugin name; they override the file's.
    pub configs: BTreeMap<String, Value>,
}

/// The start of the ids a new host gives messages that come without one:
/// `m`, then the time in ms, the process id and the number of hosts this
/// process made before it. A plugin may key what it stores by message id
/// (`notes` does, so that a message handled twice stores once), so an id
/// must not come again after a restart, nor from a second host in the
/// process.
fn message_id_prefix() -> String {
    static HOSTS: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    format!(
        "m{ms:x}.{:x}.{}",
        std::process::id(),
        HOSTS.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running set of plugins.
pub struct PluginHost {
    core: Arc<Registry>,
    pipeline: Arc<Pipeline>,
    shadow: ShadowDir,
    config: AgentConfig,
    trust: TrustPolicy,
    /// What the ids this host gives messages start with: unique to this
    /// host in this process and to this start of the process.
    message_ids: String,
    next_message: AtomicU64,
    reloading: std::sync::Mutex<()>,
    shutting_down: AtomicBool,
    shut_down: AtomicBool,
    /// What the cluster says of itself, in cluster mode (`GET /v1/cluster`).
    cluster_report: std::sync::OnceLock<Arc<dyn ClusterReport>>,
    /// Where front ends' messages go instead of this host's pipeline
    /// (cluster mode), once installed.
    route: OnceLock<Arc<dyn MessageRoute>>,
    // Declared last: dropped after everything that may still hold a handle to it.
    _own_runtime: Option<tokio::runtime::Runtime>,
}

impl PluginHost {
    /// A host with no plugins yet. Fails when the config's `[trust]` lock
    /// file or keys cannot be read (the error names the file or key).
    pub fn new(options: HostOptions) -> std::io::Result<Self> {
        let trust = TrustPolicy::load(&options.config.trust)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let (handle, own) = match options.runtime {
            Some(handle) => (handle, None),
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("agent-host")
                    .enable_all()
                    .build()?;
                (runtime.handle().clone(), Some(runtime))
            }
        };
        let mut config = options.config;
        config.plugins.extend(options.configs);
        if config.grants.is_none() {
            tracing::warn!(
                "no [grants] in the config: every plugin gets the permissions it requests"
            );
        }
        for warning in config.zero_warnings() {
            tracing::warn!("{warning}");
        }
        if config.host.trust_claimed_permissions {
            tracing::warn!(
                "trust_claimed_permissions is on: a sender [senders] does not list holds \
                 whatever permissions its message claims; for development only"
            );
        }
        if trust.is_enforcing() {
            tracing::info!("plugin files load only when {}", trust.describe());
        }
        let core = Registry::new(handle, config.host.clone());
        let trust = trust.counting(core.metrics.files_refused.clone());
        let shadow = ShadowDir::create(CopyGauges {
            count: core.metrics.private_copies.clone(),
            bytes: core.metrics.private_copies_bytes.clone(),
        })?;
        Ok(Self {
            pipeline: Pipeline::new(Arc::clone(&core)),
            core,
            shadow,
            config,
            trust,
            message_ids: message_id_prefix(),
            next_message: AtomicU64::new(1),
            reloading: std::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            cluster_report: std::sync::OnceLock::new(),
            route: OnceLock::new(),
            _own_runtime: own,
        })
    }

    /// Loads every plugin in `dir`. Only an unreadable folder is an error;
    /// plugin failures are in the report.
    pub fn load_dir(&self, dir: &Path) -> std::io::Result<LoadReport> {
        lifecycle::load_dir(&self.core, &self.shadow, dir, &self.config, &self.trust)
    }

    /// The host settings of the config (`[host]`).
    pub fn settings(&self) -> &crate::config::HostSettings {
        &self.config.host
    }

    /// Names of loaded plugins in load order, the lazy ones not started
    /// yet included.
    pub fn plugin_names(&self) -> Vec<String> {
        let mut names: Vec<(usize, String)> = self
            .core
            .plugins()
            .iter()
            .map(|p| (p.load_order, p.name().to_string()))
            .collect();
        names.extend(
            self.core
                .pending()
                .iter()
                .map(|p| (p.load_order, p.name().to_string())),
        );
        names.sort();
        names.dedup_by(|a, b| a.1 == b.1);
        names.into_iter().map(|(_, name)| name).collect()
    }

    /// Gives a message an id if it has none, and the sender's permissions
    /// from the config: what the message claims counts only for a sender
    /// `[senders]` does not list, and only with `trust_claimed_permissions`.
    fn prepare(&self, mut message: InboundMessage) -> InboundMessage {
        if message.id.is_empty() {
            let n = self.next_message.fetch_add(1, Ordering::Relaxed);
            message.id = format!("{}-{n}", self.message_ids);
        }
        let claimed = std::mem::take(&mut message.permissions);
        message.permissions = self.config.sender_permissions(&message.sender, claimed);
        message
    }

    /// Runs a message through the pipeline on this thread: the fastest way,
    /// with no hand-over to another thread. Blocks while plugin code runs.
    ///
    /// Every call into a plugin has a deadline; when one is missed, the
    /// message is finished on time on another thread, but this thread is
    /// lent to the late call until it returns. A front-end that must
    /// answer on time whatever plugins do uses [`PluginHost::answer`].
    pub fn handle_message(&self, message: InboundMessage) -> Reply {
        pipeline::handle_message(&self.pipeline, self.prepare(message))
    }

    /// Runs a message through the pipeline on the blocking pool and
    /// returns its reply when it is ready: on time even when a plugin call
    /// hangs (the call is abandoned at its deadline and reported in the
    /// reply's errors).
    pub async fn answer(&self, message: InboundMessage) -> Reply {
        pipeline::answer(&self.pipeline, self.prepare(message)).await
    }

    /// Sends the front ends' messages through `route` from now on (cluster
    /// mode) instead of this host's pipeline; [`PluginHost::answer`] still
    /// runs them here. A second route is refused (logged).
    pub(crate) fn route_messages(&self, route: Arc<dyn MessageRoute>) {
        if self.route.set(route).is_err() {
            tracing::warn!("a message route is already installed; the new one is ignored");
        }
    }

    /// A front end's message: through the route when one is installed,
    /// else [`PluginHost::answer`], saying whether the message was refused
    /// because the host is shutting down (a front-end answers that its own
    /// way, an HTTP 503 say). Only a routed message can fail.
    pub(crate) async fn answer_unless_shutting_down(
        &self,
        message: InboundMessage,
    ) -> Result<pipeline::Answered<Reply>, RouteError> {
        let Some(route) = self.route.get() else {
            return Ok(self.answer_here(message).await);
        };
        if self.is_shutting_down() {
            return Ok(pipeline::Answered::ShuttingDown(pipeline::refused(
                &message.id,
            )));
        }
        route.answer(message).await.map(pipeline::Answered::Served)
    }

    /// [`PluginHost::answer`], saying whether the message was refused
    /// because the host is shutting down: this host's pipeline, whatever
    /// the route (the cluster's consumer runs messages with it).
    pub(crate) async fn answer_here(&self, message: InboundMessage) -> pipeline::Answered<Reply> {
        pipeline::answer_unless_shutting_down(&self.pipeline, self.prepare(message)).await
    }

    /// A front end's batch: through the route when one is installed (each
    /// message on its own, at once; a message without a reply gets an
    /// error reply), else [`PluginHost::answer_batch`], saying whether the
    /// batch was refused because the host is shutting down.
    pub(crate) async fn answer_batch_unless_shutting_down(
        &self,
        messages: Vec<InboundMessage>,
    ) -> pipeline::Answered<Vec<Reply>> {
        let Some(route) = self.route.get() else {
            let messages: Vec<InboundMessage> =
                messages.into_iter().map(|m| self.prepare(m)).collect();
            return pipeline::answer_batch_unless_shutting_down(&self.pipeline, messages).await;
        };
        if self.is_shutting_down() {
            return pipeline::Answered::ShuttingDown(
                messages.iter().map(|m| pipeline::refused(&m.id)).collect(),
            );
        }
        let waiting: Vec<(String, tokio::task::JoinHandle<Result<Reply, RouteError>>)> = messages
            .into_iter()
            .map(|message| {
                let route = Arc::clone(route);
                let id = message.id.clone();
                (
                    id,
                    self.core
                        .runtime()
                        .spawn(async move { route.answer(message).await }),
                )
            })
            .collect();
        let mut replies = Vec::with_capacity(waiting.len());
        for (id, task) in waiting {
            replies.push(match task.await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => error.into_reply(),
                Err(_) => pipeline::lost(&id),
            });
        }
        pipeline::Answered::Served(replies)
    }

    /// [`PluginHost::answer`] from a thread outside the runtime, for tests.
    #[cfg(test)]
    pub(crate) fn answer_blocking(&self, message: InboundMessage) -> Reply {
        self.core.runtime().block_on(self.answer(message))
    }

    /// [`PluginHost::answer_batch`] from a thread outside the runtime, for
    /// tests.
    #[cfg(test)]
    pub(crate) fn answer_batch_blocking(&self, messages: Vec<InboundMessage>) -> Vec<Reply> {
        self.core.runtime().block_on(self.answer_batch(messages))
    }

    /// Runs several messages; evaluators score them together with their
    /// batch form. Runs on this thread, and blocks while plugin code runs,
    /// as [`PluginHost::handle_message`] does.
    pub fn handle_batch(&self, messages: Vec<InboundMessage>) -> Vec<Reply> {
        let messages: Vec<InboundMessage> = messages.into_iter().map(|m| self.prepare(m)).collect();
        pipeline::handle_batch(&self.pipeline, messages)
    }

    /// Runs several messages as [`PluginHost::handle_batch`] does, on the
    /// blocking pool, and returns the replies when they are ready: on time
    /// even when a plugin call hangs.
    pub async fn answer_batch(&self, messages: Vec<InboundMessage>) -> Vec<Reply> {
        let messages: Vec<InboundMessage> = messages.into_iter().map(|m| self.prepare(m)).collect();
        pipeline::answer_batch(&self.pipeline, messages).await
    }

    /// Loads plugins from sources that are already open (in unit tests:
    /// plugin values in memory).
    #[cfg(test)]
    pub(crate) fn load_sources(
        &self,
        sources: &[Arc<dyn crate::plugin::PluginSource>],
    ) -> LoadReport {
        let mut report = LoadReport::default();
        lifecycle::load_sources(&self.core, sources, &self.config, &mut report);
        report
    }

    /// Reloads a plugin from a source that is already open (in unit tests:
    /// a plugin value in memory).
    #[cfg(test)]
    pub(crate) fn reload_source(
        &self,
        name: &str,
        source: Arc<dyn crate::plugin::PluginSource>,
    ) -> Result<crate::reload::Reloaded, crate::reload::ReloadFailure> {
        let file = source.file().to_path_buf();
        crate::reload::reload(
            &self.core,
            &self.config,
            name,
            Some(&file),
            ReloadOrigin::Api,
            crate::reload::WhenUnchanged::Reload,
            |_| Ok(source),
        )
    }

    /// Loads the plugin files in `dir` that no loaded plugin came from: new
    /// files, and files whose plugins failed or were stopped (for instance
    /// while waiting for a dependency that has now arrived).
    pub fn rescan(&self, dir: &Path) -> std::io::Result<LoadReport> {
        let _one_at_a_time = self.one_change_at_a_time();
        lifecycle::rescan(&self.core, &self.shadow, dir, &self.config, &self.trust)
    }

    /// Stops the plugins loaded from `file`, after draining the calls in
    /// flight, together with every plugin that depends on them (they cannot
    /// work without it; a later `rescan` brings them back when the file
    /// returns). Returns the names stopped, dependents first.
    pub fn remove_file(&self, file: &Path) -> Vec<String> {
        let _one_at_a_time = self.one_change_at_a_time();
        lifecycle::remove_file(&self.core, file)
    }

    /// The `reloading` lock: loads after the first, reloads and removals
    /// run one at a time.
    fn one_change_at_a_time(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reloads a plugin from its file, swapping the new generation in while
    /// the agent serves. Blocks; reloads run one at a time. A file
    /// byte-identical to the serving generation's is not reloaded
    /// ([`WhenUnchanged::Skip`](crate::WhenUnchanged::Skip)). The audit trail
    /// names the caller as [`ReloadOrigin::Api`].
    pub fn reload(
        &self,
        name: &str,
    ) -> Result<crate::reload::Reloaded, crate::reload::ReloadFailure> {
        self.reload_as(name, None, ReloadOrigin::Api, Default::default())
    }

    /// Reloads a plugin from a given file, as [`PluginHost::reload`] does.
    pub fn reload_from(
        &self,
        name: &str,
        file: Option<&Path>,
    ) -> Result<crate::reload::Reloaded, crate::reload::ReloadFailure> {
        self.reload_as(name, file, ReloadOrigin::Api, Default::default())
    }

    /// Reloads a plugin from its file (or from `file`) at the request of
    /// `origin`, which the audit trail records (`plugin_reloaded`,
    /// `agent_host_reloads_total`); `when_unchanged` says what a file
    /// byte-identical to the serving generation's does. The new file passes
    /// the `[trust]` checks like any load.
    pub fn reload_as(
        &self,
        name: &str,
        file: Option<&Path>,
        origin: ReloadOrigin,
        when_unchanged: crate::reload::WhenUnchanged,
    ) -> Result<crate::reload::Reloaded, crate::reload::ReloadFailure> {
        let _one_at_a_time = self.one_change_at_a_time();
        // A lazy plugin not started yet starts first, then is replaced like
        // any other (its state, if any, handed over).
        if self.core.pending_named(name).is_some() {
            if let Some(_admitted) = self.core.admission.enter() {
                if let Err(cause) = self.core.start_pending(name) {
                    tracing::warn!(plugin = name, "before its reload: {cause}");
                }
            }
        }
        crate::reload::reload(
            &self.core,
            &self.config,
            name,
            file,
            origin,
            when_unchanged,
            |file| lifecycle::open_source(file, &self.shadow, &self.config, &self.trust),
        )
    }

    /// Watches `dir` (see [`Watch`](crate::Watch)): a changed file reloads
    /// its plugins, a new file is loaded, a removed one stops its plugins.
    /// Events are debounced by `debounce`; dropping the returned value stops
    /// watching.
    pub fn watch(
        self: &Arc<Self>,
        dir: &Path,
        debounce: std::time::Duration,
    ) -> Result<crate::Watch, crate::WatchError> {
        crate::reload::watch::watch(Arc::clone(self) as Arc<dyn WatchedHost>, dir, debounce)
    }

    /// A probe that calls one plugin's `validate` directly, for the
    /// benchmarks. Not a public API.
    #[doc(hidden)]
    pub fn validate_probe(&self, plugin: &str) -> Option<crate::bench_support::ValidateProbe> {
        self.core
            .plugin(plugin)
            .map(|plugin| crate::bench_support::ValidateProbe { plugin })
    }

    /// The state of every loaded plugin, in load order; a lazy plugin not
    /// started yet has `started: false`.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let services = self.core.services();
        let mut statuses: Vec<PluginStatus> = self
            .core
            .plugins()
            .iter()
            .map(|plugin| PluginStatus::of(plugin, &services, self.core.mapped(plugin.name())))
            .collect();
        for plugin in self.core.pending() {
            if statuses.iter().all(|s| s.name != plugin.name()) {
                let placement = self.config.isolation.placement_of(plugin.name());
                let stats = self.core.metrics.stats_of(plugin.name()).map(|s| s.view());
                statuses.push(PluginStatus::pending(&plugin, placement, stats));
            }
        }
        statuses.sort_by_key(|s| s.load_order);
        statuses
    }

    /// The state of one loaded plugin.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let services = self.core.services();
        match self.core.plugin(name) {
            Some(plugin) => Some(PluginStatus::of(
                &plugin,
                &services,
                self.core.mapped(plugin.name()),
            )),
            None => self.core.pending_named(name).map(|plugin| {
                let placement = self.config.isolation.placement_of(plugin.name());
                let stats = self.core.metrics.stats_of(plugin.name()).map(|s| s.view());
                PluginStatus::pending(&plugin, placement, stats)
            }),
        }
    }

    /// Metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.core.metrics.render()
    }

    /// The metrics, for the front-ends to count what they refuse.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.core.metrics
    }

    /// A live stream of every event on the bus.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<BusEvent> {
        self.core.bus.tap()
    }

    /// Calls a service method as the host (no permission check).
    pub fn call_service(
        &self,
        service: &str,
        method: &str,
        args: &Value,
    ) -> Result<Value, HostError> {
        let Some(_admitted) = self.core.admission.enter() else {
            return Err(HostError::new(
                agent_host_plugin_sdk::ErrorKind::Unavailable,
                crate::pipeline::SHUTTING_DOWN,
            ));
        };
        let json = self
            .core
            .call_service(None, service, method, &args.to_string())?;
        serde_json::from_str(&json).map_err(|e| {
            HostError::new(
                agent_host_plugin_sdk::ErrorKind::InvalidInput,
                format!("service '{service}' method '{method}' returned invalid JSON: {e}"),
            )
        })
    }

    /// Emits an event as the host; returns the handlers that failed. Once
    /// the host shuts down, no plugin receives it.
    pub fn emit(&self, event: &str, payload: Value) -> Vec<DeliveryFailure> {
        let Some(_admitted) = self.core.admission.enter() else {
            tracing::debug!(event, "not delivered: the host is shutting down");
            return Vec::new();
        };
        self.core.emit("host", event, payload)
    }

    /// Sends the events this host's plugins emit to `relay` as well (the
    /// other hosts of its cluster). Host events are never relayed.
    pub(crate) fn relay_events_to(&self, relay: Arc<dyn EventRelay>) {
        self.core.bus.relay_to(relay);
    }

    /// Delivers an event another host's plugin emitted (`depth` events deep
    /// in its cascade there) to this host's subscribers, without relaying
    /// it again. Once the host shuts down, no plugin receives it.
    pub(crate) fn deliver_from_elsewhere(&self, event: BusEvent, depth: u32) {
        let Some(_admitted) = self.core.admission.enter() else {
            return;
        };
        crate::registry::events::nested(Nesting::from_elsewhere(depth), || {
            self.core.emit_here(event)
        });
    }

    /// The `[trust] lock` file, when the config sets one.
    pub(crate) fn trust_lock_file(&self) -> Option<&Path> {
        self.config.trust.lock.as_deref()
    }

    /// The entries into plugin code in flight now (messages, host service
    /// calls and events, timers): the host's load.
    pub(crate) fn entries_in_flight(&self) -> usize {
        self.core.admission.active()
    }

    /// Says what `GET /v1/cluster` answers (the first caller wins).
    pub(crate) fn report_cluster_with(&self, report: Arc<dyn ClusterReport>) {
        let _ = self.cluster_report.set(report);
    }

    /// The cluster's status, in cluster mode.
    pub(crate) fn cluster_report(&self) -> Option<serde_json::Value> {
        self.cluster_report.get().map(|report| report.status())
    }

    /// Calls `handler` for every event matching `pattern`; returns the subscription id.
    pub fn on(
        &self,
        pattern: &str,
        handler: impl Fn(&BusEvent) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
            + Send
            + Sync
            + 'static,
    ) -> u64 {
        self.core
            .bus
            .subscribe(pattern, Listener::Host(Arc::new(handler)))
    }

    /// Marks the host as shutting down: front-ends refuse new work from
    /// now on, and so does the host (messages are answered with
    /// [`SHUTTING_DOWN`](crate::SHUTTING_DOWN) without reaching a plugin).
    /// [`PluginHost::shutdown`] does it too; a front-end calls it first to
    /// refuse work at once.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the host is shutting down (or has shut down).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops taking work, waits for the calls in flight to finish (at most
    /// the `shutdown_grace_ms` setting), then stops every plugin in reverse
    /// load order: its services (in reverse), then `on_unload`. Failures
    /// are returned, and never stop the rest.
    ///
    /// Calls still running when the grace period expires are named in the
    /// log (plugin, entry point, how long), and the plugins stop anyway:
    /// such a plugin's `on_unload` then runs while a call is still in it,
    /// which one warning line says.
    pub fn shutdown(&self) -> Vec<ShutdownError> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        self.begin_shutdown();
        let grace = Duration::from_millis(self.config.host.shutdown_grace_ms);
        lifecycle::stop_all(&self.core, grace)
    }
}

impl WatchedHost for PluginHost {
    fn plugins_from(&self, file: &Path) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|s| crate::load::discovery::same_place(&s.file, file))
            .map(|s| s.name)
            .collect()
    }

    fn reload_changed(
        &self,
        plugin: &str,
    ) -> Result<crate::reload::Reloaded, crate::reload::ReloadFailure> {
        self.reload_as(
            plugin,
            None,
            ReloadOrigin::Watcher,
            crate::reload::WhenUnchanged::Skip,
        )
    }

    fn remove_file(&self, file: &Path) -> Vec<String> {
        PluginHost::remove_file(self, file)
    }

    fn rescan(&self, dir: &Path) -> std::io::Result<LoadReport> {
        PluginHost::rescan(self, dir)
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What `GET /v1/plugins` and `list` show of a loaded plugin.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginStatus {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// The file it was loaded from.
    pub file: std::path::PathBuf,
    /// The SHA-256 of the bytes it was loaded from.
    pub sha256: String,
    /// Position in the load order.
    pub load_order: usize,
    /// Whether it is quarantined after repeated panics.
    pub quarantined: bool,
    /// Permissions it holds (requested and granted).
    pub permissions: Vec<String>,
    /// Its full manifest.
    pub manifest: agent_host_plugin_sdk::Manifest,
    /// Its services and whether each is running.
    pub services: Vec<ServiceStatus>,
    /// Bytes of this generation's library image.
    pub image_bytes: u64,
    /// The serving generation's number.
    pub generation: u64,
    /// Every generation loaded so far (all stay mapped) and their bytes.
    pub mapped: crate::registry::MappedImages,
    /// Whether it has started: `false` for a lazy plugin (`lazy_plugins`)
    /// not needed yet, checked but with no instance (its generation is 0).
    pub started: bool,
    /// Where it runs: in the host's process or in a worker of its own.
    pub placement: crate::isolation::Placement,
    /// Its worker process, when it runs in one: pid, restarts, quarantine,
    /// and the protections in force.
    pub worker: Option<crate::isolation::WorkerStatus>,
    /// `serving`, `lazy` (not started yet), `quarantined`, `restarting`
    /// (its worker died and is being restarted) or `failed` (a step of its
    /// life missed its deadline and the host gave up on it).
    pub state: &'static str,
    /// Why it is quarantined, restarting or failed.
    pub state_reason: Option<String>,
    /// Its handler runs and their durations, and its faults.
    pub stats: crate::StatsView,
    /// Its worker's resident memory for a plugin in a worker (its
    /// worker's, shared with the worker's other plugins), else the bytes of
    /// its mapped library image.
    pub memory_bytes: u64,
}

impl PluginStatus {
    /// Where the plugin runs, in one line: `in process (no sandbox)`, or
    /// the worker's pid, restarts and protections.
    pub fn placement_line(&self) -> String {
        match &self.worker {
            None if self.placement == crate::isolation::Placement::Process => {
                "in a worker process, not started yet".to_string()
            }
            None => "in process (no sandbox: a crash or hang here is the host's)".to_string(),
            Some(worker) => worker.describe(),
        }
    }
}

/// A service's name and state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// Whether it is running.
    pub running: bool,
}

impl PluginStatus {
    fn of(
        plugin: &crate::registry::LivePlugin,
        services: &[(String, String, bool)],
        mapped: crate::registry::MappedImages,
    ) -> Self {
        let m = &plugin.instance.manifest;
        let worker = plugin.instance.placement().worker_status();
        let (state, state_reason) = state_of(plugin, worker.as_ref());
        let memory_bytes = worker
            .as_ref()
            .and_then(|w| w.pid)
            .and_then(crate::sys::resident_bytes)
            .unwrap_or(plugin.instance.image_bytes);
        Self {
            name: m.name.clone(),
            version: m.version.clone(),
            description: m.description.clone(),
            file: plugin.instance.file.clone(),
            sha256: plugin.instance.sha256.clone(),
            load_order: plugin.load_order,
            quarantined: state == QUARANTINED,
            permissions: plugin.permissions.patterns().to_vec(),
            manifest: m.clone(),
            services: services
                .iter()
                .filter(|(_, owner, _)| owner == &m.name)
                .map(|(name, _, running)| ServiceStatus {
                    name: name.clone(),
                    running: *running,
                })
                .collect(),
            image_bytes: plugin.instance.image_bytes,
            generation: plugin.generation,
            mapped,
            started: true,
            placement: if worker.is_some() {
                crate::isolation::Placement::Process
            } else {
                crate::isolation::Placement::InProcess
            },
            worker,
            state,
            state_reason,
            stats: plugin.stats.view(),
            memory_bytes,
        }
    }

    fn pending(
        plugin: &crate::registry::lazy::PendingPlugin,
        placement: crate::isolation::Placement,
        stats: Option<crate::StatsView>,
    ) -> Self {
        let m = &plugin.manifest;
        Self {
            name: m.name.clone(),
            version: m.version.clone(),
            description: m.description.clone(),
            file: plugin.file.clone(),
            sha256: plugin.sha256.clone(),
            load_order: plugin.load_order,
            quarantined: false,
            permissions: plugin.permissions.clone(),
            manifest: (**m).clone(),
            services: m
                .services
                .iter()
                .map(|s| ServiceStatus {
                    name: s.name.clone(),
                    running: false,
                })
                .collect(),
            image_bytes: plugin.image_bytes,
            generation: 0,
            mapped: crate::registry::MappedImages::default(),
            started: false,
            placement,
            worker: None,
            state: "lazy",
            state_reason: None,
            stats: stats.unwrap_or_default(),
            memory_bytes: plugin.image_bytes,
        }
    }
}

/// The state of a plugin quarantined (after repeated panics, or with its
/// worker after repeated crashes).
const QUARANTINED: &str = "quarantined";

/// A started plugin's state and why: its own quarantine (panics), its
/// worker's (crashes), the host giving up on it, or its worker being
/// restarted; else serving.
fn state_of(
    plugin: &crate::registry::LivePlugin,
    worker: Option<&crate::isolation::WorkerStatus>,
) -> (&'static str, Option<String>) {
    if let Some(why) = worker.and_then(|w| w.quarantined.clone()) {
        return (QUARANTINED, Some(why));
    }
    if plugin.is_quarantined() {
        return (
            QUARANTINED,
            Some("quarantined after repeated panics; reload the plugin to try again".to_string()),
        );
    }
    if plugin.is_given_up() {
        return (
            "failed",
            Some(
                "a step of its life missed its deadline and the host gave up on this generation"
                    .to_string(),
            ),
        );
    }
    match worker {
        Some(worker) if worker.pid.is_none() => (
            "restarting",
            Some(match &worker.last_crash {
                Some(crash) => format!("its worker process died ({crash}) and is restarted"),
                None => "its worker process is not running".to_string(),
            }),
        ),
        _ => ("serving", None),
    }
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;
