//! A config schema's `default`s count: the host fills them in for the keys
//! the default config and the operator leave out, before it validates the
//! config, and `TestHost` does the same.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions};
use agent_host_plugin_sdk::testing::TestHost;
use agent_host_tests::{fixture, msg};
use serde_json::{json, Value};

fn config_in_host(operator: &str) -> Value {
    let options = HostOptions {
        config: AgentConfig::parse(operator).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&[fixture("schema-defaults")], options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let reply = agent.host.handle_message(msg("config"));
    serde_json::from_str(&reply.text).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

#[test]
fn schema_defaults_fill_what_the_default_config_and_the_operator_leave_out() {
    // `required: ["retries"]` holds only because the schema's default fills it.
    assert_eq!(
        config_in_host(""),
        json!({"units": "metric", "retries": 3, "cache": {"minutes": 10}})
    );
    assert_eq!(
        config_in_host("[plugins.defaults]\nretries = 5\ncache = { }\n"),
        json!({"units": "metric", "retries": 5, "cache": {"minutes": 10}})
    );
}

#[test]
fn test_host_fills_the_same_defaults() {
    let host = TestHost::new("defaults").with_config(json!({"retries": 5}));
    let loaded = host.load(fixture_plugin::schema_defaults()).expect("loads");
    let config: Value =
        serde_json::from_str(&loaded.handle("CONFIG", "config").expect("answers").text)
            .expect("JSON");
    assert_eq!(
        config,
        json!({"units": "metric", "retries": 5, "cache": {"minutes": 10}})
    );
}
