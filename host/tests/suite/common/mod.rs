//! What the tests of the real agent share: `agent-host run` fed a whole
//! stdin ([`run_with_stdin`]), `agent-host run --listen` as a child process
//! ([`Agent`]), and a minimal HTTP/1.1 client over
//! `std::net::TcpStream` (`Connection: close`, chunked bodies decoded).
//! Every wait is bounded.

// Each test file uses part of it.
#![allow(dead_code)]

#[cfg(unix)]
pub mod browser;
pub mod cluster;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use test_support::{fixture, folder_with};

/// Starts `agent-host run` on `dir` with `RUST_LOG` at `log_level`, its
/// stdin, stdout and stderr piped to the test.
pub fn spawn_run(dir: &std::path::Path, log_level: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["run", "--plugins"])
        .arg(dir)
        .env("RUST_LOG", log_level)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent-host run")
}

/// Runs `agent-host run` on `dir` with `input` as its whole stdin; its
/// output once stdin has closed and the agent has exited.
pub fn run_with_stdin(dir: &std::path::Path, input: Vec<u8>) -> std::process::Output {
    let mut child = spawn_run(dir, "warn");
    let mut stdin = child.stdin.take().expect("stdin");
    // More than a pipe holds: written while the agent reads.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait");
    writer.join().expect("the writer thread");
    output
}

/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// Waits, at most 20 s, until `done` holds; `what` names it on timeout.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `agent-host run --listen`; killed if a test fails before it
/// stops it.
pub struct Agent {
    pub child: Child,
    pub address: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub log_reader: Option<std::thread::JoinHandle<()>>,
    /// Its stdin and stdout, when the agent was started with them piped.
    pub lines: Option<(ChildStdin, BufReader<ChildStdout>)>,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(
            &[fixture("multi"), fixture("panicky"), fixture("")],
            "",
            false,
        )
    }

    /// An agent on `plugins` with `config` as its config file; with `piped`,
    /// its stdin and stdout are pipes (JSON lines), else closed.
    pub fn start_with(plugins: &[PathBuf], config: &str, piped: bool) -> Self {
        Self::launch(plugins, config, piped, &["--listen", "127.0.0.1:0"], &[])
    }

    /// As [`Agent::start_with`], with `args` after `run` (`--listen` among
    /// them) and `envs` in its environment. The address it reports is
    /// reached on loopback (an agent listening on 0.0.0.0 is reached there).
    pub fn launch(
        plugins: &[PathBuf],
        config: &str,
        piped: bool,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let dir = folder_with(plugins);
        let config_file = dir.path().join("agent.toml");
        std::fs::write(&config_file, config).expect("write the config");
        let pipe = || if piped { Stdio::piped() } else { Stdio::null() };
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .arg("run")
            .args(args)
            .arg("--config")
            .arg(&config_file)
            .arg("--plugins")
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(pipe())
            .stdout(pipe())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent-host run");
        let lines = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Some((stdin, BufReader::new(stdout))),
            _ => None,
        };
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, address) = mpsc::channel();
        let sink = Arc::clone(&log);
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = found.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut agent = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            log_reader: Some(log_reader),
            lines,
            _dir: dir,
        };
        let text = address
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no 'listening on' line:\n{}", agent.log()));
        let address: SocketAddr = text
            .parse()
            .unwrap_or_else(|e| panic!("bad address '{text}': {e}\n{}", agent.log()));
        agent.address = SocketAddr::from(([127, 0, 0, 1], address.port()));
        agent
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with '{needle}':\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the log has `count` lines containing `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "fewer than {count} log lines with '{needle}':\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the process to exit; its exit code.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running {} ms after SIGTERM:\n{}",
                limit.as_millis(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole log, once the process has exited.
    pub fn final_log(&mut self) -> String {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        self.log()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.address, "GET", path, None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        request(
            self.address,
            "POST",
            path,
            Some(("application/json", body.to_string().as_bytes())),
        )
    }

    /// The plugin folder the agent runs on.
    pub fn plugins_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "a JSON answer: {self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", self.text()))
    }

    /// Asserts the status and a JSON error body; returns the error text.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("an error message: {body}"))
            .to_string()
    }
}

pub fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    stream
}

pub fn write_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) {
    write_request_with(stream, method, path, &[], body);
}

/// Writes a request with `headers` besides the usual ones.
pub fn write_request_with(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, bytes)) = body {
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).expect("write body");
    }
}

/// Reads the body of an answer whose head was `headers`: as many bytes as
/// its `Content-Length` says, which it must have.
pub fn read_sized_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Vec<u8> {
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("a Content-Length: {headers:?}"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    body
}

/// The names of the plugins a `GET /v1/plugins` answer lists, sorted.
pub fn plugin_names(plugins: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = plugins["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    names.sort_unstable();
    names
}

/// Reads a status line and headers.
pub fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("a header");
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    (status, headers)
}

pub fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    })
}

/// Reads one chunk of a chunked body; `None` at the last chunk.
pub fn read_chunk(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    reader.read_line(&mut line).expect("chunk size");
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).expect("chunk");
    chunk.truncate(size);
    Some(chunk)
}

pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Response {
    request_with(address, method, path, &[], body)
}

/// A whole response to a request with `headers` besides the usual ones.
pub fn request_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Response {
    let mut stream = connect(address);
    write_request_with(&mut stream, method, path, headers, body);
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(chunk) = read_chunk(&mut reader) {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    Response {
        status,
        headers,
        body,
    }
}

/// An open `GET /v1/events` stream.
pub struct Events {
    pub reader: BufReader<TcpStream>,
    pub pending: String,
}

impl Events {
    pub fn open(address: SocketAddr) -> Self {
        let mut stream = connect(address);
        write_request(&mut stream, "GET", "/v1/events", None);
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 200);
        assert!(is_chunked(&headers), "{headers:?}");
        let content_type = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        assert_eq!(content_type, Some("text/event-stream"));
        Self {
            reader,
            pending: String::new(),
        }
    }

    /// The next event's name and data (comments skipped); `None` at the end
    /// of the stream. Bounded by `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Option<(String, Value)> {
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(value.trim()).expect("JSON data"));
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return Some((name, data));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no event in time; so far: {:?}",
                self.pending
            );
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let chunk = read_chunk(&mut self.reader)?;
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// The SHA-256 of an API token, in hex, as `[[api.tokens]]` takes it.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
