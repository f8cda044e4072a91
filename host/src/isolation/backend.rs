//! An isolated plugin, as the registry and the pipeline see it: a
//! [`Backend`] whose calls cross to the plugin's worker process, and which
//! restarts that worker when it dies.
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
use super::protocol::{Answer, Call, Hello, WireMessage};
use super::settings::IsolationSettings;
use super::WorkerStatus;
use crate::load::library::PrivateCopy;
use crate::plugin::{Backend, Failure, MessageRef, MessageRound, RoundDeadlines};
use crate::watchdog::unix_ms_now;
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ActionResult, ErrorKind, Evaluation, Host, Level};
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Announces a worker's life to the rest of the host: an event name
/// (`plugin:crashed`, `plugin:restarted`, `plugin:quarantined`) and its
/// payload.
pub(crate) type Announce = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// A call past its deadline by this much is abandoned even if nobody
/// cancelled it.
const DEADLINE_GRACE_MS: u64 = 1_000;

/// What a worker of one plugin is started with.
pub(crate) struct WorkerSpec {
    /// The worker program.
    pub program: PathBuf,
    /// The plugin's name.
    pub plugin: String,
    /// The handshake (a [`Job::Serve`]).
    pub hello: Hello,
    /// The private copy the workers open: held so that it stays on disk
    /// while a worker of the plugin may (re)start.
    pub _copy: PrivateCopy,
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

/// A plugin that runs in a worker process.
pub(crate) struct WorkerBackend {
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

impl WorkerBackend {
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

    /// Makes one call into the worker. `control` is the call's own control;
    /// without one, the control of the host call this thread is in (a
    /// validate inside a message) decides when to give up.
    fn call(&self, call: Call, control: Option<&CallControl>) -> Result<Answer, Failure> {
        if let Some(why) = lock(&self.inner.supervision).quarantined.clone() {
            return Err(Failure::new(ErrorKind::Unavailable, why));
        }
        let Some(process) = self.inner.current() else {
            return Err(Failure::new(
                ErrorKind::Unavailable,
                "its worker process is not running",
            ));
        };
        let what = || describe(&call);
        let cancelled = || {
            let (deadline, cancelled) = match control {
                Some(control) => (control.deadline_unix_ms(), control.is_cancelled()),
                None => crate::current_call::inherited().unwrap_or((0, false)),
            };
            cancelled || (deadline != 0 && unix_ms_now() > deadline + DEADLINE_GRACE_MS)
        };
        match process.call(&call, &what, &cancelled) {
            Ok(reply) => reply.map_err(Failure::from),
            Err(fault) => Err(self.inner.failure(&describe(&call), &process, fault)),
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
        let mut steps = vec![Call::OnLoad];
        steps.extend(
            (0..self.spec.manifest.services.len() as u32)
                .map(|service| Call::StartService { service }),
        );
        steps.extend(
            self.spec
                .manifest
                .providers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.subscribable)
                .map(|(i, _)| Call::SetSubscribed {
                    provider: i as u32,
                    subscribed: true,
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
                    describe(step),
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

/// A call's name in messages.
fn describe(call: &Call) -> String {
    match call {
        Call::OnLoad => "on_load".into(),
        Call::OnUnload => "on_unload".into(),
        Call::Validate { .. } => "validate".into(),
        Call::Message { .. } => "validate and evaluators".into(),
        Call::Handle { action, .. } => format!("the handler of action {action}"),
        Call::Provide { .. } => "a provider's get".into(),
        Call::SetSubscribed { provider, .. } => format!("the subscription of provider {provider}"),
        Call::Evaluate { evaluator, .. } | Call::EvaluateBatch { evaluator, .. } => {
            format!("evaluator {evaluator}")
        }
        Call::StartService { service } => format!("starting service {service}"),
        Call::StopService { service } => format!("stopping service {service}"),
        Call::ServiceMethod { method, .. } => format!("the service method '{method}'"),
        Call::OnEvent { event, .. } => format!("the handler of event '{event}'"),
        Call::OnTimer { timer, .. } => format!("timer {timer}"),
        Call::ExportState => "export_state".into(),
        Call::ImportState { .. } => "import_state".into(),
    }
}

fn wire(message: MessageRef<'_>) -> WireMessage {
    WireMessage {
        id: message.id.to_string(),
        text: message.text.to_string(),
        context_json: message.context_json.to_string(),
    }
}

fn wrong(answer: &Answer) -> Failure {
    Failure::new(
        ErrorKind::Failed,
        format!("protocol error: the worker answered {answer:?}"),
    )
}

fn done(answer: Answer) -> Result<(), Failure> {
    match answer {
        Answer::Done => Ok(()),
        other => Err(wrong(&other)),
    }
}

fn text(answer: Answer) -> Result<String, Failure> {
    match answer {
        Answer::Text(text) => Ok(text),
        other => Err(wrong(&other)),
    }
}

fn evaluation(wire: super::protocol::WireEvaluation) -> Result<Evaluation, Failure> {
    crate::plugin::evaluation_from(wire.score, wire.passed, &wire.metadata_json)
}

impl Backend for WorkerBackend {
    fn on_load(&self) -> Result<(), Failure> {
        done(self.call(Call::OnLoad, None)?)
    }

    fn on_unload(&self) -> Result<(), Failure> {
        done(self.call(Call::OnUnload, None)?)
    }

    fn validate(&self, action: u32, message: MessageRef<'_>) -> Result<bool, Failure> {
        let mut answer = Ok(false);
        self.validate_each(&[action], message, &mut |_, outcome| answer = outcome);
        answer
    }

    fn validate_each(
        &self,
        actions: &[u32],
        message: MessageRef<'_>,
        answer: &mut dyn FnMut(u32, Result<bool, Failure>),
    ) {
        let call = Call::Validate {
            actions: actions.to_vec(),
            message: wire(message),
            deadline_ms: crate::current_call::inherited().map_or(0, |(d, _)| d),
        };
        match self.call(call, None) {
            Ok(Answer::Validated(answers)) if answers.len() == actions.len() => {
                for (&action, outcome) in actions.iter().zip(answers) {
                    answer(action, outcome.map_err(Failure::from));
                }
            }
            Ok(other) => {
                let error = wrong(&other);
                for &action in actions {
                    answer(action, Err(error.clone()));
                }
            }
            Err(error) => {
                for &action in actions {
                    answer(action, Err(error.clone()));
                }
            }
        }
    }

    fn handle(
        &self,
        action: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<ActionResult, Failure> {
        let call = Call::Handle {
            action,
            message: wire(message),
            deadline_ms: control.deadline_unix_ms(),
        };
        match self.call(call, Some(control))? {
            Answer::Handled(json) => serde_json::from_str(&json).map_err(|e| {
                Failure::new(
                    ErrorKind::InvalidInput,
                    format!("returned invalid JSON: {e}"),
                )
            }),
            other => Err(wrong(&other)),
        }
    }

    fn provide(
        &self,
        provider: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<String, Failure> {
        let mut value = Err(Failure::new(ErrorKind::Failed, "no answer"));
        self.provide_each(&[provider], message, control, &mut |_, v| value = v);
        value
    }

    fn provide_each(
        &self,
        providers: &[u32],
        message: MessageRef<'_>,
        control: &CallControl,
        answer: &mut dyn FnMut(u32, Result<String, Failure>),
    ) {
        let call = Call::Provide {
            providers: providers.to_vec(),
            message: wire(message),
            deadline_ms: control.deadline_unix_ms(),
        };
        let outcome = match self.call(call, Some(control)) {
            Ok(Answer::Provided(values)) if values.len() == providers.len() => {
                for (&provider, value) in providers.iter().zip(values) {
                    answer(provider, value.map_err(Failure::from));
                }
                return;
            }
            Ok(other) => wrong(&other),
            Err(error) => error,
        };
        for &provider in providers {
            answer(provider, Err(outcome.clone()));
        }
    }

    fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<(), Failure> {
        done(self.call(
            Call::SetSubscribed {
                provider,
                subscribed,
            },
            None,
        )?)
    }

    fn evaluate(
        &self,
        evaluator: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, Failure> {
        let call = Call::Evaluate {
            evaluator,
            message: wire(message),
            deadline_ms: control.deadline_unix_ms(),
        };
        match self.call(call, Some(control))? {
            Answer::Evaluated(wire) => evaluation(wire),
            other => Err(wrong(&other)),
        }
    }

    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[MessageRef<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>, Failure> {
        let call = Call::EvaluateBatch {
            evaluator,
            messages: messages.iter().map(|m| wire(*m)).collect(),
            deadline_ms: control.deadline_unix_ms(),
        };
        match self.call(call, Some(control))? {
            Answer::EvaluatedBatch(wires) => wires.into_iter().map(evaluation).collect(),
            other => Err(wrong(&other)),
        }
    }

    fn start_service(&self, service: u32) -> Result<(), Failure> {
        done(self.call(Call::StartService { service }, None)?)
    }

    fn stop_service(&self, service: u32) -> Result<(), Failure> {
        done(self.call(Call::StopService { service }, None)?)
    }

    fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String, Failure> {
        let call = Call::ServiceMethod {
            service,
            method: method.to_string(),
            args_json: args_json.to_string(),
            deadline_ms: control.deadline_unix_ms(),
        };
        text(self.call(call, Some(control))?)
    }

    fn on_event(&self, subscription: u64, event: &str, payload_json: &str) -> Result<(), Failure> {
        let call = Call::OnEvent {
            subscription,
            event: event.to_string(),
            payload_json: payload_json.to_string(),
            source: crate::current_call::current_source().unwrap_or_default(),
            deadline_ms: crate::current_call::inherited().map_or(0, |(d, _)| d),
        };
        done(self.call(call, None)?)
    }

    fn on_timer(&self, timer: u64) -> Result<(), Failure> {
        let call = Call::OnTimer {
            timer,
            deadline_ms: crate::current_call::inherited().map_or(0, |(d, _)| d),
        };
        done(self.call(call, None)?)
    }

    fn export_state(&self) -> Result<String, Failure> {
        text(self.call(Call::ExportState, None)?)
    }

    fn import_state(&self, state_json: &str) -> Result<(), Failure> {
        done(self.call(
            Call::ImportState {
                state_json: state_json.to_string(),
            },
            None,
        )?)
    }

    fn worker_status(&self) -> Option<WorkerStatus> {
        Some(self.status())
    }

    /// The worker is not restarted once the host gave up on the plugin
    /// (a step of its life missed its deadline): the kill that follows
    /// ends it for good.
    fn give_up(&self) {
        lock(&self.inner.supervision).retired = true;
    }

    fn begin_message(
        &self,
        actions: &[u32],
        evaluators: &[u32],
        message: MessageRef<'_>,
        deadlines: RoundDeadlines,
    ) -> Option<Box<dyn MessageRound>> {
        let call = Call::Message {
            actions: actions.to_vec(),
            evaluators: evaluators.to_vec(),
            message: wire(message),
            deadline_ms: deadlines.validate_ms,
            evaluate_deadline_ms: deadlines.evaluate_ms,
        };
        let failed = |error: Failure| {
            Some(Box::new(WorkerRound {
                inner: Arc::clone(&self.inner),
                process: None,
                pending: None,
                validated: None,
                validates_read: false,
                evaluations: None,
                error: Some(error),
                actions: actions.len(),
            }) as Box<dyn MessageRound>)
        };
        if let Some(why) = lock(&self.inner.supervision).quarantined.clone() {
            return failed(Failure::new(ErrorKind::Unavailable, why));
        }
        let Some(process) = self.inner.current() else {
            return failed(Failure::new(
                ErrorKind::Unavailable,
                "its worker process is not running",
            ));
        };
        let what = || describe(&call);
        let validate_ms = deadlines.validate_ms;
        let late = || validate_ms != 0 && unix_ms_now() > validate_ms + DEADLINE_GRACE_MS;
        match process.send(&call, &what, &late) {
            Ok(pending) => Some(Box::new(WorkerRound {
                inner: Arc::clone(&self.inner),
                process: Some(process),
                pending: Some(pending),
                validated: None,
                validates_read: false,
                evaluations: None,
                error: None,
                actions: actions.len(),
            })),
            Err(fault) => failed(self.inner.failure(&describe(&call), &process, fault)),
        }
    }
}

/// A message round with a worker: one request, two replies (the
/// validates, then the evaluators), each read when its phase asks.
struct WorkerRound {
    inner: Arc<Inner>,
    process: Option<Arc<WorkerProcess>>,
    pending: Option<PendingCall>,
    validated: Option<Vec<Result<bool, Failure>>>,
    /// Whether the validates' reply has been read (it comes first).
    validates_read: bool,
    evaluations: Option<Vec<Result<Evaluation, Failure>>>,
    /// Why the round has no (more) answers.
    error: Option<Failure>,
    actions: usize,
}

impl WorkerRound {
    /// Reads the next reply; a fault ends the round with its error.
    fn next(&mut self, cancelled: &dyn Fn() -> bool) -> Option<Answer> {
        let (Some(process), Some(pending)) = (&self.process, &mut self.pending) else {
            return None;
        };
        let what = || "validate and evaluators".to_string();
        match process.reply(pending, &what, cancelled) {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(error)) => {
                self.error = Some(Failure::from(error));
                self.pending = None;
                None
            }
            Err(fault) => {
                self.error = Some(self.inner.failure(&what(), process, fault));
                self.pending = None;
                None
            }
        }
    }

    fn error(&self) -> Failure {
        self.error
            .clone()
            .unwrap_or_else(|| Failure::new(ErrorKind::Failed, "the worker sent no answer"))
    }

    fn read_validated(&mut self, cancelled: &dyn Fn() -> bool) {
        if self.validates_read {
            return;
        }
        self.validates_read = true;
        let answers = match self.next(cancelled) {
            Some(Answer::Validated(answers)) if answers.len() == self.actions => answers
                .into_iter()
                .map(|a| a.map_err(Failure::from))
                .collect(),
            Some(other) => {
                self.error = Some(wrong(&other));
                self.pending = None;
                vec![Err(self.error()); self.actions]
            }
            None => vec![Err(self.error()); self.actions],
        };
        self.validated = Some(answers);
    }
}

impl MessageRound for WorkerRound {
    fn validated(&mut self, cancelled: &dyn Fn() -> bool) -> Vec<Result<bool, Failure>> {
        self.read_validated(cancelled);
        self.validated.take().unwrap_or_default()
    }

    fn evaluation(
        &mut self,
        position: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Evaluation, Failure> {
        if self.evaluations.is_none() {
            // The validates' reply comes first, read or not.
            self.read_validated(cancelled);
            let evaluations = match self.next(cancelled) {
                Some(Answer::EvaluatedEach(verdicts)) => {
                    if let (Some(process), Some(pending)) = (&self.process, self.pending.take()) {
                        process.give_back(pending);
                    }
                    verdicts
                        .into_iter()
                        .map(|v| v.map_err(Failure::from).and_then(evaluation))
                        .collect()
                }
                Some(other) => {
                    self.error = Some(wrong(&other));
                    self.pending = None;
                    Vec::new()
                }
                None => Vec::new(),
            };
            self.evaluations = Some(evaluations);
        }
        match self.evaluations.as_ref().and_then(|e| e.get(position)) {
            Some(outcome) => outcome.clone(),
            None => Err(self.error()),
        }
    }
}

impl Drop for WorkerBackend {
    /// The instance is gone (unloaded, or replaced by a reload and
    /// drained): its worker ends, and with it every page the plugin mapped.
    fn drop(&mut self) {
        lock(&self.inner.supervision).retired = true;
        if let Some(process) = self.inner.current() {
            process.stop();
        }
    }
}
