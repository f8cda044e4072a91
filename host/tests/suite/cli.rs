//! The `agent-host` binary, run as a real process on real plugin files.

use serde_json::Value;
#[cfg(unix)]
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output};
use test_support::{fixture, folder_with, EXT};

use crate::common::run_with_stdin;

fn agent_host(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(args)
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run agent-host")
}

#[test]
fn version_names_the_host_the_plugin_abi_and_the_sdk() {
    for flag in ["--version", "-V"] {
        let output = Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .arg(flag)
            .output()
            .expect("run agent-host");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert_eq!(
            stdout.trim(),
            format!(
                "agent-host {} (plugin ABI {}, agent-host-plugin-sdk {})",
                env!("CARGO_PKG_VERSION"),
                agent_host_plugin_abi::ABI_VERSION,
                agent_host_plugin_sdk::SDK_VERSION
            )
        );
    }
}

#[test]
fn help_lists_every_command() {
    let output = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .arg("--help")
        .output()
        .expect("run agent-host");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for command in ["check", "list", "run", "reload", "lock", "sign", "keygen"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "--help lists {command}:\n{stdout}"
        );
    }
}

#[test]
fn check_succeeds_on_good_plugins_and_fails_on_a_bad_one() {
    let good = folder_with(&[fixture(""), fixture("multi")]);
    let output = agent_host(&["check"], good.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("ok    fixture 1.0.0"), "{stdout}");
    assert!(stdout.contains("ok    multi-two 1.0.0"), "{stdout}");
    assert!(stdout.contains("3 loaded, 0 failed"), "{stdout}");

    std::fs::write(
        good.path().join(format!("broken.{EXT}")),
        b"\x7fELF nonsense",
    )
    .expect("write");
    let output = agent_host(&["check"], good.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "FAIL  {}",
            good.path().join(format!("broken.{EXT}")).display()
        )),
        "{stdout}"
    );
}

#[test]
fn check_json_is_machine_readable() {
    let dir = folder_with(&[fixture(""), fixture("missing-dep")]);
    let output = agent_host(&["check", "--json"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let document: Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    assert_eq!(document["ok"], false);
    assert_eq!(document["loaded"][0]["name"], "fixture");
    let failure = &document["failures"][0];
    assert_eq!(failure["plugin"], "needs-missing");
    assert_eq!(failure["stage"], "dependencies");
    assert!(failure["file"]
        .as_str()
        .is_some_and(|f| f.ends_with(&format!("missing-dep.{EXT}"))));
    assert!(failure["cause"]
        .as_str()
        .is_some_and(|c| c.contains("no-such-plugin")));
}

#[test]
fn list_shows_order_dependencies_components_and_files() {
    let dir = folder_with(&[fixture("multi"), fixture("panicky")]);
    let output = agent_host(&["list"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let one = stdout.find(". multi-one 1.0.0").expect("multi-one listed");
    let two = stdout.find(". multi-two 1.0.0").expect("multi-two listed");
    assert!(one < two, "dependency listed first:\n{stdout}");
    assert!(stdout.contains("dependencies: multi-one"), "{stdout}");
    assert!(stdout.contains("actions:      TRAP"), "{stdout}");
    assert!(stdout.contains("providers:    trap"), "{stdout}");
    assert!(stdout.contains("evaluators:   trap"), "{stdout}");
    assert!(stdout.contains("services:     trap"), "{stdout}");
    assert!(stdout.contains(&format!("multi.{EXT}")), "{stdout}");
    assert!(stdout.contains("image:"), "{stdout}");
    assert!(
        stdout.contains("runs:         in the agent's process"),
        "{stdout}"
    );

    let output = agent_host(&["list", "--json"], dir.path());
    let document: Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let loaded = document["loaded"].as_array().expect("array");
    assert_eq!(loaded.len(), 3);
    assert!(output.status.success());

    // A folder with a file that fails: listed, and the exit code says so.
    let broken = folder_with(&[fixture("multi"), fixture("missing-dep")]);
    let output = agent_host(&["list"], broken.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("not loaded:"), "{stdout}");
    assert!(loaded
        .iter()
        .all(|p| p["order"].is_u64() && p["file"].is_string()));
}

#[cfg(unix)]
#[test]
fn run_answers_json_lines_and_shuts_down_in_reverse_order_on_sigterm() {
    let dir = folder_with(&[fixture("multi"), fixture("")]);
    let mut child = crate::common::spawn_run(dir.path(), "info");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));

    writeln!(stdin, r#"{{"sender": "alice", "text": "multi"}}"#).expect("write");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read reply");
    let reply: Value = serde_json::from_str(&line).expect("a JSON reply");
    assert_eq!(reply["text"], "multi-one says pong", "{line}");
    assert_eq!(reply["action"]["plugin"], "multi-two");

    writeln!(stdin, "this is not json").expect("write");
    line.clear();
    stdout.read_line(&mut line).expect("read error reply");
    let error: Value = serde_json::from_str(&line).expect("a JSON error");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the request is not valid JSON: ")),
        "{line}"
    );

    writeln!(stdin, r#"{{"text": "nobody handles this"}}"#).expect("write");
    line.clear();
    stdout.read_line(&mut line).expect("read reply");
    let reply: Value = serde_json::from_str(&line).expect("a JSON reply");
    assert_eq!(reply["action"], Value::Null);
    assert!(reply["text"].as_str().is_some_and(|t| !t.is_empty()));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    drop(stdin);
    assert_eq!(output.status.code(), Some(0), "exits 0 after SIGTERM");
    let log = String::from_utf8_lossy(&output.stderr);
    let position = |plugin: &str| {
        log.find(&format!("unloaded plugin={plugin}"))
            .unwrap_or_else(|| panic!("{plugin} unloaded:\n{log}"))
    };
    assert!(
        position("multi-two") < position("multi-one"),
        "the dependent stops before its dependency:\n{log}"
    );
}

#[test]
fn plugin_logs_reach_the_host_log_tagged_with_the_plugin_name() {
    let dir = folder_with(&test_support::examples());
    let output = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["check"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .expect("run agent-host");
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("weather plugin loaded"))
        .unwrap_or_else(|| panic!("the plugin's log line is in the host log:\n{log}"));
    assert!(
        line.contains("plugin=\"weather\"") || line.contains("plugin=weather"),
        "{line}"
    );
    assert!(line.contains("INFO"), "{line}");
}

#[cfg(unix)]
#[test]
fn check_names_links_in_the_folder_that_lead_nowhere() {
    let dir = folder_with(&[fixture("")]);
    let dangling = dir.path().join(format!("gone.{EXT}"));
    std::os::unix::fs::symlink(dir.path().join("no-such-file"), &dangling).expect("link");
    let looping = dir.path().join(format!("loop.{EXT}"));
    std::os::unix::fs::symlink(&looping, &looping).expect("link");
    let output = agent_host(&["check"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    for file in [&dangling, &looping] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&*file.to_string_lossy()))
            .unwrap_or_else(|| panic!("no line for {}:\n{stdout}", file.display()));
        assert!(line.contains("cannot follow the link"), "{line}");
    }
}

/// The `error` of an error line.
fn error_of(line: &str) -> String {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("a JSON line ({e}): {line}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error line: {line}"))
        .to_string()
}

#[test]
fn a_bad_request_line_gets_one_error_line_and_the_lines_after_it_are_served() {
    let dir = folder_with(&[fixture("multi")]);
    let limit = 2 * 1024 * 1024;
    let mut input = Vec::new();
    input.extend_from_slice(b"{\"sender\": \"alice\", \"text\": \"multi\"}\n");
    input.extend_from_slice(b"{\"sender\":\"alice\",\"text\":\"bad \xff\xfe utf8\"}\n");
    input.extend_from_slice(b"{}\n[]\n[\"hi\"]\n");
    input.extend_from_slice(b"{\"sender\": \"alice\", \"text\": \"");
    input.resize(input.len() + limit, b'a');
    input.extend_from_slice(b"\"}\n");
    input.extend_from_slice(b"{\"sender\": \"alice\", \"text\": \"multi\"}\n");

    let output = run_with_stdin(dir.path(), input);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "exits 0 at EOF:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        7,
        "one line per request line:\n{stdout}\n{stderr}"
    );

    let reply: Value = serde_json::from_str(lines[0]).expect("a JSON reply");
    assert_eq!(reply["text"], "multi-one says pong", "{}", lines[0]);
    assert_eq!(
        error_of(lines[1]),
        "the request is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 30"
    );
    assert_eq!(error_of(lines[2]), "the message has no 'text' field");
    let not_an_object = "the request must be a JSON object, a message {\"text\": ..} or a \
                         batch {\"messages\": [..]}, got an array";
    assert_eq!(error_of(lines[3]), not_an_object);
    assert_eq!(error_of(lines[4]), not_an_object);
    assert_eq!(
        error_of(lines[5]),
        "the request is larger than 2 MiB (2097152 bytes), the most one request may hold"
    );
    let reply: Value = serde_json::from_str(lines[6]).expect("a JSON reply");
    assert_eq!(reply["text"], "multi-one says pong", "{}", lines[6]);
}

/// A pseudo-terminal with `agent-host run` on its other side, as an
/// operator at a terminal sees it.
#[cfg(target_os = "linux")]
struct Terminal {
    child: std::process::Child,
    keyboard: std::fs::File,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
}

#[cfg(target_os = "linux")]
impl Terminal {
    /// Runs `agent-host` with `args` on a new pseudo-terminal (stdin,
    /// stdout and stderr).
    fn run(args: &[&std::ffi::OsStr]) -> Self {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let size = rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, size).expect("window size");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let name = std::path::PathBuf::from(name.to_string_lossy().into_owned());
        let side = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&name)
                .expect("open the terminal")
        };
        let child = Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("TERM", "xterm")
            .stdin(side())
            .stdout(side())
            .stderr(side())
            .spawn()
            .expect("start agent-host on the terminal");
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().expect("the screen");
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shown = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0; 4096];
            // Ends with an error once no process holds the terminal.
            while let Ok(read @ 1..) = reader.read(&mut buffer) {
                shown
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        Self {
            child,
            keyboard: master,
            screen,
        }
    }

    fn screen(&self) -> String {
        self.screen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn type_keys(&mut self, keys: &str) {
        self.keyboard
            .write_all(keys.as_bytes())
            .expect("type on the terminal");
    }

    /// Waits until `needle` shows after byte `from` of the screen; where
    /// it ends.
    fn wait_for(&self, needle: &str, from: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if let Some(at) = screen.get(from..).and_then(|rest| rest.find(needle)) {
                return from + at + needle.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} on the terminal:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn the_chat_on_a_terminal_recalls_lines_prints_logs_above_the_prompt_and_stops_on_ctrl_c() {
    let dir = folder_with(&[fixture("multi")]);
    let mut terminal = Terminal::run(&[
        "run".as_ref(),
        "--plugins".as_ref(),
        dir.path().as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let at = terminal.wait_for("listening on http://", 0);
    let screen = terminal.screen();
    let address = screen[at..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let at = terminal.wait_for("> ", at);

    terminal.type_keys("multi\r");
    let at = terminal.wait_for("multi-one says pong", at);
    // Up recalls the line typed before.
    let at = terminal.wait_for("> ", at);
    terminal.type_keys("\x1b[A\r");
    let at = terminal.wait_for("multi-one says pong", at);
    let at = terminal.wait_for("> ", at);

    // A log line while a line is being typed: above the prompt, and the
    // line typed so far is shown again below it.
    terminal.type_keys("/plug");
    let at = terminal.wait_for("/plug", at);
    let reload = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["reload", "multi-one", "--force", "--url"])
        .arg(format!("http://{address}"))
        .output()
        .expect("run agent-host reload");
    assert!(reload.status.success(), "{reload:?}");
    let at = terminal.wait_for("reloaded", at);
    let at = terminal.wait_for("> /plug", at);
    terminal.type_keys("ins\r");
    let at = terminal.wait_for("multi-one 1.0.0 generation", at);
    let at = terminal.wait_for("(2 generations mapped", at);
    terminal.wait_for("> ", at);

    terminal.type_keys("\x03");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = terminal.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after Ctrl-C:\n{}",
            terminal.screen()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", terminal.screen());
}

#[test]
fn check_fails_on_config_for_plugins_that_are_not_there() {
    let dir = folder_with(&[fixture("")]);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[plugins.fixtur]\ngreeting = \"hi\"\n[grants]\nfixture = []\nnotes = []\n",
    )
    .expect("config");
    let output = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["check", "--config"])
        .arg(&config)
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run agent-host");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL  config [plugins.fixtur] names no plugin in the folder (did you mean 'fixture'?)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  config [grants] notes names no plugin in the folder; it is ignored"),
        "{stdout}"
    );
    assert!(!stdout.contains("[grants] fixture"), "{stdout}");
}

#[test]
fn a_plugin_built_for_a_newer_abi_minor_serves_and_the_log_names_both_versions() {
    let dir = folder_with(&[fixture("newer-abi-minor")]);
    let output = crate::common::run_with_stdin(
        dir.path(),
        br#"{"sender": "alice", "text": "are you newer?"}
"#
        .to_vec(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reply: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("a JSON reply ({e}): {stdout}"));
    assert_eq!(reply["text"], "built against ABI 1.99", "{stdout}");
    let log = String::from_utf8_lossy(&output.stderr);
    let warning = log
        .lines()
        .find(|l| l.contains("built against plugin ABI 1.99.0"))
        .unwrap_or_else(|| panic!("a warning names the plugin's ABI:\n{log}"));
    assert!(
        warning.contains(&format!(
            "newer than this host's {}",
            agent_host_plugin_abi::ABI_VERSION
        )),
        "{warning}"
    );
    assert!(
        warning.contains("newer-abi-minor"),
        "names the file: {warning}"
    );
}
