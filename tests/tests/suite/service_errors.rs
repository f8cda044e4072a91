//! A plugin sees the same service errors under `TestHost` as in the host,
//! texts included: the `reporter` fixture asks services in every way that
//! fails, in memory and from its built file, and the answers must match.

use agent_host::testing::TestAgent;
use agent_host_plugin_sdk::testing::TestHost;
use agent_host_tests::{fixture, msg};
use serde_json::Value;

/// What `reporter` answers to each question, in order.
const QUESTIONS: [&str; 6] = [
    "ask ledger ok",
    "ask ledger fail",
    "ask ledger boom",
    "ask ledger missing",
    "ask nowhere ok",
    "ask secret ok",
];

#[test]
fn a_plugin_sees_the_hosts_service_errors_under_test_host() {
    let agent = TestAgent::load(&[fixture("reporter")]).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let in_host: Vec<String> = QUESTIONS
        .iter()
        .map(|question| agent.host.handle_message(msg(question)).text)
        .collect();

    let test_host = TestHost::new("reporter");
    let loaded = test_host.load(fixture_plugin::reporter()).expect("loads");
    let in_memory: Vec<String> = QUESTIONS
        .iter()
        .map(|question| loaded.handle("ASK", question).expect("answers").text)
        .collect();

    assert_eq!(in_memory, in_host);
    // What they agree on, spelled out.
    assert_eq!(in_host[0], "ok: 1");
    assert_eq!(
        in_host[1],
        "invalid_input: plugin 'reporter': service 'ledger' method 'fail': no such entry"
    );
    assert!(
        in_host[2].starts_with(
            "panicked: plugin 'reporter': service 'ledger' method 'boom': panicked at \
             tests/fixtures/fixture-plugin/src/service_errors.rs:"
        ),
        "{}",
        in_host[2]
    );
    assert!(in_host[3].starts_with(
        "not_found: plugin 'reporter': service 'ledger' method 'missing': service 'ledger' has no method 'missing'"
    ));
    assert_eq!(
        in_host[4],
        "not_found: no service named 'nowhere' is loaded (loaded: ledger)"
    );
    assert_eq!(
        in_host[5],
        "permission_denied: plugin 'reporter' lacks permission 'service:secret'"
    );
}

#[test]
fn a_test_calling_a_service_gets_the_hosts_error() {
    let agent = TestAgent::load(&[fixture("reporter")]).expect("stage");
    let in_host = agent
        .host
        .call_service("ledger", "fail", &Value::Null)
        .expect_err("fails");
    let test_host = TestHost::new("reporter");
    let loaded = test_host.load(fixture_plugin::reporter()).expect("loads");
    let in_memory = loaded
        .call_service("ledger", "fail", Value::Null)
        .expect_err("fails");
    assert_eq!(in_memory.message(), in_host.message);
    assert_eq!(in_memory.kind(), in_host.kind);
}
