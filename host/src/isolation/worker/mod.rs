//! The worker process: the `agent-host worker` subcommand, run by the host
//! for one isolated plugin, never by hand.
//!
//! In order: die with the parent; handshake on the control socket (its
//! standard input); put the sandbox in place; only then open the plugin's
//! private copy (opening runs the library's constructors, plugin code) with
//! the same checks as the host; create the plugin; and serve it. Each call
//! connection the host passes over the control socket gets a thread that
//! runs one call at a time on the plugin: it decodes the call as the host
//! described it and hands it to the loader's in-process dispatch, exactly
//! as the host runs an in-process plugin. The plugin's host callbacks go
//! back over the connection of the call that made them. When the control
//! socket closes, the worker exits.
//!
//! * `lifetime`: dying with the host, and ending at once on a crash;
//! * `sandbox`: putting the host's policy in force.

mod lifetime;
pub(crate) mod sandbox;

use crate::call::{Call, Failure, MessageRef};
use crate::isolation::wire::link::{self, Stream, WorkerLink};
use crate::isolation::wire::protocol::{
    decode, read_frame, read_preamble, write_frame, write_preamble, Callback, CallbackAnswer,
    FrameReader, FrameWriter, FromWorker, Hello, Job, Ready, Request, ToWorker, WireAnswer,
    WireError, WireEvaluation,
};
use crate::load::dispatch::dispatch;
use crate::load::library::{self, RunsIn};
use agent_host_plugin_abi::{CallControl, PluginBox};
use agent_host_plugin_sdk::{ErrorKind, Host, Level};
use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

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
    // The private copy, opened by the host: this worker may run as a user
    // that cannot reach its folder. It stays open as long as the worker runs.
    let copy = match link.receive_file(&control) {
        Ok(copy) => copy,
        Err(error) => return refuse(format!("the plugin's copy: {error}")),
    };
    let protections = match sandbox::apply(&hello.policy, copy.as_ref()) {
        Ok(protections) => protections,
        Err(error) => return refuse(error.to_string()),
    };
    let copy_path = match &copy {
        Some(file) => opened_path(file, &hello.copy),
        None => hello.copy.clone(),
    };
    let library = match library::open_copy(&hello.file, &copy_path, hello.max_bytes, RunsIn::Worker)
    {
        Ok(library) => library,
        Err(error) => return refuse(error.to_string()),
    };
    let manifests_json = match serde_json::to_string(&library.manifests) {
        Ok(json) => json,
        Err(error) => return refuse(format!("manifests: {error}")),
    };
    let index = match hello.job {
        Job::Probe => {
            return write_frame(
                &control,
                &Ready::Ready {
                    pid: std::process::id(),
                    manifests_json,
                    protections,
                },
            )
        }
        Job::Serve { index } => index,
    };
    // The worker's sandbox is already in force and it has no registry to
    // announce to: the host does both.
    let object = match library.instantiate(index, Box::new(WorkerHost)) {
        Ok(object) => object,
        Err(error) => return refuse(format!("create: {}", error.message())),
    };
    write_frame(
        &control,
        &Ready::Ready {
            pid: std::process::id(),
            manifests_json,
            protections,
        },
    )?;
    let object = Arc::new(object);
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
        let object = Arc::clone(&object);
        // Past `max_processes` no thread starts: the connection is dropped,
        // which fails that one call, and the worker goes on.
        if let Err(error) = std::thread::Builder::new()
            .name("plugin-call".into())
            .spawn(move || serve_connection(stream, &object))
        {
            eprintln!("agent-host worker: cannot serve another connection: {error}");
        }
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

    /// Makes a callback and waits for its answer.
    fn callback(&mut self, callback: Callback) -> Result<CallbackAnswer, Failure> {
        let log = matches!(callback, Callback::Log { .. });
        self.send(&FromWorker::Callback(callback))
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

fn serve_connection(stream: Stream, object: &PluginBox) {
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
        let sent = match request {
            Request::Call {
                call,
                deadline_ms,
                source,
            } => {
                let control = Rc::new(CallControl::with_deadline(deadline_ms));
                IN_CALL.with(|slot| {
                    *slot.borrow_mut() = Some((Rc::clone(&connection), Rc::clone(&control)));
                });
                let previous = EVENT_SOURCE.with(|s| s.replace(source.map(Cow::into_owned)));
                let result = dispatch(object, call, Some(&control))
                    .and_then(WireAnswer::from_answer)
                    .map_err(WireError::from);
                EVENT_SOURCE.with(|s| *s.borrow_mut() = previous);
                connection
                    .borrow_mut()
                    .send(&FromWorker::Reply { id, result })
            }
            Request::Round {
                actions,
                evaluators,
                message,
                deadline_ms,
                evaluate_deadline_ms,
            } => {
                let control = Rc::new(CallControl::with_deadline(deadline_ms));
                IN_CALL.with(|slot| {
                    *slot.borrow_mut() = Some((Rc::clone(&connection), Rc::clone(&control)));
                });
                run_message(
                    object,
                    &connection,
                    id,
                    actions,
                    &evaluators,
                    message,
                    evaluate_deadline_ms,
                )
            }
        };
        IN_CALL.with(|slot| slot.borrow_mut().take());
        if sent.is_err() {
            return;
        }
    }
}

/// A plugin's part of one message: the validates, answered at once, then
/// the evaluators, answered in a second reply.
fn run_message(
    object: &PluginBox,
    connection: &RefCell<Connection>,
    id: u64,
    actions: Cow<'_, [u32]>,
    evaluators: &[u32],
    message: MessageRef<'_>,
    evaluate_deadline_ms: u64,
) -> std::io::Result<()> {
    let validated = dispatch(object, Call::ValidateEach { actions, message }, None)
        .and_then(WireAnswer::from_answer)
        .map_err(WireError::from);
    connection.borrow_mut().send(&FromWorker::Reply {
        id,
        result: validated,
    })?;
    let control = CallControl::with_deadline(evaluate_deadline_ms);
    let evaluated = evaluators
        .iter()
        .map(|&evaluator| {
            dispatch(
                object,
                Call::Evaluate { evaluator, message },
                Some(&control),
            )
            .and_then(|answer| answer.evaluated())
            .map(|e| WireEvaluation::from(&e))
            .map_err(WireError::from)
        })
        .collect();
    connection.borrow_mut().send(&FromWorker::Reply {
        id,
        result: Ok(WireAnswer::EvaluatedEach(evaluated)),
    })
}

/// The host, as the plugin in a worker sees it: every callback crosses to
/// the host over the connection of the call that made it (or, from a thread
/// of the plugin's own, over the worker's own connection).
struct WorkerHost;

impl WorkerHost {
    fn callback(&self, callback: Callback) -> Result<CallbackAnswer, Failure> {
        let in_call = IN_CALL.with(|slot| slot.borrow().as_ref().map(|(c, _)| Rc::clone(c)));
        match in_call {
            Some(connection) => connection.borrow_mut().callback(callback),
            None => match OWN_CONNECTION.get() {
                Some(own) => own
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .callback(callback),
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
