//! A hostile worker costs the host nothing: the `isolated` fixture's
//! `faulty` plugin served by the `hostile-worker` program, which relays a
//! real handshake and then speaks the protocol badly on purpose (stops
//! reading, forges frame lengths, sends stale replies, dies or keeps silent
//! in its handshake). The host refuses, kills and restarts it, names the
//! cause, and serves everything else as before. Also here: a worker program
//! that cannot run fails only the plugins placed in workers, and a plugin's
//! log flood is cut to its rate limit, in process and in a worker.
#![cfg(target_os = "linux")]

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AGENT_HOST: &str = env!("CARGO_BIN_EXE_agent-host");

/// An agent whose `faulty` runs in a hostile worker, and the folder of the
/// script that starts it.
struct Hostile {
    agent: TestAgent,
    _scripts: tempfile::TempDir,
}

/// A script that runs the hostile worker in `mode` in front of the real
/// worker program.
fn hostile_program(dir: &Path, mode: &str) -> PathBuf {
    let hostile = test_support::hostile_worker();
    let script = dir.join(format!("worker-{}", mode.replace(':', "-")));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' '{mode}' '{AGENT_HOST}' \"$@\"\n",
            hostile.display()
        ),
    )
    .expect("write the worker script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

/// An agent on the `isolated` fixture (plus `also`), with `faulty` in a
/// worker run by `program`, and the rest of its config from `host` (keys of
/// the `[host]` table) and `isolation` (keys of `[isolation]`).
fn load(program: &Path, host: &str, isolation: &str, also: &[PathBuf]) -> TestAgent {
    let config = format!(
        "[host]\n{host}\n[isolation]\nprocess = [\"faulty\"]\nworker_program = \"{}\"\n{isolation}",
        program.display()
    );
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let mut files = vec![test_support::fixture("isolated")];
    files.extend_from_slice(also);
    TestAgent::load_with(&files, options).expect("stage")
}

fn hostile(mode: &str, host: &str) -> Hostile {
    let scripts = tempfile::tempdir().expect("temp folder");
    let program = hostile_program(scripts.path(), mode);
    let agent = load(&program, host, "", &[]);
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    Hostile {
        agent,
        _scripts: scripts,
    }
}

fn worker(agent: &TestAgent) -> agent_host::isolation::WorkerStatus {
    agent
        .host
        .status("faulty")
        .and_then(|s| s.worker)
        .expect("faulty runs in a worker")
}

/// Waits (20 s at most) until `faulty`'s worker has crashed with a cause
/// that contains `cause` and a new worker serves; the cause.
fn crashed_and_restarted(agent: &TestAgent, old: u32, cause: &str) -> String {
    let started = Instant::now();
    loop {
        let status = worker(agent);
        let last = status.last_crash.clone().unwrap_or_default();
        if last.contains(cause) && status.pid.is_some_and(|pid| pid != old) {
            return last;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no crash with {cause:?} and restart: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The neighbour in the host still serves.
fn neighbour_serves(agent: &TestAgent) {
    let hello = agent
        .host
        .call_service("neighbour", "hello", &Value::Null)
        .expect("neighbour still serves");
    assert_eq!(hello, json!(format!("hello from {}", std::process::id())));
}

#[test]
fn a_worker_that_stops_reading_a_request_is_killed_and_restarted() {
    let hostile = std::sync::Arc::new(hostile("stop-reading", "service_timeout_ms = 1000"));
    let old = worker(&hostile.agent).pid.expect("a worker");
    // On a thread of its own: a host that waited for ever would hang it,
    // not the test.
    let (outcome, returned) = std::sync::mpsc::channel();
    let caller = std::sync::Arc::clone(&hostile);
    std::thread::spawn(move || {
        let big = json!("x".repeat(1_500_000));
        let _ = outcome.send(caller.agent.host.call_service("faulty", "pid", &big));
    });
    let agent = &hostile.agent;
    let cause = crashed_and_restarted(agent, old, "stopped reading");
    assert!(cause.contains("the service method 'pid'"), "{cause}");
    let outcome = returned
        .recv_timeout(Duration::from_secs(20))
        .expect("the call returned");
    assert!(outcome.is_err(), "{outcome:?}");
    neighbour_serves(agent);
}

/// The process's resident memory high-water mark, reset first when
/// `reset` (writing 5 to `clear_refs` resets it).
fn peak_rss_kib(reset: bool) -> u64 {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 24 calls at once, each answered by a frame header announcing `length`
/// bytes; the growth of the host's peak RSS, in MiB.
fn rss_growth_under_forged_lengths(agent: &TestAgent) -> u64 {
    let before = peak_rss_kib(true);
    std::thread::scope(|scope| {
        for _ in 0..24 {
            scope.spawn(|| agent.host.call_service("faulty", "pid", &Value::Null));
        }
    });
    let after = peak_rss_kib(false);
    let growth = after.saturating_sub(before) / 1024;
    eprintln!("host peak RSS {} MiB before, +{growth} MiB", before / 1024);
    growth
}

#[test]
fn a_frame_longer_than_the_limit_is_refused_from_its_header() {
    let hostile = hostile("forged-length:62914560", "service_timeout_ms = 1000");
    let agent = &hostile.agent;
    let old = worker(agent).pid.expect("a worker");
    let growth = rss_growth_under_forged_lengths(agent);
    let cause = crashed_and_restarted(agent, old, "protocol violation");
    assert!(cause.contains("62914560 bytes"), "{cause}");
    assert!(cause.contains("over the limit"), "{cause}");
    assert!(growth < 128, "the host's RSS grew by {growth} MiB");
    neighbour_serves(agent);
}

#[test]
fn a_forged_length_under_the_limit_costs_only_the_bytes_that_arrive() {
    let hostile = hostile("forged-length:15728640", "service_timeout_ms = 1000");
    let growth = rss_growth_under_forged_lengths(&hostile.agent);
    assert!(growth < 128, "the host's RSS grew by {growth} MiB");
    neighbour_serves(&hostile.agent);
}

#[test]
fn a_stale_reply_drops_its_connection_and_later_calls_are_unaffected() {
    let hostile = hostile("stale-reply", "");
    let agent = &hostile.agent;
    let pid = worker(agent).pid;
    let call = || agent.host.call_service("faulty", "pid", &Value::Null);
    assert_eq!(call().expect("first call"), json!("hostile"));
    // The stale reply arrives on the idle connection.
    std::thread::sleep(Duration::from_millis(100));
    for n in 2..=4 {
        assert_eq!(call().expect("a later call"), json!("hostile"), "call {n}");
    }
    let reply = agent.host.handle_message(InboundMessage {
        text: "hello".into(),
        ..InboundMessage::default()
    });
    assert!(reply.errors.is_empty(), "{reply:?}");
    assert_eq!(worker(agent).pid, pid, "a stale reply is no crash");
}

/// The failure of `plugin` in the load report.
fn load_failure(agent: &TestAgent, plugin: &str) -> String {
    agent
        .report
        .failures
        .iter()
        .find(|f| f.plugin.as_deref() == Some(plugin))
        .map(|f| f.error.to_string())
        .unwrap_or_else(|| panic!("no failure of {plugin}: {:?}", agent.report.failures))
}

#[test]
fn a_worker_that_exits_in_its_handshake_is_reported_with_its_exit_code() {
    let scripts = tempfile::tempdir().expect("temp folder");
    let program = hostile_program(scripts.path(), "exit-in-handshake:3");
    let agent = load(&program, "", "", &[]);
    let error = load_failure(&agent, "faulty");
    assert!(error.contains("exited with code 3"), "{error}");
    assert!(!error.contains("stopped by the host"), "{error}");
    assert!(!error.contains("reset by peer"), "{error}");
    neighbour_serves(&agent);
}

#[test]
fn a_handshake_that_never_ends_is_reported_as_timed_out() {
    let scripts = tempfile::tempdir().expect("temp folder");
    let program = hostile_program(scripts.path(), "silent-handshake");
    let agent = load(&program, "", "", &[]);
    let error = load_failure(&agent, "faulty");
    assert!(error.contains("handshake"), "{error}");
    assert!(error.contains("timed out after"), "{error}");
    assert!(!error.contains("os error"), "{error}");
    neighbour_serves(&agent);
}

/// With a worker program that cannot serve, the plugins placed in workers
/// fail with its cause; the in-process plugins of every file load.
/// The lock file of `files` (as staged, by file name), pinned with the
/// plugins each exports, written to `dir`; the `[trust]` table naming it.
fn lock_of(dir: &Path, files: &[(PathBuf, &[&str])]) -> String {
    use agent_host::trust::digest::sha256_hex;
    use agent_host::trust::lock::{LockFile, LockedFile, LockedPlugin};
    let mut lock = LockFile::new();
    for (file, plugins) in files {
        lock.pin(LockedFile {
            name: file
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned(),
            sha256: sha256_hex(&std::fs::read(file).expect("the fixture")),
            plugins: plugins
                .iter()
                .map(|name| LockedPlugin {
                    name: name.to_string(),
                    version: "1.0.0".to_string(),
                })
                .collect(),
        });
    }
    let path = dir.join("plugins.lock");
    lock.write(&path).expect("the lock file");
    format!("[trust]\nlock = \"{}\"\n", path.display())
}

/// With a worker program that cannot serve (`cause` names why), the host
/// opens in its own process only the files the lock file says hold no
/// isolated plugin: their plugins serve. A file with an isolated plugin,
/// or one no lock names, fails whole, and none of its code runs in the
/// host.
fn only_files_known_to_be_in_process_serve(program: &Path, cause: &str) {
    let (isolated, plain) = (test_support::fixture("isolated"), test_support::fixture(""));
    let without_lock = load(program, "", "", std::slice::from_ref(&plain));
    assert_eq!(
        without_lock.report.failures.len(),
        2,
        "{:?}",
        without_lock.report.failures
    );
    for failure in &without_lock.report.failures {
        let error = failure.error.to_string();
        assert!(error.contains(cause), "{error}");
        assert!(error.contains("no lock file names its plugins"), "{error}");
    }

    let dir = tempfile::tempdir().expect("temp folder");
    let trust = lock_of(
        dir.path(),
        &[
            (isolated, &["faulty", "neighbour"]),
            (plain.clone(), &["fixture"]),
        ],
    );
    let agent = load(program, "", &trust, &[plain]);
    assert_eq!(
        agent.report.failures.len(),
        1,
        "{:?}",
        agent.report.failures
    );
    let error = agent.report.failures[0].error.to_string();
    assert!(error.contains(cause), "{error}");
    assert!(
        error.contains("exports a plugin placed in a worker"),
        "{error}"
    );
    assert!(agent.host.status("neighbour").is_none());
    let reply = agent.host.handle_message(InboundMessage {
        text: "hello".into(),
        ..InboundMessage::default()
    });
    assert!(
        agent.host.status("fixture").is_some(),
        "the file the lock names as in process serves: {reply:?}"
    );
}

#[test]
fn a_missing_worker_program_fails_only_the_files_that_need_it() {
    only_files_known_to_be_in_process_serve(
        Path::new("/nonexistent/agent-host-worker"),
        "/nonexistent/agent-host-worker",
    );
}

#[test]
fn a_worker_program_that_exits_at_once_fails_only_the_files_that_need_it() {
    let scripts = tempfile::tempdir().expect("temp folder");
    let program = hostile_program(scripts.path(), "exit-now:3");
    only_files_known_to_be_in_process_serve(&program, "exited with code 3");
}

/// The value of `agent_host_plugin_log_lines_dropped_total` for `plugin`.
fn dropped_lines(agent: &TestAgent, plugin: &str) -> u64 {
    let prefix = format!("agent_host_plugin_log_lines_dropped_total{{plugin=\"{plugin}\"}} ");
    agent
        .host
        .metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_log_flood_is_cut_to_the_rate_limit_in_process_and_in_a_worker() {
    let config =
        format!("[isolation]\nprocess = [\"faulty\"]\nworker_program = \"{AGENT_HOST}\"\n");
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&[test_support::fixture("isolated")], options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    for plugin in ["neighbour", "faulty"] {
        let lines = agent
            .host
            .call_service(plugin, "flood", &json!(20_000))
            .expect("flood");
        assert_eq!(lines, json!(20_000));
        // At most the burst and a few seconds' worth got through.
        let dropped = dropped_lines(&agent, plugin);
        assert!(dropped >= 18_000, "{plugin}: {dropped} dropped");
    }
}
