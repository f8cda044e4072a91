//! The supervision of one worker process and the isolated plugins it
//! serves (one plugin, the plugins of one file, or those of a group):
//! calls into the current worker, and its restarts when it dies.
//!
//! Each plugin in the worker is a member, created in a slot the host
//! chooses and named by it in every request; a member leaves (its slot is
//! dropped in the worker) when its instance is dropped, and the worker ends
//! with its [`SharedWorker`].
//!
//! A call that finds the worker dead (or sees it die) fails with the cause
//! (a signal, an exit code, a limit, a deadline) and the worker is
//! restarted after a backoff, doubling with each crash in the window, for
//! all its members. The new worker gets what the old one had: each member
//! is created again, `on_load` runs again, its services start, its
//! subscribed providers subscribe; the old worker's event subscriptions and
//! timers are dropped first (each plugin sets them up again in `on_load`).
//! After `quarantine_after_crashes` crashes in the window the worker is
//! quarantined, and with it every member: no restart, and every call fails
//! at once saying why, until the operator reloads them.
//!
//! A call that finds the worker dead (before its request reached it)
//! waits for the new worker instead, within its own deadline, and is then
//! sent to it: a kill costs the calls in flight in the dead worker, not
//! those that come while it restarts. Only a call whose deadline passes
//! first fails, saying the worker did not come back in time; a worker
//! quarantined meanwhile fails the waiting calls at once.

use super::process::{CallFault, Ending, Guards, Hosts, PendingCall, StartError, WorkerProcess};
use crate::call::{Answer, Call};
use crate::config::isolation::IsolationSettings;
use crate::isolation::wire::protocol::{Hello, Request, WireAnswer};
use crate::worker_status::WorkerStatus;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Announces a worker's life to the rest of the host: an event name
/// (`plugin:crashed`, `plugin:restarted`, `plugin:quarantined`) and its
/// payload.
pub(crate) type Announce = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// What went wrong in a call, as the plugin or the engine reports it.
type Failure = agent_host_plugin_sdk::Error;

/// What a worker is started with.
pub(crate) struct WorkerSpec {
    /// The worker program.
    pub program: PathBuf,
    /// The worker's name in the log: a plugin's, a file's or a group's.
    pub name: String,
    /// The group the worker serves, if it serves one.
    pub group: Option<String>,
    /// The handshake (a [`Job::Serve`](crate::isolation::wire::protocol::Job)).
    pub hello: Hello,
    /// The `filesystem:` and `network:` permissions its sandbox holds: the
    /// union of its members'.
    pub grants: Vec<String>,
    /// Restart and quarantine rules.
    pub settings: Arc<IsolationSettings>,
    /// The deadline of each step that creates or restores a plugin.
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
    /// The worker is being stopped for good: no more restarts.
    retired: bool,
}

/// One plugin in the worker.
struct MemberEntry {
    /// Its name.
    plugin: String,
    /// Its file, numbered as the handshake's files.
    file: u32,
    /// Its index in the file's export list.
    index: u32,
    /// Its manifest: which services to start and providers to subscribe
    /// after a restart.
    manifest: Manifest,
    /// Its callbacks, noting its subscriptions and timers.
    host: Arc<TrackingHost>,
    /// The host gave up on it (a step of its life missed its deadline):
    /// a restart does not create it again.
    given_up: bool,
}

/// The members of one worker, by slot: who answers each one's callbacks.
#[derive(Default)]
struct Members {
    by_slot: Mutex<BTreeMap<u32, MemberEntry>>,
}

impl Hosts for Members {
    fn host(&self, slot: u32) -> Option<Arc<dyn Host>> {
        let members = lock(&self.by_slot);
        let host: Arc<dyn Host> = members.get(&slot).map(|m| Arc::clone(&m.host))?;
        Some(host)
    }
}

struct Inner {
    spec: WorkerSpec,
    announce: Announce,
    members: Arc<Members>,
    next_slot: AtomicU32,
    current: RwLock<Option<Arc<WorkerProcess>>>,
    supervision: Mutex<Supervision>,
    /// Notified, under `supervision`, when a new worker serves, or the
    /// worker is quarantined or retired: what calls waiting for a
    /// restarting worker wait on.
    changed: Condvar,
}

/// How often a call waiting for a restarting worker looks at its own
/// cancellation (and deadline) between notifications.
const RESTART_WAIT_STEP: Duration = Duration::from_millis(5);

thread_local! {
    /// Whether this thread is restoring the members of a restarted worker:
    /// a call it makes back into the worker (a member's `on_load` calling a
    /// service that calls a member) cannot wait for the restart it is part
    /// of, and fails at once as before.
    static RESTORING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One worker process, supervised: calls go to the worker that serves
/// now; a worker that dies is restarted with all its members (or
/// quarantined). Dropping it ends the worker for good.
pub(crate) struct SharedWorker {
    inner: Arc<Inner>,
}

/// One plugin in a [`SharedWorker`]: its calls, and its slot, which it
/// leaves when dropped.
pub(crate) struct Member {
    inner: Arc<Inner>,
    slot: u32,
}

/// The host's callbacks for a worker, noting the subscriptions and timers
/// the plugin sets up.
struct TrackingHost {
    host: Box<dyn Host>,
    tracked: Mutex<Tracked>,
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

impl SharedWorker {
    /// Starts the worker and waits until it serves (no plugin yet).
    pub(crate) fn start(spec: WorkerSpec, announce: Announce) -> Result<Self, StartError> {
        let inner = Arc::new(Inner {
            spec,
            announce,
            members: Arc::new(Members::default()),
            next_slot: AtomicU32::new(0),
            current: RwLock::new(None),
            supervision: Mutex::new(Supervision::default()),
            changed: Condvar::new(),
        });
        let process = inner.spawn()?;
        *inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(process));
        Ok(Self { inner })
    }

    /// Creates plugin `index` of file `file` (numbered as the handshake's
    /// files) in the worker, its callbacks going to `host`.
    pub(crate) fn add(
        &self,
        manifest: &Manifest,
        file: u32,
        index: u32,
        host: Box<dyn Host>,
    ) -> Result<Member, Failure> {
        let slot = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
        let entry = MemberEntry {
            plugin: manifest.name.clone(),
            file,
            index,
            manifest: manifest.clone(),
            host: Arc::new(TrackingHost {
                host,
                tracked: Mutex::new(Tracked::default()),
            }),
            given_up: false,
        };
        lock(&self.inner.members.by_slot).insert(slot, entry);
        let deadline = Instant::now() + self.inner.spec.lifecycle_timeout;
        let late = move || Instant::now() > deadline;
        // Not repeated: a worker restarted meanwhile creates the member
        // itself, from its entry above.
        let repeatable = false;
        match self
            .inner
            .call(&Request::Create { slot, file, index }, repeatable, &late)
        {
            Ok(_) => Ok(Member {
                inner: Arc::clone(&self.inner),
                slot,
            }),
            Err(error) => {
                lock(&self.inner.members.by_slot).remove(&slot);
                Err(error)
            }
        }
    }

    /// Whether a plugin named `plugin` is among the members.
    pub(crate) fn serves(&self, plugin: &str) -> bool {
        lock(&self.inner.members.by_slot)
            .values()
            .any(|m| m.plugin == plugin)
    }

    /// Whether the worker is quarantined (a member that would join it
    /// gets a worker of its own instead).
    pub(crate) fn is_quarantined(&self) -> bool {
        lock(&self.inner.supervision).quarantined.is_some()
    }
}

impl Member {
    /// The operator's view of the member's worker.
    pub(crate) fn status(&self) -> WorkerStatus {
        let inner = &self.inner;
        let current = inner.current();
        let mut plugins: Vec<String> = lock(&inner.members.by_slot)
            .values()
            .map(|m| m.plugin.clone())
            .collect();
        plugins.sort();
        let supervision = lock(&inner.supervision);
        WorkerStatus {
            pid: current
                .as_ref()
                .filter(|p| p.ending().is_none())
                .map(|p| p.pid),
            restarts: supervision.restarts,
            quarantined: supervision.quarantined.clone(),
            last_crash: supervision.last_crash.clone(),
            protections: current.map(|p| p.protections.clone()).unwrap_or_default(),
            group: inner.spec.group.clone(),
            plugins,
            grants: inner.spec.grants.clone(),
        }
    }

    /// The member's slot, which its requests name.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// Which worker serves the member: members with the same key share
    /// one process, and one request carries their parts of a message.
    pub(crate) fn worker_key(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Makes one call into the worker, giving up (and killing the worker)
    /// once `cancelled` says so. A `repeatable` request (one that may run
    /// twice without harm) whose worker dies under it is made once more,
    /// on the worker that replaces it; any other fails with the cause.
    pub(crate) fn call(
        &self,
        request: &Request<'_>,
        repeatable: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Answer, Failure> {
        self.inner.call(request, repeatable, cancelled)
    }

    /// Sends a call answered more than once (a message round, which may
    /// carry other members' parts) without waiting: its answers are read
    /// from the round, in order.
    pub(crate) fn begin(&self, request: &Request<'_>, late: &dyn Fn() -> bool) -> PendingRound {
        let failed = |error: Failure| PendingRound {
            inner: Arc::clone(&self.inner),
            process: None,
            pending: None,
            error: Some(error),
            lost: false,
        };
        let what = || request.describe();
        match self.inner.send(request, &what, late) {
            Ok((process, pending)) => PendingRound {
                inner: Arc::clone(&self.inner),
                process: Some(process),
                pending: Some(pending),
                error: None,
                lost: false,
            },
            Err(error) => failed(error),
        }
    }

    /// The host gave up on the member (a step of its life missed its
    /// deadline): the kill that follows does not bring it back, though
    /// the worker restarts for the other members.
    pub(crate) fn retire(&self) {
        if let Some(member) = lock(&self.inner.members.by_slot).get_mut(&self.slot) {
            member.given_up = true;
        }
    }
}

impl Drop for Member {
    /// The instance is gone (unloaded, or replaced by a reload and
    /// drained): its slot is dropped in the worker, which goes on serving
    /// the other members.
    fn drop(&mut self) {
        lock(&self.inner.members.by_slot).remove(&self.slot);
        let Some(process) = self.inner.current() else {
            return;
        };
        if process.ending().is_some() {
            return;
        }
        let deadline = Instant::now() + self.inner.spec.lifecycle_timeout;
        let late = move || Instant::now() > deadline;
        let what = || "dropping the plugin".to_string();
        let request = Request::Drop { slot: self.slot };
        let _ = process.call(&request, &what, &late);
    }
}

/// The answers of a call sent with [`Member::begin`], read one by one.
pub(crate) struct PendingRound {
    inner: Arc<Inner>,
    process: Option<Arc<WorkerProcess>>,
    pending: Option<PendingCall>,
    /// Why the round has no (more) answers.
    error: Option<Failure>,
    /// Whether the worker died under the round (not stopped on purpose,
    /// nor killed for this round's own deadline): its calls, which have no
    /// effects, may be made again on the worker that replaces it.
    lost: bool,
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
                self.lost = matches!(&fault, CallFault::Ended(ending) if !ending.is_planned());
                self.error = Some(self.inner.failure(what, process, fault));
                self.pending = None;
                None
            }
        }
    }

    /// Whether the worker died under the round, which a new worker may
    /// then answer call by call (see the field `lost`).
    pub(crate) fn lost(&self) -> bool {
        self.lost
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

impl Drop for SharedWorker {
    /// Every member is gone: the worker ends, and with it every page its
    /// plugins mapped.
    fn drop(&mut self) {
        lock(&self.inner.supervision).retired = true;
        self.inner.changed.notify_all();
        if let Some(process) = self.inner.current() {
            process.stop();
        }
    }
}

impl Inner {
    /// The worker that serves now; an error when it is quarantined or no
    /// worker runs.
    fn serving(&self) -> Result<Arc<WorkerProcess>, Failure> {
        if let Some(why) = lock(&self.supervision).quarantined.clone() {
            return Err(Failure::new(ErrorKind::Unavailable, why));
        }
        self.current().ok_or_else(|| {
            Failure::new(ErrorKind::Unavailable, "its worker process is not running")
        })
    }

    /// Makes one call into the worker (see [`Member::call`]): at most one
    /// repeat, and only after a death the host did not plan (a stop is
    /// final; a call killed for its own deadline is abandoned, not ended).
    fn call(
        &self,
        request: &Request<'_>,
        repeatable: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Answer, Failure> {
        let what = || request.describe();
        let mut repeats_left = u8::from(repeatable);
        loop {
            let (process, pending) = self.send(request, &what, cancelled)?;
            match process.answer(pending, request, &what, cancelled) {
                Ok(reply) => return reply.map_err(Failure::from)?.into_answer(),
                Err(CallFault::Ended(ending)) if repeats_left > 0 && !ending.is_planned() => {
                    repeats_left -= 1;
                    tracing::info!(
                        pid = process.pid,
                        "{} is made again: its worker died under it ({ending})",
                        what()
                    );
                }
                Err(fault) => return Err(self.failure(&what(), &process, fault)),
            }
        }
    }

    /// Sends `request` to the worker that serves now. A worker found dead
    /// (the request did not reach it) is waited for: the request goes to
    /// the worker that replaces it, unless `cancelled` says to give up
    /// first, or the worker is quarantined or stopped for good.
    fn send(
        &self,
        request: &Request<'_>,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(Arc<WorkerProcess>, PendingCall), Failure> {
        let started = Instant::now();
        let mut process = self.serving()?;
        loop {
            match process.send(request, what, cancelled) {
                Ok(pending) => return Ok((process, pending)),
                Err(CallFault::Ended(ending)) if !ending.is_planned() => {
                    process = self.replacement(&process, started, cancelled)?;
                }
                Err(fault) => return Err(self.failure(&what(), &process, fault)),
            }
        }
    }

    /// Waits for the worker that replaces `dead`, until `cancelled` says
    /// to give up; fails at once if the worker is quarantined or retired.
    fn replacement(
        &self,
        dead: &Arc<WorkerProcess>,
        started: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Arc<WorkerProcess>, Failure> {
        let mut supervision = lock(&self.supervision);
        loop {
            if let Some(why) = &supervision.quarantined {
                return Err(Failure::new(ErrorKind::Unavailable, why.clone()));
            }
            if supervision.retired {
                return Err(Failure::new(
                    ErrorKind::Unavailable,
                    "its worker process was stopped for good",
                ));
            }
            if let Some(current) = self
                .current()
                .filter(|p| !Arc::ptr_eq(p, dead) && p.ending().is_none())
            {
                return Ok(current);
            }
            if RESTORING.with(std::cell::Cell::get) {
                return Err(Failure::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the worker (pid {}) died and this call comes from its restart, \
                         which cannot wait for itself",
                        dead.pid
                    ),
                ));
            }
            if cancelled() {
                return Err(Failure::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the worker (pid {}) was restarting and did not come back within {} ms",
                        dead.pid,
                        started.elapsed().as_millis()
                    ),
                ));
            }
            supervision = self
                .changed
                .wait_timeout(supervision, RESTART_WAIT_STEP)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

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

    /// Starts a worker; its end is reported to [`Inner::ended`].
    fn spawn(self: &Arc<Self>) -> Result<WorkerProcess, StartError> {
        let callbacks: Arc<dyn Hosts> = Arc::clone(&self.members) as Arc<dyn Hosts>;
        let owner = Arc::downgrade(self);
        let on_end = Box::new(move |pid: u32, ending: Ending| {
            if let Some(inner) = owner.upgrade() {
                inner.ended(pid, ending);
            }
        });
        WorkerProcess::start(
            &self.spec.program,
            &self.spec.hello,
            &self.spec.name,
            Some(callbacks),
            Some(on_end),
            Guards::of(&self.spec.settings),
        )
    }
    /// The names of the members, for announcements.
    fn member_names(&self) -> Vec<String> {
        lock(&self.members.by_slot)
            .values()
            .filter(|m| !m.given_up)
            .map(|m| m.plugin.clone())
            .collect()
    }

    /// Called when a worker process ends: unless it was planned, counts the
    /// crash and restarts the worker (or quarantines it), for every member.
    fn ended(self: &Arc<Self>, process_pid: u32, ending: Ending) {
        if ending.is_planned() {
            return;
        }
        let worker = self.spec.name.clone();
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
                self.changed.notify_all();
                (crashes, Some(why))
            } else {
                (crashes, None)
            }
        };
        let members = self.member_names();
        tracing::error!(worker, pid = process_pid, plugins = ?members, "worker process died: {ending}");
        for plugin in &members {
            (self.announce)(
                "plugin:crashed",
                json!({"plugin": plugin, "pid": process_pid, "cause": ending.to_string(),
                       "crashes_in_window": crashes}),
            );
        }
        if let Some(why) = quarantined {
            tracing::error!(worker, "{why}");
            for plugin in &members {
                (self.announce)(
                    "plugin:quarantined",
                    json!({"plugin": plugin, "cause": why}),
                );
            }
            return;
        }
        let base = self.spec.settings.restart_backoff_ms;
        let doubled = base.saturating_mul(1 << (crashes.saturating_sub(1)).min(16));
        let delay = Duration::from_millis(doubled.min(self.spec.settings.restart_backoff_max_ms));
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("worker-restart-{worker}"))
            .spawn(move || {
                std::thread::sleep(delay);
                inner.restart();
            });
        if let Err(error) = spawned {
            tracing::error!(worker, "cannot restart the worker: {error}");
        }
    }

    fn restart(self: &Arc<Self>) {
        let worker = &self.spec.name;
        if lock(&self.supervision).retired {
            return;
        }
        let started = Instant::now();
        let process = match self.spawn() {
            Ok(process) => Arc::new(process),
            Err(error) => {
                tracing::error!(worker, "the worker could not be restarted: {error}");
                self.ended(0, Ending::Broken(format!("restart failed: {error}")));
                return;
            }
        };
        let members: Vec<(u32, String, u32, u32, Manifest, Arc<TrackingHost>)> =
            lock(&self.members.by_slot)
                .iter()
                .filter(|(_, m)| !m.given_up)
                .map(|(&slot, m)| {
                    let host = Arc::clone(&m.host);
                    (
                        slot,
                        m.plugin.clone(),
                        m.file,
                        m.index,
                        m.manifest.clone(),
                        host,
                    )
                })
                .collect();
        for (slot, plugin, file, index, manifest, host) in &members {
            RESTORING.with(|restoring| restoring.set(true));
            let restored = self.restore(&process, *slot, plugin, (*file, *index), manifest, host);
            RESTORING.with(|restoring| restoring.set(false));
            if !restored {
                // The new worker died or hung: its end is counted as
                // another crash, which restarts it again.
                return;
            }
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&process));
        let restarts = {
            let mut supervision = lock(&self.supervision);
            supervision.restarts += 1;
            self.changed.notify_all();
            supervision.restarts
        };
        tracing::info!(
            worker,
            pid = process.pid,
            "worker restarted in {:?}",
            started.elapsed()
        );
        for (_, plugin, ..) in &members {
            (self.announce)(
                "plugin:restarted",
                json!({"plugin": plugin, "pid": process.pid, "restarts": restarts,
                       "took_ms": started.elapsed().as_millis() as u64}),
            );
        }
    }

    /// Creates one member again in a restarted worker and gives it what
    /// it had: the dead worker's subscriptions and timers go, then
    /// `on_load`, its services, its provider subscriptions. `false` when
    /// the new worker failed at once.
    fn restore(
        &self,
        process: &WorkerProcess,
        slot: u32,
        plugin: &str,
        (file, index): (u32, u32),
        manifest: &Manifest,
        host: &TrackingHost,
    ) -> bool {
        let (subscriptions, timers) = {
            let mut tracked = lock(&host.tracked);
            (
                std::mem::take(&mut tracked.subscriptions),
                std::mem::take(&mut tracked.timers),
            )
        };
        for subscription in subscriptions {
            let _ = host.host.unsubscribe(subscription);
        }
        for timer in timers {
            let _ = host.host.clear_timer(timer);
        }
        let what = || "restoring the plugin".to_string();
        let mut steps = vec![
            Request::Create { slot, file, index },
            Request::of(slot, Call::OnLoad),
        ];
        steps.extend(
            (0..manifest.services.len() as u32)
                .map(|service| Request::of(slot, Call::StartService { service })),
        );
        steps.extend(
            manifest
                .providers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.subscribable)
                .map(|(i, _)| {
                    Request::of(
                        slot,
                        Call::SetSubscribed {
                            provider: i as u32,
                            subscribed: true,
                        },
                    )
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
                    return false;
                }
            }
        }
        true
    }
}
