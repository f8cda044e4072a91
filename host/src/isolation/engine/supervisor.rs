//! The supervision of one isolated plugin's worker process: calls into
//! the current worker, and its restarts when it dies.
//!
//! A call that finds the worker dead (or sees it die) fails with the cause
//! (a signal, an exit code, a limit, a deadline) and the worker is
//! restarted after a backoff, doubling with each crash in the window. The
//! new worker gets what the old one had: `on_load` runs again, its services
//! start, its subscribed providers subscribe; the old worker's event
//! subscriptions and timers are dropped first (the plugin sets them up
//! again in `on_load`). After `quarantine_after_crashes` crashes in the
//! window the plugin is quarantined: no restart, and every call fails at
//! once saying why, until the operator reloads it.

use super::process::{CallFault, Ending, Guards, PendingCall, StartError, WorkerProcess};
use crate::call::{Answer, Call};
use crate::config::isolation::IsolationSettings;
use crate::isolation::wire::protocol::{Hello, Request, WireAnswer};
use crate::worker_status::WorkerStatus;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Announces a worker's life to the rest of the host: an event name
/// (`plugin:crashed`, `plugin:restarted`, `plugin:quarantined`) and its
/// payload.
pub(crate) type Announce = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// What went wrong in a call, as the plugin or the engine reports it.
type Failure = agent_host_plugin_sdk::Error;

/// What a worker of one plugin is started with.
pub(crate) struct WorkerSpec {
    /// The worker program.
    pub program: PathBuf,
    /// The plugin's name.
    pub plugin: String,
    /// The handshake (a [`Job::Serve`]).
    pub hello: Hello,
    /// The plugin's manifest: which services to start and providers to
    /// subscribe after a restart.
    pub manifest: Manifest,
    /// Restart and quarantine rules.
    pub settings: Arc<IsolationSettings>,
    /// The deadline of each step that restores a restarted worker.
    pub lifecycle_timeout: Duration,
}

/// Subscriptions and timers the plugin set up through the host, so that a
/// restart can drop the dead worker's before the new one sets up its own.
#[derive(Default)]
struct Tracked {
    subscriptions: BTreeSet<u64>,
    timers: BTreeSet<u64>,
}

#[derive(Default)]
struct Supervision {
    restarts: u32,
    crashes: VecDeque<Instant>,
    quarantined: Option<String>,
    last_crash: Option<String>,
    /// The plugin is being unloaded: no more restarts.
    retired: bool,
}

struct Inner {
    spec: WorkerSpec,
    host: Arc<dyn Host>,
    tracked: Arc<Mutex<Tracked>>,
    announce: Announce,
    current: RwLock<Option<Arc<WorkerProcess>>>,
    supervision: Mutex<Supervision>,
}

/// One isolated plugin's worker, supervised: calls go to the worker that
/// serves now; a worker that dies is restarted (or the plugin
/// quarantined). Dropping it ends the worker for good.
pub(crate) struct Supervisor {
    inner: Arc<Inner>,
}

/// The host's callbacks for a worker, noting the subscriptions and timers
/// the plugin sets up.
struct TrackingHost {
    host: Arc<dyn Host>,
    tracked: Arc<Mutex<Tracked>>,
}

impl Host for TrackingHost {
    fn log(&self, level: Level, message: &str) {
        self.host.log(level, message);
    }
    fn config(&self, key: &str) -> Result<String, Failure> {
        self.host.config(key)
    }
    fn call_service(
        &self,
        service: &str,
        method: &str,
        args_json: &str,
    ) -> Result<String, Failure> {
        self.host.call_service(service, method, args_json)
    }
    fn emit(&self, event: &str, payload_json: &str) -> Result<(), Failure> {
        self.host.emit(event, payload_json)
    }
    fn subscribe(&self, event: &str) -> Result<u64, Failure> {
        let id = self.host.subscribe(event)?;
        lock(&self.tracked).subscriptions.insert(id);
        Ok(id)
    }
    fn unsubscribe(&self, subscription: u64) -> Result<(), Failure> {
        lock(&self.tracked).subscriptions.remove(&subscription);
        self.host.unsubscribe(subscription)
    }
    fn push_provider_value(&self, provider: u32, value_json: &str) -> Result<(), Failure> {
        self.host.push_provider_value(provider, value_json)
    }
    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> Result<(), Failure> {
        self.host.set_timer(timer, after_ms, every_ms)?;
        lock(&self.tracked).timers.insert(timer);
        Ok(())
    }
    fn clear_timer(&self, timer: u64) -> Result<(), Failure> {
        lock(&self.tracked).timers.remove(&timer);
        self.host.clear_timer(timer)
    }
    fn current_call(&self) -> Option<(u64, bool)> {
        self.host.current_call()
    }
    fn event_source(&self) -> Option<String> {
        self.host.event_source()
    }
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, Failure> {
        self.host.resolve(host, port)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Supervisor {
    /// Starts the plugin's worker and waits until it serves.
    pub(crate) fn start(
        spec: WorkerSpec,
        host: Box<dyn Host>,
        announce: Announce,
    ) -> Result<Self, StartError> {
        let inner = Arc::new(Inner {
            spec,
            host: Arc::from(host),
            tracked: Arc::new(Mutex::new(Tracked::default())),
            announce,
            current: RwLock::new(None),
            supervision: Mutex::new(Supervision::default()),
        });
        let process = inner.spawn()?;
        *inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(process));
        Ok(Self { inner })
    }

    /// The operator's view of the worker.
    pub(crate) fn status(&self) -> WorkerStatus {
        let current = self.inner.current();
        let supervision = lock(&self.inner.supervision);
        WorkerStatus {
            pid: current
                .as_ref()
                .filter(|p| p.ending().is_none())
                .map(|p| p.pid),
            restarts: supervision.restarts,
            quarantined: supervision.quarantined.clone(),
            last_crash: supervision.last_crash.clone(),
            protections: current.map(|p| p.protections.clone()).unwrap_or_default(),
        }
    }

    /// The worker that serves now; an error when the plugin is
    /// quarantined or no worker runs.
    fn serving(&self) -> Result<Arc<WorkerProcess>, Failure> {
        if let Some(why) = lock(&self.inner.supervision).quarantined.clone() {
            return Err(Failure::new(ErrorKind::Unavailable, why));
        }
        self.inner.current().ok_or_else(|| {
            Failure::new(ErrorKind::Unavailable, "its worker process is not running")
        })
    }

    /// Makes one call into the worker, giving up (and killing the worker)
    /// once `cancelled` says so.
    pub(crate) fn call(
        &self,
        request: &Request<'_>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Answer, Failure> {
        let process = self.serving()?;
        let what = || request.describe();
        match process.call(request, &what, cancelled) {
            Ok(reply) => reply.map_err(Failure::from)?.into_answer(),
            Err(fault) => Err(self.inner.failure(&what(), &process, fault)),
        }
    }

    /// Sends a call answered more than once (a message round) without
    /// waiting: its answers are read from the round, in order.
    pub(crate) fn begin(&self, request: &Request<'_>, late: &dyn Fn() -> bool) -> PendingRound {
        let failed = |error: Failure| PendingRound {
            inner: Arc::clone(&self.inner),
            process: None,
            pending: None,
            error: Some(error),
        };
        let process = match self.serving() {
            Ok(process) => process,
            Err(error) => return failed(error),
        };
        let what = || request.describe();
        match process.send(request, &what, late) {
            Ok(pending) => PendingRound {
                inner: Arc::clone(&self.inner),
                process: Some(process),
                pending: Some(pending),
                error: None,
            },
            Err(fault) => failed(self.inner.failure(&what(), &process, fault)),
        }
    }

    /// The host gave up on the plugin (a step of its life missed its
    /// deadline): the worker is not restarted again, and the kill that
    /// follows ends it for good.
    pub(crate) fn retire(&self) {
        lock(&self.inner.supervision).retired = true;
    }
}

/// The answers of a call sent with [`Supervisor::begin`], read one by one.
pub(crate) struct PendingRound {
    inner: Arc<Inner>,
    process: Option<Arc<WorkerProcess>>,
    pending: Option<PendingCall>,
    /// Why the round has no (more) answers.
    error: Option<Failure>,
}

impl PendingRound {
    /// Reads the next answer; a fault ends the round with its error.
    pub(crate) fn next(&mut self, what: &str, cancelled: &dyn Fn() -> bool) -> Option<WireAnswer> {
        let (Some(process), Some(pending)) = (&self.process, &mut self.pending) else {
            return None;
        };
        let name = || what.to_string();
        match process.reply(pending, &name, cancelled) {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(error)) => {
                self.error = Some(Failure::from(error));
                self.pending = None;
                None
            }
            Err(fault) => {
                self.error = Some(self.inner.failure(what, process, fault));
                self.pending = None;
                None
            }
        }
    }

    /// Ends the round on an answer of the wrong kind: its connection is
    /// not used again.
    pub(crate) fn abandon(&mut self, error: Failure) {
        self.error = Some(error);
        self.pending = None;
    }

    /// The round is over, every answer read: its connection serves again.
    pub(crate) fn finish(&mut self) {
        if let (Some(process), Some(pending)) = (&self.process, self.pending.take()) {
            process.give_back(pending);
        }
    }

    /// Why the round has no (more) answers.
    pub(crate) fn error(&self) -> Failure {
        self.error
            .clone()
            .unwrap_or_else(|| Failure::new(ErrorKind::Failed, "the worker sent no answer"))
    }
}

impl Drop for Supervisor {
    /// The instance is gone (unloaded, or replaced by a reload and
    /// drained): its worker ends, and with it every page the plugin mapped.
    fn drop(&mut self) {
        lock(&self.inner.supervision).retired = true;
        if let Some(process) = self.inner.current() {
            process.stop();
        }
    }
}

impl Inner {
    /// The error of a call that got no reply: the worker died, or the call
    /// overran its deadline and the worker was killed.
    fn failure(&self, what: &str, process: &WorkerProcess, fault: CallFault) -> Failure {
        match fault {
            CallFault::Abandoned => Failure::new(
                ErrorKind::Cancelled,
                format!(
                    "{} overran its deadline; the host killed the worker process (pid {}) \
                     and restarts it",
                    what, process.pid
                ),
            ),
            CallFault::Violation(violation) => Failure::new(
                ErrorKind::Failed,
                format!(
                    "{what} failed: the worker process (pid {}) broke the protocol \
                     ({violation}); its connection was dropped",
                    process.pid
                ),
            ),
            CallFault::Ended(ending) => {
                let restarting = if lock(&self.supervision).quarantined.is_some() {
                    "the plugin is quarantined"
                } else {
                    "it is being restarted"
                };
                Failure::new(
                    ErrorKind::Failed,
                    format!(
                        "the worker process (pid {}) died: {ending}; {restarting}",
                        process.pid
                    ),
                )
            }
        }
    }
    fn current(&self) -> Option<Arc<WorkerProcess>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts a worker for the plugin; its end is reported to [`Inner::ended`].
    fn spawn(self: &Arc<Self>) -> Result<WorkerProcess, StartError> {
        let callbacks: Arc<dyn Host> = Arc::new(TrackingHost {
            host: Arc::clone(&self.host),
            tracked: Arc::clone(&self.tracked),
        });
        let owner = Arc::downgrade(self);
        let on_end = Box::new(move |pid: u32, ending: Ending| {
            if let Some(inner) = owner.upgrade() {
                inner.ended(pid, ending);
            }
        });
        WorkerProcess::start(
            &self.spec.program,
            &self.spec.hello,
            &self.spec.plugin,
            Some(callbacks),
            Some(on_end),
            Guards::of(&self.spec.settings),
        )
    }
    /// Called when a worker process ends: unless it was planned, counts the
    /// crash and restarts the worker (or quarantines the plugin).
    fn ended(self: &Arc<Self>, process_pid: u32, ending: Ending) {
        if ending.is_planned() {
            return;
        }
        let plugin = self.spec.plugin.clone();
        let now = Instant::now();
        let window = Duration::from_millis(self.spec.settings.crash_window_ms);
        // Decided under the lock; announced after it, since announcing runs
        // event handlers (plugin code).
        let (crashes, quarantined) = {
            let mut supervision = lock(&self.supervision);
            if supervision.retired || supervision.quarantined.is_some() {
                return;
            }
            supervision.last_crash = Some(ending.to_string());
            supervision.crashes.push_back(now);
            while supervision
                .crashes
                .front()
                .is_some_and(|at| now.duration_since(*at) > window)
            {
                supervision.crashes.pop_front();
            }
            let crashes = supervision.crashes.len() as u32;
            if crashes >= self.spec.settings.quarantine_after_crashes {
                let why = format!(
                    "quarantined after {crashes} crashes within {} s (the last: {ending}); \
                     reload the plugin to try again",
                    window.as_secs()
                );
                supervision.quarantined = Some(why.clone());
                (crashes, Some(why))
            } else {
                (crashes, None)
            }
        };
        tracing::error!(plugin, pid = process_pid, "worker process died: {ending}");
        (self.announce)(
            "plugin:crashed",
            json!({"plugin": plugin, "pid": process_pid, "cause": ending.to_string(),
                   "crashes_in_window": crashes}),
        );
        if let Some(why) = quarantined {
            tracing::error!(plugin, "{why}");
            (self.announce)(
                "plugin:quarantined",
                json!({"plugin": plugin, "cause": why}),
            );
            return;
        }
        let base = self.spec.settings.restart_backoff_ms;
        let doubled = base.saturating_mul(1 << (crashes.saturating_sub(1)).min(16));
        let delay = Duration::from_millis(doubled.min(self.spec.settings.restart_backoff_max_ms));
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("worker-restart-{plugin}"))
            .spawn(move || {
                std::thread::sleep(delay);
                inner.restart();
            });
        if let Err(error) = spawned {
            tracing::error!(plugin, "cannot restart the worker: {error}");
        }
    }

    fn restart(self: &Arc<Self>) {
        let plugin = &self.spec.plugin;
        if lock(&self.supervision).retired {
            return;
        }
        let started = Instant::now();
        let process = match self.spawn() {
            Ok(process) => Arc::new(process),
            Err(error) => {
                tracing::error!(plugin, "the worker could not be restarted: {error}");
                self.ended(0, Ending::Broken(format!("restart failed: {error}")));
                return;
            }
        };
        // The dead worker's subscriptions and timers go; `on_load` in the new
        // one sets up its own.
        let (subscriptions, timers) = {
            let mut tracked = lock(&self.tracked);
            (
                std::mem::take(&mut tracked.subscriptions),
                std::mem::take(&mut tracked.timers),
            )
        };
        for subscription in subscriptions {
            let _ = self.host.unsubscribe(subscription);
        }
        for timer in timers {
            let _ = self.host.clear_timer(timer);
        }
        let what = || "restoring the plugin".to_string();
        let mut steps = vec![Request::of(Call::OnLoad)];
        steps.extend(
            (0..self.spec.manifest.services.len() as u32)
                .map(|service| Request::of(Call::StartService { service })),
        );
        steps.extend(
            self.spec
                .manifest
                .providers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.subscribable)
                .map(|(i, _)| {
                    Request::of(Call::SetSubscribed {
                        provider: i as u32,
                        subscribed: true,
                    })
                }),
        );
        for step in &steps {
            // Each step has the lifecycle deadline: a restarted worker
            // stuck in `on_load` is killed, which counts as another crash.
            let deadline = Instant::now() + self.spec.lifecycle_timeout;
            let late = || Instant::now() > deadline;
            match process.call(step, &what, &late) {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(
                    plugin,
                    "after a restart, {}: {}",
                    step.describe(),
                    error.message
                ),
                Err(fault) => {
                    tracing::error!(plugin, "the restarted worker failed at once: {fault:?}");
                    return;
                }
            }
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&process));
        let restarts = {
            let mut supervision = lock(&self.supervision);
            supervision.restarts += 1;
            supervision.restarts
        };
        tracing::info!(
            plugin,
            pid = process.pid,
            "worker restarted in {:?}",
            started.elapsed()
        );
        (self.announce)(
            "plugin:restarted",
            json!({"plugin": plugin, "pid": process.pid, "restarts": restarts,
                   "took_ms": started.elapsed().as_millis() as u64}),
        );
    }
}
