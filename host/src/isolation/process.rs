//! One worker process, as the host holds it: start and handshake, call
//! connections, the host's answers to its callbacks, its output in the
//! host's log, and how it ended.
//!
//! A call takes an idle connection (or makes one and passes it to the
//! worker), writes the call, and reads until the reply, answering the
//! worker's callbacks inline on the calling thread. Reads wake every
//! [`POLL`] so a call whose host-side control was cancelled (its deadline
//! passed, the host went on without it) ends for real: the worker is
//! killed, every call in it fails with the cause, and the thread is free.
//!
//! A supervising thread waits for the process to end, without reaping it
//! first, so the process id cannot be reused while anyone may still signal
//! it.

use super::link::{self, HostLink, Stream};
use super::protocol::{
    read_frame, read_preamble, write_frame, write_preamble, Answer, Call, Callback, CallbackAnswer,
    FrameReader, FrameWriter, FromWorker, Hello, Ready, ToWorker, WireError,
};
use super::sandbox::Protections;
use super::spawn;
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How often a waiting call looks at its cancellation signal.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// How long a worker may take from start to ready.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The host ended it on purpose (unload, reload, shutdown).
    Stopped,
    /// The host killed it because a call overran its deadline.
    Overran(String),
    /// It exited with a code.
    Exited(i32),
    /// A signal ended it.
    Signalled(i32),
    /// The host could not talk to it (protocol error) and killed it.
    Broken(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Stopped => f.write_str("it was stopped by the host"),
            Ending::Overran(call) => {
                write!(f, "the host killed it because {call} overran its deadline")
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
            Ending::Broken(why) => write!(f, "the host killed it: {why}"),
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
}

/// What a call into a worker can come to besides a reply.
#[derive(Debug)]
pub(crate) enum CallFault {
    /// The worker ended (before or during the call).
    Ended(Ending),
    /// The call's host-side control was cancelled; the worker was killed.
    Abandoned,
}

/// Told, once, how a worker process ended (its pid and the ending).
pub(crate) type OnEnd = Box<dyn FnOnce(u32, Ending) + Send>;

/// A running worker.
pub(crate) struct WorkerProcess {
    /// The worker's process id.
    pub pid: u32,
    /// What its sandbox put in force.
    pub protections: Protections,
    /// The manifests it read, JSON.
    pub manifests_json: String,
    plugin: String,
    control: Mutex<Stream>,
    link: HostLink,
    idle: Mutex<Vec<HostConnection>>,
    life: Arc<Life>,
    /// The process itself, where only its handle can kill it (Windows).
    #[cfg(not(unix))]
    child: Arc<Mutex<Child>>,
    host: Option<Arc<dyn Host>>,
}

/// A call sent and not yet fully answered: it holds its connection. Dropped
/// before its last reply, the connection closes, and the worker's thread
/// for it ends after the call.
pub(crate) struct PendingCall {
    connection: HostConnection,
}

struct HostConnection {
    stream: Stream,
    reader: FrameReader,
    writer: FrameWriter,
}

impl HostConnection {
    fn send(&mut self, frame: &ToWorker) -> io::Result<()> {
        self.writer.send(&self.stream, frame)
    }
}

/// Why a worker could not be started.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The process could not be started or spoken to.
    Io(String),
    /// The worker refused: it could not put its sandbox in place, or open
    /// the file.
    Refused {
        /// Its message.
        error: String,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(why) => write!(f, "the worker process could not be started: {why}"),
            StartError::Refused { error, .. } => f.write_str(error),
        }
    }
}

impl WorkerProcess {
    /// Starts `program worker` for `hello` and waits until it is ready.
    /// `host` answers the callbacks of a serving worker; `plugin` names it
    /// in the log.
    pub(crate) fn start(
        program: &Path,
        hello: &Hello,
        plugin: &str,
        host: Option<Arc<dyn Host>>,
        on_end: Option<OnEnd>,
    ) -> Result<Self, StartError> {
        let io_error = |doing: &str, e: io::Error| StartError::Io(format!("{doing}: {e}"));
        let (mut link, stdin) = HostLink::new().map_err(|e| io_error("connection", e))?;
        let mut child = spawn::start(program, stdin)
            .map_err(|e| io_error(&format!("cannot run {}", program.display()), e))?;
        forward_output(plugin, child.stdout.take(), child.stderr.take());
        let control = match link.control(&mut child, HANDSHAKE_TIMEOUT) {
            Ok(control) => control,
            Err(error) => {
                let _ = child.kill();
                let ended = child.wait().map(|status| status_code(status).ending());
                return Err(match ended {
                    Ok(ending) => io_error(
                        "control connection",
                        io::Error::other(format!("{error}; {ending}")),
                    ),
                    Err(_) => io_error("control connection", error),
                });
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
        supervise(Arc::clone(&child), Arc::clone(&life), plugin, on_end);
        #[cfg(unix)]
        supervise(child, Arc::clone(&life), plugin, on_end);
        let mut worker = Self {
            pid,
            protections: Protections::default(),
            manifests_json: String::new(),
            plugin: plugin.to_string(),
            control: Mutex::new(control),
            link,
            idle: Mutex::new(Vec::new()),
            life,
            #[cfg(not(unix))]
            child,
            host,
        };
        match worker.handshake(hello) {
            Ok(()) => Ok(worker),
            Err(error) => {
                worker.stop();
                // A worker that died during the handshake says how.
                if let StartError::Io(why) = &error {
                    if let Some(ending) = worker.wait_ended(Duration::from_millis(200)) {
                        return Err(StartError::Io(format!("{why}; {ending}")));
                    }
                }
                Err(error)
            }
        }
    }

    fn handshake(&mut self, hello: &Hello) -> Result<(), StartError> {
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let failed = |e: io::Error| StartError::Io(format!("handshake: {e}"));
        control
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(failed)?;
        write_preamble(&*control).map_err(failed)?;
        read_preamble(&*control).map_err(failed)?;
        write_frame(&*control, hello).map_err(failed)?;
        let copy = std::fs::File::open(&hello.copy).map_err(|e| {
            StartError::Io(format!(
                "cannot open the plugin's copy '{}': {e}",
                hello.copy.display()
            ))
        })?;
        self.link.pass_file(control, &copy).map_err(failed)?;
        drop(copy);
        match read_frame::<Ready>(&*control).map_err(failed)? {
            Ready::Ready {
                pid: _,
                manifests_json,
                protections,
            } => {
                self.manifests_json = manifests_json;
                self.protections = protections;
            }
            Ready::Refused { error } => return Err(StartError::Refused { error }),
        }
        control.set_read_timeout(None).map_err(failed)?;
        if let Some(host) = &self.host {
            // The worker's own connection, for callbacks from its threads.
            let connection = self.connect().map_err(failed)?;
            let host = Arc::clone(host);
            let life = Arc::clone(&self.life);
            std::thread::Builder::new()
                .name(format!("worker-callbacks-{}", self.plugin))
                .spawn(move || serve_callbacks(connection, &*host, &life))
                .map_err(failed)?;
        }
        Ok(())
    }

    /// A new call connection, handed to the worker.
    fn connect(&self) -> io::Result<HostConnection> {
        let host_end = self
            .link
            .connect(&self.control.lock().unwrap_or_else(PoisonError::into_inner))?;
        host_end.set_read_timeout(Some(POLL))?;
        Ok(HostConnection {
            stream: host_end,
            reader: FrameReader::default(),
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
        call: &Call,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Result<Answer, WireError>, CallFault> {
        let mut pending = self.send(call)?;
        let reply = self.reply(&mut pending, what, cancelled)?;
        self.give_back(pending);
        Ok(reply)
    }

    /// Sends a call on a connection of its own and returns at once; its
    /// replies are read with [`WorkerProcess::reply`].
    pub(crate) fn send(&self, call: &Call) -> Result<PendingCall, CallFault> {
        if let Some(ending) = self.ending() {
            return Err(CallFault::Ended(ending));
        }
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.connect().map_err(|e| self.fault(e))?,
        };
        connection
            .send(&ToWorker::Call(call.clone()))
            .map_err(|e| self.fault(e))?;
        Ok(PendingCall { connection })
    }

    /// Reads the next reply of a sent call, answering the worker's
    /// callbacks meanwhile (see [`WorkerProcess::call`] for `cancelled`).
    pub(crate) fn reply(
        &self,
        pending: &mut PendingCall,
        what: &dyn Fn() -> String,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Result<Answer, WireError>, CallFault> {
        let connection = &mut pending.connection;
        loop {
            match link::next_frame::<FromWorker>(&mut connection.reader, &connection.stream) {
                Ok(Some(FromWorker::Reply(reply))) => return Ok(reply),
                Ok(Some(FromWorker::Callback(callback))) => {
                    let Some(host) = &self.host else {
                        return Err(self.fault(io::Error::other("a callback from a probe")));
                    };
                    if let Some(answer) = answer_callback(&**host, callback) {
                        connection
                            .send(&ToWorker::CallbackReply(answer))
                            .map_err(|e| self.fault(e))?;
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

    /// The fault behind a failed read or write: how the worker ended, once
    /// the supervisor knows; a worker that is still alive but spoke
    /// nonsense is killed.
    fn fault(&self, error: io::Error) -> CallFault {
        if let Some(ending) = self.wait_ended(Duration::from_millis(250)) {
            return CallFault::Ended(ending);
        }
        let why = Ending::Broken(format!("its connection failed: {error}"));
        self.kill(why.clone());
        CallFault::Ended(self.wait_ended(Duration::from_millis(250)).unwrap_or(why))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.ending().is_none() {
            self.kill(Ending::Stopped);
        }
    }
}

/// Answers one callback from the worker; `None` for a log line, which
/// gets no answer.
fn answer_callback(
    host: &dyn Host,
    callback: Callback,
) -> Option<Result<CallbackAnswer, WireError>> {
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
                serde_json::to_string(&addresses)
                    .map_err(|e| crate::plugin::Failure::new(ErrorKind::Failed, e.to_string()))
            })
            .map(CallbackAnswer::Text),
    };
    Some(answer.map_err(WireError::from))
}

/// Answers the callbacks a worker makes outside any call, until it ends.
fn serve_callbacks(mut connection: HostConnection, host: &dyn Host, life: &Life) {
    loop {
        match connection.reader.poll::<FromWorker>(&connection.stream) {
            Ok(Some(FromWorker::Callback(callback))) => {
                if let Some(answer) = answer_callback(host, callback) {
                    if connection.send(&ToWorker::CallbackReply(answer)).is_err() {
                        return;
                    }
                }
            }
            Ok(Some(FromWorker::Reply(_))) | Err(_) => return,
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
fn supervise(mut child: Watched, life: Arc<Life>, plugin: &str, on_end: Option<OnEnd>) {
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
/// line at a time, tagged with the plugin's name.
fn forward_output(plugin: &str, stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) {
    fn forward(plugin: String, stream: impl io::Read + Send + 'static, errors: bool) {
        let name = format!("worker-output-{plugin}");
        let _ = std::thread::Builder::new().name(name).spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if errors {
                    tracing::warn!(plugin = %plugin, stream = "stderr", "{line}");
                } else {
                    tracing::info!(plugin = %plugin, stream = "stdout", "{line}");
                }
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
