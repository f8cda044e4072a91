//! The agent runtime's semantics, on real plugin files: action selection,
//! timeouts with cancellation, rate limits, sender permissions, provider
//! caching and subscriptions, evaluators and their batch form, config
//! schemas, grants, quarantine, and composed plugins.

use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost, Stage};
use agent_host_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn msg(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

fn stats(host: &PluginHost) -> Value {
    host.call_service("runtime", "stats", &Value::Null)
        .expect("stats")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_highest_priority_valid_action_runs_and_ties_go_to_the_first() {
    let (host, report, _dir) = load_files(&[fixture("runtime")]);
    assert!(report.is_clean(), "{:?}", report.failures);
    assert_eq!(host.handle_message(msg("priority")).text, "high");
    for _ in 0..5 {
        assert_eq!(
            host.handle_message(msg("tie")).text,
            "first",
            "ties are deterministic"
        );
    }
}

#[test]
fn a_slow_handler_times_out_on_time_and_sees_the_cancellation() {
    let (host, _report, _dir) = load_files(&[fixture("runtime")]);
    let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&failed);
    host.on("action:failed", move |event| {
        seen.lock().expect("lock").push(event.payload.clone());
        Ok(())
    });
    // The handler runs 5 s unless cancelled: a failed reply naming the
    // timeout, and the plugin seeing its cancellation (below), show that
    // control came back at the deadline, not when the handler chose to end.
    let reply = host.handle_message(msg("slow"));
    assert!(!reply.ok);
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("action 'SLOW' handler: timed out after 200 ms")),
        "{reply:?}"
    );
    let events = failed.lock().expect("lock").clone();
    assert_eq!(events.len(), 1, "{events:?}");
    // The watchdog's clock counts whole milliseconds from its own start,
    // the event's duration fractions of one from the call's: the deadline
    // of 200 ms is reached no sooner than 1 ms before 200 ms by the call's
    // clock (seen: 199.95 ms).
    assert!(
        events[0]["duration_ms"]
            .as_f64()
            .is_some_and(|d| d >= 199.0),
        "{events:?}"
    );
    wait_until("the plugin to see its cancellation", || {
        stats(&host)["saw_cancel"] == true
    });
    // The host keeps serving.
    assert_eq!(host.handle_message(msg("priority")).text, "high");
}

#[test]
fn a_rate_limited_action_refuses_past_its_limit() {
    let (host, _report, _dir) = load_files(&[fixture("runtime")]);
    assert!(host.handle_message(msg("limited")).ok);
    assert!(host.handle_message(msg("limited")).ok);
    let third = host.handle_message(msg("limited"));
    assert!(!third.ok);
    assert!(third.text.contains("busy"), "{third:?}");
    assert!(
        third
            .errors
            .iter()
            .any(|e| e.contains("rate limit reached (2 per 60000 ms)")),
        "{third:?}"
    );
    assert!(host.metrics_text().contains(r#"outcome="rate_limited"} 1"#));
}

/// A host on the `runtime` fixture with `config`.
fn runtime_host(config: &str) -> (PluginHost, tempfile::TempDir) {
    let config = AgentConfig::parse(config).expect("config");
    let host = PluginHost::new(HostOptions {
        config,
        ..HostOptions::default()
    })
    .expect("host");
    let dir = folder_with(&[fixture("runtime")]);
    host.load_dir(dir.path()).expect("load");
    (host, dir)
}

#[test]
fn an_action_needs_the_senders_permission() {
    // By default a message's claimed permissions are ignored: without
    // [senders] nobody holds any.
    let (host, _report, _dir) = load_files(&[fixture("runtime")]);
    let denied = host.handle_message(msg("secret"));
    assert!(!denied.ok);
    assert!(denied.text.contains("'data:secret'"), "{denied:?}");
    let mut claimed = msg("secret");
    claimed.permissions = vec!["data:secret".into()];
    let ignored = host.handle_message(claimed.clone());
    assert!(!ignored.ok, "a claim is ignored by default: {ignored:?}");

    // The development switch honours the claim.
    let (trusting, _dir) = runtime_host("[host]\ntrust_claimed_permissions = true\n");
    assert!(!trusting.handle_message(msg("secret")).ok);
    assert_eq!(trusting.handle_message(claimed.clone()).text, "the secret");

    // With [senders] in the config, the host assigns permissions and ignores the client's claim.
    let (host, _dir) = runtime_host("[senders]\nalice = [\"data:secret\"]\n");
    assert!(
        !host.handle_message(claimed).ok,
        "tester's claim is ignored"
    );
    let mut alice = msg("secret");
    alice.sender = "alice".into();
    assert!(host.handle_message(alice).ok);
}

#[test]
fn providers_honour_ttl_stale_while_revalidate_and_pushes() {
    let (host, _report, _dir) = load_files(&[fixture("runtime")]);
    let first = host.handle_message(msg("state"));
    assert_eq!(first.data["plain"]["calls"], 1);
    assert_eq!(first.data["fresh"]["calls"], 1);
    assert_eq!(first.data["swr"]["calls"], 1);
    let second = host.handle_message(msg("state"));
    assert_eq!(
        second.data["plain"]["calls"], 2,
        "no cache: called every time"
    );
    assert_eq!(
        second.data["fresh"]["calls"], 1,
        "fresh within its ttl: cached"
    );

    std::thread::sleep(Duration::from_millis(80));
    let stale = host.handle_message(msg("state"));
    assert_eq!(
        stale.data["swr"]["calls"], 1,
        "past the ttl the stale value is served at once"
    );
    wait_until("the background refresh", || stats(&host)["swr"] == 2);
    let refreshed = host.handle_message(msg("state"));
    assert_eq!(
        refreshed.data["swr"]["calls"], 2,
        "then the refreshed value"
    );

    wait_until("pushed values", || {
        host.handle_message(msg("state")).data["pushed"]["tick"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    let pushes = stats(&host)["pushes"].as_u64().expect("pushes");
    assert!(pushes >= 2);
    let errors = host.shutdown();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn evaluators_reject_bad_scores_and_batches_use_the_batch_form() {
    let (host, _report, _dir) = load_files(&[fixture("runtime")]);
    let reply = host.handle_message(msg("badscore"));
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("evaluator 'bad-score' evaluate: score 1.5 is outside 0..1")),
        "{reply:?}"
    );
    assert!(
        reply
            .evaluations
            .iter()
            .any(|e| e.evaluator == "batch-size"),
        "the other evaluator still ran"
    );

    let replies = host.handle_batch(vec![msg("tie"), msg("priority"), msg("nothing")]);
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[1].text, "high");
    for reply in &replies {
        let batch = reply
            .evaluations
            .iter()
            .find(|e| e.evaluator == "batch-size")
            .expect("evaluated");
        assert_eq!(batch.evaluation.metadata["batch_size"], 3, "{reply:?}");
    }
    assert_eq!(
        stats(&host)["batches"],
        json!([3]),
        "one batch call for three messages"
    );
}

#[test]
fn an_invalid_config_fails_that_plugin_only_naming_the_field() {
    let config = AgentConfig::parse("[plugins.runtime]\nlevel = 0\n").expect("config");
    let host = PluginHost::new(HostOptions {
        config,
        ..HostOptions::default()
    })
    .expect("host");
    let dir = folder_with(&[fixture("runtime"), fixture("multi")]);
    let report = host.load_dir(dir.path()).expect("load");
    let failure = report.failure_of("runtime").expect("runtime fails");
    assert_eq!(failure.stage(), Stage::Config);
    assert!(
        failure.cause().starts_with("config field `/level`: "),
        "{failure}"
    );
    let line = failure.to_string();
    assert!(
        line.contains("plugin 'runtime': config field `/level`")
            && line.matches("plugin 'runtime'").count() == 1,
        "the plugin is named once: {line}"
    );
    assert!(report.loaded("multi-one") && report.loaded("multi-two"));
}

#[test]
fn grants_narrow_permissions_and_denials_are_counted() {
    // runtime requests config:* but the operator grants nothing: on_load cannot read its config.
    let config =
        AgentConfig::parse("[grants]\nmulti-two = [\"service:multi-one\"]\n").expect("config");
    let host = PluginHost::new(HostOptions {
        config,
        ..HostOptions::default()
    })
    .expect("host");
    let dir = folder_with(&[fixture("runtime"), fixture("multi")]);
    let report = host.load_dir(dir.path()).expect("load");
    let failure = report.failure_of("runtime").expect("runtime fails");
    assert!(
        failure.cause().contains("lacks permission 'config:level'"),
        "{failure}"
    );
    assert_eq!(
        host.handle_message(msg("multi")).text,
        "multi-one says pong"
    );
    assert!(
        host.metrics_text().contains(
            r#"agent_host_permission_denied_total{plugin="runtime",permission="config:level"} 1"#
        ),
        "{}",
        host.metrics_text()
    );
}

#[test]
fn a_plugin_that_keeps_panicking_is_quarantined() {
    let (host, _report, _dir) = load_files(&[fixture("panicky"), fixture("multi")]);
    let quarantined = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&quarantined);
    host.on("plugin:quarantined", move |event| {
        assert_eq!(event.payload["plugin"], "panicky");
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    for _ in 0..3 {
        assert!(!host.handle_message(msg("panic:handler")).ok);
    }
    assert!(quarantined.load(std::sync::atomic::Ordering::SeqCst));
    assert!(host.status("panicky").expect("status").quarantined);
    let reply = host.handle_message(msg("trap"));
    assert!(
        reply.action.is_none(),
        "a quarantined plugin's actions do not run: {reply:?}"
    );
    let error = host
        .call_service("trap", "ok", &Value::Null)
        .expect_err("out of service");
    assert!(error.message.contains("quarantined"), "{error}");
    assert_eq!(
        host.handle_message(msg("multi")).text,
        "multi-one says pong",
        "others keep serving"
    );
}

#[test]
fn a_composed_plugin_offers_its_parts_components_and_hooks() {
    let (host, report, _dir) = load_files(&[fixture("composed")]);
    assert!(report.is_clean(), "{:?}", report.failures);
    assert_eq!(report.loaded[0].actions, vec!["PART_A", "PART_B"]);
    assert_eq!(host.handle_message(msg("part-b")).text, "part-b answered");
    let log = host
        .call_service("composed", "log", &Value::Null)
        .expect("log");
    assert_eq!(log, json!(["load part-a", "load part-b"]));
}

#[test]
fn a_reused_state_still_shows_pushed_values_and_expires_with_its_cache() {
    let (host, report, _dir) = load_files(&[fixture("pushed-state")]);
    assert!(report.is_clean(), "{:?}", report.failures);
    let first = host.handle_message(msg("state"));
    assert_eq!(first.data["cached"]["calls"], 1);
    // Pushes change the state between messages even though every provider
    // is cached or pushed (the composed state is reused otherwise).
    let tick_of = |reply: &agent_host::Reply| reply.data["ticker"]["tick"].as_u64().unwrap_or(0);
    let start_tick = tick_of(&host.handle_message(msg("state")));
    wait_until("a newer pushed value", || {
        tick_of(&host.handle_message(msg("state"))) > start_tick
    });
    // Within its ttl the cached provider is not called again...
    let soon = host.handle_message(msg("state"));
    assert!(soon.data["cached"]["calls"].as_u64() <= Some(2), "{soon:?}");
    // ...and after it, it is.
    std::thread::sleep(Duration::from_millis(250));
    let later = host.handle_message(msg("state"));
    assert!(
        later.data["cached"]["calls"].as_u64() >= Some(2),
        "{later:?}"
    );
}
