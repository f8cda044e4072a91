//! The operating-system side of a worker: starting the process, passing
//! connections to it, and tying its life to the host's.
//!
//! Connections cross as file descriptors over the control socket
//! (`SCM_RIGHTS`), one byte each. The worker's environment is emptied:
//! the host's environment may hold secrets (config values taken from
//! variables) that a sandboxed plugin must not see.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};

/// Starts `program worker` with `control` as its standard input, its output
/// piped to the host.
///
/// Every worker is started by one long-lived thread: the kernel sends a
/// child its parent-death signal when the *thread* that forked it ends, so
/// a worker started from a short-lived thread (a parallel load, a restart)
/// would be killed with it.
pub(crate) fn start(program: &Path, control: UnixStream) -> io::Result<Child> {
    type Request = (PathBuf, UnixStream, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        let spawned = std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                for (program, control, reply) in incoming {
                    let _ = reply.send(spawn_now(&program, control));
                }
            });
        if let Err(error) = spawned {
            tracing::error!("cannot start the worker-spawning thread: {error}");
        }
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((program.to_path_buf(), control, reply))
        .map_err(|_| io::Error::other("the worker-spawning thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the worker-spawning thread is gone"))?
}

fn spawn_now(program: &Path, control: UnixStream) -> io::Result<Child> {
    Command::new(program)
        .arg("worker")
        .env_clear()
        // Each thread's malloc arena reserves address space, which counts
        // against the worker's memory limit: two arenas are plenty.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::from(OwnedFd::from(control)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// In the worker: asks the kernel to kill this process when its parent
/// dies, and exits at once if the parent is already gone.
pub(crate) fn die_with_parent() -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::process::{getppid, set_parent_process_death_signal, Signal};
        set_parent_process_death_signal(Some(Signal::KILL))?;
        // The parent may have died before the signal was armed.
        if getppid().is_none_or(|pid| pid.as_raw_nonzero().get() == 1) {
            std::process::exit(0);
        }
    }
    Ok(())
}

/// In the worker: the control socket on standard input.
pub(crate) fn control_from_stdin() -> io::Result<UnixStream> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let stream = UnixStream::from(fd);
    // Fails unless standard input really is a socket.
    stream.peer_addr()?;
    Ok(stream)
}

/// Passes `connection` (the worker's end of a socketpair) over `control`.
pub(crate) fn send_connection(control: &UnixStream, connection: &UnixStream) -> io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [connection.as_fd()];
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

/// In the worker: the next connection passed over `control`; `None` once
/// the host has closed it.
pub(crate) fn receive_connection(control: &UnixStream) -> io::Result<Option<UnixStream>> {
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
                    return Ok(Some(UnixStream::from(fd)));
                }
            }
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the control socket carried a byte without a connection",
        ));
    }
}

/// A readable name for a signal that ended a worker.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 if cfg!(target_os = "linux") => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 if cfg!(target_os = "linux") => "SIGXCPU",
        31 if cfg!(target_os = "linux") => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

/// Reads a socket without waiting: a read with nothing to read fails with
/// `WouldBlock` at once, whatever the socket's own mode.
pub(crate) struct NoWait<'a>(pub &'a UnixStream);

impl io::Read for NoWait<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let (read, _) = rustix::net::recv(self.0, buffer, rustix::net::RecvFlags::DONTWAIT)?;
        Ok(read)
    }
}

/// How long a side that waits for the other spins before it sleeps. Waking
/// a sleeping CPU costs tens of microseconds on virtual machines, more than
/// the round trip itself, so a short spin (yielding to anything runnable)
/// keeps a quick exchange on warm CPUs; a longer wait sleeps as usual.
pub(crate) const SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// Reads the next frame from `stream`: spinning on non-blocking reads for
/// up to [`SPIN`], then with the stream's own blocking reads. `Ok(None)`
/// only when a blocking read timed out.
pub(crate) fn next_frame<T: for<'de> serde::Deserialize<'de>>(
    reader: &mut super::protocol::FrameReader,
    stream: &UnixStream,
) -> io::Result<Option<T>> {
    let started = std::time::Instant::now();
    while started.elapsed() < SPIN {
        if let Some(frame) = reader.poll(NoWait(stream))? {
            return Ok(Some(frame));
        }
        std::thread::yield_now();
    }
    reader.poll(stream)
}
