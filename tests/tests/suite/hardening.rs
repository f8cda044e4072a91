//! Misbehaving plugins, on real plugin files: each misbehaviour gets a
//! clear error naming the plugins involved, and the host and the other
//! plugins go on.

use agent_host::testing::TestAgent;
use agent_host_tests::*;
use serde_json::json;

#[test]
fn a_cycle_of_services_fails_with_the_chain_instead_of_overflowing_the_stack() {
    let agent = TestAgent::load(&[fixture("service-cycle"), fixture("counter-v1")]).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let error = agent
        .host
        .call_service("ping", "hit", &json!(0))
        .expect_err("the cycle is cut");
    let text = error.to_string();
    assert!(text.contains("nested more than 32 deep"), "{text}");
    assert!(text.contains("ping.hit -> pong.hit -> ping.hit"), "{text}");
    // The host and an unrelated plugin still serve.
    let reply = agent.host.handle_message(agent_host::InboundMessage {
        text: "count".into(),
        ..Default::default()
    });
    assert_eq!(reply.text, "v1: 1", "{:?}", reply.errors);
}

fn storm(event: &str) -> (u64, String, String) {
    let agent = TestAgent::load(&[fixture("storm")]).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    agent
        .host
        .call_service("storm", "start", &json!(event))
        .expect("start");
    let report = agent
        .host
        .call_service("storm", "report", &json!(null))
        .expect("report");
    let deliveries = report["deliveries"].as_u64().expect("a count");
    let errors = report["errors"].to_string();
    (deliveries, errors, agent.host.metrics_text())
}

#[test]
fn a_handler_that_re_emits_its_event_is_cut_and_hears_why() {
    let (deliveries, error, metrics) = storm("storm:loop");
    assert_eq!(deliveries, 16);
    assert!(
        error.contains("event 'storm:loop' not delivered: events nested more than 16 deep"),
        "{error}"
    );
    assert!(
        metrics.contains("agent_host_events_cut_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_handler_that_emits_twice_per_delivery_is_cut_at_the_delivery_bound() {
    let (deliveries, error, metrics) = storm("storm:tick");
    assert!(deliveries <= 10_000, "{deliveries}");
    assert!(deliveries >= 5_000, "{deliveries}");
    assert!(error.contains("more than 10000 handlers"), "{error}");
    assert!(
        !metrics.contains("agent_host_events_cut_total 0"),
        "{metrics}"
    );
}

#[test]
fn no_plugin_may_emit_a_host_event_and_every_event_says_who_sent_it() {
    let agent = TestAgent::load(&[fixture("impostor"), fixture("counter-v1")]).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let forged = agent
        .host
        .call_service("impostor", "forge", &json!(null))
        .expect("forge");
    assert!(
        forged
            .as_str()
            .is_some_and(|e| e.contains("event 'action:completed' is the host's own")),
        "{forged}"
    );
    agent
        .host
        .call_service("impostor", "hello", &json!(null))
        .expect("hello");
    let reply = agent.host.handle_message(agent_host::InboundMessage {
        text: "count".into(),
        ..Default::default()
    });
    assert!(reply.ok, "{:?}", reply.errors);
    let seen = agent
        .host
        .call_service("witness", "seen", &json!(null))
        .expect("seen");
    let seen: Vec<(String, String)> = serde_json::from_value(seen).expect("pairs");
    assert!(
        seen.contains(&("impostor:hello".into(), "impostor".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("action:completed".into(), "host".into())),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(name, source)| !name.starts_with("action:") || source == "host"),
        "{seen:?}"
    );
    assert!(agent
        .host
        .metrics_text()
        .contains("event:emit:action:completed"));
}

/// A message from a sender that holds `sender_permissions`: "alice",
/// who holds none, or "analyst", who holds `data:analyze` (see
/// [`with_senders`]).
fn from(sender_permissions: &[&str], text: &str) -> agent_host::InboundMessage {
    let sender = match sender_permissions {
        [] => "alice",
        ["data:analyze"] => "analyst",
        other => panic!("no sender holds {other:?}"),
    };
    agent_host::InboundMessage {
        sender: sender.into(),
        text: text.into(),
        ..Default::default()
    }
}

/// Host options whose `[senders]` gives "analyst" `data:analyze`.
fn with_senders() -> agent_host::HostOptions {
    agent_host::HostOptions {
        config: agent_host::AgentConfig::parse("[senders]\nanalyst = [\"data:analyze\"]\n")
            .expect("config"),
        ..Default::default()
    }
}

#[test]
fn an_action_the_sender_may_not_run_gives_way_to_one_it_may() {
    let agent = TestAgent::load_with(&[fixture("greedy"), fixture("counter-v1")], with_senders())
        .expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let reply = agent.host.handle_message(from(&[], "count"));
    assert_eq!(reply.text, "v1: 1", "{reply:?}");
    let skipped = &reply.metadata["skipped_actions"];
    assert_eq!(skipped[0]["plugin"], json!("greedy"), "{reply:?}");
    assert_eq!(skipped[0]["action"], json!("ANALYZE"));
    assert!(
        skipped[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("'data:analyze'")),
        "{skipped}"
    );
    let allowed = agent.host.handle_message(from(&["data:analyze"], "count"));
    assert_eq!(allowed.text, "analyzed", "{allowed:?}");
    assert!(allowed.metadata.get("skipped_actions").is_none());
    // With nothing else to run, the sender hears which permission it lacks.
    let alone = TestAgent::load(&[fixture("greedy")]).expect("stage");
    let denied = alone.host.handle_message(from(&[], "anything"));
    assert!(
        denied
            .text
            .contains("You lack the permission 'data:analyze'"),
        "{denied:?}"
    );
}

#[test]
fn a_quarantined_plugin_is_named_when_nothing_answers() {
    let agent = TestAgent::load(&[fixture("panicky")]).expect("stage");
    for _ in 0..3 {
        agent.host.handle_message(from(&[], "panic:handler"));
    }
    let reply = agent.host.handle_message(from(&[], "trap"));
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("plugin 'panicky' is quarantined")),
        "{reply:?}"
    );
}

#[test]
fn refused_builds_count_as_mapped_and_a_limit_stops_in_process_reloads() {
    let size = |file: &std::path::Path| std::fs::metadata(file).expect("size").len();
    let (v1, v2, other) = (fixture("counter-v1"), fixture("counter-v2"), fixture(""));
    // Room for the first build, one refused build and one reload, and half
    // of one more.
    let limit = size(&v1) + size(&other) + size(&v2) + size(&v1) / 2;
    let config = format!("[host]\nmapped_bytes_limit = {limit}\n");
    let options = agent_host::HostOptions {
        config: agent_host::AgentConfig::parse(&config).expect("config"),
        ..Default::default()
    };
    let agent = TestAgent::load_with(std::slice::from_ref(&v1), options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let mapped = |agent: &TestAgent| agent.host.status("counter").expect("counter").mapped;
    assert_eq!(mapped(&agent).generations, 1);

    // A build refused after it was mapped (it holds another plugin) stays
    // mapped, and is counted.
    let refused = agent
        .host
        .reload_from("counter", Some(&other))
        .expect_err("another plugin's build");
    assert!(
        refused.to_string().contains("holds no plugin of that name"),
        "{refused}"
    );
    assert_eq!(mapped(&agent).generations, 2);

    agent
        .host
        .reload_from("counter", Some(&v2))
        .expect("within the limit");
    assert_eq!(mapped(&agent).generations, 3);
    let count = agent.host.handle_message(agent_host::InboundMessage {
        text: "count".into(),
        ..Default::default()
    });
    assert_eq!(count.text, "v2: 1", "{count:?}");

    // The next one would pass the limit: refused before it is opened.
    let refused = agent
        .host
        .reload_from("counter", Some(&v1))
        .expect_err("over the limit")
        .to_string();
    assert!(refused.contains("host.mapped_bytes_limit"), "{refused}");
    assert!(refused.contains("run the plugin isolated"), "{refused}");
    assert!(refused.contains("process = [\"counter\"]"), "{refused}");
    assert_eq!(mapped(&agent).generations, 3);
    let count = agent.host.handle_message(agent_host::InboundMessage {
        text: "count".into(),
        ..Default::default()
    });
    assert_eq!(count.text, "v2: 2", "the serving build goes on: {count:?}");
}
