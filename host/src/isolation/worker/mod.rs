//! The worker process: the `agent-host worker` subcommand, run by the host
//! for the isolated plugins of one file (or of one group, or one plugin),
//! never by hand.
//!
//! In order: die with the parent; handshake on the control socket (its
//! standard input); put the sandbox in place; only then open the private
//! copies of its files (opening runs the library's constructors, plugin
//! code) with the same checks as the host; and serve. The host creates
//! each plugin in a slot of its choosing and names the slot in each call.
//! Each call connection the host passes over the control socket gets a
//! thread that runs one request at a time: it decodes the call as the host
//! described it and hands it to the loader's in-process dispatch, exactly
//! as the host runs an in-process plugin. The plugin's host callbacks go
//! back, naming its slot, over the connection of the call that made them.
//! When the control socket closes, the worker exits.
//!
//! * `lifetime`: dying with the host, and ending at once on a crash;
//! * `sandbox`: putting the host's policy in force.

mod lifetime;
pub(crate) mod sandbox;

use crate::call::{Failure, MessageRef};
use crate::isolation::wire::link::{self, Stream, WorkerLink};
use crate::isolation::wire::protocol::{
    decode, read_frame, read_preamble, write_frame, write_preamble, Callback, CallbackAnswer,
    FrameReader, FrameWriter, FromWorker, Hello, Job, Ready, Request, RoundPart, ToWorker,
    WireAnswer, WireError, WireEvaluation,
};
use crate::load::dispatch::{dispatch, evaluate_each, validate_each};
use crate::load::library::{self, OpenedLibrary, RunsIn};
use agent_host_plugin_abi::{CallControl, PluginBox};
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

/// Runs the worker; returns the process's exit code.
pub(crate) fn run() -> i32 {
    // A worker outlives nothing: once its host is gone it is killed.
    if lifetime::die_with_parent().is_err() {
        return 70;
    }
    lifetime::end_at_once_on_crash();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("agent-host worker: internal error: {info}");
        std::process::abort();
    }));
    let (link, control) = match WorkerLink::from_stdin() {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("agent-host worker: no control connection from standard input: {error}");
            return 64;
        }
    };
    match serve(&link, control) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("agent-host worker: {error}");
            1
        }
    }
}

fn serve(link: &WorkerLink, control: Stream) -> std::io::Result<()> {
    write_preamble(&control)?;
    read_preamble(&control)?;
    let hello: Hello = read_frame(&control)?;
    let refuse = |error: String| write_frame(&control, &Ready::Refused { error });
    let files = hello.files();
    // The private copies, opened by the host: this worker may run as a
    // user that cannot reach their folder. They stay open as long as the
    // worker runs.
    let mut copies = Vec::with_capacity(files.len());
    for _ in &files {
        match link.receive_file(&control) {
            Ok(Some(copy)) => copies.push(copy),
            Ok(None) => {}
            Err(error) => return refuse(format!("the plugin's copy: {error}")),
        }
    }
    let protections = match sandbox::apply(&hello.policy, &copies) {
        Ok(protections) => protections,
        Err(error) => return refuse(error.to_string()),
    };
    let mut libraries = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let copy_path = match copies.get(i) {
            Some(copy) => opened_path(copy, &file.copy),
            None => file.copy.clone(),
        };
        match library::open_copy(&file.file, &copy_path, hello.max_bytes, RunsIn::Worker) {
            Ok(library) => libraries.push(library),
            Err(error) => return refuse(error.to_string()),
        }
    }
    let manifests_json = match libraries
        .first()
        .map(|l| serde_json::to_string(&l.manifests))
    {
        Some(Ok(json)) => json,
        Some(Err(error)) => return refuse(format!("manifests: {error}")),
        None => return refuse("the host named no plugin file".into()),
    };
    write_frame(
        &control,
        &Ready::Ready {
            pid: std::process::id(),
            manifests_json,
            protections,
        },
    )?;
    if hello.job == Job::Probe {
        return Ok(());
    }
    let served = Arc::new(Served {
        libraries,
        plugins: RwLock::new(HashMap::new()),
    });
    // The first connection is this worker's own, for callbacks made outside
    // any call; the rest each carry calls.
    let mut first = true;
    loop {
        let stream = match link.next_connection(&control) {
            Ok(Some(stream)) => stream,
            // The host closed the control socket: the worker's work is over.
            Ok(None) => return Ok(()),
            Err(error) => return Err(error),
        };
        if first {
            first = false;
            let _ = OWN_CONNECTION.set(Mutex::new(Connection::new(stream)));
            continue;
        }
        let served = Arc::clone(&served);
        // Past `max_processes` no thread starts: the connection is dropped,
        // which fails that one call, and the worker goes on.
        if let Err(error) = std::thread::Builder::new()
            .name("plugin-call".into())
            .spawn(move || serve_connection(stream, &served))
        {
            eprintln!("agent-host worker: cannot serve another connection: {error}");
        }
    }
}

/// What a serving worker holds: its opened files and the plugins the host
/// created from them, by slot.
struct Served {
    libraries: Vec<OpenedLibrary>,
    plugins: RwLock<HashMap<u32, Arc<PluginBox>>>,
}

impl Served {
    /// The plugin in `slot`.
    fn plugin(&self, slot: u32) -> Result<Arc<PluginBox>, Failure> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&slot)
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    ErrorKind::Unavailable,
                    format!("the worker holds no plugin in slot {slot}"),
                )
            })
    }

    /// Creates plugin `index` of file `file` as `slot`. The worker's
    /// sandbox is already in force and it has no registry to announce to:
    /// the host does both.
    fn create(&self, slot: u32, file: u32, index: u32) -> Result<(), Failure> {
        let library = self.libraries.get(file as usize).ok_or_else(|| {
            Failure::new(
                ErrorKind::InvalidInput,
                format!("the worker opened no file number {file}"),
            )
        })?;
        let object = library.instantiate(index, Box::new(WorkerHost { slot }))?;
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot, Arc::new(object));
        Ok(())
    }

    /// Drops the plugin in `slot` (once no call runs in it).
    fn drop_plugin(&self, slot: u32) {
        let removed = self
            .plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&slot);
        drop(removed);
    }
}

/// A path that opens `file` (the copy at `path`) again: its descriptor
/// under `/proc/self/fd`, as `dlopen` takes a path.
#[cfg(unix)]
fn opened_path(file: &std::fs::File, _path: &std::path::Path) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Without descriptors to pass, the copy's own path.
#[cfg(not(unix))]
fn opened_path(_file: &std::fs::File, path: &std::path::Path) -> std::path::PathBuf {
    path.to_path_buf()
}

/// One call connection, as the worker sees it.
struct Connection {
    stream: Stream,
    reader: FrameReader,
    writer: FrameWriter,
}

impl Connection {
    fn new(stream: Stream) -> Self {
        Self {
            writer: FrameWriter::default(),
            reader: FrameReader::default(),
            stream,
        }
    }

    /// The next frame's body from the host; an error once it is gone.
    fn receive(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(body) = link::next_body(&mut self.reader, &self.stream)? {
                return Ok(body);
            }
        }
    }

    fn send(&mut self, frame: &FromWorker) -> std::io::Result<()> {
        self.writer.send(&self.stream, frame)
    }

    /// Makes a callback for the plugin in `slot` and waits for its answer.
    fn callback(&mut self, slot: u32, callback: Callback) -> Result<CallbackAnswer, Failure> {
        let log = matches!(callback, Callback::Log { .. });
        self.send(&FromWorker::Callback { slot, callback })
            .map_err(host_gone)?;
        if log {
            return Ok(CallbackAnswer::Done);
        }
        let body = self.receive().map_err(host_gone)?;
        match decode::<ToWorker<'_>>(&body).map_err(host_gone)? {
            ToWorker::CallbackReply(answer) => answer.map_err(Failure::from),
            ToWorker::Call { .. } => Err(Failure::new(
                ErrorKind::Failed,
                "protocol error: the host sent a call while a callback was waiting",
            )),
        }
    }
}

fn host_gone(error: std::io::Error) -> Failure {
    Failure::new(
        ErrorKind::Unavailable,
        format!("the host is gone ({error})"),
    )
}

/// The connection for callbacks made outside any call.
static OWN_CONNECTION: OnceLock<Mutex<Connection>> = OnceLock::new();

/// The connection of the call a thread runs, and the call's control.
type InCall = (Rc<RefCell<Connection>>, Rc<CallControl>);

thread_local! {
    static IN_CALL: RefCell<Option<InCall>> = const { RefCell::new(None) };
    /// Who emitted the event whose handler this thread runs.
    static EVENT_SOURCE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn serve_connection(stream: Stream, served: &Served) {
    let connection = Connection::new(stream);
    let connection = Rc::new(RefCell::new(connection));
    loop {
        let body = match connection.borrow_mut().receive() {
            Ok(body) => body,
            // The host closed the connection.
            Err(_) => return,
        };
        let (id, request) = match decode::<ToWorker<'_>>(&body) {
            Ok(ToWorker::Call { id, request }) => (id, request),
            Ok(ToWorker::CallbackReply(_)) => {
                eprintln!("agent-host worker: protocol error: a callback reply with no callback");
                return;
            }
            Err(error) => {
                eprintln!("agent-host worker: protocol error: {error}");
                return;
            }
        };
        let in_call = |deadline_ms: u64| {
            let control = Rc::new(CallControl::with_deadline(deadline_ms));
            IN_CALL.with(|slot| {
                *slot.borrow_mut() = Some((Rc::clone(&connection), Rc::clone(&control)));
            });
            control
        };
        let sent = match request {
            Request::Call {
                call,
                deadline_ms,
                source,
                slot,
            } => {
                let control = in_call(deadline_ms);
                let previous = EVENT_SOURCE.with(|s| s.replace(source.map(Cow::into_owned)));
                let result = served
                    .plugin(slot)
                    .and_then(|object| dispatch(&object, call, Some(&control)))
                    .and_then(WireAnswer::from_answer)
                    .map_err(WireError::from);
                EVENT_SOURCE.with(|s| *s.borrow_mut() = previous);
                connection
                    .borrow_mut()
                    .send(&FromWorker::Reply { id, result })
            }
            Request::Round {
                parts,
                message,
                deadline_ms,
                evaluate_deadline_ms,
            } => {
                in_call(deadline_ms);
                run_message(
                    served,
                    &connection,
                    id,
                    &parts,
                    message,
                    evaluate_deadline_ms,
                )
            }
            Request::Create { slot, file, index } => {
                let result = served
                    .create(slot, file, index)
                    .map(|()| WireAnswer::Done)
                    .map_err(|e| {
                        WireError::from(Failure::new(e.kind(), format!("create: {}", e.message())))
                    });
                connection
                    .borrow_mut()
                    .send(&FromWorker::Reply { id, result })
            }
            Request::Drop { slot } => {
                served.drop_plugin(slot);
                connection.borrow_mut().send(&FromWorker::Reply {
                    id,
                    result: Ok(WireAnswer::Done),
                })
            }
        };
        IN_CALL.with(|slot| slot.borrow_mut().take());
        if sent.is_err() {
            return;
        }
    }
}

/// The parts of one message of the worker's plugins: every part's
/// validates, answered at once, then every part's evaluators, answered in
/// a second reply.
fn run_message(
    served: &Served,
    connection: &RefCell<Connection>,
    id: u64,
    parts: &[RoundPart<'_>],
    message: MessageRef<'_>,
    evaluate_deadline_ms: u64,
) -> std::io::Result<()> {
    let objects: Vec<Result<Arc<PluginBox>, Failure>> =
        parts.iter().map(|part| served.plugin(part.slot)).collect();
    let validated = parts
        .iter()
        .zip(&objects)
        .map(|(part, object)| match object {
            Ok(object) => {
                // One crossing for all the plugin's validates (ABI 1.1).
                let mut verdicts = Vec::with_capacity(part.actions.len());
                validate_each(object, &part.actions, message, &mut |_, v| {
                    verdicts.push(v.map_err(WireError::from))
                });
                verdicts
            }
            Err(error) => vec![Err(WireError::from(error.clone())); part.actions.len()],
        })
        .collect();
    connection.borrow_mut().send(&FromWorker::Reply {
        id,
        result: Ok(WireAnswer::RoundValidated(validated)),
    })?;
    let control = CallControl::with_deadline(evaluate_deadline_ms);
    let evaluated = parts
        .iter()
        .zip(&objects)
        .map(|(part, object)| match object {
            Ok(object) => {
                // One crossing for all the plugin's evaluators (ABI 1.1).
                let mut verdicts = Vec::with_capacity(part.evaluators.len());
                evaluate_each(object, &part.evaluators, message, &control, &mut |_, v| {
                    verdicts.push(v.map(|e| WireEvaluation::from(&e)).map_err(WireError::from))
                });
                verdicts
            }
            Err(error) => vec![Err(WireError::from(error.clone())); part.evaluators.len()],
        })
        .collect();
    connection.borrow_mut().send(&FromWorker::Reply {
        id,
        result: Ok(WireAnswer::EvaluatedEach(evaluated)),
    })
}

/// The host, as the plugin in `slot` of a worker sees it: every callback
/// crosses to the host, naming the plugin, over the connection of the call
/// that made it (or, from a thread of the plugin's own, over the worker's
/// own connection).
struct WorkerHost {
    slot: u32,
}

impl WorkerHost {
    fn callback(&self, callback: Callback) -> Result<CallbackAnswer, Failure> {
        let in_call = IN_CALL.with(|slot| slot.borrow().as_ref().map(|(c, _)| Rc::clone(c)));
        match in_call {
            Some(connection) => connection.borrow_mut().callback(self.slot, callback),
            None => match OWN_CONNECTION.get() {
                Some(own) => own
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .callback(self.slot, callback),
                None => Err(Failure::new(
                    ErrorKind::Unavailable,
                    "the worker has no connection to the host yet",
                )),
            },
        }
    }

    fn text(&self, callback: Callback) -> Result<String, Failure> {
        match self.callback(callback)? {
            CallbackAnswer::Text(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    fn done(&self, callback: Callback) -> Result<(), Failure> {
        match self.callback(callback)? {
            CallbackAnswer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &CallbackAnswer) -> Failure {
    Failure::new(
        ErrorKind::Failed,
        format!("protocol error: the host answered {answer:?}"),
    )
}

impl Host for WorkerHost {
    fn log(&self, level: Level, message: &str) {
        let _ = self.callback(Callback::Log {
            level: level as u8,
            message: message.to_string(),
        });
    }

    fn config(&self, key: &str) -> Result<String, Failure> {
        self.text(Callback::Config { key: key.into() })
    }

    fn call_service(
        &self,
        service: &str,
        method: &str,
        args_json: &str,
    ) -> Result<String, Failure> {
        self.text(Callback::CallService {
            service: service.into(),
            method: method.into(),
            args_json: args_json.into(),
        })
    }

    fn emit(&self, event: &str, payload_json: &str) -> Result<(), Failure> {
        self.done(Callback::Emit {
            event: event.into(),
            payload_json: payload_json.into(),
        })
    }

    fn subscribe(&self, event: &str) -> Result<u64, Failure> {
        match self.callback(Callback::Subscribe {
            event: event.into(),
        })? {
            CallbackAnswer::Id(id) => Ok(id),
            other => Err(unexpected(&other)),
        }
    }

    fn unsubscribe(&self, subscription: u64) -> Result<(), Failure> {
        self.done(Callback::Unsubscribe { subscription })
    }

    fn push_provider_value(&self, provider: u32, value_json: &str) -> Result<(), Failure> {
        self.done(Callback::PushProviderValue {
            provider,
            value_json: value_json.into(),
        })
    }

    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> Result<(), Failure> {
        self.done(Callback::SetTimer {
            timer,
            after_ms,
            every_ms,
        })
    }

    fn clear_timer(&self, timer: u64) -> Result<(), Failure> {
        self.done(Callback::ClearTimer { timer })
    }

    fn event_source(&self) -> Option<String> {
        EVENT_SOURCE.with(|s| s.borrow().clone())
    }

    fn current_call(&self) -> Option<(u64, bool)> {
        IN_CALL.with(|slot| {
            slot.borrow()
                .as_ref()
                .map(|(_, control)| (control.deadline_unix_ms(), control.is_cancelled()))
        })
    }

    fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, Failure> {
        let answer = self.text(Callback::Resolve {
            host: host.into(),
            port,
        })?;
        serde_json::from_str(&answer).map_err(|e| {
            Failure::new(
                ErrorKind::Failed,
                format!("protocol error: a name resolution's answer: {e}"),
            )
        })
    }
}
