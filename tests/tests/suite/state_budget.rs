//! The state budget on real plugin files: a provider slower than
//! `state_budget_ms` costs a message no more than the budget (and a
//! margin), the first message included and after the provider's backoff
//! window ends; its call goes on, and the value it returns is served to
//! later messages. The `sluggish` fixture's provider is the slow one, in
//! process or in a worker; `counter-v1` is the unrelated plugin the
//! messages are for.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage, Reply};
use serde_json::json;
use std::time::{Duration, Instant};

const PROGRAM: &str = env!("CARGO_BIN_EXE_test-agent-host");

/// The budget these tests configure.
const BUDGET: Duration = Duration::from_millis(100);

/// What a reply may take beyond the budget: the watchdog's look (a tick
/// or two), a new thread, the other plugins' calls, a loaded machine.
/// Generous, and still far below the 1.9 s a message waiting for the
/// provider would take.
const MARGIN: Duration = Duration::from_millis(800);

/// The fixtures with `sluggish`'s provider answering after
/// `answer_after_ms`, in a worker if `isolated`; a provider that fails
/// twice in a row is backed off for 300 ms.
fn agent(isolated: bool, answer_after_ms: u64) -> TestAgent {
    let isolation = if isolated {
        format!("[isolation]\nprocess = [\"sluggish\"]\nworker_program = \"{PROGRAM}\"\n")
    } else {
        String::new()
    };
    let config = format!(
        "[host]\nstate_budget_ms = {}\nprovider_backoff_after = 2\nprovider_backoff_max_ms = 300\n\
         {isolation}[plugins.sluggish]\nanswer_after_ms = {answer_after_ms}\n",
        BUDGET.as_millis()
    );
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let files = [
        test_support::fixture("sluggish"),
        test_support::fixture("counter-v1"),
    ];
    let agent = TestAgent::load_with(&files, options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    agent
}

/// Answers `text` through the path front-ends use; the reply and how long
/// it took.
fn timed_answer(agent: &TestAgent, text: &str) -> (Reply, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let reply = runtime.block_on(agent.host.answer(InboundMessage {
        text: text.into(),
        ..InboundMessage::default()
    }));
    (reply, started.elapsed())
}

/// How many of the provider's gets began and returned, as the plugin
/// counts them.
fn provider_calls(agent: &TestAgent) -> (u64, u64) {
    let (reply, _) = timed_answer(agent, "sluggish-calls");
    let numbers: Vec<u64> = reply
        .text
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    match numbers[..] {
        [began, returned] => (began, returned),
        _ => panic!("unexpected answer: {reply:?}"),
    }
}

fn has_error(reply: &Reply, expected: &str) -> bool {
    reply.errors.iter().any(|e| e.contains(expected))
}

/// Messages for `counter-v1` for 6 s while `sluggish`'s provider never
/// answers within its 2 s deadline: none waits past the budget, neither the
/// first nor those after a backoff window, and the provider is asked again
/// once each failure is counted and each backoff window ends.
fn a_provider_that_never_answers_costs_each_message_at_most_the_budget(isolated: bool) {
    let agent = agent(isolated, 60_000);
    let until = Instant::now() + Duration::from_secs(6);
    let mut replies = 0;
    let mut backed_off = false;
    while Instant::now() < until {
        let (reply, took) = timed_answer(&agent, "count");
        assert!(reply.ok, "{reply:?}");
        assert!(
            took < BUDGET + MARGIN,
            "message {replies} waited {took:?} for the provider: {:?}",
            reply.errors
        );
        if replies == 0 {
            assert!(
                has_error(
                    &reply,
                    "plugin 'sluggish': provider 'sluggish-api' get: slower than the state budget (100 ms)"
                ),
                "{:?}",
                reply.errors
            );
        }
        backed_off |= has_error(&reply, "backed off after 2 failures");
        replies += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(backed_off, "the provider was never backed off");
    let (began, _) = provider_calls(&agent);
    assert!(
        began >= 3,
        "the provider was asked {began} times: not again after its backoff window"
    );
}

#[test]
fn a_provider_that_never_answers_costs_each_message_at_most_the_budget_in_process() {
    a_provider_that_never_answers_costs_each_message_at_most_the_budget(false);
}

#[test]
fn a_provider_that_never_answers_costs_each_message_at_most_the_budget_isolated() {
    a_provider_that_never_answers_costs_each_message_at_most_the_budget(true);
}

/// The provider answers after 1 s: the first message goes on without it,
/// the messages while its call runs do not ask it again, and once the call
/// returns its value is served fresh from the cache, without another call.
fn a_slow_providers_late_value_is_cached_for_later_messages(isolated: bool) {
    let agent = agent(isolated, 1_000);
    let (first, took) = timed_answer(&agent, "sluggish-state");
    assert!(took < BUDGET + MARGIN, "the first message waited {took:?}");
    assert_eq!(
        first.data,
        json!({"api": null, "stale": false}),
        "{:?}",
        first.errors
    );
    assert!(
        has_error(&first, "slower than the state budget (100 ms)"),
        "{:?}",
        first.errors
    );
    // While the call runs, later messages leave the provider out at once.
    let (meanwhile, took) = timed_answer(&agent, "sluggish-state");
    assert!(took < BUDGET + MARGIN, "a later message waited {took:?}");
    let (began, _) = provider_calls(&agent);
    if meanwhile.data["api"].is_null() {
        assert!(
            has_error(&meanwhile, "still answering an earlier message"),
            "{:?}",
            meanwhile.errors
        );
        assert_eq!(began, 1, "the provider was asked again while its call ran");
    }
    let give_up = Instant::now() + Duration::from_secs(20);
    let cached = loop {
        let (reply, took) = timed_answer(&agent, "sluggish-state");
        assert!(took < BUDGET + MARGIN, "a message waited {took:?}");
        if !reply.data["api"].is_null() {
            break reply;
        }
        assert!(Instant::now() < give_up, "the late value never came");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        cached.data,
        json!({"api": {"call": 1}, "stale": false}),
        "{:?}",
        cached.errors
    );
    assert!(cached.errors.is_empty(), "{:?}", cached.errors);
    assert_eq!(
        provider_calls(&agent),
        (1, 1),
        "the cached value was served without another call"
    );
}

#[test]
fn a_slow_providers_late_value_is_cached_for_later_messages_in_process() {
    a_slow_providers_late_value_is_cached_for_later_messages(false);
}

#[test]
fn a_slow_providers_late_value_is_cached_for_later_messages_isolated() {
    a_slow_providers_late_value_is_cached_for_later_messages(true);
}
