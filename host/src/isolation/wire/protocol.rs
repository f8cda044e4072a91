//! What the host and a worker say to each other.
//!
//! A worker has one **control** socket (its standard input) and any number
//! of **call** connections, each a Unix socketpair whose worker end the host
//! passes over the control socket. A call connection carries one call at a
//! time, like a call stack that crosses the process boundary: the host
//! writes a [`ToWorker::Call`], which carries the plugin call as the host
//! describes it (`crate::call`), unchanged; the worker answers with one
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
use crate::call::{evaluation_from, Answer, AnswerKind, Call, Failure, MessageRef};
use crate::worker_status::Protections;
use agent_host_plugin_sdk::{ErrorKind, Evaluation};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// The bytes that open a handshake in each direction.
pub(crate) const PREAMBLE: &[u8; 8] = b"AHWORKER";

/// The protocol version; a host and a worker must speak the same one.
pub(crate) const PROTOCOL_VERSION: u32 = 4;

/// The largest frame either side ever accepts or sends. The host accepts
/// less from a worker: `[isolation] max_frame_bytes`.
pub(crate) use crate::config::isolation::FRAME_BYTES_CEILING;

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
    /// The other files a serving worker opens (the files of a group's
    /// other members), numbered from 1 on in [`Request::Create`]; their
    /// copies follow the first one's as open files, in this order.
    pub more: Vec<HelloFile>,
}

/// One more plugin file a serving worker opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HelloFile {
    /// The plugin file in the plugin folder, for messages.
    pub file: PathBuf,
    /// Its private copy.
    pub copy: PathBuf,
}

impl Hello {
    /// Every file of the worker, `(file, copy)`, numbered from 0 in order.
    pub(crate) fn files(&self) -> Vec<HelloFile> {
        let first = HelloFile {
            file: self.file.clone(),
            copy: self.copy.clone(),
        };
        std::iter::once(first)
            .chain(self.more.iter().cloned())
            .collect()
    }
}

/// What a worker does with its plugin files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Check the file and report its manifests, then exit.
    Probe,
    /// Open the files and serve the plugins the host creates in it
    /// ([`Request::Create`]).
    Serve,
}

/// The worker's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ready {
    /// The files passed every check: the first file's manifests as JSON,
    /// and the protections in force.
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

/// What the host asks of a worker on a call connection: one call of the
/// description to one of its plugins, the parts of one message of several
/// plugins, or a plugin created or dropped. A plugin in a worker is known
/// by its slot, a number the host gives it when it creates it.
/// `deadline_ms` is milliseconds since the Unix epoch, 0 for none; the
/// plugin's runtime sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// One call, answered once with the answer the call takes.
    Call {
        /// The call.
        #[serde(borrow)]
        call: Call<'a>,
        /// Its deadline.
        deadline_ms: u64,
        /// Who emitted the event an `OnEvent` call delivers.
        #[serde(borrow)]
        source: Option<Cow<'a, str>>,
        /// The plugin called.
        slot: u32,
    },
    /// The parts of one message of the worker's plugins in one request:
    /// the `validate` of each part's actions, answered at once
    /// ([`WireAnswer::RoundValidated`]), then each part's evaluators,
    /// answered in a second reply ([`WireAnswer::EvaluatedEach`]) that the
    /// host reads when its evaluators phase comes. The evaluators thus run
    /// alongside the rest of the message, on the same message and state.
    Round {
        /// Each plugin's part, in the order the answers follow.
        parts: Vec<RoundPart<'a>>,
        /// The message.
        #[serde(borrow)]
        message: MessageRef<'a>,
        /// The validates' deadline.
        deadline_ms: u64,
        /// The evaluators' deadline.
        evaluate_deadline_ms: u64,
    },
    /// Create plugin number `index` of file number `file` (of the
    /// [`Hello`]) as `slot`; answered [`WireAnswer::Done`].
    Create {
        /// The slot it gets.
        slot: u32,
        /// The file, numbered as [`Hello::files`].
        file: u32,
        /// The plugin's index in the file's export list.
        index: u32,
    },
    /// Drop the plugin in `slot`; answered [`WireAnswer::Done`].
    Drop {
        /// Its slot.
        slot: u32,
    },
}

/// One plugin's part of a message round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoundPart<'a> {
    /// The plugin.
    pub slot: u32,
    /// The actions to validate.
    pub actions: Cow<'a, [u32]>,
    /// The evaluators to run.
    pub evaluators: Cow<'a, [u32]>,
}

impl<'a> Request<'a> {
    /// `call` to the plugin in `slot`, with no deadline.
    pub(crate) fn of(slot: u32, call: Call<'a>) -> Self {
        Request::Call {
            call,
            deadline_ms: 0,
            source: None,
            slot,
        }
    }

    /// The request's name in messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Request::Call { call, .. } => call.describe(),
            Request::Round { .. } => "validate and evaluators".into(),
            Request::Create { .. } => "creating the plugin".into(),
            Request::Drop { .. } => "dropping the plugin".into(),
        }
    }

    /// Whether `answer` is of the kind this request is answered with. A
    /// message round is answered twice: validates, then evaluators.
    pub(crate) fn is_answered_by(&self, answer: &WireAnswer) -> bool {
        match self {
            Request::Call { call, .. } => call.answered_by() == answer.kind(),
            Request::Round { .. } => matches!(
                answer,
                WireAnswer::RoundValidated(_) | WireAnswer::EvaluatedEach(_)
            ),
            Request::Create { .. } | Request::Drop { .. } => matches!(answer, WireAnswer::Done),
        }
    }
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

impl WireEvaluation {
    /// The verdict read back; metadata that is not JSON is the plugin's
    /// error.
    pub(crate) fn read(self) -> Result<Evaluation, Failure> {
        evaluation_from(self.score, self.passed, &self.metadata_json)
    }
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

/// What a call returned, as it crosses: an [`Answer`] with its errors and
/// verdicts in their wire forms, and the verdicts of a message round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireAnswer {
    /// [`Answer::Done`].
    Done,
    /// [`Answer::Accepted`].
    Accepted(bool),
    /// [`Answer::Validated`].
    Validated(Vec<Result<bool, WireError>>),
    /// [`Answer::Handled`], as the SDK's JSON.
    Handled(String),
    /// [`Answer::Provided`].
    Provided(String),
    /// [`Answer::ProvidedEach`].
    ProvidedEach(Vec<Result<String, WireError>>),
    /// [`Answer::Evaluated`].
    Evaluated(WireEvaluation),
    /// [`Answer::EvaluatedBatch`].
    EvaluatedBatch(Vec<WireEvaluation>),
    /// One verdict (or error) per evaluator of each part of a message
    /// round, in order.
    EvaluatedEach(Vec<Vec<Result<WireEvaluation, WireError>>>),
    /// [`Answer::Text`].
    Text(String),
    /// One answer per action of each part of a message round, in order.
    RoundValidated(Vec<Vec<Result<bool, WireError>>>),
}

impl WireAnswer {
    /// The answer's kind.
    pub(crate) fn kind(&self) -> AnswerKind {
        match self {
            WireAnswer::Done => AnswerKind::Done,
            WireAnswer::Accepted(_) => AnswerKind::Accepted,
            WireAnswer::Validated(_) => AnswerKind::Validated,
            WireAnswer::Handled(_) => AnswerKind::Handled,
            WireAnswer::Provided(_) => AnswerKind::Provided,
            WireAnswer::ProvidedEach(_) => AnswerKind::ProvidedEach,
            WireAnswer::Evaluated(_) => AnswerKind::Evaluated,
            WireAnswer::EvaluatedBatch(_) => AnswerKind::EvaluatedBatch,
            WireAnswer::EvaluatedEach(_) => AnswerKind::EvaluatedEach,
            WireAnswer::Text(_) => AnswerKind::Text,
            WireAnswer::RoundValidated(_) => AnswerKind::Validated,
        }
    }

    /// `answer` as it crosses; a handler's result that cannot be written
    /// as JSON is the plugin's error.
    pub(crate) fn from_answer(answer: Answer) -> Result<Self, Failure> {
        let errors = |e: Failure| WireError::from(e);
        Ok(match answer {
            Answer::Done => WireAnswer::Done,
            Answer::Accepted(accepted) => WireAnswer::Accepted(accepted),
            Answer::Validated(answers) => {
                WireAnswer::Validated(answers.into_iter().map(|a| a.map_err(errors)).collect())
            }
            Answer::Handled(result) => {
                WireAnswer::Handled(serde_json::to_string(&result).map_err(|e| {
                    Failure::new(
                        ErrorKind::InvalidInput,
                        format!("its result cannot be written as JSON: {e}"),
                    )
                })?)
            }
            Answer::Provided(value) => WireAnswer::Provided(value),
            Answer::ProvidedEach(values) => {
                WireAnswer::ProvidedEach(values.into_iter().map(|v| v.map_err(errors)).collect())
            }
            Answer::Evaluated(evaluation) => WireAnswer::Evaluated((&evaluation).into()),
            Answer::EvaluatedBatch(evaluations) => {
                WireAnswer::EvaluatedBatch(evaluations.iter().map(WireEvaluation::from).collect())
            }
            Answer::Text(text) => WireAnswer::Text(text),
        })
    }

    /// The answer read back: a handler's result or a verdict's metadata
    /// that is not JSON is the plugin's error.
    pub(crate) fn into_answer(self) -> Result<Answer, Failure> {
        let errors = |e: WireError| Failure::from(e);
        Ok(match self {
            WireAnswer::Done => Answer::Done,
            WireAnswer::Accepted(accepted) => Answer::Accepted(accepted),
            WireAnswer::Validated(answers) => {
                Answer::Validated(answers.into_iter().map(|a| a.map_err(errors)).collect())
            }
            WireAnswer::Handled(json) => {
                Answer::Handled(Box::new(serde_json::from_str(&json).map_err(|e| {
                    Failure::new(
                        ErrorKind::InvalidInput,
                        format!("returned invalid JSON: {e}"),
                    )
                })?))
            }
            WireAnswer::Provided(value) => Answer::Provided(value),
            WireAnswer::ProvidedEach(values) => {
                Answer::ProvidedEach(values.into_iter().map(|v| v.map_err(errors)).collect())
            }
            WireAnswer::Evaluated(wire) => Answer::Evaluated(wire.read()?),
            WireAnswer::EvaluatedBatch(wires) => Answer::EvaluatedBatch(
                wires
                    .into_iter()
                    .map(WireEvaluation::read)
                    .collect::<Result<_, _>>()?,
            ),
            WireAnswer::EvaluatedEach(_) | WireAnswer::RoundValidated(_) => {
                return Err(Failure::new(
                    ErrorKind::Failed,
                    "protocol error: a message round's answers answered a call",
                ))
            }
            WireAnswer::Text(text) => Answer::Text(text),
        })
    }
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
pub(crate) enum ToWorker<'a> {
    /// A call, and its number.
    Call {
        /// The call's number, unique in the worker; its replies repeat it.
        id: u64,
        /// What is asked.
        #[serde(borrow)]
        request: Request<'a>,
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
        result: Result<WireAnswer, WireError>,
    },
    /// A host callback the call (or a plugin thread) makes, for the plugin
    /// in `slot`.
    Callback {
        /// The plugin that makes it.
        slot: u32,
        /// The callback.
        callback: Callback,
    },
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

/// Decodes one frame's body; the frame may borrow from it (a call's
/// strings do).
pub(crate) fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> io::Result<T> {
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
        input: impl Read,
    ) -> io::Result<Option<T>> {
        self.poll_with(input, |body| decode(body))
    }

    /// The next frame's body, undecoded, for a frame that borrows from it
    /// (a call): as [`FrameReader::poll`] otherwise.
    pub(crate) fn poll_body(&mut self, input: impl Read) -> io::Result<Option<Vec<u8>>> {
        self.poll_with(input, |body| Ok(body.to_vec()))
    }

    fn poll_with<R>(
        &mut self,
        mut input: impl Read,
        read: impl Fn(&[u8]) -> io::Result<R>,
    ) -> io::Result<Option<R>> {
        loop {
            if let Some(frame) = self.take(&read)? {
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

    fn take<R>(&mut self, read: &impl Fn(&[u8]) -> io::Result<R>) -> io::Result<Option<R>> {
        let Some(end) = self.frame_end() else {
            return Ok(None);
        };
        if end - 4 > self.limit {
            return Err(too_long(end - 4, self.limit));
        }
        if self.filled < end {
            return Ok(None);
        }
        let frame = read(&self.buffer[4..end]);
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
            request: Request::Call {
                call: Call::ValidateEach {
                    actions: Cow::Borrowed(&[0, 2]),
                    message: MessageRef {
                        id: "m1",
                        text: "hello",
                        context_json: "{}",
                    },
                },
                deadline_ms: 5,
                source: None,
                slot: 7,
            },
        };
        encode(&call, &mut bytes).unwrap();
        encode(
            &ToWorker::Call {
                id: 2,
                request: Request::of(0, Call::OnLoad),
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
        let mut bodies = Vec::new();
        let error = loop {
            match reader.poll_body(&mut input) {
                Ok(Some(body)) => bodies.push(body),
                Ok(None) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(bodies.len(), 2);
        match decode::<ToWorker<'_>>(&bodies[0]).unwrap() {
            ToWorker::Call {
                id: 1,
                request:
                    Request::Call {
                        call: Call::ValidateEach { actions, message },
                        deadline_ms: 5,
                        slot: 7,
                        ..
                    },
            } => {
                assert_eq!(&*actions, &[0, 2]);
                assert_eq!(message.text, "hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode::<ToWorker<'_>>(&bodies[1]).unwrap(),
            ToWorker::Call {
                id: 2,
                request: Request::Call {
                    call: Call::OnLoad,
                    ..
                }
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
        let error = read_frame::<FromWorker>(&bytes[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("over the limit"), "{error}");
        let mut reader = FrameReader::with_limit(1000);
        let error = reader
            .poll::<FromWorker>(&1001u32.to_le_bytes()[..])
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
        assert!(reader.poll::<FromWorker>(&mut input).unwrap().is_none());
        assert!(reader.holds_bytes());
        assert!(reader.buffer.len() <= 8192, "{}", reader.buffer.len());
        // A whole frame of 3 MiB, read in 64 KiB pieces: the buffer never
        // holds more than twice what has arrived, and shrinks after.
        let frame = WireAnswer::Text("x".repeat(3 << 20));
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes).unwrap();
        let mut reader = FrameReader::with_limit(16 << 20);
        let mut input = Chunks {
            bytes: &bytes,
            chunk: 64 << 10,
        };
        let mut largest = 0;
        let answer = loop {
            if let Some(answer) = reader.poll::<WireAnswer>(&mut input).unwrap() {
                break answer;
            }
            largest = largest.max(reader.buffer.len());
            assert!(reader.buffer.len() <= 2 * reader.filled.max(4096));
        };
        assert!(matches!(answer, WireAnswer::Text(text) if text.len() == 3 << 20));
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
            .send_until(Full(0), &WireAnswer::Text("x".repeat(100)), &mut || {
                asked += 1;
                asked == 3
            })
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("stopped reading"), "{error}");
        assert_eq!(asked, 3);
    }

    #[test]
    fn each_request_names_the_answers_it_takes() {
        let export = Request::of(0, Call::ExportState);
        assert!(export.is_answered_by(&WireAnswer::Text(String::new())));
        assert!(!export.is_answered_by(&WireAnswer::Done));
        let load = Request::of(0, Call::OnLoad);
        assert!(load.is_answered_by(&WireAnswer::Done));
        assert!(!load.is_answered_by(&WireAnswer::Validated(Vec::new())));
        let round = Request::Round {
            parts: vec![RoundPart {
                slot: 0,
                actions: Cow::Borrowed(&[0]),
                evaluators: Cow::Borrowed(&[0]),
            }],
            message: MessageRef {
                id: "m",
                text: "t",
                context_json: "{}",
            },
            deadline_ms: 0,
            evaluate_deadline_ms: 0,
        };
        assert!(round.is_answered_by(&WireAnswer::EvaluatedEach(Vec::new())));
        assert!(round.is_answered_by(&WireAnswer::RoundValidated(Vec::new())));
        assert!(!round.is_answered_by(&WireAnswer::Done));
        let create = Request::Create {
            slot: 1,
            file: 0,
            index: 0,
        };
        assert!(create.is_answered_by(&WireAnswer::Done));
    }

    #[test]
    fn an_answer_crosses_and_reads_back_the_same() {
        let answer = Answer::Validated(vec![Ok(true), Err(Failure::msg("no"))]);
        let wire = WireAnswer::from_answer(answer).unwrap();
        let mut bytes = Vec::new();
        encode(&wire, &mut bytes).unwrap();
        let read: WireAnswer = decode(&bytes[4..]).unwrap();
        match read.into_answer().unwrap() {
            Answer::Validated(answers) => {
                assert!(matches!(answers[0], Ok(true)));
                assert_eq!(answers[1].as_ref().unwrap_err().message(), "no");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
