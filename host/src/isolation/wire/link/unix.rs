//! Connections as Unix socketpairs; each call connection's worker end
//! crosses the control connection as a file descriptor.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::Duration;

/// One connection between the host and a worker.
pub(crate) type Stream = std::os::unix::net::UnixStream;

/// How long a side that waits for the other spins before it sleeps. Waking
/// a sleeping CPU costs tens of microseconds on virtual machines, more than
/// the round trip itself, so a short spin (yielding to anything runnable)
/// keeps a quick exchange on warm CPUs; a longer wait sleeps as usual.
/// (The isolation bench's transport floor copies it: change both.)
pub(crate) const SPIN: Duration = Duration::from_micros(100);

/// The host's side of the link to one worker.
pub(crate) struct HostLink {
    /// The host's end of the control connection, until taken.
    control: Option<Stream>,
}

impl HostLink {
    /// A link for a worker about to start, and what the worker's standard
    /// input must be: the worker's end of the control connection.
    pub(crate) fn new() -> io::Result<(Self, Stdio)> {
        let (control, worker_end) = Stream::pair()?;
        let stdin = Stdio::from(OwnedFd::from(worker_end));
        Ok((
            Self {
                control: Some(control),
            },
            stdin,
        ))
    }

    /// The control connection of the started worker (already connected).
    pub(crate) fn control(&mut self, _child: &mut Child, _limit: Duration) -> io::Result<Stream> {
        self.control
            .take()
            .ok_or_else(|| io::Error::other("the control connection was already taken"))
    }

    /// A new call connection: its worker end crosses `control`.
    pub(crate) fn connect(&self, control: &Stream) -> io::Result<Stream> {
        let (host_end, worker_end) = Stream::pair()?;
        send_descriptor(control, worker_end.as_fd())?;
        Ok(host_end)
    }

    /// Hands the worker `file` (the plugin's private copy) over `control`,
    /// right after the `Hello` frame: a worker that runs as another user
    /// could not open the copy by its path.
    pub(crate) fn pass_file(&self, control: &Stream, file: &std::fs::File) -> io::Result<()> {
        send_descriptor(control, file.as_fd())
    }
}

/// The worker's side of the link.
pub(crate) struct WorkerLink;

impl WorkerLink {
    /// In the worker: the control connection, which is standard input.
    pub(crate) fn from_stdin() -> io::Result<(Self, Stream)> {
        let fd = io::stdin().as_fd().try_clone_to_owned()?;
        let stream = Stream::from(fd);
        // Fails unless standard input really is a socket.
        stream.peer_addr()?;
        Ok((Self, stream))
    }

    /// The next call connection the host passes over `control`; `None`
    /// once the host has closed it.
    pub(crate) fn next_connection(&self, control: &Stream) -> io::Result<Option<Stream>> {
        receive_descriptor(control).map(|fd| fd.map(Stream::from))
    }

    /// The plugin's private copy, which the host passes right after the
    /// `Hello` frame.
    pub(crate) fn receive_file(&self, control: &Stream) -> io::Result<Option<std::fs::File>> {
        match receive_descriptor(control)? {
            Some(fd) => Ok(Some(std::fs::File::from(fd))),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the host closed the control connection before passing the plugin's copy",
            )),
        }
    }
}

/// Reads `stream` without waiting.
pub(crate) fn read_now(stream: &Stream, buffer: &mut [u8]) -> io::Result<usize> {
    let (read, _) = rustix::net::recv(stream, buffer, rustix::net::RecvFlags::DONTWAIT)?;
    Ok(read)
}

/// Passes `descriptor` (the worker's end of a socketpair, or a file) over
/// `control`.
fn send_descriptor(control: &Stream, descriptor: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [descriptor];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !ancillary.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for a file descriptor"));
    }
    let byte = [b'c'];
    // Linux refuses SIGPIPE per call; elsewhere Rust's runtime has already
    // set SIGPIPE to be ignored for the whole process.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = SendFlags::NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = SendFlags::empty();
    sendmsg(control, &[io::IoSlice::new(&byte)], &mut ancillary, flags)?;
    Ok(())
}

/// In the worker: the next descriptor passed over `control`; `None` once
/// the host has closed it.
fn receive_descriptor(control: &Stream) -> io::Result<Option<OwnedFd>> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        // Linux marks a received descriptor close-on-exec as it arrives;
        // elsewhere it is marked just after (a worker starts no program).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let flags = RecvFlags::CMSG_CLOEXEC;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let flags = RecvFlags::empty();
        let received = match recvmsg(
            control,
            &mut [io::IoSliceMut::new(&mut byte)],
            &mut ancillary,
            flags,
        ) {
            Ok(received) => received,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        };
        if received.bytes == 0 {
            return Ok(None);
        }
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message {
                if let Some(fd) = fds.next() {
                    #[cfg(not(any(target_os = "linux", target_os = "android")))]
                    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
                    return Ok(Some(fd));
                }
            }
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the control socket carried a byte without a descriptor",
        ));
    }
}
