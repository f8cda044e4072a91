//! A request's body as the handlers read it: whole within the body
//! deadline (`http_body_timeout_ms`), and within the size limit as soon as
//! a chunk size says otherwise (`http/framing.rs`).
//!
//! A body that fails so fails with a [`BodyRefused`], which the handler
//! finds among the causes of its read error and answers (`408`, `413`).
//! Whether the body was read to its end is kept ([`BodyProgress`]): a
//! response sent before that closes the connection, and says so.

use super::framing::{BodySignal, ChunkRefusal, MAX_CHUNK_SIZE_DIGITS};
use crate::request::{RequestError, MAX_REQUEST_BYTES};
use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why a body was refused before it was all read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyRefused {
    /// It did not all arrive within the body timeout.
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// A chunk size takes it past [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// A chunk size has more hex digits than any size within the limit.
    ChunkSizeTooLong,
}

impl fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyRefused::TimedOut { after } => write!(
                f,
                "the request body did not arrive within {} ms (http_body_timeout_ms)",
                after.as_millis()
            ),
            BodyRefused::TooLarge => fmt::Display::fmt(&RequestError::TooLarge, f),
            BodyRefused::ChunkSizeTooLong => write!(
                f,
                "a chunk size of the request body has more than {MAX_CHUNK_SIZE_DIGITS} hex \
                 digits; a request holds at most {} MiB",
                MAX_REQUEST_BYTES / (1024 * 1024)
            ),
        }
    }
}

impl std::error::Error for BodyRefused {}

impl BodyRefused {
    /// The refusal among the causes of `error`, if one is there.
    pub(super) fn cause_of(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(refused) = error.downcast_ref::<BodyRefused>() {
                return Some(*refused);
            }
            cause = error.source();
        }
        None
    }
}

/// Whether a request's body has been read to its end, for the server to
/// see once the response is ready.
#[derive(Debug, Default)]
pub(super) struct BodyProgress {
    ended: AtomicBool,
}

impl BodyProgress {
    /// Whether the body has ended (an empty one has, from the start).
    pub(super) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }
}

/// A request's body, refused when late or too large.
pub(super) struct RequestBody<B> {
    body: B,
    /// When the body must have arrived, from when its headers did.
    due: Instant,
    /// The timer of `due`, made the first time the body waits (most
    /// bodies never do).
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    signal: Arc<BodySignal>,
    progress: Arc<BodyProgress>,
    /// The client, for the log.
    peer: SocketAddr,
    /// Set once the body has failed: nothing more is read.
    refused: bool,
}

impl<B: Body> RequestBody<B> {
    /// `body`, due within `timeout` from now; refused when `signal` says
    /// so; its end recorded in `progress`.
    pub(super) fn new(
        body: B,
        timeout: Duration,
        signal: Arc<BodySignal>,
        progress: Arc<BodyProgress>,
        peer: SocketAddr,
    ) -> Self {
        if body.is_end_stream() {
            progress.end();
        }
        Self {
            body,
            due: Instant::now() + timeout,
            deadline: None,
            timeout,
            signal,
            progress,
            peer,
            refused: false,
        }
    }

    fn refuse(&mut self, refused: BodyRefused) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.refused = true;
        tracing::info!(peer = %self.peer, "HTTP request refused: {refused}");
        Poll::Ready(Some(Err(Box::new(refused))))
    }
}

/// The error of a body, as axum takes it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.refused {
            return Poll::Ready(None);
        }
        if let Some(refusal) = self.signal.poll_refusal(cx) {
            return self.refuse(match refusal {
                ChunkRefusal::TooLarge => BodyRefused::TooLarge,
                ChunkRefusal::TooManyDigits => BodyRefused::ChunkSizeTooLong,
            });
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                if self.body.is_end_stream() {
                    self.progress.end();
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Ready(None) => {
                self.progress.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let due = self.due;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if deadline.as_mut().poll(cx).is_ready() {
                    let after = self.timeout;
                    return self.refuse(BodyRefused::TimedOut { after });
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body as AxumBody;
    use futures_util::StreamExt;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    /// A body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_late_past_its_deadline_fails_with_the_refusal_as_its_cause() {
        let body = RequestBody::new(
            Silent,
            Duration::from_millis(500),
            Arc::default(),
            Arc::default(),
            peer(),
        );
        let error = axum::body::to_bytes(AxumBody::new(body), usize::MAX)
            .await
            .expect_err("late");
        assert_eq!(
            BodyRefused::cause_of(&error),
            Some(BodyRefused::TimedOut {
                after: Duration::from_millis(500)
            })
        );
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_says_so() {
        let progress = Arc::new(BodyProgress::default());
        let body = RequestBody::new(
            AxumBody::from("hello"),
            Duration::from_secs(60),
            Arc::default(),
            Arc::clone(&progress),
            peer(),
        );
        assert!(!progress.has_ended());
        let mut stream = AxumBody::new(body).into_data_stream();
        while stream.next().await.is_some() {}
        assert!(progress.has_ended());
        let empty = RequestBody::new(
            AxumBody::empty(),
            Duration::from_secs(60),
            Arc::default(),
            Arc::clone(&progress),
            peer(),
        );
        assert!(empty.is_end_stream());
    }
}
