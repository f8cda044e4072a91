//! The connections between the host and a worker: how the worker's control
//! connection reaches it when it starts, how each later call connection
//! reaches it, and reading a connection without waiting.
//!
//! Two kinds behind one interface, chosen by the platform:
//!
//! * `unix` (Linux, macOS): a socketpair per connection. The control
//!   connection is the worker's standard input; the worker end of every
//!   call connection crosses the control connection as a file descriptor
//!   (`SCM_RIGHTS`). No address exists that another process could reach.
//! * `tcp` (Windows, where a socket cannot cross a connection that way): a
//!   loopback listener per worker. The host writes the listener's port and
//!   a random token on the worker's standard input; the worker dials every
//!   connection (the control connection first, then one for each `c` byte
//!   the host sends on control) and opens each with the token, so that no
//!   other local process is taken for the worker. Built and tested on every
//!   platform; used where Unix sockets cannot carry a connection.
//!
//! Either way, a worker whose host is gone sees its control connection end
//! and exits.

use super::protocol::FrameReader;
use std::io;
use std::time::Instant;

#[cfg(any(windows, test))]
mod tcp;
#[cfg(unix)]
mod unix;

#[cfg(windows)]
pub(crate) use tcp::{read_now, HostLink, Stream, WorkerLink, SPIN};
#[cfg(unix)]
pub(crate) use unix::{read_now, HostLink, Stream, WorkerLink, SPIN};

/// Reads the next frame from `stream`: trying reads that do not wait for up
/// to [`SPIN`] (yielding to anything runnable in between), then the
/// stream's own blocking reads. `Ok(None)` only when a blocking read timed
/// out.
pub(crate) fn next_frame<T: for<'de> serde::Deserialize<'de>>(
    reader: &mut FrameReader,
    stream: &Stream,
) -> io::Result<Option<T>> {
    let started = Instant::now();
    while started.elapsed() < SPIN {
        if let Some(frame) = reader.poll(NoWait(stream))? {
            return Ok(Some(frame));
        }
        std::thread::yield_now();
    }
    reader.poll(stream)
}

/// Reads the next frame's body from `stream`, undecoded, as
/// [`next_frame`] reads a frame: for a frame that borrows from its bytes.
pub(crate) fn next_body(reader: &mut FrameReader, stream: &Stream) -> io::Result<Option<Vec<u8>>> {
    let started = Instant::now();
    while started.elapsed() < SPIN {
        if let Some(body) = reader.poll_body(NoWait(stream))? {
            return Ok(Some(body));
        }
        std::thread::yield_now();
    }
    reader.poll_body(stream)
}

/// A stream read with [`read_now`]: a read with nothing to read fails with
/// `WouldBlock` at once, whatever the stream's own mode.
struct NoWait<'a>(&'a Stream);

impl io::Read for NoWait<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        read_now(self.0, buffer)
    }
}
