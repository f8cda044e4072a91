//! Deadlines on a plugin's life, on real plugin files run in process: an
//! `on_load`, a service start or stop, an `on_unload` or a state hook that
//! never returns (the `stalling` fixture, whose config names the step)
//! fails that plugin alone, with the cause named, within the
//! `lifecycle_timeout_ms` deadline; the other plugins load and answer, a
//! reload that misses a deadline leaves the old generation serving, and a
//! shutdown finishes.
//!
//! Every wait here is bounded by [`within`], so a host that waits for ever
//! fails the test instead of hanging the suite.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage, LoadReport, PluginHost};
use serde_json::Value;
use std::sync::mpsc;
use std::time::Duration;

/// How long any step of a test may take before the test fails: far more
/// than the one-second deadlines the configs set.
const BOUND: Duration = Duration::from_secs(30);

/// Runs `work` on a thread of its own and waits at most [`BOUND`] for it.
fn within<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

/// The `stalling` fixture next to the well-behaved `fixture`, loaded with a
/// one-second lifecycle deadline and `stall` as the step that never returns.
fn agent_stalling_at(stall: &str, extra: &str) -> TestAgent {
    let config = format!(
        "[host]\nlifecycle_timeout_ms = 1000\n{extra}\n[plugins.stalling]\nstall = \"{stall}\"\n"
    );
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let files = [test_support::fixture("stalling"), test_support::fixture("")];
    within("the load", move || {
        TestAgent::load_with(&files, options).expect("stage")
    })
}

fn say(host: &PluginHost, text: &str) -> agent_host::Reply {
    host.handle_message(InboundMessage {
        text: text.into(),
        ..InboundMessage::default()
    })
}

/// The one failure of the load report, as its line.
fn only_failure(report: &LoadReport) -> String {
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    report.failures[0].to_string()
}

#[test]
fn an_endless_on_load_fails_its_plugin_alone_and_the_others_serve() {
    let agent = agent_stalling_at("on_load", "");
    let line = only_failure(&agent.report);
    assert!(
        line.contains("plugin 'stalling': on_load: did not return within 1000 ms"),
        "{line}"
    );
    assert!(
        line.contains("a thread is left running in the plugin"),
        "{line}"
    );
    assert!(agent.host.status("stalling").is_none());
    let reply = say(&agent.host, "ping");
    assert_eq!(reply.text, "pong", "{:?}", reply.errors);
    // The stuck plugin is never called again: a message for it finds no one.
    let reply = say(&agent.host, "stalling?");
    assert_ne!(reply.text, "stalling serves");
    within("the shutdown", move || drop(agent));
}

#[test]
fn a_service_start_past_its_deadline_fails_its_plugin_alone() {
    let agent = agent_stalling_at("service_start", "");
    let line = only_failure(&agent.report);
    assert!(
        line.contains("service 'stalling' failed to start")
            && line.contains("did not return within 1000 ms"),
        "{line}"
    );
    assert!(agent.host.status("stalling").is_none());
    let reply = say(&agent.host, "ping");
    assert_eq!(reply.text, "pong", "{:?}", reply.errors);
    within("the shutdown", move || drop(agent));
}

#[test]
fn a_lazy_plugin_whose_on_load_never_returns_fails_the_start_not_the_message() {
    let agent = agent_stalling_at("on_load", "lazy_plugins = [\"stalling\"]");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let (agent, reply) = within("the message that starts it", move || {
        let reply = say(&agent.host, "stalling?");
        (agent, reply)
    });
    assert_ne!(reply.text, "stalling serves", "{reply:?}");
    assert!(agent.host.status("stalling").is_none());
    let reply = say(&agent.host, "ping");
    assert_eq!(reply.text, "pong", "{:?}", reply.errors);
    within("the shutdown", move || drop(agent));
}

/// Reloads `stalling` from its own file, forced.
fn reload(agent: TestAgent) -> (TestAgent, String) {
    within("the reload", move || {
        let outcome = agent.host.reload_as(
            "stalling",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        );
        let error = outcome.expect_err("the reload fails").to_string();
        (agent, error)
    })
}

#[test]
fn an_export_past_its_deadline_fails_the_reload_and_the_old_generation_serves_on() {
    let agent = agent_stalling_at("export_state", "");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let generation = agent.host.status("stalling").expect("loaded").generation;
    let (agent, error) = reload(agent);
    assert!(
        error.contains("export_state: did not return within 1000 ms"),
        "{error}"
    );
    let status = agent.host.status("stalling").expect("still loaded");
    assert_eq!(status.generation, generation);
    let reply = say(&agent.host, "stalling?");
    assert_eq!(reply.text, "stalling serves", "{:?}", reply.errors);
    within("the shutdown", move || drop(agent));
}

#[test]
fn an_import_past_its_deadline_fails_the_reload_and_the_old_services_start_again() {
    let agent = agent_stalling_at("import_state", "");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let generation = agent.host.status("stalling").expect("loaded").generation;
    let (agent, error) = reload(agent);
    assert!(
        error.contains("import_state: did not return within 1000 ms"),
        "{error}"
    );
    let status = agent.host.status("stalling").expect("still loaded");
    assert_eq!(status.generation, generation);
    let pong = agent
        .host
        .call_service("stalling", "ping", &Value::Null)
        .expect("the old generation's service serves again");
    assert_eq!(pong, "pong");
    let reply = say(&agent.host, "stalling?");
    assert_eq!(reply.text, "stalling serves", "{:?}", reply.errors);
    within("the shutdown", move || drop(agent));
}

/// Shuts the agent down within [`BOUND`]; the errors as lines.
fn shut_down(agent: TestAgent) -> Vec<String> {
    within("the shutdown", move || {
        let errors = agent.host.shutdown();
        drop(agent);
        errors.iter().map(ToString::to_string).collect()
    })
}

#[test]
fn a_shutdown_finishes_when_on_unload_never_returns() {
    let agent = agent_stalling_at("on_unload", "");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let errors = shut_down(agent);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("plugin 'stalling': on_unload: did not return within 1000 ms")),
        "{errors:?}"
    );
}

#[test]
fn a_shutdown_finishes_when_a_service_stop_never_returns() {
    let agent = agent_stalling_at("service_stop", "");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let errors = shut_down(agent);
    assert!(
        errors.iter().any(|e| e
            .contains("plugin 'stalling': service 'stalling' stop: did not return within 1000 ms")),
        "{errors:?}"
    );
}
