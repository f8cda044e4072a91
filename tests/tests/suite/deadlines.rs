//! Deadlines and bulkheads on a real plugin file: every call into a plugin
//! is abandoned at its deadline and the message is answered on time, a
//! service chain cannot outlive the call that started it, and a plugin at
//! its limit of calls in flight is refused at once while another serves.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage, Reply};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn agent(config: &str) -> TestAgent {
    let options = HostOptions {
        config: AgentConfig::parse(config).expect("config"),
        ..HostOptions::default()
    };
    let files = [
        test_support::fixture("laggard"),
        test_support::fixture("counter-v1"),
    ];
    let agent = TestAgent::load_with(&files, options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    agent
}

fn message(text: &str) -> InboundMessage {
    InboundMessage {
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// Answers through the path front-ends use, and times it.
fn answer(agent: &TestAgent, text: &str) -> (Reply, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let reply = runtime.block_on(agent.host.answer(message(text)));
    (reply, started.elapsed())
}

fn has_error(reply: &Reply, expected: &str) -> bool {
    reply.errors.iter().any(|e| e.contains(expected))
}

#[test]
fn a_hung_provider_is_left_out_and_its_cached_value_served_stale() {
    let agent = agent("[host]\nprovider_backoff_after = 10\n");
    let (fresh, _) = answer(&agent, "weather?");
    assert_eq!(
        fresh.text, r#"weather="fresh" stale=false"#,
        "{:?}",
        fresh.errors
    );
    std::thread::sleep(Duration::from_millis(5));
    let (late, took) = answer(&agent, "weather? hang-provider");
    assert!(took < Duration::from_secs(2), "answered on time: {took:?}");
    assert_eq!(
        late.text, r#"weather="fresh" stale=true"#,
        "{:?}",
        late.errors
    );
    assert!(
        has_error(
            &late,
            "plugin 'laggard': provider 'laggard-weather' get: timed out after 100 ms"
        ),
        "{:?}",
        late.errors
    );
}

#[test]
fn a_slow_validate_is_abandoned_and_the_message_answered() {
    let agent = agent("[host]\nvalidate_timeout_ms = 200\n");
    let (reply, took) = answer(&agent, "slow-validate");
    assert!(took < Duration::from_secs(2), "answered on time: {took:?}");
    assert!(
        has_error(
            &reply,
            "plugin 'laggard': actions' validate: timed out after 200 ms"
        ),
        "{:?}",
        reply.errors
    );
}

#[test]
fn a_hung_evaluator_is_abandoned_and_sees_the_cancellation() {
    let agent = agent("[host]\nevaluator_timeout_ms = 200\n");
    let (reply, took) = answer(&agent, "hang-evaluator");
    assert!(took < Duration::from_secs(2), "answered on time: {took:?}");
    assert!(reply.ok, "the action still answered: {:?}", reply.errors);
    assert!(
        has_error(
            &reply,
            "plugin 'laggard': evaluator 'laggard-hung' evaluate: timed out after 200 ms"
        ),
        "{:?}",
        reply.errors
    );
}

#[test]
fn a_service_chain_cannot_outlive_the_handler_that_started_it() {
    let agent = agent("");
    let (reply, took) = answer(&agent, "chain");
    assert!(took < Duration::from_secs(2), "answered on time: {took:?}");
    assert!(
        has_error(
            &reply,
            "plugin 'laggard': action 'CHAIN' handler: timed out after 300 ms"
        ),
        "{:?}",
        reply.errors
    );
    // The service the handler called had at most what was left of the
    // handler's deadline: it ended then, not after its own 10 s.
    let until = Instant::now() + Duration::from_secs(5);
    let waited = loop {
        let (status, _) = answer(&agent, "chain-status");
        let waited: Option<u64> = status
            .text
            .strip_prefix("last wait ")
            .and_then(|t| t.strip_suffix(" ms"))
            .and_then(|t| t.parse().ok())
            .filter(|&ms| ms != u64::MAX);
        if let Some(waited) = waited {
            break waited;
        }
        assert!(Instant::now() < until, "the service call never ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(waited <= 1_000, "the service waited {waited} ms");
}

#[test]
fn a_plugin_at_its_limit_is_refused_at_once_while_another_plugin_serves() {
    let agent = Arc::new(agent("[host]\nmax_calls_in_flight = 2\n"));
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let agent = Arc::clone(&agent);
            std::thread::spawn(move || agent.host.handle_message(message("hang-handler")))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (refused, took) = answer(&agent, "hang-handler");
    assert!(
        took < Duration::from_millis(500),
        "refused at once: {took:?}"
    );
    assert!(
        has_error(&refused, "plugin 'laggard'")
            && has_error(&refused, "2 calls in flight (its limit)"),
        "{:?}",
        refused.errors
    );
    let (counted, took) = answer(&agent, "count");
    assert!(
        took < Duration::from_millis(500),
        "the other plugin serves: {took:?}"
    );
    assert!(counted.ok, "{:?}", counted.errors);
    for call in stuck {
        assert_eq!(call.join().expect("joins").text, "woke up");
    }
}

#[test]
fn a_late_event_handler_is_abandoned_and_sees_the_cancellation() {
    let agent = agent("[host]\nevent_timeout_ms = 200\n");
    let started = Instant::now();
    let failures = agent.host.emit("laggard:tick", serde_json::Value::Null);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .error
            .contains("plugin 'laggard': event handler for 'laggard:tick': timed out after 200 ms"),
        "{failures:?}"
    );
    // The handler's FFI entry has no cancellation signal: it asked the host.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = answer(&agent, "tick-status");
        if status.text == "ticks that saw their cancellation: 1" {
            break;
        }
        assert!(Instant::now() < until, "{}", status.text);
        std::thread::sleep(Duration::from_millis(20));
    }
}
