//! Deadlines and bulkheads on a real plugin file: every call into a plugin
//! is abandoned at its deadline and the message is answered on time, a
//! service chain cannot outlive the call that started it, and a plugin at
//! its limit of calls in flight is refused at once while another serves.
//!
//! The `laggard` fixture holds its late calls until told `release`, and
//! counts them once they return: that the host answered on time is shown by
//! its answering while no late call had returned, never by a duration.

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

/// Answers through the path front-ends use.
fn answer(agent: &TestAgent, text: &str) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(agent.host.answer(message(text)))
}

/// Asserts that none of the laggard's late calls has returned yet (so the
/// host did not wait for them), then lets them go.
fn assert_answered_before_the_late_calls_returned(agent: &TestAgent) {
    assert_eq!(
        answer(agent, "late-returns").text,
        "late calls returned: 0",
        "the host waited for a late call"
    );
    assert_eq!(answer(agent, "release").text, "released");
}

fn has_error(reply: &Reply, expected: &str) -> bool {
    reply.errors.iter().any(|e| e.contains(expected))
}

#[test]
fn a_hung_provider_is_left_out_and_its_cached_value_served_stale() {
    // A budget longer than the provider's deadline: the call times out.
    let agent = agent("[host]\nprovider_backoff_after = 10\nstate_budget_ms = 1000\n");
    let fresh = answer(&agent, "weather?");
    assert_eq!(
        fresh.text, r#"weather="fresh" stale=false"#,
        "{:?}",
        fresh.errors
    );
    // The cached value (1 ms, on the host's monotonic clock) expires.
    std::thread::sleep(Duration::from_millis(5));
    let late = answer(&agent, "weather? hang-provider");
    assert_answered_before_the_late_calls_returned(&agent);
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
    let reply = answer(&agent, "slow-validate");
    assert_answered_before_the_late_calls_returned(&agent);
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
    let reply = answer(&agent, "hang-evaluator");
    assert_answered_before_the_late_calls_returned(&agent);
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
    let reply = answer(&agent, "chain");
    assert!(
        has_error(
            &reply,
            "plugin 'laggard': action 'CHAIN' handler: timed out after 300 ms"
        ),
        "{:?}",
        reply.errors
    );
    // The service the handler called had at most what was left of the
    // handler's deadline: it was cancelled then, not left to its own 10 s.
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = answer(&agent, "chain-status").text;
        if status != "no wait ended yet" {
            break status;
        }
        assert!(Instant::now() < until, "the service call never ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, "the last wait ended by its cancellation");
}

#[test]
fn a_plugin_at_its_limit_is_refused_at_once_while_another_plugin_serves() {
    let agent = Arc::new(agent("[host]\nmax_calls_in_flight = 2\n"));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&started);
    agent.host.on("action:started", move |event| {
        if event.payload["action"] == "HANG" {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    });
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let agent = Arc::clone(&agent);
            std::thread::spawn(move || agent.host.handle_message(message("hang-handler")))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(20);
    while started.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < until, "the two calls never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each stuck call sleeps 5 s: a refusal naming the limit, and the
    // other plugin's answer, come while both are still running.
    let refused = answer(&agent, "hang-handler");
    assert!(
        has_error(&refused, "plugin 'laggard'")
            && has_error(&refused, "2 calls in flight (its limit)"),
        "{:?}",
        refused.errors
    );
    let counted = answer(&agent, "count");
    assert!(counted.ok, "{:?}", counted.errors);
    assert!(
        stuck.iter().all(|call| !call.is_finished()),
        "served while the stuck calls ran"
    );
    for call in stuck {
        assert_eq!(call.join().expect("joins").text, "woke up");
    }
}

#[test]
fn a_late_event_handler_is_abandoned_and_sees_the_cancellation() {
    let agent = agent("[host]\nevent_timeout_ms = 200\n");
    let failures = agent.host.emit("laggard:tick", serde_json::Value::Null);
    assert_answered_before_the_late_calls_returned(&agent);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .error
            .contains("plugin 'laggard': event handler for 'laggard:tick': timed out after 200 ms"),
        "{failures:?}"
    );
    // The handler's FFI entry has no cancellation signal: it asked the host.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let status = answer(&agent, "tick-status");
        if status.text == "ticks that saw their cancellation: 1" {
            break;
        }
        assert!(Instant::now() < until, "{}", status.text);
        std::thread::sleep(Duration::from_millis(20));
    }
}
