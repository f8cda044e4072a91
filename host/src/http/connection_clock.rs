//! When an HTTP connection must close: the header timeout and the idle
//! timeout of one connection.
//!
//! A connection is always in one of three phases. It starts waiting for a
//! request's headers, which must all arrive within the header timeout. Once
//! they have, a request is served, for as long as it takes (an event stream
//! never ends). When its response has been sent the connection is idle, and
//! the next request must start within the idle timeout; its first byte
//! starts the header timeout again.
//!
//! The clock sees the bytes a connection reads ([`Watched`]), the requests
//! the server starts, and the responses it finishes ([`Responding`], which
//! lives as long as the response's body); [`ConnectionClock::expired`]
//! resolves when the phase the connection is in has lasted too long.

use http_body::{Body, Frame, SizeHint};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers, due by `deadline`.
    Headers { deadline: Instant },
    /// Serving a request: no deadline.
    Serving,
    /// Between two requests; the next must start by `deadline`.
    Idle { deadline: Instant },
}

/// Which timeout ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// The client did not send a request's headers in time.
    Headers,
    /// The connection stayed idle too long between requests.
    Idle,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expired::Headers => "the client did not send a request's headers in time",
            Expired::Idle => "the connection stayed idle past the idle timeout",
        })
    }
}

/// The phase of one connection and its deadlines.
#[derive(Debug)]
pub(super) struct ConnectionClock {
    phase: watch::Sender<Phase>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnectionClock {
    /// The clock of a connection just accepted: waiting for headers.
    pub(super) fn start(header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let (phase, _) = watch::channel(Phase::Headers {
            deadline: Instant::now() + header_timeout,
        });
        Arc::new(Self {
            phase,
            header_timeout,
            idle_timeout,
        })
    }

    /// Bytes arrived: on an idle connection, the next request has begun,
    /// and its headers are due within the header timeout.
    fn bytes_arrived(&self) {
        let header_timeout = self.header_timeout;
        self.phase.send_if_modified(|phase| match phase {
            Phase::Idle { .. } => {
                *phase = Phase::Headers {
                    deadline: Instant::now() + header_timeout,
                };
                true
            }
            Phase::Headers { .. } | Phase::Serving => false,
        });
    }

    /// A request's headers are in: no deadline while it is served. The
    /// connection is idle again when what this returns is dropped (with the
    /// response's body).
    pub(super) fn request_started(self: &Arc<Self>) -> Responding {
        self.phase.send_replace(Phase::Serving);
        Responding(Arc::clone(self))
    }

    /// The response is sent: the connection is idle.
    fn response_finished(&self) {
        self.phase.send_replace(Phase::Idle {
            deadline: Instant::now() + self.idle_timeout,
        });
    }

    /// Whether a request is being served.
    pub(super) fn is_serving(&self) -> bool {
        *self.phase.borrow() == Phase::Serving
    }

    /// Resolves when the connection has stayed in one phase past its
    /// deadline; never while a request is served.
    pub(super) async fn expired(&self) -> Expired {
        let mut phase = self.phase.subscribe();
        loop {
            let current = *phase.borrow_and_update();
            let (deadline, expiry) = match current {
                Phase::Headers { deadline } => (deadline, Expired::Headers),
                Phase::Idle { deadline } => (deadline, Expired::Idle),
                Phase::Serving => {
                    // The sender lives in `self`, so this only waits.
                    let _ = phase.changed().await;
                    continue;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return expiry,
                _ = phase.changed() => {}
            }
        }
    }
}

/// A request being answered; dropping it makes the connection idle.
#[derive(Debug)]
pub(super) struct Responding(Arc<ConnectionClock>);

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.response_finished();
    }
}

/// A response body that holds its request's [`Responding`] until the body
/// is sent (or dropped).
pub(super) struct TimedBody<B> {
    body: B,
    _responding: Responding,
}

impl<B> TimedBody<B> {
    /// `body`, ending the request `responding` once it is sent.
    pub(super) fn new(body: B, responding: Responding) -> Self {
        Self {
            body,
            _responding: responding,
        }
    }
}

impl<B: Body + Unpin> Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's stream, telling its clock when bytes arrive.
pub(super) struct Watched<S> {
    stream: S,
    clock: Arc<ConnectionClock>,
}

impl<S> Watched<S> {
    /// `stream`, watched by `clock`.
    pub(super) fn new(stream: S, clock: Arc<ConnectionClock>) -> Self {
        Self { stream, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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

    const HEADERS: Duration = Duration::from_millis(100);
    const IDLE: Duration = Duration::from_millis(1000);

    /// Whether the clock has expired after `wait` (in paused tokio time).
    async fn expired_within(clock: &ConnectionClock, wait: Duration) -> Option<Expired> {
        tokio::time::timeout(wait, clock.expired()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline_and_serving_has_none() {
        let clock = ConnectionClock::start(HEADERS, IDLE);
        assert_eq!(
            expired_within(&clock, HEADERS * 2).await,
            Some(Expired::Headers)
        );

        let responding = clock.request_started();
        assert!(clock.is_serving());
        assert_eq!(expired_within(&clock, IDLE * 10).await, None);
        drop(responding);
        assert!(!clock.is_serving());
        assert_eq!(expired_within(&clock, HEADERS * 2).await, None, "idle");
        assert_eq!(expired_within(&clock, IDLE).await, Some(Expired::Idle));

        clock.bytes_arrived();
        assert_eq!(
            expired_within(&clock, HEADERS * 2).await,
            Some(Expired::Headers),
            "the first byte of the next request starts the header timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_phase_moves_the_deadline_of_a_waiting_expiry() {
        let clock = ConnectionClock::start(HEADERS, IDLE);
        let waiting = clock.expired();
        tokio::pin!(waiting);
        tokio::select! {
            _ = &mut waiting => panic!("expired before its deadline"),
            () = tokio::time::sleep(HEADERS / 2) => {}
        }
        let responding = clock.request_started();
        tokio::select! {
            _ = &mut waiting => panic!("expired while serving"),
            () = tokio::time::sleep(IDLE * 5) => {}
        }
        drop(responding);
        assert_eq!(waiting.await, Expired::Idle);
    }
}
