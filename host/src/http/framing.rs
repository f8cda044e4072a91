//! Where each request's body lies in a connection's bytes, so that a chunk
//! size beyond the request limit is refused as soon as its size line
//! arrives: hyper decodes chunked bodies without showing their sizes, and
//! waits for a chunk of 2^64 - 1 bytes as patiently as for one of ten.
//!
//! [`Framed`] sits between the socket and hyper and follows the bytes hyper
//! reads with [`Framing`]: a request's head up to its empty line, then its
//! body as hyper framed it (told by the server when hyper hands it the
//! request, [`NextBody`]), then the next head. It hands hyper a head's
//! bytes only up to its end, keeping the rest until the server has said
//! how that request's body is framed, so the two always agree on where a
//! body starts. A chunked body's sizes are added up as they arrive; one
//! that takes the body past the limit, or has more than 16 hex digits, is
//! reported to the request's body ([`BodySignal`]), which fails it so that
//! the handler answers `413` at once.
//!
//! Whatever [`Framing`] cannot follow (bytes hyper itself will refuse, a
//! head it read otherwise) ends the tracking for the connection, never the
//! connection: hyper stays the one parser that decides, and the body
//! deadline still bounds every body.
//!
//! When hyper closes the connection, [`Framed`] shuts its sending side and
//! reads what the client still sends for at most [`LINGER`]: a socket
//! closed with bytes unread is reset, and a reset can destroy the answer
//! (a `413`, say) before the client reads it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The most hex digits a chunk size may have (hyper's own limit is the
/// value: 16 digits of `f` still fit in 64 bits).
pub(super) const MAX_CHUNK_SIZE_DIGITS: u32 = 16;

/// How long a connection hyper closes is read from (and what arrives
/// dropped) before its socket is closed.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// How a request's body is framed, as hyper read its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl BodyFraming {
    /// The framing of a body, from what hyper says of its size.
    pub(super) fn of(body: &impl http_body::Body) -> Self {
        if body.is_end_stream() {
            BodyFraming::Empty
        } else if let Some(length) = body.size_hint().exact() {
            BodyFraming::Length(length)
        } else {
            // An HTTP/1 request body of no known length is chunked.
            BodyFraming::Chunked
        }
    }
}

/// Why a chunked body was refused before it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkRefusal {
    /// Its chunk sizes add up to more than the limit.
    TooLarge,
    /// A chunk size has more than [`MAX_CHUNK_SIZE_DIGITS`] hex digits.
    TooManyDigits,
}

/// What the connection's bytes say of one request's body, for the body
/// itself to see: a refusal, and who to wake with it.
#[derive(Debug, Default)]
pub(super) struct BodySignal {
    state: Mutex<(Option<ChunkRefusal>, Option<Waker>)>,
}

impl BodySignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<ChunkRefusal>, Option<Waker>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses the body, waking whoever waits for it.
    fn refuse(&self, refusal: ChunkRefusal) {
        let waker = {
            let mut state = self.lock();
            state.0 = Some(refusal);
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The refusal, if there is one; else the task of `cx` is woken when
    /// one comes.
    pub(super) fn poll_refusal(&self, cx: &Context<'_>) -> Option<ChunkRefusal> {
        let mut state = self.lock();
        if state.0.is_none() {
            state.1 = Some(cx.waker().clone());
        }
        state.0
    }
}

/// The framing of the request hyper has just handed to the server, from
/// the server to the connection's [`Framed`] stream.
#[derive(Debug, Default)]
pub(super) struct NextBody {
    slot: Mutex<Option<(BodyFraming, Arc<BodySignal>)>>,
}

impl NextBody {
    /// The request whose head hyper read last has a body framed so.
    pub(super) fn set(&self, framing: BodyFraming, signal: Arc<BodySignal>) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((framing, signal));
    }

    fn take(&self) -> Option<(BodyFraming, Arc<BodySignal>)> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Where the bytes of a connection stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request's head: `started` once past the empty lines a head may
    /// start with, `line_start` right after a line break (or a CR after
    /// one), where another line break ends the head.
    Head { started: bool, line_start: bool },
    /// The head is all read; its body's framing is not known yet.
    AwaitingRequest,
    /// In a body of `left` more bytes.
    Length { left: u64 },
    /// In a chunked body.
    Chunked(Chunk),
    /// Not followed any more.
    Untracked,
}

/// Where a chunked body stands (the states of hyper's decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first digit of a chunk size.
    Start,
    /// More digits of a chunk size: its value so far and its digits.
    Size { value: u64, digits: u32 },
    /// Blanks after the size.
    Blanks { value: u64 },
    /// An extension after the size.
    Extension { value: u64 },
    /// The LF of the size line.
    SizeLf { value: u64 },
    /// `left` bytes of chunk data.
    Data { left: u64 },
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// After the last chunk: a CR (the end) or a trailer.
    EndCr,
    /// A trailer line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The LF of the end.
    EndLf,
}

/// A connection's bytes, followed request by request.
#[derive(Debug)]
pub(super) struct Framing {
    state: State,
    /// The most bytes one body may hold.
    limit: u64,
    /// The chunk sizes of the current chunked body so far.
    received: u64,
    /// The current body's signal.
    signal: Option<Arc<BodySignal>>,
}

impl Framing {
    /// A new connection's: waiting for the first head.
    pub(super) fn new(limit: u64) -> Self {
        Self {
            state: State::Head {
                started: false,
                line_start: false,
            },
            limit,
            received: 0,
            signal: None,
        }
    }

    /// Whether a head is read and its body's framing not known yet.
    fn is_awaiting_request(&self) -> bool {
        self.state == State::AwaitingRequest
    }

    /// The body of the request whose head was read last is framed so
    /// (`None`: nobody said, so the connection is not followed any more).
    fn request_started(&mut self, body: Option<(BodyFraming, Arc<BodySignal>)>) {
        self.received = 0;
        self.signal = None;
        self.state = match body {
            None => State::Untracked,
            Some((BodyFraming::Empty, _)) | Some((BodyFraming::Length(0), _)) => State::Head {
                started: false,
                line_start: false,
            },
            Some((BodyFraming::Length(left), _)) => State::Length { left },
            Some((BodyFraming::Chunked, signal)) => {
                self.signal = Some(signal);
                State::Chunked(Chunk::Start)
            }
        };
    }

    /// Follows `bytes`, the next the client sent: how many of them may go
    /// to hyper now. Fewer than all only at the end of a head, whose body's
    /// framing must be known before its first byte is followed.
    pub(super) fn follow(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::AwaitingRequest => return at,
                State::Untracked => return bytes.len(),
                State::Length { left } => {
                    let available = (bytes.len() - at) as u64;
                    let taken = left.min(available);
                    at += usize::try_from(taken).unwrap_or(bytes.len() - at);
                    self.state = if taken == left {
                        State::Head {
                            started: false,
                            line_start: false,
                        }
                    } else {
                        State::Length { left: left - taken }
                    };
                }
                State::Chunked(Chunk::Data { left }) => {
                    let available = (bytes.len() - at) as u64;
                    let taken = left.min(available);
                    at += usize::try_from(taken).unwrap_or(bytes.len() - at);
                    self.state = State::Chunked(if taken == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data { left: left - taken }
                    });
                }
                State::Head {
                    started,
                    line_start,
                } => {
                    self.state = head_step(started, line_start, bytes[at]);
                    at += 1;
                }
                State::Chunked(chunk) => {
                    self.state = self.chunk_step(chunk, bytes[at]);
                    at += 1;
                }
            }
        }
        at
    }

    /// The state after `byte` in a chunked body at `chunk`.
    fn chunk_step(&mut self, chunk: Chunk, byte: u8) -> State {
        let next = match (chunk, byte) {
            (Chunk::Start, _) => match hex_digit(byte) {
                Some(digit) => self.size(u64::from(digit), 1),
                None => None,
            },
            (Chunk::Size { value, digits }, _) => match hex_digit(byte) {
                Some(digit) => value
                    .checked_mul(16)
                    .and_then(|value| value.checked_add(u64::from(digit)))
                    .map_or(Some(Err(ChunkRefusal::TooLarge)), |value| {
                        self.size(value, digits + 1)
                    }),
                None => size_end(value, byte).map(Ok),
            },
            (Chunk::Blanks { value }, _) => size_end(value, byte).map(Ok),
            (Chunk::Extension { value }, b'\r') => Some(Ok(Chunk::SizeLf { value })),
            (Chunk::Extension { .. }, b'\n') => None,
            (Chunk::Extension { value }, _) => Some(Ok(Chunk::Extension { value })),
            (Chunk::SizeLf { value: 0 }, b'\n') => Some(Ok(Chunk::EndCr)),
            (Chunk::SizeLf { value }, b'\n') => {
                self.received = self.received.saturating_add(value);
                Some(Ok(Chunk::Data { left: value }))
            }
            (Chunk::DataCr, b'\r') => Some(Ok(Chunk::DataLf)),
            (Chunk::DataLf, b'\n') => Some(Ok(Chunk::Start)),
            (Chunk::EndCr, b'\r') => Some(Ok(Chunk::EndLf)),
            (Chunk::EndCr, _) | (Chunk::Trailer, _) if byte != b'\r' => Some(Ok(Chunk::Trailer)),
            (Chunk::Trailer, b'\r') => Some(Ok(Chunk::TrailerLf)),
            (Chunk::TrailerLf, b'\n') => Some(Ok(Chunk::EndCr)),
            (Chunk::EndLf, b'\n') => {
                self.signal = None;
                return State::Head {
                    started: false,
                    line_start: false,
                };
            }
            _ => None,
        };
        match next {
            Some(Ok(chunk)) => State::Chunked(chunk),
            Some(Err(refusal)) => {
                if let Some(signal) = self.signal.take() {
                    signal.refuse(refusal);
                }
                State::Untracked
            }
            // hyper refuses the body too; nothing more to follow.
            None => State::Untracked,
        }
    }

    /// A chunk size of `value` so far, in `digits` digits: refused when it
    /// takes the body past the limit or has too many digits.
    fn size(&mut self, value: u64, digits: u32) -> Option<Result<Chunk, ChunkRefusal>> {
        if digits > MAX_CHUNK_SIZE_DIGITS {
            return Some(Err(ChunkRefusal::TooManyDigits));
        }
        if self.received.saturating_add(value) > self.limit {
            return Some(Err(ChunkRefusal::TooLarge));
        }
        Some(Ok(Chunk::Size { value, digits }))
    }
}

/// What may follow a chunk size: blanks, an extension, or the line's end;
/// `None` for anything else.
fn size_end(value: u64, byte: u8) -> Option<Chunk> {
    match byte {
        b'\t' | b' ' => Some(Chunk::Blanks { value }),
        b';' => Some(Chunk::Extension { value }),
        b'\r' => Some(Chunk::SizeLf { value }),
        _ => None,
    }
}

/// The state after `byte` in a head (as `httparse` reads one: empty lines
/// before the request line are skipped, and a line ends with LF or CR LF).
fn head_step(started: bool, line_start: bool, byte: u8) -> State {
    match (started, byte) {
        (false, b'\r' | b'\n') => State::Head {
            started: false,
            line_start: false,
        },
        (false, _) => State::Head {
            started: true,
            line_start: false,
        },
        (true, b'\n') if line_start => State::AwaitingRequest,
        (true, b'\n') => State::Head {
            started: true,
            line_start: true,
        },
        // A CR at a line's start may begin the empty line's CR LF.
        (true, b'\r') => State::Head {
            started: true,
            line_start,
        },
        (true, _) => State::Head {
            started: true,
            line_start: false,
        },
    }
}

/// The value of a hex digit.
fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// A connection's stream as hyper reads it: followed by [`Framing`], a
/// head's bytes handed over only up to its end, and closed after a linger.
pub(super) struct Framed<S> {
    stream: S,
    framing: Framing,
    next_body: Arc<NextBody>,
    /// Bytes read past a head's end, for after its request has started.
    held: Vec<u8>,
    /// How many of `held` hyper has had.
    held_from: usize,
    /// Once hyper closes the connection: until when it is read from.
    linger: Option<Pin<Box<Sleep>>>,
}

impl<S> Framed<S> {
    /// `stream`, whose bodies hold at most `limit` bytes; the server says
    /// how each request's body is framed through `next_body`.
    pub(super) fn new(stream: S, limit: u64, next_body: Arc<NextBody>) -> Self {
        Self {
            stream,
            framing: Framing::new(limit),
            next_body,
            held: Vec::new(),
            held_from: 0,
            linger: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.framing.is_awaiting_request() {
            // hyper reads on only once it has handed the request over.
            let body = this.next_body.take();
            this.framing.request_started(body);
        }
        if this.held_from < this.held.len() {
            let end = this.held.len().min(this.held_from + buf.remaining());
            let offered = &this.held[this.held_from..end];
            let taken = this.framing.follow(offered);
            buf.put_slice(&offered[..taken]);
            this.held_from += taken;
            if this.held_from == this.held.len() {
                this.held.clear();
                this.held_from = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        let taken = this.framing.follow(read);
        if taken < read.len() {
            this.held.extend_from_slice(&read[taken..]);
            buf.set_filled(before + taken);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Shuts the sending side, then reads and drops what the client still
    /// sends until it closes, at most [`LINGER`].
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut unread = [0; 4096];
        loop {
            if let Some(linger) = this.linger.as_mut() {
                if linger.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
            }
            let mut buf = ReadBuf::new(&mut unread);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // The client closed, or the connection failed: done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 2 * 1024 * 1024;

    /// Follows `bytes` one call at a time in pieces of `piece` bytes: how
    /// many bytes were handed over before the framing waited.
    fn follow_in_pieces(framing: &mut Framing, bytes: &[u8], piece: usize) -> usize {
        let mut at = 0;
        for part in bytes.chunks(piece) {
            let taken = framing.follow(part);
            at += taken;
            if taken < part.len() {
                break;
            }
        }
        at
    }

    #[test]
    fn a_head_is_handed_over_up_to_its_end_whatever_its_line_breaks() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\n\r\n",
            "\r\n\nGET / HTTP/1.1\nHost: a\r\n\r\n",
        ] {
            for piece in [1, 3, head.len() + 10] {
                let mut framing = Framing::new(LIMIT);
                let bytes = format!("{head}NEXT");
                let taken = follow_in_pieces(&mut framing, bytes.as_bytes(), piece);
                assert_eq!(taken, head.len(), "{head:?} in pieces of {piece}");
                assert!(framing.is_awaiting_request(), "{head:?}");
            }
        }
    }

    #[test]
    fn bodies_are_followed_to_the_next_head() {
        let mut framing = Framing::new(LIMIT);
        let first = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing.follow(first), first.len());
        framing.request_started(Some((BodyFraming::Length(5), Arc::default())));
        let rest = b"hello\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            framing.follow(rest),
            rest.len(),
            "a CR LF before a head is skipped"
        );
        let signal = Arc::new(BodySignal::default());
        framing.request_started(Some((BodyFraming::Chunked, Arc::clone(&signal))));
        let body = b"5;ext=1\r\nhello\r\n3 \r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(framing.follow(body), body.len());
        assert!(framing.is_awaiting_request());
        let waker = std::task::Waker::noop();
        assert_eq!(signal.poll_refusal(&Context::from_waker(waker)), None);
    }

    #[test]
    fn a_chunk_size_past_the_limit_or_of_17_digits_is_refused_at_once() {
        for (body, refusal) in [
            ("ffffffffffffffff", ChunkRefusal::TooLarge),
            ("200001", ChunkRefusal::TooLarge),
            ("10\r\n0123456789abcdef\r\n1ffff1", ChunkRefusal::TooLarge),
            ("00000000000000001", ChunkRefusal::TooManyDigits),
        ] {
            let mut framing = Framing::new(LIMIT);
            framing.follow(b"POST / HTTP/1.1\r\n\r\n");
            let signal = Arc::new(BodySignal::default());
            framing.request_started(Some((BodyFraming::Chunked, Arc::clone(&signal))));
            framing.follow(body.as_bytes());
            let waker = std::task::Waker::noop();
            assert_eq!(
                signal.poll_refusal(&Context::from_waker(waker)),
                Some(refusal),
                "{body}"
            );
        }
        let mut framing = Framing::new(LIMIT);
        framing.follow(b"POST / HTTP/1.1\r\n\r\n");
        let signal = Arc::new(BodySignal::default());
        framing.request_started(Some((BodyFraming::Chunked, Arc::clone(&signal))));
        framing.follow(b"200000\r\n");
        let waker = std::task::Waker::noop();
        assert_eq!(
            signal.poll_refusal(&Context::from_waker(waker)),
            None,
            "2 MiB exactly is within the limit"
        );
    }

    #[test]
    fn what_hyper_refuses_or_nobody_framed_ends_the_following_not_the_bytes() {
        let mut framing = Framing::new(LIMIT);
        framing.follow(b"POST / HTTP/1.1\r\n\r\n");
        framing.request_started(Some((BodyFraming::Chunked, Arc::default())));
        assert_eq!(framing.follow(b"zz\r\n"), 4);
        assert_eq!(framing.state, State::Untracked);
        assert_eq!(framing.follow(b"GET / HTTP/1.1\r\n\r\nmore"), 22);

        let mut framing = Framing::new(LIMIT);
        framing.follow(b"GET / HTTP/1.1\r\n\r\n");
        framing.request_started(None);
        assert_eq!(framing.follow(b"anything\r\n\r\nat all"), 18);
    }
}
