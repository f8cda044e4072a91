//! Deadlines on a plugin's life with the real agent and real workers: an
//! `on_load` that never returns (the `stalling` fixture, whose config names
//! the step that never returns) keeps neither `agent-host run` from
//! serving nor, isolated, its worker alive; an isolated plugin that misses
//! a deadline on reload or shutdown has its worker killed, and the agent
//! goes on (or exits).
//!
//! Every wait is bounded, so a host that waits for ever fails the test
//! instead of hanging the suite.

use crate::common::*;
use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost};
use serde_json::json;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use test_support::fixture;

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

/// Runs `work` on a thread of its own and waits at most [`WAIT`] for it.
fn within<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

/// The config of an agent whose `stalling` plugin never returns from
/// `stall`, with a one-second lifecycle deadline; `isolated` runs it in a
/// worker.
fn config(stall: &str, isolated: bool) -> String {
    let mut config =
        format!("[host]\nlifecycle_timeout_ms = 1000\n\n[plugins.stalling]\nstall = \"{stall}\"\n");
    if isolated {
        config.push_str(&format!(
            "\n[isolation]\nprocess = [\"stalling\"]\nworker_program = \"{WORKER}\"\n"
        ));
    }
    config
}

/// Waits until the process `pid` is gone (Linux: no `/proc/PID`).
fn wait_until_gone(pid: u32) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let deadline = Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the worker process {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid in the text `... (pid N) ...`.
fn pid_in(text: &str) -> u32 {
    text.split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {text}"))
}

fn serves_a_message_for_another_plugin(agent: &Agent) {
    let reply = agent.post_json("/v1/messages", &json!({"sender": "alice", "text": "ping"}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["text"], "pong", "{}", reply.text());
}

#[test]
fn an_endless_on_load_in_a_worker_does_not_keep_the_agent_from_serving() {
    // `start_with` waits (bounded) for the "listening on" line, which the
    // agent logs once its plugins are loaded.
    let mut agent = Agent::start_with(
        &[fixture("stalling"), fixture("")],
        &config("on_load", true),
        false,
    );
    serves_a_message_for_another_plugin(&agent);
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("plugin 'stalling': on_load: did not return within 1000 ms"))
        .unwrap_or_else(|| panic!("no line names the late on_load:\n{log}"));
    assert!(line.contains("killed its worker process"), "{line}");
    wait_until_gone(pid_in(line));
    agent.terminate();
    assert_eq!(agent.wait_for_exit(WAIT), Some(0), "{}", agent.log());
}

#[test]
fn an_endless_on_load_in_process_does_not_keep_the_agent_from_serving_or_exiting() {
    let mut agent = Agent::start_with(
        &[fixture("stalling"), fixture("")],
        &config("on_load", false),
        false,
    );
    serves_a_message_for_another_plugin(&agent);
    agent.wait_for_log("plugin 'stalling': on_load: did not return within 1000 ms");
    agent.wait_for_log("a thread is left running in the plugin");
    // The thread still in the plugin keeps the agent from exiting no more.
    agent.terminate();
    assert_eq!(agent.wait_for_exit(WAIT), Some(0), "{}", agent.log());
}

/// A test agent with the `stalling` plugin in a worker, never returning
/// from `stall`, next to `fixture` in process.
fn isolated_agent(stall: &str) -> TestAgent {
    let options = HostOptions {
        config: AgentConfig::parse(&config(stall, true)).expect("config"),
        ..HostOptions::default()
    };
    let files = [fixture("stalling"), fixture("")];
    within("the load", move || {
        TestAgent::load_with(&files, options).expect("stage")
    })
}

fn say(host: &PluginHost, text: &str) -> String {
    host.handle_message(InboundMessage {
        text: text.into(),
        ..InboundMessage::default()
    })
    .text
}

fn worker_pid(host: &PluginHost) -> u32 {
    host.status("stalling")
        .and_then(|s| s.worker)
        .and_then(|w| w.pid)
        .expect("stalling runs in a worker")
}

#[test]
fn an_isolated_service_start_past_its_deadline_fails_its_plugin_and_kills_its_worker() {
    let agent = isolated_agent("service_start");
    assert_eq!(
        agent.report.failures.len(),
        1,
        "{:?}",
        agent.report.failures
    );
    let line = agent.report.failures[0].to_string();
    assert!(
        line.contains("service 'stalling' failed to start")
            && line.contains("did not return within 1000 ms")
            && line.contains("killed its worker process"),
        "{line}"
    );
    wait_until_gone(pid_in(&line));
    assert_eq!(say(&agent.host, "ping"), "pong");
    within("the shutdown", move || drop(agent));
}

#[test]
fn an_isolated_export_past_its_deadline_fails_the_reload_and_the_plugin_serves_again() {
    let agent = isolated_agent("export_state");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let old_pid = worker_pid(&agent.host);
    let generation = agent.host.status("stalling").expect("loaded").generation;
    let (agent, error) = within("the reload", move || {
        let outcome = agent.host.reload_as(
            "stalling",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        );
        (agent, outcome.expect_err("the reload fails").to_string())
    });
    assert!(
        error.contains("export_state: did not return within 1000 ms"),
        "{error}"
    );
    wait_until_gone(old_pid);
    assert_eq!(
        agent.host.status("stalling").expect("loaded").generation,
        generation
    );
    // The serving generation's worker is restarted, as after a crash.
    let deadline = Instant::now() + WAIT;
    while say(&agent.host, "stalling?") != "stalling serves" {
        assert!(Instant::now() < deadline, "stalling never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
    within("the shutdown", move || drop(agent));
}

#[test]
fn an_isolated_on_unload_past_its_deadline_does_not_keep_the_shutdown_waiting() {
    let agent = isolated_agent("on_unload");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let pid = worker_pid(&agent.host);
    let errors: Vec<String> = within("the shutdown", move || {
        let errors = agent.host.shutdown();
        drop(agent);
        errors.iter().map(ToString::to_string).collect()
    });
    assert!(
        errors
            .iter()
            .any(|e| e.contains("plugin 'stalling': on_unload: did not return within 1000 ms")),
        "{errors:?}"
    );
    wait_until_gone(pid);
}
