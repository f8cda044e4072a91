//! Lazy plugins and action triggers on a real plugin file, loaded through
//! `dlopen`: the `lazy` fixture counts its `validate` calls, its starts and
//! the events it receives, and has an action whose `validate` panics.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage};
use serde_json::{json, Value};

fn agent(config: &str) -> TestAgent {
    let options = HostOptions {
        config: AgentConfig::parse(config).expect("the test's config parses"),
        ..HostOptions::default()
    };
    let agent =
        TestAgent::load_with(&[test_support::fixture("lazy")], options).expect("stage the fixture");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    agent
}

fn lazy_agent() -> TestAgent {
    agent("[host]\nlazy_plugins = [\"lazy-*\"]\n")
}

fn message(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

fn started(agent: &TestAgent) -> bool {
    agent
        .host
        .status("lazy-fixture")
        .expect("the fixture is listed")
        .started
}

fn count(agent: &TestAgent, method: &str) -> u64 {
    let value = agent
        .host
        .call_service("lazy-fixture", method, &Value::Null)
        .expect("the fixture's service answers");
    value.as_u64().expect("a count")
}

#[test]
fn a_lazy_plugin_is_checked_at_load_and_started_by_the_first_message_its_triggers_match() {
    let agent = lazy_agent();
    assert!(agent.report.loaded[0].lazy);
    let status = agent.host.status("lazy-fixture").expect("listed");
    assert!(!status.started, "checked, not started");
    assert_eq!(status.generation, 0);
    assert!(status.services.iter().all(|s| !s.running));

    let reply = agent.host.handle_message(message("hello there"));
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    assert!(!started(&agent), "a message its triggers do not match");

    let reply = agent.host.handle_message(message("Count me in"));
    assert_eq!(reply.text, "counted", "{:?}", reply.errors);
    assert!(started(&agent));
    assert_eq!(count(&agent, "starts"), 1);
    assert_eq!(count(&agent, "validate_calls"), 1);

    agent.host.handle_message(message("count again"));
    assert_eq!(count(&agent, "starts"), 1, "started once");
}

#[test]
fn a_lazy_plugin_is_started_by_a_call_to_its_service() {
    let agent = lazy_agent();
    assert!(!started(&agent));
    assert_eq!(count(&agent, "starts"), 1, "the call started it, then ran");
    assert!(started(&agent));
    assert_eq!(count(&agent, "validate_calls"), 0);
}

#[test]
fn a_lazy_plugin_is_started_by_an_event_its_manifest_subscribes_to() {
    let agent = lazy_agent();
    let failures = agent.host.emit("other:event", json!({}));
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!started(&agent), "not a pattern it declares");

    let failures = agent.host.emit("lazy:ping", json!({"n": 1}));
    assert!(failures.is_empty(), "{failures:?}");
    assert!(started(&agent));
    assert_eq!(count(&agent, "events"), 1, "the waking event reached it");
    agent.host.emit("lazy:ping", json!({"n": 2}));
    assert_eq!(count(&agent, "events"), 2);
    assert_eq!(count(&agent, "starts"), 1);
}

#[test]
fn triggers_keep_validate_from_running_for_messages_they_do_not_match() {
    let agent = agent("");
    assert!(started(&agent), "not lazy: started at load");

    for text in [
        "hello",
        "no trigger here",
        "a boom that is not at the start",
    ] {
        let reply = agent.host.handle_message(message(text));
        assert!(reply.errors.is_empty(), "{text}: {:?}", reply.errors);
    }
    assert_eq!(count(&agent, "validate_calls"), 0, "COUNTED never asked");

    let reply = agent.host.handle_message(message("boom"));
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("action 'PANICS' validate: panicked")
                && e.contains("validate of PANICS ran")),
        "the pattern matched, so validate ran: {:?}",
        reply.errors
    );
    assert_eq!(count(&agent, "validate_calls"), 0);

    let reply = agent.host.handle_message(message("COUNT"));
    assert_eq!(reply.text, "counted", "{:?}", reply.errors);
    assert_eq!(count(&agent, "validate_calls"), 1);
}
