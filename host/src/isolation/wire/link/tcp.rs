//! Connections over loopback TCP, for platforms whose sockets cannot cross
//! a connection (Windows): the worker dials each connection and opens it
//! with a random token that only it was told.
//!
//! Built on every system so that its tests run everywhere; outside Windows
//! only those tests use it.
#![cfg_attr(not(windows), allow(dead_code))]

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// One connection between the host and a worker.
pub(crate) type Stream = TcpStream;

/// Waits sleep at once: reads that do not wait would each cost two mode
/// switches of the socket here.
pub(crate) const SPIN: Duration = Duration::ZERO;

/// How long the host waits for a worker to dial a connection it asked for.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a dialled connection may take to present its token.
const TOKEN_WAIT: Duration = Duration::from_secs(1);

/// Bytes of randomness in a token (written as twice as many hex digits).
const TOKEN_BYTES: usize = 16;

/// The host's side of the link to one worker: a listener on a loopback
/// port, and the token a connection from the worker opens with.
pub(crate) struct HostLink {
    listener: TcpListener,
    token: String,
}

impl HostLink {
    /// A link for a worker about to start, and what the worker's standard
    /// input must be: a pipe, on which [`HostLink::control`] tells it where
    /// to dial.
    pub(crate) fn new() -> io::Result<(Self, Stdio)> {
        Ok((Self::listen()?, Stdio::piped()))
    }

    fn listen() -> io::Result<Self> {
        let mut secret = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut secret)
            .map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        let token = secret.iter().map(|b| format!("{b:02x}")).collect();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener, token })
    }

    /// The line the worker reads on its standard input: the port, a space,
    /// the token.
    fn introduction(&self) -> io::Result<String> {
        let port = self.listener.local_addr()?.port();
        Ok(format!("{port} {}\n", self.token))
    }

    /// The control connection of the started worker: tells it where to
    /// dial, then waits up to `limit` for it to.
    pub(crate) fn control(&mut self, child: &mut Child, limit: Duration) -> io::Result<Stream> {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("the worker's standard input is not a pipe"))?;
        stdin.write_all(self.introduction()?.as_bytes())?;
        drop(stdin);
        self.accept(limit, &mut || {
            // A worker that ended will never dial.
            !matches!(child.try_wait(), Ok(Some(_)))
        })
    }

    /// A new call connection: asks the worker over `control` to dial one,
    /// and waits for it.
    pub(crate) fn connect(&self, control: &Stream) -> io::Result<Stream> {
        (&*control).write_all(b"c")?;
        self.accept(DIAL_TIMEOUT, &mut || true)
    }

    /// Nothing: a file cannot cross a TCP connection, and a worker here
    /// opens the plugin's copy by its path (it has no sandbox and keeps the
    /// agent's user).
    pub(crate) fn pass_file(&self, _control: &Stream, _file: &std::fs::File) -> io::Result<()> {
        Ok(())
    }

    /// The next connection that opens with the token, within `limit`, while
    /// `alive()` says the worker may still dial. A connection that does not
    /// open with the token is closed and not counted.
    fn accept(&self, limit: Duration, alive: &mut dyn FnMut() -> bool) -> io::Result<Stream> {
        let deadline = Instant::now() + limit;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(stream) = self.admit(stream, deadline)? {
                        return Ok(stream);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if !alive() {
                        return Err(io::Error::other("the worker ended before it connected"));
                    }
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the worker did not connect within {} ms", limit.as_millis()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `stream` if it opens with the token before `deadline`.
    fn admit(&self, stream: TcpStream, deadline: Instant) -> io::Result<Option<Stream>> {
        // An accepted socket may inherit the listener's non-blocking mode.
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        // The worker writes its token as soon as it connects; a connection
        // that keeps silent is not given long to hold the others up.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(TOKEN_WAIT)
            .max(Duration::from_millis(10));
        stream.set_read_timeout(Some(wait))?;
        let mut presented = vec![0u8; self.token.len()];
        let opened = (&stream).read_exact(&mut presented).is_ok();
        if !opened || !bool::from(presented.ct_eq(self.token.as_bytes())) {
            tracing::warn!(
                "closed a connection to a worker's port that did not open with the worker's token"
            );
            return Ok(None);
        }
        stream.set_read_timeout(None)?;
        Ok(Some(stream))
    }
}

/// The worker's side of the link: where to dial, and the token.
pub(crate) struct WorkerLink {
    port: u16,
    token: String,
}

impl WorkerLink {
    /// In the worker: reads where to dial from standard input and dials the
    /// control connection.
    pub(crate) fn from_stdin() -> io::Result<(Self, Stream)> {
        Self::from_introduction(io::stdin().lock())
    }

    fn from_introduction(mut input: impl BufRead) -> io::Result<(Self, Stream)> {
        let mut line = String::new();
        input.read_line(&mut line)?;
        let malformed = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "standard input did not say where the host listens (expected \"PORT TOKEN\")",
            )
        };
        let (port, token) = line.trim_end().split_once(' ').ok_or_else(malformed)?;
        let port = port.parse().map_err(|_| malformed())?;
        if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let link = Self {
            port,
            token: token.to_string(),
        };
        let control = link.dial()?;
        Ok((link, control))
    }

    fn dial(&self) -> io::Result<Stream> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_nodelay(true)?;
        (&stream).write_all(self.token.as_bytes())?;
        Ok(stream)
    }

    /// No file comes this way (see [`HostLink::pass_file`]).
    pub(crate) fn receive_file(&self, _control: &Stream) -> io::Result<Option<std::fs::File>> {
        Ok(None)
    }

    /// The next call connection the host asks for over `control`, dialled;
    /// `None` once the host has closed `control`.
    pub(crate) fn next_connection(&self, control: &Stream) -> io::Result<Option<Stream>> {
        let mut byte = [0u8; 1];
        loop {
            return match (&*control).read(&mut byte) {
                Ok(0) => Ok(None),
                Ok(_) if byte[0] == b'c' => self.dial().map(Some),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the control connection carried {:?}, not a request to dial",
                        byte[0]
                    ),
                )),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => Err(error),
            };
        }
    }
}

/// Reads `stream` without waiting.
pub(crate) fn read_now(stream: &Stream, buffer: &mut [u8]) -> io::Result<usize> {
    stream.set_nonblocking(true)?;
    let read = (&*stream).read(buffer);
    stream.set_nonblocking(false)?;
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A worker's side on a thread: dials control from `introduction`, then
    /// answers each connection it is asked for with its number, keeping them
    /// all open until control closes.
    fn worker(introduction: String) -> std::thread::JoinHandle<io::Result<u8>> {
        std::thread::spawn(move || {
            let (link, control) = WorkerLink::from_introduction(Cursor::new(introduction))?;
            let mut open = Vec::new();
            while let Some(connection) = link.next_connection(&control)? {
                let number = open.len() as u8 + 1;
                (&connection).write_all(&[number])?;
                // Kept open until the host closes control.
                open.push(connection);
            }
            Ok(open.len() as u8)
        })
    }

    #[test]
    fn the_worker_dials_control_and_every_connection_asked_for() {
        let host = HostLink::listen().unwrap();
        let worker = worker(host.introduction().unwrap());
        let control = host.accept(Duration::from_secs(10), &mut || true).unwrap();
        for expected in 1..=3u8 {
            let connection = host.connect(&control).unwrap();
            let mut number = [0u8; 1];
            (&connection).read_exact(&mut number).unwrap();
            assert_eq!(number[0], expected);
        }
        drop(control);
        assert_eq!(
            worker.join().unwrap().unwrap(),
            3,
            "ends when control closes"
        );
    }

    #[test]
    fn a_connection_without_the_token_is_closed_and_the_worker_still_admitted() {
        let host = HostLink::listen().unwrap();
        let port = host.listener.local_addr().unwrap().port();
        let stranger = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        (&stranger).write_all(&[b'0'; 2 * TOKEN_BYTES]).unwrap();
        let refused = host.accept(Duration::from_millis(300), &mut || true);
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::TimedOut,
            "the stranger is not taken for the worker"
        );
        let mut byte = [0u8; 1];
        assert_eq!(
            (&stranger).read(&mut byte).unwrap_or(0),
            0,
            "the stranger's connection is closed"
        );
        let worker = worker(host.introduction().unwrap());
        let control = host.accept(Duration::from_secs(10), &mut || true).unwrap();
        drop(control);
        assert_eq!(worker.join().unwrap().unwrap(), 0);
    }

    #[test]
    fn a_silent_connection_holds_the_worker_up_for_a_second_at_most() {
        let host = HostLink::listen().unwrap();
        let port = host.listener.local_addr().unwrap().port();
        let _silent = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let worker = worker(host.introduction().unwrap());
        let started = Instant::now();
        let control = host.accept(Duration::from_secs(10), &mut || true).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited {:?} behind a silent connection",
            started.elapsed()
        );
        drop(control);
        assert_eq!(worker.join().unwrap().unwrap(), 0);
    }

    #[test]
    fn a_worker_that_never_dials_is_reported_once_it_has_ended() {
        let host = HostLink::listen().unwrap();
        let error = host
            .accept(Duration::from_secs(10), &mut || false)
            .unwrap_err();
        assert!(
            error.to_string().contains("ended before it connected"),
            "{error}"
        );
    }

    #[test]
    fn a_malformed_introduction_says_what_was_expected() {
        for line in ["", "12345\n", "port 00\n", "1 zz\n"] {
            let error = WorkerLink::from_introduction(Cursor::new(line))
                .err()
                .unwrap();
            assert!(
                error.to_string().contains("PORT TOKEN"),
                "{line:?}: {error}"
            );
        }
    }

    #[test]
    fn a_read_now_does_not_wait_and_leaves_the_stream_blocking() {
        let host = HostLink::listen().unwrap();
        let worker = worker(host.introduction().unwrap());
        let control = host.accept(Duration::from_secs(10), &mut || true).unwrap();
        let connection = host.connect(&control).unwrap();
        let mut buffer = [0u8; 4];
        let mut first = Err(io::ErrorKind::WouldBlock.into());
        for _ in 0..1000 {
            first = read_now(&connection, &mut buffer);
            if first.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(first.unwrap(), 1, "the worker's one byte");
        let empty = read_now(&connection, &mut buffer).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        drop(control);
        // Blocking again: this read waits for the end, not WouldBlock.
        assert_eq!((&connection).read(&mut buffer).unwrap(), 0);
        assert_eq!(worker.join().unwrap().unwrap(), 1);
    }

    #[test]
    fn tokens_differ_between_links() {
        let a = HostLink::listen().unwrap();
        let b = HostLink::listen().unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 2 * TOKEN_BYTES);
    }
}
