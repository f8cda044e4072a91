//! What the host and a worker say to each other.
//!
//! A worker has one **control** socket (its standard input) and any number
//! of **call** connections, each a Unix socketpair whose worker end the host
//! passes over the control socket. A call connection carries one call at a
//! time, like a call stack that crosses the process boundary: the host
//! writes a [`ToWorker::Call`]; the worker answers with one
//! [`FromWorker::Reply`], and before it may make host callbacks
//! ([`FromWorker::Callback`]) that the waiting host thread answers inline
//! ([`ToWorker::CallbackReply`]). A callback that calls back into the same
//! worker takes another connection, so nesting never deadlocks. The first
//! connection the worker receives is its own: the worker sends callbacks
//! made outside any call (from a plugin's own threads) on it, and a host
//! thread answers them.
//!
//! Every call carries a number, unique in its worker, and every reply
//! carries the number of the call it answers: a reply to another call (a
//! stale one) is seen for what it is.
//!
//! Every frame is a little-endian `u32` length and a `postcard` body. A
//! reader refuses a frame longer than its limit from the length alone, and
//! grows its buffer only as the frame's bytes arrive, so a forged length
//! costs nothing. The handshake opens with a fixed preamble ([`PREAMBLE`] and
//! [`PROTOCOL_VERSION`]) in both directions, so a host and a worker from
//! different builds fail with a clear message instead of misreading each
//! other's frames. Compatibility rule: the versions must be equal.

use super::policy::SandboxPolicy;
use crate::worker_status::Protections;
use agent_host_plugin_sdk::{ErrorKind, Evaluation};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// The bytes that open a handshake in each direction.
pub(crate) const PREAMBLE: &[u8; 8] = b"AHWORKER";

/// The protocol version; a host and a worker must speak the same one.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// The largest frame either side ever accepts or sends. The host accepts
/// less from a worker: `[isolation] max_frame_bytes`.
pub(crate) const FRAME_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// A frame reader's buffer when it holds no partial frame: it is cut back
/// to this after a larger frame.
const IDLE_BUFFER_BYTES: usize = 4096;

/// The host's first frame on the control socket: what the worker is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The plugin file in the plugin folder, for messages.
    pub file: PathBuf,
    /// The private copy the worker opens.
    pub copy: PathBuf,
    /// The largest plugin file accepted.
    pub max_bytes: u64,
    /// What to do with the file.
    pub job: Job,
    /// The sandbox the worker puts itself in before it opens the file.
    pub policy: SandboxPolicy,
}

/// What a worker does with its plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Check the file and report its manifests, then exit.
    Probe,
    /// Create plugin number `index` of the file and serve it.
    Serve {
        /// The plugin's index in the file's export list.
        index: u32,
    },
}

/// The worker's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ready {
    /// The file passed every check (and, for [`Job::Serve`], the plugin was
    /// created): its manifests as JSON, and the protections in force.
    Ready {
        /// The worker's process id.
        pid: u32,
        /// The file's manifests, as the SDK writes them.
        manifests_json: String,
        /// What the sandbox put in force.
        protections: Protections,
    },
    /// The worker could not do its job; the message says why.
    Refused {
        /// One line naming the cause.
        error: String,
    },
}

/// One message as a plugin sees it, owned for the trip.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireMessage {
    /// The message id.
    pub id: String,
    /// The text.
    pub text: String,
    /// The rest of its context, a JSON object.
    pub context_json: String,
}

/// A call into the plugin. `deadline_ms` is milliseconds since the Unix
/// epoch, 0 for none; the plugin's runtime sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Call {
    /// `on_load`.
    OnLoad,
    /// `on_unload`.
    OnUnload,
    /// `validate` of several actions on one message.
    Validate {
        /// The actions.
        actions: Vec<u32>,
        /// The message.
        message: WireMessage,
        /// The deadline.
        deadline_ms: u64,
    },
    /// A plugin's part of one message in one request: the `validate` of
    /// `actions`, answered at once ([`Answer::Validated`]), then the
    /// `evaluators`, answered in a second reply
    /// ([`Answer::EvaluatedEach`]) that the host reads when its evaluators
    /// phase comes. The evaluators thus run alongside the rest of the
    /// message, on the same message and state.
    Message {
        /// The actions to validate.
        actions: Vec<u32>,
        /// The evaluators to run.
        evaluators: Vec<u32>,
        /// The message.
        message: WireMessage,
        /// The validates' deadline.
        deadline_ms: u64,
        /// The evaluators' deadline.
        evaluate_deadline_ms: u64,
    },
    /// An action's handler.
    Handle {
        /// The action.
        action: u32,
        /// The message.
        message: WireMessage,
        /// The deadline.
        deadline_ms: u64,
    },
    /// Several providers' `get`.
    Provide {
        /// The providers.
        providers: Vec<u32>,
        /// The message.
        message: WireMessage,
        /// The deadline.
        deadline_ms: u64,
    },
    /// A provider's subscription on or off.
    SetSubscribed {
        /// The provider.
        provider: u32,
        /// On or off.
        subscribed: bool,
    },
    /// One evaluator on one message.
    Evaluate {
        /// The evaluator.
        evaluator: u32,
        /// The message.
        message: WireMessage,
        /// The deadline.
        deadline_ms: u64,
    },
    /// One evaluator on many messages.
    EvaluateBatch {
        /// The evaluator.
        evaluator: u32,
        /// The messages.
        messages: Vec<WireMessage>,
        /// The deadline.
        deadline_ms: u64,
    },
    /// Starts a service.
    StartService {
        /// The service.
        service: u32,
    },
    /// Stops a service.
    StopService {
        /// The service.
        service: u32,
    },
    /// A service method.
    ServiceMethod {
        /// The service.
        service: u32,
        /// The method.
        method: String,
        /// Its arguments, JSON.
        args_json: String,
        /// The deadline.
        deadline_ms: u64,
    },
    /// An event for one of the plugin's subscriptions.
    OnEvent {
        /// The subscription.
        subscription: u64,
        /// The event's name.
        event: String,
        /// Its payload, JSON.
        payload_json: String,
        /// Who emitted it.
        source: String,
        /// The deadline.
        deadline_ms: u64,
    },
    /// One of the plugin's timers.
    OnTimer {
        /// The timer.
        timer: u64,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The plugin's state, for a new generation.
    ExportState,
    /// State from an earlier generation.
    ImportState {
        /// The state, JSON.
        state_json: String,
    },
}

/// An error as it crosses the boundary: the SDK's kind (as its code) and
/// message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireError {
    /// [`ErrorKind::code`].
    pub code: u32,
    /// The message.
    pub message: String,
}

impl From<agent_host_plugin_sdk::Error> for WireError {
    fn from(error: agent_host_plugin_sdk::Error) -> Self {
        Self {
            code: error.kind().code(),
            message: error.message().to_string(),
        }
    }
}

impl From<WireError> for agent_host_plugin_sdk::Error {
    fn from(error: WireError) -> Self {
        Self::new(ErrorKind::from_code(error.code), error.message)
    }
}

/// An evaluator's verdict on the wire (metadata as JSON text, empty for
/// none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireEvaluation {
    /// The score.
    pub score: f64,
    /// Whether the message passed.
    pub passed: bool,
    /// Extra facts, JSON; empty for none.
    pub metadata_json: String,
}

impl From<&Evaluation> for WireEvaluation {
    fn from(evaluation: &Evaluation) -> Self {
        Self {
            score: evaluation.score,
            passed: evaluation.passed,
            metadata_json: if evaluation.metadata.is_null() {
                String::new()
            } else {
                evaluation.metadata.to_string()
            },
        }
    }
}

/// What a call returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Nothing (hooks, services started).
    Done,
    /// One answer per action asked, in order.
    Validated(Vec<Result<bool, WireError>>),
    /// A handler's result, as the SDK's JSON.
    Handled(String),
    /// One value (JSON) per provider asked, in order.
    Provided(Vec<Result<String, WireError>>),
    /// One verdict.
    Evaluated(WireEvaluation),
    /// One verdict per message.
    EvaluatedBatch(Vec<WireEvaluation>),
    /// One verdict (or error) per evaluator asked, in order.
    EvaluatedEach(Vec<Result<WireEvaluation, WireError>>),
    /// Text: a service's JSON reply, or exported state.
    Text(String),
}

/// A host callback, made by plugin code in the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Callback {
    /// A log line (no reply).
    Log {
        /// The level's number.
        level: u8,
        /// The line.
        message: String,
    },
    /// The plugin's config, or one key of it.
    Config {
        /// The key; empty for all.
        key: String,
    },
    /// Another plugin's service.
    CallService {
        /// The service.
        service: String,
        /// The method.
        method: String,
        /// Its arguments, JSON.
        args_json: String,
    },
    /// An event.
    Emit {
        /// Its name.
        event: String,
        /// Its payload, JSON.
        payload_json: String,
    },
    /// A new subscription.
    Subscribe {
        /// The event (pattern).
        event: String,
    },
    /// The end of a subscription.
    Unsubscribe {
        /// Its id.
        subscription: u64,
    },
    /// A fresh provider value.
    PushProviderValue {
        /// The provider.
        provider: u32,
        /// The value, JSON.
        value_json: String,
    },
    /// A timer set.
    SetTimer {
        /// The plugin's timer id.
        timer: u64,
        /// First firing, after this many ms.
        after_ms: u64,
        /// Then every this many ms (0: once).
        every_ms: u64,
    },
    /// A timer cleared.
    ClearTimer {
        /// The plugin's timer id.
        timer: u64,
    },
    /// Name resolution by the host (the worker has none of its own).
    Resolve {
        /// The name or address.
        host: String,
        /// The port the plugin wants to connect to.
        port: u16,
    },
}

/// What a callback returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CallbackAnswer {
    /// Nothing.
    Done,
    /// Text (config, a service's reply).
    Text(String),
    /// An id (a subscription).
    Id(u64),
}

/// A frame from the host on a call connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// A call, and its number.
    Call {
        /// The call's number, unique in the worker; its replies repeat it.
        id: u64,
        /// The call.
        call: Call,
    },
    /// The answer to the worker's callback.
    CallbackReply(Result<CallbackAnswer, WireError>),
}

/// A frame from the worker on a call connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The result of the call numbered `id`.
    Reply {
        /// The number of the call answered.
        id: u64,
        /// Its result.
        result: Result<Answer, WireError>,
    },
    /// A host callback the call (or a plugin thread) makes.
    Callback(Callback),
}

impl Call {
    /// Whether `answer` is of the kind this call is answered with. A
    /// message round is answered twice: validates, then evaluators.
    pub(crate) fn is_answered_by(&self, answer: &Answer) -> bool {
        match self {
            Call::OnLoad
            | Call::OnUnload
            | Call::SetSubscribed { .. }
            | Call::StartService { .. }
            | Call::StopService { .. }
            | Call::OnEvent { .. }
            | Call::OnTimer { .. }
            | Call::ImportState { .. } => matches!(answer, Answer::Done),
            Call::Validate { .. } => matches!(answer, Answer::Validated(_)),
            Call::Message { .. } => {
                matches!(answer, Answer::Validated(_) | Answer::EvaluatedEach(_))
            }
            Call::Handle { .. } => matches!(answer, Answer::Handled(_)),
            Call::Provide { .. } => matches!(answer, Answer::Provided(_)),
            Call::Evaluate { .. } => matches!(answer, Answer::Evaluated(_)),
            Call::EvaluateBatch { .. } => matches!(answer, Answer::EvaluatedBatch(_)),
            Call::ServiceMethod { .. } | Call::ExportState => matches!(answer, Answer::Text(_)),
        }
    }
}

impl Answer {
    /// The answer's kind, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Answer::Done => "done",
            Answer::Validated(_) => "validates",
            Answer::Handled(_) => "a handler's result",
            Answer::Provided(_) => "provider values",
            Answer::Evaluated(_) => "a verdict",
            Answer::EvaluatedBatch(_) => "verdicts on messages",
            Answer::EvaluatedEach(_) => "evaluators' verdicts",
            Answer::Text(_) => "text",
        }
    }
}

/// Writes the handshake preamble.
pub(crate) fn write_preamble(mut out: impl Write) -> io::Result<()> {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(PREAMBLE);
    bytes[8..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.write_all(&bytes)
}

/// Reads the other side's preamble: an error names what was found instead.
pub(crate) fn read_preamble(mut input: impl Read) -> io::Result<()> {
    let mut bytes = [0u8; 12];
    input.read_exact(&mut bytes)?;
    if &bytes[..8] != PREAMBLE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the other side is not an agent-host worker (wrong preamble)",
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != PROTOCOL_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "worker protocol version {version}, but this side speaks {PROTOCOL_VERSION}: \
                 the worker program comes from another agent-host build"
            ),
        ));
    }
    Ok(())
}

/// Encodes `value` as one frame (length and body) appended to `buffer`.
pub(crate) fn encode<T: Serialize>(value: &T, buffer: &mut Vec<u8>) -> io::Result<()> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    let mut buffer_out = std::mem::take(buffer);
    buffer_out = postcard::to_extend(value, buffer_out)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let length = buffer_out.len() - start - 4;
    if length > FRAME_BYTES_CEILING {
        buffer_out.truncate(start);
        *buffer = buffer_out;
        return Err(too_long(length, FRAME_BYTES_CEILING));
    }
    buffer_out[start..start + 4].copy_from_slice(&(length as u32).to_le_bytes());
    *buffer = buffer_out;
    Ok(())
}

/// Writes frames through one buffer, reused: a frame costs one write and no
/// allocation once the buffer has grown to the frames' size.
#[derive(Default)]
pub(crate) struct FrameWriter {
    buffer: Vec<u8>,
}

impl FrameWriter {
    /// Writes `frame` to `out` whole.
    pub(crate) fn send<T: Serialize>(&mut self, mut out: impl Write, frame: &T) -> io::Result<()> {
        self.buffer.clear();
        encode(frame, &mut self.buffer)?;
        out.write_all(&self.buffer)
    }

    /// Writes `frame` to `out`, whose writes time out (a write timeout is
    /// set on it), asking `give_up` each time one does: once it says yes,
    /// the frame is abandoned half-written with a `TimedOut` error (the
    /// other side stopped reading; the connection is useless after it).
    pub(crate) fn send_until<T: Serialize>(
        &mut self,
        mut out: impl Write,
        frame: &T,
        give_up: &mut dyn FnMut() -> bool,
    ) -> io::Result<()> {
        self.buffer.clear();
        encode(frame, &mut self.buffer)?;
        let mut written = 0;
        while written < self.buffer.len() {
            match out.write(&self.buffer[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if give_up() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the other side stopped reading ({written} of {} bytes written)",
                                self.buffer.len()
                            ),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Writes one frame (the handshake's; calls use a [`FrameWriter`]).
pub(crate) fn write_frame<T: Serialize>(mut out: impl Write, value: &T) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(256);
    encode(value, &mut buffer)?;
    out.write_all(&buffer)
}

/// Reads one whole frame, blocking (the handshake's; calls use a
/// [`FrameReader`]).
pub(crate) fn read_frame<T: for<'de> Deserialize<'de>>(input: impl Read) -> io::Result<T> {
    read_frame_within(input, FRAME_BYTES_CEILING)
}

/// Reads one whole frame of at most `limit` bytes, blocking. The body's
/// buffer grows as its bytes arrive.
pub(crate) fn read_frame_within<T: for<'de> Deserialize<'de>>(
    mut input: impl Read,
    limit: usize,
) -> io::Result<T> {
    let mut length = [0u8; 4];
    input.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > limit {
        return Err(too_long(length, limit));
    }
    let mut body = Vec::new();
    input.take(length as u64).read_to_end(&mut body)?;
    if body.len() < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the connection was closed {} bytes into a frame of {length}",
                body.len()
            ),
        ));
    }
    decode(&body)
}

/// The error of a frame whose length is over `limit`: a protocol violation
/// (`InvalidData`).
fn too_long(length: usize, limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a frame of {length} bytes is over the limit of {limit} bytes"),
    )
}

/// Decodes one frame's body.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    postcard::from_bytes(body).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame could not be read: {e}"),
        )
    })
}

/// Reads frames from a stream whose reads may time out, keeping a partial
/// frame across timeouts (a plain `read_exact` would lose it). A frame over
/// the reader's limit is refused from its length; the buffer grows (by
/// doubling, up to the announced length) only when the bytes already
/// arrived fill it.
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
    filled: usize,
    limit: usize,
}

impl Default for FrameReader {
    /// A reader that accepts frames up to [`FRAME_BYTES_CEILING`].
    fn default() -> Self {
        Self::with_limit(FRAME_BYTES_CEILING)
    }
}

impl FrameReader {
    /// A reader that refuses frames longer than `limit` bytes.
    pub(crate) fn with_limit(limit: usize) -> Self {
        Self {
            buffer: vec![0; IDLE_BUFFER_BYTES],
            filled: 0,
            limit: limit.min(FRAME_BYTES_CEILING),
        }
    }

    /// Whether bytes of a frame not yet taken are held.
    pub(crate) fn holds_bytes(&self) -> bool {
        self.filled > 0
    }

    /// The next frame: `Ok(None)` when a read timed out before a whole
    /// frame arrived; an `UnexpectedEof` error when the other side is gone.
    pub(crate) fn poll<T: for<'de> Deserialize<'de>>(
        &mut self,
        mut input: impl Read,
    ) -> io::Result<Option<T>> {
        loop {
            if let Some(frame) = self.take()? {
                return Ok(Some(frame));
            }
            if self.filled == self.buffer.len() {
                let grown = (self.buffer.len() * 2).min(self.frame_end().unwrap_or(usize::MAX));
                self.buffer.resize(grown.max(self.filled + 1), 0);
            }
            match input.read(&mut self.buffer[self.filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection was closed",
                    ))
                }
                Ok(read) => self.filled += read,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the frame being read ends in the buffer, once its length has
    /// arrived.
    fn frame_end(&self) -> Option<usize> {
        let length: [u8; 4] = self.buffer.get(..4)?.try_into().ok()?;
        (self.filled >= 4).then(|| 4 + u32::from_le_bytes(length) as usize)
    }

    fn take<T: for<'de> Deserialize<'de>>(&mut self) -> io::Result<Option<T>> {
        let Some(end) = self.frame_end() else {
            return Ok(None);
        };
        if end - 4 > self.limit {
            return Err(too_long(end - 4, self.limit));
        }
        if self.filled < end {
            return Ok(None);
        }
        let frame = decode(&self.buffer[4..end]);
        self.buffer.copy_within(end..self.filled, 0);
        self.filled -= end;
        if self.filled == 0 && self.buffer.len() > IDLE_BUFFER_BYTES {
            self.buffer = vec![0; IDLE_BUFFER_BYTES];
        }
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_survive_partial_reads() {
        let mut bytes = Vec::new();
        let call = ToWorker::Call {
            id: 1,
            call: Call::Validate {
                actions: vec![0, 2],
                message: WireMessage {
                    id: "m1".into(),
                    text: "hello".into(),
                    context_json: "{}".into(),
                },
                deadline_ms: 5,
            },
        };
        encode(&call, &mut bytes).unwrap();
        encode(
            &ToWorker::Call {
                id: 2,
                call: Call::OnLoad,
            },
            &mut bytes,
        )
        .unwrap();
        // Feed the bytes one at a time, with a timeout between each.
        struct Trickle<'a>(&'a [u8], bool);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                if self.0.is_empty() {
                    return Ok(0);
                }
                out[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut input = Trickle(&bytes, false);
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        let error = loop {
            match reader.poll::<ToWorker>(&mut input) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(frames.len(), 2);
        match &frames[0] {
            ToWorker::Call {
                id: 1,
                call: Call::Validate {
                    actions, message, ..
                },
            } => {
                assert_eq!(actions, &[0, 2]);
                assert_eq!(message.text, "hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            frames[1],
            ToWorker::Call {
                id: 2,
                call: Call::OnLoad
            }
        ));
    }

    #[test]
    fn a_preamble_from_another_build_is_refused_with_both_versions() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(PREAMBLE);
        bytes.extend_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let error = read_preamble(&bytes[..]).unwrap_err().to_string();
        assert!(
            error.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
            "{error}"
        );
        assert!(error.contains("another agent-host build"), "{error}");
        let error = read_preamble(&b"HTTP/1.1 200 OK"[..])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not an agent-host worker"), "{error}");
        let mut good = Vec::new();
        write_preamble(&mut good).unwrap();
        read_preamble(&good[..]).unwrap();
    }

    #[test]
    fn an_oversized_length_is_an_error_not_an_allocation() {
        let bytes = u32::MAX.to_le_bytes();
        let error = read_frame::<ToWorker>(&bytes[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("over the limit"), "{error}");
        let mut reader = FrameReader::with_limit(1000);
        let error = reader
            .poll::<ToWorker>(&1001u32.to_le_bytes()[..])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a frame of 1001 bytes is over the limit of 1000 bytes"),
            "{error}"
        );
    }

    /// Reads that hand over `chunk` bytes at a time, then time out.
    struct Chunks<'a> {
        bytes: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.bytes.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.chunk.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_frame_buffer_grows_only_as_its_bytes_arrive() {
        // A header announcing 15 MiB, then 100 bytes of it.
        let mut bytes = (15u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 100]);
        let mut reader = FrameReader::with_limit(16 << 20);
        let mut input = Chunks {
            bytes: &bytes,
            chunk: 1 << 20,
        };
        assert!(reader.poll::<ToWorker>(&mut input).unwrap().is_none());
        assert!(reader.holds_bytes());
        assert!(reader.buffer.len() <= 8192, "{}", reader.buffer.len());
        // A whole frame of 3 MiB, read in 64 KiB pieces: the buffer never
        // holds more than twice what has arrived, and shrinks after.
        let frame = Answer::Text("x".repeat(3 << 20));
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes).unwrap();
        let mut reader = FrameReader::with_limit(16 << 20);
        let mut input = Chunks {
            bytes: &bytes,
            chunk: 64 << 10,
        };
        let mut largest = 0;
        let answer = loop {
            if let Some(answer) = reader.poll::<Answer>(&mut input).unwrap() {
                break answer;
            }
            largest = largest.max(reader.buffer.len());
            assert!(reader.buffer.len() <= 2 * reader.filled.max(4096));
        };
        assert!(matches!(answer, Answer::Text(text) if text.len() == 3 << 20));
        assert!(largest <= bytes.len(), "{largest}");
        assert!(!reader.holds_bytes());
        assert_eq!(reader.buffer.len(), IDLE_BUFFER_BYTES);
    }

    #[test]
    fn a_write_to_a_side_that_stopped_reading_gives_up_when_asked() {
        /// A stream that takes 10 bytes, then times out.
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                if self.0 >= 10 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = bytes.len().min(10 - self.0);
                self.0 += n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut asked = 0;
        let error = FrameWriter::default()
            .send_until(Full(0), &Answer::Text("x".repeat(100)), &mut || {
                asked += 1;
                asked == 3
            })
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("stopped reading"), "{error}");
        assert_eq!(asked, 3);
    }

    #[test]
    fn each_call_names_the_answers_it_takes() {
        assert!(Call::ExportState.is_answered_by(&Answer::Text(String::new())));
        assert!(!Call::ExportState.is_answered_by(&Answer::Done));
        assert!(Call::OnLoad.is_answered_by(&Answer::Done));
        assert!(!Call::OnLoad.is_answered_by(&Answer::Validated(Vec::new())));
    }
}
