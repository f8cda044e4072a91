//! The bundled example plugins, loaded from their real release files: load
//! order follows dependencies, services are called across plugins through the
//! host, events cross plugins, config and logging reach the plugins, and
//! everything shuts down in reverse order.

use agent_host::InboundMessage;
use agent_host_tests::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

fn ask(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "alice".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

#[test]
fn examples_load_in_dependency_order_and_answer() {
    let (host, report, _dir) = load_files(&examples());
    assert!(report.is_clean(), "{:?}", report.failures);
    let order: Vec<&str> = report.loaded.iter().map(|p| p.name.as_str()).collect();
    let position = |name: &str| order.iter().position(|n| *n == name).expect("loaded");
    assert!(position("http-client") < position("weather"), "{order:?}");
    assert!(position("geolocation") < position("weather"), "{order:?}");
    let weather = report
        .loaded
        .iter()
        .find(|p| p.name == "weather")
        .expect("weather");
    assert_eq!(
        weather.dependencies,
        vec!["http-client@^1.0", "geolocation@^1.0"]
    );
    assert_eq!(weather.actions, vec!["GET_WEATHER"]);

    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    host.on("*", move |event| {
        seen.lock().expect("lock").push(event.name.clone());
        Ok(())
    });

    let reply = host.handle_message(ask("What's the weather in Tokyo?"));
    assert!(reply.ok, "{reply:?}");
    assert!(reply.text.contains("Tokyo"), "{}", reply.text);
    assert_eq!(
        reply.action.as_ref().map(|a| a.action.as_str()),
        Some("GET_WEATHER")
    );
    assert_eq!(reply.data["location"], "Tokyo");
    // Providers composed the state; the evaluator scored the message.
    assert!(
        reply.evaluations.iter().any(|e| e.evaluator == "sentiment"),
        "{reply:?}"
    );
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);

    let names = events.lock().expect("lock").clone();
    for expected in ["action:started", "weather:reported", "action:completed"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // The sentiment plugin saw action:completed through the bus.
    let stats = host
        .call_service("sentiment", "stats", &Value::Null)
        .expect("stats");
    assert_eq!(stats["actions_completed"], 1, "{stats}");

    let reply = host.handle_message(ask("tell me a joke"));
    assert!(reply.action.is_none());
    assert_eq!(reply.text, agent_host::NO_ACTION_TEXT);
}

#[test]
fn services_are_reached_through_the_host_and_missing_ones_are_clear_errors() {
    let (host, report, _dir) = load_files(&examples());
    assert!(report.is_clean(), "{:?}", report.failures);
    let place = host
        .call_service(
            "geolocation",
            "locate",
            &json!({"text": "flights to Paris"}),
        )
        .expect("locate");
    assert_eq!(place["name"], "Paris");
    let error = host
        .call_service("no-such-service", "x", &Value::Null)
        .expect_err("missing");
    assert!(
        error.message.contains("no service named 'no-such-service'"),
        "{error}"
    );
    let error = host
        .call_service("geolocation", "nope", &Value::Null)
        .expect_err("no method");
    assert!(error.message.contains("plugin 'geolocation'"), "{error}");
    assert!(error.message.contains("no method 'nope'"), "{error}");
}

#[test]
fn operator_config_reaches_the_plugin() {
    let host = agent_host::PluginHost::new(agent_host::HostOptions {
        configs: [("geolocation".to_string(), json!({"home": "Tokyo"}))].into(),
        ..Default::default()
    })
    .expect("host");
    let dir = folder_with(&examples());
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    let home = host
        .call_service("geolocation", "current", &Value::Null)
        .expect("current");
    assert_eq!(home["name"], "Tokyo");
}

#[test]
fn a_plugin_without_the_permission_cannot_call_a_service_or_emit() {
    let (host, report, _dir) = load_files(&[fixture("multi"), fixture("panicky"), fixture("")]);
    assert!(report.is_clean(), "{:?}", report.failures);
    // multi-two holds `service:multi-one`, so its call goes through.
    assert_eq!(
        host.handle_message(ask("multi")).text,
        "multi-one says pong"
    );
    // panicky holds no permission at all.
    let reply = host.handle_message(ask("call fixture"));
    assert!(!reply.ok);
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("plugin 'panicky' lacks permission 'service:fixture'")),
        "{reply:?}"
    );
    let reply = host.handle_message(ask("emit fixture:boom"));
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("lacks permission 'event:emit:fixture:boom'")),
        "{reply:?}"
    );
    // The fixture plugin's timer runs on the host's threads and reaches it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host
        .call_service("fixture", "ticks", &Value::Null)
        .expect("ticks")
        == json!(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin's timer never fired"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn test_agent_loads_real_files_for_plugin_authors() {
    let dir;
    {
        let agent = agent_host::testing::TestAgent::load(&examples()).expect("stage");
        assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
        dir = agent.dir().to_path_buf();
        assert!(dir.join(format!("weather.{EXT}")).is_file());
        assert!(agent.host.handle_message(ask("forecast for Oslo?")).ok);
    }
    assert!(
        !dir.exists(),
        "the staging folder is removed with the agent"
    );
}

#[test]
fn the_shipped_configs_parse_and_only_the_cluster_one_needs_servers() {
    let root = test_support::workspace_root();
    let single = agent_host::AgentConfig::load(&root.join("agent.toml")).expect("agent.toml");
    assert!(single.cluster.is_none(), "cargo xtask run needs no server");
    let cluster =
        agent_host::AgentConfig::load(&root.join("docs/cluster.toml")).expect("docs/cluster.toml");
    let table = cluster.cluster.expect("docs/cluster.toml has [cluster]");
    assert_eq!(table.url, "nats://127.0.0.1:4222");
    assert_eq!(
        cluster.plugins["database"]["url"],
        "postgres://postgres@127.0.0.1:5432/test"
    );
    // The same plugins are granted the same permissions in both.
    assert_eq!(single.grants, cluster.grants);
}
