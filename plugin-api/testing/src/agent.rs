//! One agent: the `agent-host` program run on copies of some plugin files,
//! spoken to over JSON lines.

use crate::{program, Error, Reply};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How an [`Agent`] is started; made by [`Agent::builder`].
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    program: Option<PathBuf>,
    plugins: Vec<PathBuf>,
    config: String,
    sender: String,
    log_filter: String,
    timeout: Duration,
}

/// The `agent-host` program serving copies of some plugin files, until
/// [`Agent::stop`] or drop (which stops it too, and removes its folder).
pub struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    folder: PathBuf,
    sender: String,
    timeout: Duration,
    report: Value,
}

impl Agent {
    /// A builder: add the plugin files, the config, then
    /// [`start`](AgentBuilder::start).
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            program: None,
            plugins: Vec::new(),
            config: String::new(),
            sender: "tester".to_string(),
            log_filter: "info".to_string(),
            timeout: Duration::from_secs(60),
        }
    }

    /// Sends a message from the builder's sender (`tester` unless set) and
    /// returns its reply.
    pub fn send(&mut self, text: &str) -> Result<Reply, Error> {
        let request = json!({"sender": self.sender, "text": text});
        let answer = self.request(&request)?;
        Reply::from_json(answer.clone())
            .ok_or_else(|| Error::Protocol(format!("a reply without text: {answer}")))
    }

    /// Sends one request line as it is (a message with `id`, `sender`,
    /// `metadata`; or a batch, `{"messages": [..]}`) and returns the answer
    /// line as JSON (`{"error": ..}` for a request the host refused).
    pub fn request(&mut self, request: &Value) -> Result<Value, Error> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Protocol("the agent was stopped".to_string()))?;
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::io("writing a request to the agent", e))?;
        let line = match self.replies.recv_timeout(self.timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::TimedOut(format!(
                    "the reply to {request} ({} s)",
                    self.timeout.as_secs()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Protocol(format!(
                    "the agent ended before it answered {request}; its log:\n{}",
                    self.log().join("\n")
                )))
            }
        };
        serde_json::from_str(&line)
            .map_err(|e| Error::Protocol(format!("an answer that is not JSON ({e}): {line}")))
    }

    /// The host's log so far (its standard error), one line each; a
    /// plugin's lines are tagged with its name.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until a log line contains `text`, and returns it. (A plugin's
    /// line may reach the log a moment after the reply.)
    pub fn wait_for_log(&self, text: &str) -> Result<String, Error> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(line) = self.log().into_iter().find(|line| line.contains(text)) {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                return Err(Error::TimedOut(format!(
                    "a log line with {text:?}; the log:\n{}",
                    self.log().join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What `agent-host check --json` reported of the files before the
    /// agent started (`loaded`, each plugin's name, version and file).
    pub fn report(&self) -> &Value {
        &self.report
    }

    /// The folder the plugin files were copied into.
    pub fn plugin_folder(&self) -> PathBuf {
        self.folder.join("plugins")
    }

    /// Closes the agent's input, which ends it: the plugins stop in reverse
    /// load order. Returns how it exited (killed after the timeout).
    pub fn stop(mut self) -> Result<ExitStatus, Error> {
        self.end()
    }

    fn end(&mut self) -> Result<ExitStatus, Error> {
        drop(self.stdin.take());
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(Error::TimedOut("the agent to stop".to_string()));
                }
                Err(e) => return Err(Error::io("waiting for the agent", e)),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.end();
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

impl AgentBuilder {
    /// A plugin library to load (copied; the original is never loaded in
    /// place). Add the plugins it depends on, too.
    pub fn plugin(mut self, file: impl AsRef<Path>) -> Self {
        self.plugins.push(file.as_ref().to_path_buf());
        self
    }

    /// The agent's config, as the TOML text of `agent-host run --config`:
    /// `[plugins.NAME]` sections, `[grants]`, `[senders]`, `[isolation]`...
    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.config = toml.into();
        self
    }

    /// The `agent-host` program to run (default: `$AGENT_HOST_BIN`, else
    /// `agent-host` on `PATH`).
    pub fn program(mut self, program: impl AsRef<Path>) -> Self {
        self.program = Some(program.as_ref().to_path_buf());
        self
    }

    /// Who sends the messages of [`Agent::send`] (default `tester`); the
    /// config's `[senders]` table gives a sender its permissions.
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.sender = sender.into();
        self
    }

    /// The host's log filter, as `RUST_LOG` takes it (default `info`, which
    /// shows the plugins' info lines).
    pub fn log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// How long a reply, a log line or the stop may take (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Copies the files into a fresh folder, has `agent-host check` load,
    /// start and stop them (an [`Error::Load`] naming each problem when it
    /// refuses any), then starts the agent on them.
    pub fn start(self) -> Result<Agent, Error> {
        let program = program::find(self.program.as_deref())?;
        let folder = stage(&self.plugins, &self.config)?;
        let started = self.check(&program, &folder).and_then(|report| {
            let mut child = self
                .command(&program, &folder, "run")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
            let stdin = child.stdin.take();
            let replies = lines(child.stdout.take());
            let log = Arc::new(Mutex::new(Vec::new()));
            let collected = lines(child.stderr.take());
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in collected {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            });
            Ok(Agent {
                child,
                stdin,
                replies,
                log,
                folder: folder.clone(),
                sender: self.sender.clone(),
                timeout: self.timeout,
                report,
            })
        });
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&folder);
        }
        started
    }

    /// `agent-host check --json` on the staged folder: its report, or the
    /// problems it found.
    fn check(&self, program: &Path, folder: &Path) -> Result<Value, Error> {
        let output = self
            .command(program, folder, "check")
            .arg("--json")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {} check", program.display()), e))?;
        let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
            Error::Load(format!(
                "`agent-host check` gave no report ({e}): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        })?;
        if report["ok"] == true {
            return Ok(report);
        }
        let problems: Vec<String> = ["failures", "config_errors", "shutdown_errors"]
            .iter()
            .flat_map(|field| report[field].as_array().cloned().unwrap_or_default())
            .map(|problem| match problem {
                Value::String(text) => text,
                other => other.to_string(),
            })
            .collect();
        Err(Error::Load(problems.join("; ")))
    }

    /// The program with the folder's plugins and config, for `command`.
    fn command(&self, program: &Path, folder: &Path, command: &str) -> Command {
        let mut run = Command::new(program);
        run.arg(command);
        if command == "run" {
            run.arg("--plugins");
        }
        run.arg(folder.join("plugins"))
            .arg("--config")
            .arg(folder.join("agent.toml"))
            .env("RUST_LOG", &self.log_filter);
        run
    }
}

/// A fresh folder holding `plugins/` with copies of `files`, and
/// `agent.toml` with `config`.
fn stage(files: &[PathBuf], config: &str) -> Result<PathBuf, Error> {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let folder = std::env::temp_dir().join(format!(
        "agent-host-plugin-testing-{}-{nanos}-{}",
        std::process::id(),
        STAGED.fetch_add(1, Ordering::Relaxed)
    ));
    let plugins = folder.join("plugins");
    let staged = (|| {
        std::fs::create_dir_all(&plugins)
            .map_err(|e| Error::io(format!("creating {}", plugins.display()), e))?;
        std::fs::write(folder.join("agent.toml"), config)
            .map_err(|e| Error::io("writing the agent's config", e))?;
        for file in files {
            let name = file.file_name().ok_or_else(|| {
                Error::io(
                    format!("{} names no file", file.display()),
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })?;
            std::fs::copy(file, plugins.join(name))
                .map_err(|e| Error::io(format!("copying {}", file.display()), e))?;
        }
        Ok(())
    })();
    match staged {
        Ok(()) => Ok(folder),
        Err(error) => {
            let _ = std::fs::remove_dir_all(&folder);
            Err(error)
        }
    }
}

/// The lines of a child's output, read on a thread of their own.
fn lines(output: Option<impl std::io::Read + Send + 'static>) -> Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    if let Some(output) = output {
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
    }
    receiver
}
