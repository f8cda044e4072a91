//! Middleware lives in the plugin, so it works wherever the plugin runs:
//! the `layered` fixture answers the same in memory under `TestHost`, in
//! the host's process, in a worker process, and in the `agent-host`
//! program as a plugin's own test runs it (`agent-host-plugin-testing`).
//! Each place is asked the same questions: the order of the layers, a
//! short-circuit, a retry, a middleware's error and its panic.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions};
use agent_host_plugin_sdk::testing::TestHost;
use agent_host_plugin_sdk::{ErrorKind, Level};
use agent_host_plugin_testing::Agent;
use agent_host_tests::{fixture, msg};
use serde_json::Value;

const PROGRAM: &str = env!("CARGO_BIN_EXE_test-agent-host");

/// What one place answered to a message: the text, the errors, the
/// evaluations as JSON.
struct Answer {
    text: String,
    errors: Vec<String>,
    evaluations: Value,
}

fn answer(agent: &TestAgent, text: &str) -> Answer {
    let reply = agent.host.handle_message(msg(text));
    let json = serde_json::to_value(&reply).expect("a reply is JSON");
    Answer {
        text: reply.text,
        errors: reply.errors,
        evaluations: json["evaluations"].clone(),
    }
}

/// The questions every place is asked, with the answers the host gives
/// wherever the plugin runs. A panic's error names where it happened, the
/// same in every place.
fn holds_in(place: &str, mut ask: impl FnMut(&str) -> Answer) {
    let order = ask("order");
    assert_eq!(
        order.text, "plugin > first > second > handler < second < first",
        "{place}: {:?}",
        order.errors
    );
    assert_eq!(
        order.evaluations[0]["metadata"]["trace"], "plugin",
        "{place}: the plugin's middleware wraps its evaluator"
    );
    assert_eq!(ask("short").text, "short-circuited", "{place}");
    let retry = ask("retry");
    assert_eq!(retry.text, "attempt 3", "{place}: {:?}", retry.errors);
    assert_eq!(
        ask("state").text,
        "plugin > own > get",
        "{place}: the provider's value passed both layers"
    );
    let refused = ask("refuse");
    assert_eq!(
        refused.errors,
        ["plugin 'layered': action 'REFUSE' handler: the middleware refused"],
        "{place}: a middleware's error is the handler's"
    );
    let exploded = ask("explode");
    let [error] = exploded.errors.as_slice() else {
        panic!("{place}: one error for the panic: {:?}", exploded.errors);
    };
    let cause = error
        .strip_prefix("plugin 'layered': action 'EXPLODE' handler: panicked at ")
        .unwrap_or_else(|| panic!("{place}: a panic of the handler's call: {error}"));
    assert!(
        cause.starts_with("tests/fixtures/fixture-plugin/src/layered.rs:")
            && cause.ends_with(": the middleware panicked"),
        "{place}: {error}"
    );
}

#[test]
fn middleware_runs_in_the_hosts_process() {
    let agent = TestAgent::load(&[fixture("layered")]).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    holds_in("in process", |text| answer(&agent, text));
}

#[test]
fn middleware_runs_in_a_worker_process() {
    let config = format!("[isolation]\nprocess = [\"layered\"]\nworker_program = \"{PROGRAM}\"\n");
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&[fixture("layered")], options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let status = agent.host.status("layered").expect("layered");
    assert_eq!(status.placement.to_string(), "process");
    holds_in("in a worker", |text| answer(&agent, text));
}

#[test]
fn middleware_answers_under_test_host_as_in_the_host() {
    let host = TestHost::new("layered");
    let loaded = host.load(fixture_plugin::layered()).expect("loads");
    holds_in("under TestHost", |text| {
        let action = loaded
            .plugin()
            .actions()
            .iter()
            .find(|action| {
                action.name() != "STATE" && loaded.validate(action.name(), text).unwrap_or(false)
            })
            .map_or("STATE", |action| action.name())
            .to_string();
        let state = loaded.provide("layered", text).expect("the provider");
        let message = agent_host_plugin_sdk::Message::new(text).with_state("layered", state);
        let evaluation = loaded.evaluate("layered", text).expect("the evaluator");
        let evaluations = serde_json::json!([{"metadata": evaluation.metadata}]);
        match loaded.handle_message(&action, &message) {
            Ok(reply) => Answer {
                text: reply.text,
                errors: Vec::new(),
                evaluations,
            },
            Err(error) => {
                if action == "EXPLODE" {
                    assert_eq!(error.kind(), ErrorKind::Panicked);
                }
                Answer {
                    text: String::new(),
                    // The host names the plugin and the entry point.
                    errors: vec![format!(
                        "plugin 'layered': action '{action}' handler: {}",
                        error.message()
                    )],
                    evaluations,
                }
            }
        }
    });
    let logs = host.logs();
    assert!(logs.contains(&(Level::Info, "action 'ORDER' started".to_string())));
    assert!(logs.iter().any(|(level, line)| *level == Level::Error
        && line.starts_with("action 'REFUSE' failed after ")
        && line.ends_with(" ms: the middleware refused")));
}

#[test]
fn a_plugins_own_test_runs_its_file_in_a_worker_and_reads_the_middlewares_log() {
    let mut agent = Agent::builder()
        .program(PROGRAM)
        .plugin(fixture("layered"))
        .config("[isolation]\nprocess = [\"layered\"]\n")
        .start()
        .expect("the host loads the plugin");
    assert_eq!(agent.report()["loaded"][0]["name"], "layered");
    holds_in("in the agent-host program", |text| {
        let reply = agent.send(text).expect("a reply");
        Answer {
            text: reply.text,
            errors: reply.errors,
            evaluations: reply.json["evaluations"].clone(),
        }
    });
    // The SDK's Logging middleware logs through the host, from the worker.
    agent
        .wait_for_log("action 'ORDER' started")
        .expect("the start line");
    let completed = agent
        .wait_for_log("action 'ORDER' completed in ")
        .expect("the completion line");
    assert!(completed.contains("layered"), "{completed}");
    agent
        .wait_for_log("action 'REFUSE' failed after ")
        .expect("the failure line");
    let status = agent.stop().expect("stops");
    assert!(status.success(), "{status}");
}
