//! One worker process, as the host holds it: start and handshake, call
//! connections, the host's answers to its callbacks, its output in the
//! host's log, and how it ended.
//!
//! A call takes an idle connection (or makes one and passes it to the
//! worker), writes the call, and reads until the reply, answering the
//! worker's callbacks inline on the calling thread. Reads and writes wake
//! every [`POLL`] so a call whose host-side control was cancelled (its
//! deadline passed, the host went on without it) ends for real: the worker
//! is killed, every call in it fails with the cause, and the thread is
//! free. So does a worker that stops reading what the host writes (after
//! the call's deadline or `write_timeout_ms`, whichever comes first).
//!
//! The host trusts nothing a worker sends: a frame over `max_frame_bytes`
//! is refused from its length and the worker killed (a protocol
//! violation); a reply to another call (a stale one) or of the wrong kind
//! drops its connection, never returned to the pool, and fails the call in
//! progress; an idle connection that holds unasked bytes is dropped before
//! a call would read them. How a worker ended is its exit status whenever
//! the process ended by itself: after a failed read or write the host
//! waits briefly for that status before it names a cause of its own.
//!
//! A supervising thread waits for the process to end, without reaping it
//! first, so the process id cannot be reused while anyone may still signal
//! it.

use super::spawn;
use crate::config::isolation::IsolationSettings;
use crate::isolation::wire::link::{self, HostLink, Stream};
use crate::isolation::wire::protocol::{
    read_frame_within, read_preamble, write_frame, write_preamble, Callback, CallbackAnswer,
    FrameReader, FrameWriter, FromWorker, Hello, Ready, Request, ToWorker, WireAnswer, WireError,
};
use crate::log_limit::{self, LogLimiter};
use crate::worker_status::Protections;
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a waiting call looks at its cancellation signal.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// How long a worker may take from start to ready.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the host waits for a worker's exit status after a read or write
/// failed, before it names the failure itself (and kills the worker).
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// What the host accepts from its workers (`[isolation]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Guards {
    /// The longest frame accepted from a worker.
    pub max_frame_bytes: usize,
    /// How long a write may wait for the worker to read.
    pub write_timeout: Duration,
}

impl Guards {
    /// The guards the operator configured.
    pub(crate) fn of(settings: &IsolationSettings) -> Self {
        Self {
            max_frame_bytes: usize::try_from(settings.max_frame_bytes).unwrap_or(usize::MAX),
            write_timeout: Duration::from_millis(settings.write_timeout_ms),
        }
    }
}

/// Why a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The host ended it on purpose (unload, reload, shutdown).
    Stopped,
    /// The host killed it because a call overran its deadline.
    Overran(String),
    /// The host killed it because it stopped reading what the host wrote.
    StoppedReading {
        /// What the host was writing (a call's request, a callback's
        /// answer).
        what: String,
        /// How long the write waited.
        waited: Duration,
    },
    /// It exited with a code.
    Exited(i32),
    /// A signal ended it.
    Signalled(i32),
    /// The host killed it because its handshake took longer than this.
    HandshakeTimedOut(Duration),
    /// The host killed it because it broke the protocol (what it did).
    Violation(String),
    /// The host lost track of it (its status could not be read, a restart
    /// failed).
    Broken(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Stopped => f.write_str("it was stopped by the host"),
            Ending::Overran(call) => {
                write!(f, "the host killed it because {call} overran its deadline")
            }
            Ending::StoppedReading { what, waited } => write!(
                f,
                "the host killed it because it stopped reading: {what} was not read within {} ms",
                waited.as_millis()
            ),
            Ending::HandshakeTimedOut(after) => write!(
                f,
                "its handshake timed out after {} ms and the host killed it",
                after.as_millis()
            ),
            Ending::Violation(what) => {
                write!(f, "the host killed it for a protocol violation: {what}")
            }
            Ending::Exited(code) => {
                write!(
                    f,
                    "it exited with code {}",
                    spawn::describe_exit_code(*code)
                )
            }
            Ending::Signalled(signal) => {
                let name = spawn::signal_name(*signal);
                let hint = match signal {
                    6 => " (an abort: abort(), a Rust stack overflow, an allocation over its memory limit, or a panic in a `panic = \"abort\"` build)",
                    11 => " (a segmentation fault or a stack overflow)",
                    9 => " (killed)",
                    24 => " (over its CPU time limit)",
                    31 => " (a system call its sandbox forbids)",
                    _ => "",
                };
                write!(f, "it was ended by {name}{hint}")
            }
            Ending::Broken(why) => write!(f, "the host lost track of it: {why}"),
        }
    }
}

impl Ending {
    /// Whether the host meant it to end.
    pub(crate) fn is_planned(&self) -> bool {
        matches!(self, Ending::Stopped)
    }
}

/// The process's life, shared with its supervising thread.
struct Life {
    state: Mutex<LifeState>,
    ended: Condvar,
}

#[derive(Default)]
struct LifeState {
    /// What the host decided before the process ended (a kill's reason).
    planned: Option<Ending>,
    /// How it ended, once it has.
    ending: Option<Ending>,
    /// Whether the process has been reaped (its id may then be reused).
    reaped: bool,
    /// Told how the process ended; armed once its handshake succeeded (a
    /// worker that never served is its starter's failure, not a crash).
    on_end: Option<OnEnd>,
}

/// What a call into a worker can come to besides a reply.
#[derive(Debug)]
pub(crate) enum CallFault {
    /// The worker ended (before or during the call).
    Ended(Ending),
    /// The call's host-side control was cancelled; the worker was killed.
    Abandoned,
    /// The worker answered out of turn (a stale reply, one of the wrong
    /// kind): the connection was dropped; the worker serves on.
    Violation(String),
}

/// Told, once, how a worker process ended (its pid and the ending).
pub(crate) type OnEnd = Box<dyn FnOnce(u32, Ending) + Send>;

/// Who answers the callbacks of the plugins in a serving worker: the host
/// of the plugin in each slot.
pub(crate) trait Hosts: Send + Sync {
    /// The callbacks of the plugin in `slot`, while it is there.
    fn host(&self, slot: u32) -> Option<Arc<dyn Host>>;
}

/// A running worker.
pub(crate) struct WorkerProcess {
    /// The worker's process id.
    pub pid: u32,
    /// What its sandbox put in force.
    pub protections: Protections,
    /// The manifests it read, JSON.
    pub manifests_json: String,
    plugin: String,
    guards: Guards,
    next_call: AtomicU64,
    control: Mutex<Stream>,
    link: HostLink,
    idle: Mutex<Vec<HostConnection>>,
    life: Arc<Life>,
    /// The process itself, where only its handle can kill it (Windows).
    #[cfg(not(unix))]
    child: Arc<Mutex<Child>>,
    hosts: Option<Arc<dyn Hosts>>,
}

/// A call sent and not yet fully answered: it holds its connection. Dropped
/// before its last reply, the connection closes, and the worker's thread
/// for it ends after the call.
pub(crate) struct PendingCall {
    connection: HostConnection,
    /// The call's number, which its replies repeat.
    id: u64,
}

struct HostConnection {
    stream: Stream,
    reader: FrameReader,
    writer: FrameWriter,
}

impl HostConnection {
    /// Why this idle connection must not carry another call, if it must
    /// not: the worker sent something no call asked for, or closed it.
    fn unasked(&self) -> Option<String> {
        if self.reader.holds_bytes() {
            return Some("it holds part of a frame no call asked for".into());
        }
        let mut byte = [0u8; 1];
        match link::read_now(&self.stream, &mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Ok(0) => Some("the worker closed it".into()),
            Ok(_) => Some("the worker sent a frame no call asked for (a stale reply)".into()),
            Err(e) => Some(format!("it failed: {e}")),
        }
    }
}

/// Why a worker could not be started.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The worker program could not be run at all (missing, not
    /// executable), or no connection to it could be made.
    Spawn(String),
    /// The worker program ran but did not complete its handshake: how it
    /// ended.
    Handshake(String),
    /// The worker refused: it could not put its sandbox in place, or open
    /// the file.
    Refused {
        /// Its message.
        error: String,
    },
}

impl StartError {
    /// Whether the worker program is to blame (it cannot run or speak the
    /// protocol), rather than the plugin file it was given.
    pub(crate) fn is_the_programs(&self) -> bool {
        matches!(self, StartError::Spawn(_) | StartError::Handshake(_))
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(why) | StartError::Handshake(why) => f.write_str(why),
            StartError::Refused { error, .. } => f.write_str(error),
        }
    }
}

/// How a handshake failed.
enum HandshakeFault {
    /// The worker refused, with its message.
    Refused(String),
    /// Reading or writing failed.
    Io(io::Error),
}

impl WorkerProcess {
    /// Starts `program worker` for `hello` and waits until it is ready.
    /// `hosts` answer the callbacks of a serving worker; `plugin` names it
    /// in the log; `on_end` is told how a worker that served ended.
    pub(crate) fn start(
        program: &Path,
        hello: &Hello,
        plugin: &str,
        hosts: Option<Arc<dyn Hosts>>,
        on_end: Option<OnEnd>,
        guards: Guards,
    ) -> Result<Self, StartError> {
        let named = program.display();
        let (mut link, stdin) = HostLink::new().map_err(|e| {
            StartError::Spawn(format!("no connection for a worker could be made: {e}"))
        })?;
        let mut child = spawn::start(program, stdin).map_err(|e| {
            StartError::Spawn(format!(
                "the worker program {named} could not be started: {e}"
            ))
        })?;
        forward_output(plugin, child.stdout.take(), child.stderr.take());
        let control = match link.control(&mut child, HANDSHAKE_TIMEOUT) {
            Ok(control) => control,
            Err(error) => {
                let _ = child.kill();
                let ended = child.wait().map(|status| status_code(status).ending());
                return Err(StartError::Handshake(match ended {
                    Ok(ending) => {
                        format!("the worker program {named} never connected ({error}): {ending}")
                    }
                    Err(_) => format!("the worker program {named} never connected: {error}"),
                }));
            }
        };
        let pid = child.id();
        let life = Arc::new(Life {
            state: Mutex::new(LifeState::default()),
            ended: Condvar::new(),
        });
        #[cfg(not(unix))]
        let child = Arc::new(Mutex::new(child));
        #[cfg(not(unix))]
        supervise(Arc::clone(&child), Arc::clone(&life), plugin);
        #[cfg(unix)]
        supervise(child, Arc::clone(&life), plugin);
        let mut worker = Self {
            pid,
            protections: Protections::default(),
            manifests_json: String::new(),
            plugin: plugin.to_string(),
            guards,
            next_call: AtomicU64::new(1),
            control: Mutex::new(control),
            link,
            idle: Mutex::new(Vec::new()),
            life,
            #[cfg(not(unix))]
            child,
            hosts,
        };
        match worker.handshake(hello) {
            Ok(()) => {
                if let Some(on_end) = on_end {
                    worker.arm(on_end);
                }
                Ok(worker)
            }
            Err(HandshakeFault::Refused(error)) => {
                worker.stop();
                Err(StartError::Refused { error })
            }
            Err(HandshakeFault::Io(error)) => {
                let ending = worker.end_after_handshake(&error);
                Err(StartError::Handshake(format!(
                    "the worker program {named} failed its handshake: {ending}"
                )))
            }
        }
    }

    fn handshake(&mut self, hello: &Hello) -> Result<(), HandshakeFault> {
        let guards = self.guards;
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        control
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .and_then(|()| control.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .map_err(HandshakeFault::Io)?;
        write_preamble(&*control).map_err(HandshakeFault::Io)?;
        read_preamble(&*control).map_err(HandshakeFault::Io)?;
        write_frame(&*control, hello).map_err(HandshakeFault::Io)?;
        // The private copies, open: a worker that runs as another user
        // could not open them by their paths.
        for file in hello.files() {
            let copy = std::fs::File::open(&file.copy).map_err(HandshakeFault::Io)?;
            self.link
                .pass_file(control, &copy)
                .map_err(HandshakeFault::Io)?;
        }
        match read_frame_within::<Ready>(&*control, guards.max_frame_bytes)
            .map_err(HandshakeFault::Io)?
        {
            Ready::Ready {
                pid: _,
                manifests_json,
                protections,
            } => {
                self.manifests_json = manifests_json;
                self.protections = protections;
            }
            Ready::Refused { error } => return Err(HandshakeFault::Refused(error)),
        }
        // Passing a connection over the control connection waits for the
        // worker to take it no longer than a write may.
        control
            .set_read_timeout(None)
            .and_then(|()| control.set_write_timeout(Some(guards.write_timeout)))
            .map_err(HandshakeFault::Io)?;
        if let Some(hosts) = &self.hosts {
            // The worker's own connection, for callbacks from its threads.
            let connection = self.connect().map_err(HandshakeFault::Io)?;
            let hosts = Arc::clone(hosts);
            let life = Arc::clone(&self.life);
            let plugin = self.plugin.clone();
            std::thread::Builder::new()
                .name(format!("worker-callbacks-{}", self.plugin))
                .spawn(move || serve_callbacks(connection, &*hosts, &life, &plugin, guards))
                .map_err(HandshakeFault::Io)?;
        }
        Ok(())
    }

    /// How a worker whose handshake failed with `error` ended: its own
    /// ending if it exits by itself (it crashed, or refused by exiting),
    /// else the host kills it and names why.
    fn end_after_handshake(&self, error: &io::Error) -> Ending {
        let why = match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                Some(Ending::HandshakeTimedOut(HANDSHAKE_TIMEOUT))
            }
            io::ErrorKind::InvalidData => {
                Some(Ending::Violation(format!("in its handshake: {error}")))
            }
            _ => None,
        };
        if why.is_none() {
            if let Some(ending) = self.wait_ended(EXIT_STATUS_WAIT) {
                return ending;
            }
        }
        let why =
            why.unwrap_or_else(|| Ending::Violation(format!("its handshake failed: {error}")));
        self.kill(why.clone());
        self.wait_ended(EXIT_STATUS_WAIT).unwrap_or(why)
    }

    /// Tells `on_end` how the worker ends (at once, if it already has).
    fn arm(&self, on_end: OnEnd) {
        let mut state = self
            .life
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match state.ending.clone() {
            Some(ending) => {
                drop(state);
                on_end(self.pid, ending);
            }
            None => state.on_end = Some(on_end),
        }
    }

    /// A new call connection, handed to the worker.
    fn connect(&self) -> io::Result<HostConnection> {
        let host_end = self
            .link
            .connect(&self.control.lock().unwrap_or_else(PoisonError::into_inner))?;
        host_end.set_read_timeout(Some(POLL))?;
        host_end.set_write_timeout(Some(POLL))?;
        Ok(HostConnection {
            stream: host_end,
            reader: FrameReader::with_limit(self.guards.max_frame_bytes),
            writer: FrameWriter::default(),
        })
    }

    /// How the process ended, if it has.
    pub(crate) fn ending(&self) -> Option<Ending> {
        self.life
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ending
            .clone()
    }

    /// Waits up to `limit` for the process to end; how it ended.
    pub(crate) fn wait_ended(&self, limit: Duration) -> Option<Ending> {
        let state = self
            .life
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (state, _) = self
            .life
            .ended
            .wait_timeout_while(state, limit, |s| s.ending.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        state.ending.clone()
    }

    /// Kills the process (unless it has already ended), recording why.
    pub(crate) fn kill(&self, why: Ending) {
        let mut state = self
            .life
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.ending.is_some() || state.reaped {
            return;
        }
        state.planned.get_or_insert(why);
        // The process has not been reaped (the lock is held and `reaped` is
        // false), so its id still names it.
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        #[cfg(not(unix))]
        let _ = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kill();
    }

    /// Ends the worker on purpose: closes its control socket, which makes
    /// it exit, and kills it if it has not after a moment.
    pub(crate) fn stop(&self) {
        {
            let mut state = self
                .life
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.planned.get_or_insert(Ending::Stopped);
        }
        let _ = self
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown(std::net::Shutdown::Both);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if self.wait_ended(Duration::from_millis(500)).is_none() {
            self.kill(Ending::Stopped);
        }
    }

    /// Makes one call. `cancelled` is asked every [`POLL`] while the worker
    /// works; once it says yes, the worker is killed (`what` names the call
    /// in the cause) and the call ends with [`CallFault::Abandoned`].
    pub(crate) fn call(
        &self,
        request: &Request<'_>,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Result<WireAnswer, WireError>, CallFault> {
        let pending = self.send(request, what, cancelled)?;
        self.answer(pending, request, what, cancelled)
    }

    /// Reads the reply to `request`, sent as `pending` with
    /// [`WorkerProcess::send`], as [`WorkerProcess::call`] does; the
    /// connection serves again once the reply is read.
    pub(crate) fn answer(
        &self,
        mut pending: PendingCall,
        request: &Request<'_>,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Result<WireAnswer, WireError>, CallFault> {
        let reply = self.reply(&mut pending, what, cancelled)?;
        if let Ok(answer) = &reply {
            if !request.is_answered_by(answer) {
                // The connection goes with `pending`.
                return Err(self.violation(format!(
                    "{} was answered with {}",
                    what(),
                    answer.kind().describe()
                )));
            }
        }
        self.give_back(pending);
        Ok(reply)
    }

    /// Sends a call on a connection of its own and returns once it is
    /// written; its replies are read with [`WorkerProcess::reply`]. A
    /// worker that stops reading it is killed once `cancelled` says so or
    /// `write_timeout_ms` has passed.
    pub(crate) fn send(
        &self,
        request: &Request<'_>,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<PendingCall, CallFault> {
        if let Some(ending) = self.ending() {
            return Err(CallFault::Ended(ending));
        }
        let mut connection = match self.idle_connection() {
            Some(connection) => connection,
            None => self.connect().map_err(|e| self.fault(e))?,
        };
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = ToWorker::Call {
            id,
            request: request.clone(),
        };
        let request = || format!("the request of {}", what());
        self.write(&mut connection, &frame, &request, cancelled)?;
        Ok(PendingCall { connection, id })
    }

    /// An idle connection fit for a call; those holding bytes no call asked
    /// for are dropped.
    fn idle_connection(&self) -> Option<HostConnection> {
        loop {
            let popped = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let connection = popped?;
            match connection.unasked() {
                None => return Some(connection),
                Some(why) => tracing::warn!(
                    plugin = %self.plugin,
                    pid = self.pid,
                    "an idle call connection of the worker was dropped: {why}"
                ),
            }
        }
    }

    /// Writes `frame` on `connection`; a worker that does not read it in
    /// time is killed (`what` names what it did not read).
    fn write(
        &self,
        connection: &mut HostConnection,
        frame: &ToWorker,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), CallFault> {
        let started = Instant::now();
        let limit = self.guards.write_timeout;
        let mut give_up = || cancelled() || started.elapsed() >= limit;
        match connection
            .writer
            .send_until(&connection.stream, frame, &mut give_up)
        {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                let why = Ending::StoppedReading {
                    what: what(),
                    waited: started.elapsed(),
                };
                self.kill(why.clone());
                Err(CallFault::Ended(
                    self.wait_ended(EXIT_STATUS_WAIT).unwrap_or(why),
                ))
            }
            Err(error) => Err(self.fault(error)),
        }
    }

    /// Reads the next reply of a sent call, answering the worker's
    /// callbacks meanwhile (see [`WorkerProcess::call`] for `cancelled`).
    pub(crate) fn reply(
        &self,
        pending: &mut PendingCall,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Result<WireAnswer, WireError>, CallFault> {
        let expected = pending.id;
        let connection = &mut pending.connection;
        loop {
            match link::next_frame::<FromWorker>(&mut connection.reader, &connection.stream) {
                Ok(Some(FromWorker::Reply { id, result })) if id == expected => return Ok(result),
                Ok(Some(FromWorker::Reply { id, .. })) => {
                    return Err(self.violation(format!(
                        "a reply to call {id} came while {} (call {expected}) waited \
                         (a stale reply)",
                        what()
                    )));
                }
                Ok(Some(FromWorker::Callback { slot, callback })) => {
                    let Some(hosts) = &self.hosts else {
                        let why = Ending::Violation("a probe made a callback".into());
                        self.kill(why.clone());
                        return Err(CallFault::Ended(
                            self.wait_ended(EXIT_STATUS_WAIT).unwrap_or(why),
                        ));
                    };
                    if let Some(answer) = answer_callback(&**hosts, slot, callback) {
                        let answering = || format!("the answer to a callback of {}", what());
                        self.write(
                            connection,
                            &ToWorker::CallbackReply(answer),
                            &answering,
                            cancelled,
                        )?;
                    }
                }
                Ok(None) => {
                    if cancelled() {
                        self.kill(Ending::Overran(what()));
                        return Err(CallFault::Abandoned);
                    }
                }
                Err(error) => return Err(self.fault(error)),
            }
        }
    }

    /// Returns the connection of a call whose every reply was read.
    pub(crate) fn give_back(&self, pending: PendingCall) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pending.connection);
    }

    /// The fault behind a failed read or write. A frame the host refuses
    /// (over the limit, unreadable) is a protocol violation: the worker is
    /// killed. Otherwise (the connection closed or reset) it is how the
    /// worker ended, once the supervisor knows; a worker still alive after
    /// [`EXIT_STATUS_WAIT`] is killed, the failure named.
    fn fault(&self, error: io::Error) -> CallFault {
        if error.kind() != io::ErrorKind::InvalidData {
            if let Some(ending) = self.wait_ended(EXIT_STATUS_WAIT) {
                return CallFault::Ended(ending);
            }
        }
        let why = Ending::Violation(match error.kind() {
            io::ErrorKind::InvalidData => error.to_string(),
            _ => format!("its connection failed while it ran on: {error}"),
        });
        self.kill(why.clone());
        CallFault::Ended(self.wait_ended(EXIT_STATUS_WAIT).unwrap_or(why))
    }

    /// A reply out of turn: the caller drops the connection (with its
    /// pending call); the worker serves on.
    fn violation(&self, what: String) -> CallFault {
        tracing::warn!(
            plugin = %self.plugin,
            pid = self.pid,
            "protocol violation by the worker, its call connection is dropped: {what}"
        );
        CallFault::Violation(what)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.ending().is_none() {
            self.kill(Ending::Stopped);
        }
    }
}

/// Answers one callback of the plugin in `slot`; `None` for a log line,
/// which gets no answer. A slot that holds no plugin (it left the worker)
/// gets an error, and its log lines are dropped.
fn answer_callback(
    hosts: &dyn Hosts,
    slot: u32,
    callback: Callback,
) -> Option<Result<CallbackAnswer, WireError>> {
    let Some(host) = hosts.host(slot) else {
        if matches!(callback, Callback::Log { .. }) {
            return None;
        }
        return Some(Err(WireError::from(agent_host_plugin_sdk::Error::new(
            ErrorKind::Unavailable,
            format!("no plugin of this worker is in slot {slot}"),
        ))));
    };
    let answer = match callback {
        Callback::Log { level, message } => {
            host.log(Level::from_number(level), &message);
            return None;
        }
        Callback::Config { key } => host.config(&key).map(CallbackAnswer::Text),
        Callback::CallService {
            service,
            method,
            args_json,
        } => host
            .call_service(&service, &method, &args_json)
            .map(CallbackAnswer::Text),
        Callback::Emit {
            event,
            payload_json,
        } => host
            .emit(&event, &payload_json)
            .map(|()| CallbackAnswer::Done),
        Callback::Subscribe { event } => host.subscribe(&event).map(CallbackAnswer::Id),
        Callback::Unsubscribe { subscription } => host
            .unsubscribe(subscription)
            .map(|()| CallbackAnswer::Done),
        Callback::PushProviderValue {
            provider,
            value_json,
        } => host
            .push_provider_value(provider, &value_json)
            .map(|()| CallbackAnswer::Done),
        Callback::SetTimer {
            timer,
            after_ms,
            every_ms,
        } => host
            .set_timer(timer, after_ms, every_ms)
            .map(|()| CallbackAnswer::Done),
        Callback::ClearTimer { timer } => host.clear_timer(timer).map(|()| CallbackAnswer::Done),
        Callback::Resolve { host: name, port } => host
            .resolve(&name, port)
            .and_then(|addresses| {
                serde_json::to_string(&addresses).map_err(|e| {
                    agent_host_plugin_sdk::Error::new(ErrorKind::Failed, e.to_string())
                })
            })
            .map(CallbackAnswer::Text),
    };
    Some(answer.map_err(WireError::from))
}

/// Answers the callbacks a worker makes outside any call, until it ends;
/// a worker that breaks the protocol on this connection, or stops reading
/// it, loses it (and with it the callbacks of its own threads).
fn serve_callbacks(
    mut connection: HostConnection,
    hosts: &dyn Hosts,
    life: &Life,
    plugin: &str,
    guards: Guards,
) {
    let ended = || {
        life.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ending
            .is_some()
    };
    let lost = |why: &dyn std::fmt::Display| {
        tracing::warn!(
            plugin,
            "the worker's connection for its own callbacks is closed: {why}"
        );
    };
    loop {
        match connection.reader.poll::<FromWorker>(&connection.stream) {
            Ok(Some(FromWorker::Callback { slot, callback })) => {
                if let Some(answer) = answer_callback(hosts, slot, callback) {
                    let started = Instant::now();
                    let mut give_up = || ended() || started.elapsed() >= guards.write_timeout;
                    let frame = ToWorker::CallbackReply(answer);
                    if let Err(error) =
                        connection
                            .writer
                            .send_until(&connection.stream, &frame, &mut give_up)
                    {
                        if !ended() {
                            lost(&error);
                        }
                        return;
                    }
                }
            }
            Ok(Some(FromWorker::Reply { id, .. })) => {
                return lost(&format!(
                    "a reply to call {id} came on it (a protocol violation)"
                ));
            }
            Err(error) => {
                if !ended() && error.kind() == io::ErrorKind::InvalidData {
                    lost(&error);
                }
                return;
            }
            Ok(None) => {
                let state = life.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.ending.is_some() {
                    return;
                }
            }
        }
    }
}

/// The process as its supervisor holds it: the child itself on Unix (the
/// host kills by process id), shared with the kill on other systems (the
/// host kills through the child's handle).
#[cfg(unix)]
type Watched = Child;
#[cfg(not(unix))]
type Watched = Arc<Mutex<Child>>;

/// Waits for the process to end (without reaping it, so its id stays
/// reserved while a kill may be on its way), records how, then reaps it.
fn supervise(mut child: Watched, life: Arc<Life>, plugin: &str) {
    let name = format!("worker-supervisor-{plugin}");
    #[cfg(unix)]
    let pid = child.id();
    #[cfg(not(unix))]
    let pid = child.lock().unwrap_or_else(PoisonError::into_inner).id();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let status = wait_for_end(&mut child, pid);
        let mut state = life.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ending = match (state.planned.take(), status) {
            (Some(planned), _) => planned,
            (None, Ok(status)) => status.ending(),
            (None, Err(error)) => Ending::Broken(format!("its status is unknown: {error}")),
        };
        state.ending = Some(ending.clone());
        reap(&mut child);
        state.reaped = true;
        let on_end = state.on_end.take();
        drop(state);
        life.ended.notify_all();
        if let Some(on_end) = on_end {
            on_end(pid, ending);
        }
    });
    if let Err(error) = spawned {
        tracing::error!(plugin, "cannot watch the worker process: {error}");
    }
}

#[cfg(unix)]
fn wait_for_end(child: &mut Watched, pid: u32) -> io::Result<Status> {
    wait_without_reaping(pid).or_else(|_| child.wait().map(status_code))
}

#[cfg(unix)]
fn reap(child: &mut Watched) {
    let _ = child.wait();
}

/// Polls (the kill needs the child between two looks); the child's
/// handle keeps its process id reserved until the last holder drops it.
#[cfg(not(unix))]
fn wait_for_end(child: &mut Watched, _pid: u32) -> io::Result<Status> {
    loop {
        if let Some(status) = child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_wait()?
        {
            return Ok(status_code(status));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(not(unix))]
fn reap(_child: &mut Watched) {}

enum Status {
    Code(i32),
    Signal(i32),
}

impl Status {
    /// How a process that ended with this status ended, unplanned.
    fn ending(self) -> Ending {
        match self {
            Status::Code(code) => Ending::Exited(code),
            Status::Signal(signal) => Ending::Signalled(signal),
        }
    }
}

fn status_code(status: std::process::ExitStatus) -> Status {
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    #[cfg(not(unix))]
    let signal = None;
    match (status.code(), signal) {
        (Some(code), _) => Status::Code(code),
        (None, Some(signal)) => Status::Signal(signal),
        (None, None) => Status::Code(-1),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn wait_without_reaping(pid: u32) -> io::Result<Status> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(Some(status)) => {
                if let Some(signal) = status.terminating_signal() {
                    return Ok(Status::Signal(signal));
                }
                return Ok(Status::Code(status.exit_status().unwrap_or(-1)));
            }
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn wait_without_reaping(_pid: u32) -> io::Result<Status> {
    Err(io::Error::other("not supported here"))
}

/// Sends the worker's standard output and error to the host's log, one
/// line at a time, tagged with the plugin's name, under the same rate limit
/// and line length cap as a plugin's log lines (`log_limit`).
fn forward_output(plugin: &str, stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) {
    fn forward(plugin: String, stream: impl io::Read + Send + 'static, errors: bool) {
        let name = format!("worker-output-{plugin}");
        let _ = std::thread::Builder::new().name(name).spawn(move || {
            let which = if errors { "stderr" } else { "stdout" };
            let limiter = LogLimiter::default();
            let report = |lines: u64| {
                tracing::warn!(
                    plugin = %plugin,
                    stream = which,
                    "plugin '{plugin}': {lines} lines of its worker's {which} dropped (rate limit)"
                );
            };
            let mut input = BufReader::new(stream);
            let mut line = Vec::new();
            while let Ok(true) = read_line_bounded(&mut input, &mut line) {
                let verdict = limiter.admit(Instant::now());
                if let Some(lines) = verdict.report_dropped {
                    report(lines);
                }
                if !verdict.log {
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                let text = log_limit::cut(text.trim_end_matches(['\n', '\r']));
                if errors {
                    tracing::warn!(plugin = %plugin, stream = which, "{text}");
                } else {
                    tracing::info!(plugin = %plugin, stream = which, "{text}");
                }
            }
            let lines = limiter.take_dropped();
            if lines > 0 {
                report(lines);
            }
        });
    }
    if let Some(stdout) = stdout {
        forward(plugin.to_string(), stdout, false);
    }
    if let Some(stderr) = stderr {
        forward(plugin.to_string(), stderr, true);
    }
}

/// Reads the next line of `input` into `line`, keeping at most one more
/// byte than a log line holds (the rest of a longer line is read and
/// dropped, so an endless line costs no memory). `false` at the end.
fn read_line_bounded(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let room = (log_limit::MAX_LINE_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        input.consume(used);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_output_line_costs_one_log_line_of_memory() {
        let mut output = vec![b'x'; 1 << 20];
        output.extend_from_slice(b"\nnext\n");
        let mut input = BufReader::with_capacity(8192, &output[..]);
        let mut line = Vec::new();
        assert!(read_line_bounded(&mut input, &mut line).unwrap());
        assert_eq!(line.len(), log_limit::MAX_LINE_BYTES + 1);
        assert!(line.capacity() < 4 * log_limit::MAX_LINE_BYTES);
        assert!(read_line_bounded(&mut input, &mut line).unwrap());
        assert_eq!(line, b"next\n");
        assert!(!read_line_bounded(&mut input, &mut line).unwrap());
    }

    #[test]
    fn each_ending_names_its_cause() {
        let cases = [
            (Ending::Exited(3), "it exited with code 3"),
            (
                Ending::HandshakeTimedOut(Duration::from_secs(10)),
                "its handshake timed out after 10000 ms",
            ),
            (
                Ending::Violation("a frame of 9 bytes is over the limit of 8 bytes".into()),
                "protocol violation: a frame of 9 bytes",
            ),
            (
                Ending::StoppedReading {
                    what: "the request of on_load".into(),
                    waited: Duration::from_millis(1500),
                },
                "stopped reading: the request of on_load was not read within 1500 ms",
            ),
            (
                Ending::Overran("timer 1".into()),
                "timer 1 overran its deadline",
            ),
        ];
        for (ending, cause) in cases {
            let text = ending.to_string();
            assert!(text.contains(cause), "{text}");
            assert!(!ending.is_planned());
        }
        assert!(StartError::Spawn("x".into()).is_the_programs());
        assert!(StartError::Handshake("x".into()).is_the_programs());
        assert!(!StartError::Refused { error: "x".into() }.is_the_programs());
    }
}
