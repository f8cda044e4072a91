//! `cargo xtask wine-check`: builds the host and two plugin files for
//! Windows (`x86_64-pc-windows-gnu`, linked by MinGW-w64) and runs them
//! under Wine, on Linux: the `notes` plugin and the isolation fixture's
//! `faulty` plugin each in a worker process, its `neighbour` in process.
//! Messages make the worker abort, exit with code 3, write through a bad
//! pointer, overflow its stack, panic and loop forever; after each, pings
//! until it answers again. Then a note is remembered and recalled through
//! the `notes` worker. Prints each fault, the reply's error and the time to
//! serving again; fails when a reply does not name the cause it should.
//! Last, the agent is killed (SIGKILL, no shutdown) and its workers must
//! end on their own, as they do when their host dies.
//!
//! Needs `rustup target add x86_64-pc-windows-gnu`, MinGW-w64
//! (`x86_64-w64-mingw32-gcc`) and Wine (`wine64`), such as Debian's
//! `mingw-w64` and `wine64` packages. Wine 8 lacks `ProcessPrng`
//! (`bcryptprimitives.dll`), which Rust's standard library imports on
//! Windows: a stand-in library, compiled by MinGW from a few lines of C
//! into the folder of the programs, provides it through `RtlGenRandom`.
//!
//! It must never write outside its own folder (`target/wine`), and never
//! leave the agent it started running after it returns.

use crate::{cargo, cross, target_dir, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TARGET: &str = "x86_64-pc-windows-gnu";
const MINGW_CC: &str = "x86_64-w64-mingw32-gcc";

/// `ProcessPrng` for a Wine that lacks it.
const PROCESS_PRNG: &str = r#"/* Written by `cargo xtask wine-check`: ProcessPrng for Wine 8. */
#include <windows.h>
#include <ntsecapi.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (!RtlGenRandom(data, n)) return FALSE;
    data += n;
    len -= n;
  }
  return TRUE;
}
"#;

/// The agent's config: both plugins of interest in workers, the restarts
/// quick and no quarantine within the run.
const CONFIG: &str = r#"[isolation]
default = "in-process"
process = ["faulty", "notes"]
best_effort = true
quarantine_after_crashes = 100
"#;

/// Each fault, and what the reply's error must say.
const FAULTS: [(&str, &str); 6] = [
    ("abort", "a fast fail"),
    ("exit", "exited with code 3"),
    ("segv", "an access violation"),
    ("overflow", "a stack overflow"),
    ("panic", "panicked"),
    ("loop", "timed out after 500 ms"),
];

/// How long one reply may take (a worker start under Wine takes about
/// 0.3 s).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds, runs and checks; see the module's description.
pub(crate) fn wine_check_command(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        return Err("`wine-check` takes no arguments".to_string());
    }
    if !cross::installed_targets()?.iter().any(|t| t == TARGET) {
        return Err(format!(
            "the standard library for {TARGET} is not installed: run `rustup target add {TARGET}`"
        ));
    }
    let wine = find_wine()?;
    let root = target_dir().join("wine");
    let programs = build(&root)?;
    write_process_prng(&root, &programs)?;
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins)
        .map_err(|e| format!("cannot create {}: {e}", plugins.display()))?;
    copy(
        &programs.join("fixture_isolated.dll"),
        &plugins.join("faulty.dll"),
    )?;
    copy(&programs.join("notes.dll"), &plugins.join("notes.dll"))?;
    let config = root.join("agent.toml");
    std::fs::write(&config, CONFIG)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let log = root.join("agent.log");
    let mut agent = Agent::start(
        &wine,
        &programs.join("agent-host.exe"),
        &plugins,
        &config,
        &log,
    )?;
    let outcome = check(&mut agent).and_then(|()| workers_die_with(&mut agent));
    agent.stop();
    eprintln!("xtask: the agent's log is {}", log.display());
    outcome
}

/// Kills the agent outright and waits for its workers (Wine runs each as a
/// Linux process whose command line ends in `agent-host.exe worker`) to
/// end without it.
fn workers_die_with(agent: &mut Agent) -> Result<()> {
    let workers = || -> Result<usize> {
        let output = Command::new("pgrep")
            .args(["-f", "agent-host.exe worker"])
            .output()
            .map_err(|e| format!("cannot run pgrep: {e}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).lines().count())
    };
    let before = workers()?;
    if before == 0 {
        return Err("no worker process of the agent was found before the kill".to_string());
    }
    agent
        .child
        .kill()
        .map_err(|e| format!("cannot kill the agent: {e}"))?;
    let killed = Instant::now();
    while workers()? > 0 {
        if killed.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{} worker process(es) outlived their host by 10 s",
                workers()?
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "the agent was killed: its {before} worker process(es) ended {} ms later",
        killed.elapsed().as_millis()
    );
    Ok(())
}

/// Wine's 64-bit loader: `wine64` on the path, else Debian's place for it.
fn find_wine() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("wine64"))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/lib/wine/wine64")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            "Wine is not installed (no wine64): install Debian's wine64 package".to_string()
        })
}

/// Builds the host, `notes` and the isolation fixture for Windows; returns
/// the folder that holds them.
fn build(root: &Path) -> Result<PathBuf> {
    let linker = format!(
        "CARGO_TARGET_{}_LINKER",
        TARGET.to_uppercase().replace('-', "_")
    );
    let packages = ["-p", "agent-host", "-p", "notes", "-p", "fixture-isolated"];
    eprintln!("xtask: building {} for {TARGET}", packages.join(" "));
    let status = cargo()
        .args(["build", "--release", "--target", TARGET])
        .args(packages)
        .env("CARGO_TARGET_DIR", root)
        .env(&linker, MINGW_CC)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the build for {TARGET} failed (it needs MinGW-w64's {MINGW_CC}: install Debian's mingw-w64 package)"
        ));
    }
    Ok(root.join(TARGET).join("release"))
}

/// Compiles the stand-in `bcryptprimitives.dll` into `programs`.
fn write_process_prng(root: &Path, programs: &Path) -> Result<()> {
    let source = root.join("process_prng.c");
    std::fs::write(&source, PROCESS_PRNG)
        .map_err(|e| format!("cannot write {}: {e}", source.display()))?;
    let status = Command::new(MINGW_CC)
        .arg("-shared")
        .arg("-o")
        .arg(programs.join("bcryptprimitives.dll"))
        .arg(&source)
        .arg("-ladvapi32")
        .status()
        .map_err(|e| format!("cannot run {MINGW_CC} (install Debian's mingw-w64 package): {e}"))?;
    if !status.success() {
        return Err(format!(
            "{MINGW_CC} could not build the stand-in bcryptprimitives.dll"
        ));
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// A path as a Windows program under Wine sees it (drive `Z:` is `/`).
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// The agent under Wine: JSON lines in, replies out.
struct Agent {
    child: Child,
    input: Option<ChildStdin>,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
}

impl Agent {
    fn start(
        wine: &Path,
        program: &Path,
        plugins: &Path,
        config: &Path,
        log: &Path,
    ) -> Result<Self> {
        let log_file = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut child = Command::new(wine)
            .arg(program)
            .args(["run", "--plugins", &windows_path(plugins)])
            .args(["--config", &windows_path(config)])
            .env("WINEDEBUG", "-all")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", wine.display()))?;
        let output = child
            .stdout
            .take()
            .ok_or("the agent's output is not a pipe")?;
        let (sender, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Ok(reply) = serde_json::from_str::<Value>(&line) {
                    if sender.send(reply).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            input: child.stdin.take(),
            child,
            replies,
            next_id: 0,
        })
    }

    /// Sends `text` and waits for its reply.
    fn ask(&mut self, text: &str) -> Result<Value> {
        self.next_id += 1;
        let id = format!("wine-{}", self.next_id);
        let line = serde_json::json!({"id": id, "sender": "wine-check", "text": text}).to_string();
        let input = self.input.as_mut().ok_or("the agent's input is closed")?;
        writeln!(input, "{line}").map_err(|e| format!("the agent stopped reading: {e}"))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.replies.recv_timeout(left).map_err(|_| {
                format!("no reply to {text:?} within {} s", REPLY_TIMEOUT.as_secs())
            })?;
            if reply["id"] == id.as_str() {
                return Ok(reply);
            }
        }
    }

    /// Pings `faulty` until it answers; its process id and how long that
    /// took.
    fn until_serving(&mut self) -> Result<(String, Duration)> {
        let started = Instant::now();
        while started.elapsed() < REPLY_TIMEOUT {
            let reply = self.ask("fault ping")?;
            if let Some(pid) = text_of(&reply).strip_prefix("pong from ") {
                return Ok((pid.to_string(), started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err("the faulty plugin's worker did not serve again within 60 s".to_string())
    }

    /// Closes the agent's input (it then shuts down) and waits a moment
    /// for it, then kills it.
    fn stop(&mut self) {
        drop(self.input.take());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text_of(reply: &Value) -> &str {
    reply["text"].as_str().unwrap_or("")
}

fn errors_of(reply: &Value) -> String {
    reply["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// The run itself: every fault, then the notes.
fn check(agent: &mut Agent) -> Result<()> {
    let (mut pid, ready) = agent.until_serving()?;
    println!(
        "the faulty plugin serves in worker {pid} ({} ms after the first ping)",
        ready.as_millis()
    );
    println!(
        "{:<10} {:<14} {:>10}  reply",
        "fault", "worker after", "serving in"
    );
    let mut failures = Vec::new();
    for (fault, expected) in FAULTS {
        let started = Instant::now();
        let reply = agent.ask(&format!("fault {fault}"))?;
        let errors = errors_of(&reply);
        let (after, _) = agent.until_serving()?;
        let serving = started.elapsed();
        let restarted = if after == pid { "same" } else { "restarted" };
        println!(
            "{fault:<10} {restarted:<14} {:>7} ms  {errors}",
            serving.as_millis()
        );
        if !errors.contains(expected) {
            failures.push(format!(
                "`fault {fault}`: the reply does not say {expected:?}: {errors}"
            ));
        }
        pid = after;
    }
    let remembered = agent.ask("remember wine runs isolated plugins")?;
    let recalled = agent.ask("recall")?;
    println!(
        "notes: {:?}, then {:?}",
        text_of(&remembered),
        text_of(&recalled)
    );
    if !text_of(&recalled).contains("wine runs isolated plugins") {
        failures.push(format!(
            "the notes worker did not recall the note: {recalled}"
        ));
    }
    if failures.is_empty() {
        println!("xtask: every fault was contained and named under Wine");
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
