//! The pipeline's decisions, driven by plugin values in memory: no library
//! is built or loaded, so each test takes milliseconds.

use crate::plugin::in_memory::{host_with, message, source};
use crate::watchdog::test_clock;
use agent_host_plugin_sdk::{json, Action, ActionResult, Evaluation, Evaluator, Plugin, Provider};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn answering(name: &'static str, priority: i32, accepts: &'static str) -> Action {
    Action::new(name)
        .priority(priority)
        .validate(move |m| m.text().contains(accepts))
        .handler(move |_, _| Ok(ActionResult::text(name)))
}

#[test]
fn the_highest_priority_valid_action_answers() {
    let (host, report) = host_with(
        "",
        vec![
            source("a.so", || {
                Plugin::new("a", "1.0.0")
                    .action(answering("LOW", 1, "x"))
                    .action(answering("HIGH_BUT_INVALID", 9, "never"))
            }),
            source("b.so", || {
                Plugin::new("b", "1.0.0").action(answering("HIGH", 5, "x"))
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let reply = host.handle_message(message("x marks the spot"));
    assert_eq!(reply.text, "HIGH");
    assert_eq!(reply.action.map(|a| a.plugin), Some("b".to_string()));
}

#[test]
fn ties_go_to_the_earlier_plugin_then_the_earlier_action() {
    let (host, _) = host_with(
        "",
        vec![
            source("a.so", || {
                Plugin::new("a", "1.0.0")
                    .action(answering("FIRST", 3, "x"))
                    .action(answering("SECOND", 3, "x"))
            }),
            source("b.so", || {
                Plugin::new("b", "1.0.0").action(answering("THIRD", 3, "x"))
            }),
        ],
    );
    assert_eq!(host.handle_message(message("x")).text, "FIRST");
}

#[test]
fn a_failing_validate_is_reported_and_the_others_still_answer() {
    // A plugin's actions are asked in one call: the panic of one fails only
    // that action, and the next action of the same plugin is still asked.
    let (host, _) = host_with(
        "",
        vec![
            source("a.so", || {
                Plugin::new("a", "1.0.0")
                    .action(
                        Action::new("BROKEN")
                            .priority(10)
                            .validate(|_| panic!("validate exploded"))
                            .handler(|_, _| Ok(ActionResult::text("never"))),
                    )
                    .action(answering("SAME_PLUGIN", 5, ""))
            }),
            source("b.so", || {
                Plugin::new("b", "1.0.0").action(answering("FINE", 1, ""))
            }),
        ],
    );
    let reply = host.handle_message(message("hello"));
    assert_eq!(reply.text, "SAME_PLUGIN");
    assert!(
        reply.errors.iter().any(
            |e| e.contains("plugin 'a': action 'BROKEN' validate: panicked")
                && e.contains("validate exploded")
        ),
        "{:?}",
        reply.errors
    );
}

#[test]
fn no_valid_action_gets_the_fallback_text() {
    let (host, _) = host_with(
        "",
        vec![source("a.so", || {
            Plugin::new("a", "1.0.0").action(answering("ONLY", 1, "magic word"))
        })],
    );
    let reply = host.handle_message(message("nothing to see"));
    assert_eq!(reply.text, crate::NO_ACTION_TEXT);
    assert!(!reply.ok);
}

/// A plugin whose provider counts its calls and answers with the count.
fn counting_provider(calls: Arc<AtomicUsize>, ttl: Option<(Duration, bool)>) -> Plugin {
    let mut provider = Provider::new("counter")
        .get(move |_, _| Ok(json!(calls.fetch_add(1, Ordering::SeqCst) + 1)));
    if let Some((ttl, stale_while_revalidate)) = ttl {
        provider = provider.cache(ttl, stale_while_revalidate);
    }
    Plugin::new("p", "1.0.0").provider(provider).action(
        Action::new("SHOW").validate(|_| true).handler(|m, _| {
            let value = m.state("counter").cloned().unwrap_or_default();
            Ok(ActionResult::text(value.to_string()))
        }),
    )
}

#[test]
fn a_provider_without_cache_is_asked_for_every_message() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let (host, _) = host_with(
        "",
        vec![source("p.so", move || {
            counting_provider(Arc::clone(&seen), None)
        })],
    );
    assert_eq!(host.handle_message(message("a")).text, "1");
    assert_eq!(host.handle_message(message("b")).text, "2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_cached_provider_is_asked_once_per_ttl() {
    let clock = test_clock::install();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let (host, _) = host_with(
        "",
        vec![source("p.so", move || {
            counting_provider(Arc::clone(&seen), Some((Duration::from_millis(80), false)))
        })],
    );
    assert_eq!(host.handle_message(message("a")).text, "1");
    assert_eq!(
        host.handle_message(message("b")).text,
        "1",
        "served from the cache"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    clock.skip(120);
    assert_eq!(
        host.handle_message(message("c")).text,
        "2",
        "expired, asked again"
    );
}

#[test]
fn a_stale_value_is_served_at_once_while_one_refresh_runs() {
    let clock = test_clock::install();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let (host, _) = host_with(
        "",
        vec![source("p.so", move || {
            counting_provider(Arc::clone(&seen), Some((Duration::from_millis(30), true)))
        })],
    );
    assert_eq!(host.handle_message(message("a")).text, "1");
    clock.skip(60);
    assert_eq!(
        host.handle_message(message("b")).text,
        "1",
        "the stale value answers without waiting"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one background refresh");
    assert_eq!(
        host.handle_message(message("c")).text,
        "2",
        "the refreshed value"
    );
}

#[test]
fn one_failing_provider_is_left_out_and_the_rest_compose() {
    let (host, _) = host_with(
        "",
        vec![source("p.so", || {
            Plugin::new("p", "1.0.0")
                .provider(Provider::new("good").get(|_, _| Ok(json!("here"))))
                .provider(
                    Provider::new("bad").get(|_, _| -> agent_host_plugin_sdk::Result<()> {
                        agent_host_plugin_sdk::bail!("no data")
                    }),
                )
                .action(Action::new("SHOW").validate(|_| true).handler(|m, _| {
                    let good = m.state("good").cloned().unwrap_or_default();
                    let bad = m.state("bad").cloned().unwrap_or_default();
                    Ok(ActionResult::text(format!("{good} {bad}")))
                }))
        })],
    );
    let reply = host.handle_message(message("a"));
    assert_eq!(reply.text, r#""here" null"#);
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("plugin 'p': provider 'bad' get: no data")),
        "{:?}",
        reply.errors
    );
}

#[test]
fn a_handler_past_its_timeout_is_abandoned_and_sees_the_cancellation() {
    let saw_cancel = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&saw_cancel);
    let (host, _) = host_with(
        "",
        vec![source("slow.so", move || {
            let flag = Arc::clone(&flag);
            Plugin::new("slow", "1.0.0").action(
                Action::new("SLOW")
                    .timeout(Duration::from_millis(50))
                    .validate(|_| true)
                    .handler(move |_, rt| {
                        // Runs until cancelled; the bound only keeps a
                        // broken host from hanging the test, and ends in an
                        // answer the test refuses.
                        let until = Instant::now() + Duration::from_secs(20);
                        while Instant::now() < until {
                            if rt.is_cancelled() {
                                flag.store(1, Ordering::SeqCst);
                                return Err(agent_host_plugin_sdk::Error::new(
                                    agent_host_plugin_sdk::ErrorKind::Cancelled,
                                    "stopped",
                                ));
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Ok(ActionResult::text("too late"))
                    }),
            )
        })],
    );
    // `handle_message` runs the handler on this thread, so its answer comes
    // once the handler returns: a failed reply naming the timeout, from a
    // handler that saw its cancellation, shows the host cancelled it on time.
    let reply = host.handle_message(message("go"));
    assert!(!reply.ok, "{reply:?}");
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("timed out after 50 ms")),
        "{:?}",
        reply.errors
    );
    assert_eq!(saw_cancel.load(Ordering::SeqCst), 1, "the plugin saw it");
}

#[test]
fn every_evaluator_scores_the_message_and_a_bad_score_is_an_error() {
    let (host, _) = host_with(
        "",
        vec![source("e.so", || {
            Plugin::new("e", "1.0.0")
                .evaluator(
                    Evaluator::new("length")
                        .evaluate(|m, _| Ok(Evaluation::new(m.text().len() as f64 / 10.0, true))),
                )
                .evaluator(Evaluator::new("broken").evaluate(|_, _| Ok(Evaluation::new(7.0, true))))
        })],
    );
    let reply = host.handle_message(message("hello"));
    assert_eq!(reply.evaluations.len(), 1);
    assert_eq!(
        reply.evaluations.get(0).map(|e| e.evaluation.score),
        Some(0.5)
    );
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("evaluator 'broken' evaluate: score 7 is outside 0..1")),
        "{:?}",
        reply.errors
    );
}

#[test]
fn a_plugin_that_keeps_panicking_is_quarantined_and_the_rest_serve() {
    let (host, _) = host_with(
        "[host]\nquarantine_after_panics = 3\n",
        vec![
            source("bad.so", || {
                Plugin::new("bad", "1.0.0").action(
                    Action::new("BOOM")
                        .priority(10)
                        .validate(|_| true)
                        .handler(|_, _| panic!("boom")),
                )
            }),
            source("good.so", || {
                Plugin::new("good", "1.0.0").action(answering("FINE", 1, ""))
            }),
        ],
    );
    for _ in 0..3 {
        assert!(!host.handle_message(message("x")).ok);
    }
    assert!(host.status("bad").is_some_and(|s| s.quarantined));
    let reply = host.handle_message(message("x"));
    assert_eq!(reply.text, "FINE", "the quarantined plugin takes no part");
}

#[test]
fn a_cancellation_of_the_plugins_own_is_its_error_not_a_host_timeout() {
    let (host, _) = host_with(
        "",
        vec![source("io.so", || {
            Plugin::new("io", "1.0.0").action(
                Action::new("FETCH")
                    .timeout(Duration::from_secs(10))
                    .validate(|_| true)
                    .handler(|_, _| {
                        Err(agent_host_plugin_sdk::Error::new(
                            agent_host_plugin_sdk::ErrorKind::Cancelled,
                            "the upstream server cancelled the request",
                        ))
                    }),
            )
        })],
    );
    let reply = host.handle_message(message("go"));
    assert!(!reply.ok);
    assert_eq!(
        reply.errors,
        vec![
            "plugin 'io': action 'FETCH' handler: the upstream server cancelled the request"
                .to_string()
        ]
    );
}

/// An action whose `validate` counts its calls and accepts everything.
fn counted(name: &'static str, calls: Arc<AtomicUsize>) -> Action {
    Action::new(name)
        .validate(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            true
        })
        .handler(move |_, _| Ok(ActionResult::text(name)))
}

#[test]
fn validate_is_asked_only_when_the_actions_triggers_match() {
    let keyword_calls = Arc::new(AtomicUsize::new(0));
    let pattern_calls = Arc::new(AtomicUsize::new(0));
    let plain_calls = Arc::new(AtomicUsize::new(0));
    let (k, p, u) = (
        Arc::clone(&keyword_calls),
        Arc::clone(&pattern_calls),
        Arc::clone(&plain_calls),
    );
    let (host, report) = host_with(
        "",
        vec![
            source("t.so", move || {
                Plugin::new("t", "1.0.0")
                    .action(
                        counted("WEATHER", Arc::clone(&k))
                            .priority(5)
                            .keywords(["weather"]),
                    )
                    .action(
                        counted("REMIND", Arc::clone(&p))
                            .priority(5)
                            .pattern(r"^remind\b"),
                    )
            }),
            source("u.so", move || {
                Plugin::new("u", "1.0.0").action(counted("ANY", Arc::clone(&u)))
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);

    assert_eq!(host.handle_message(message("hello")).text, "ANY");
    assert_eq!(keyword_calls.load(Ordering::SeqCst), 0, "no keyword");
    assert_eq!(pattern_calls.load(Ordering::SeqCst), 0, "no pattern match");
    assert_eq!(
        plain_calls.load(Ordering::SeqCst),
        1,
        "no triggers: always asked"
    );

    assert_eq!(
        host.handle_message(message("Weather in Oslo?")).text,
        "WEATHER"
    );
    assert_eq!(keyword_calls.load(Ordering::SeqCst), 1);
    assert_eq!(pattern_calls.load(Ordering::SeqCst), 0);

    assert_eq!(host.handle_message(message("remind me")).text, "REMIND");
    assert_eq!(pattern_calls.load(Ordering::SeqCst), 1);
    assert_eq!(plain_calls.load(Ordering::SeqCst), 3);
}

#[test]
fn a_pattern_that_does_not_compile_fails_its_plugin_only() {
    let (host, report) = host_with(
        "",
        vec![
            source("bad.so", || {
                Plugin::new("bad", "1.0.0").action(answering("BROKEN", 1, "x").pattern("(x"))
            }),
            source("good.so", || {
                Plugin::new("good", "1.0.0").action(answering("FINE", 1, "x"))
            }),
        ],
    );
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let line = report.failures[0].to_string();
    assert!(
        line.contains("plugin 'bad'")
            && line.contains("actions[0].triggers.pattern")
            && line.contains("action 'BROKEN': the pattern does not compile"),
        "{line}"
    );
    assert_eq!(host.handle_message(message("x")).text, "FINE");
}

#[test]
fn a_panicking_evaluator_fails_alone_and_its_neighbour_still_scores() {
    let (host, _) = host_with(
        "",
        vec![source("e.so", || {
            Plugin::new("e", "1.0.0")
                .action(answering("ANY", 1, ""))
                .evaluator(Evaluator::new("explodes").evaluate(|_, _| panic!("evaluator exploded")))
                .evaluator(
                    Evaluator::new("scores").evaluate(|_, _| Ok(Evaluation::new(0.25, true))),
                )
        })],
    );
    let reply = host.handle_message(message("hello"));
    let verdicts: Vec<(&str, &str, f64)> = reply
        .evaluations
        .iter()
        .map(|e| (e.plugin, e.evaluator, e.evaluation.score))
        .collect();
    assert_eq!(verdicts, vec![("e", "scores", 0.25)]);
    assert_eq!(reply.errors.len(), 1, "{:?}", reply.errors);
    assert!(
        reply.errors[0].starts_with("plugin 'e': evaluator 'explodes' evaluate: panicked")
            && reply.errors[0].contains("evaluator exploded"),
        "{:?}",
        reply.errors
    );
    let json = serde_json::to_value(&reply).expect("a reply serializes");
    assert_eq!(
        json["evaluations"],
        serde_json::json!([{"plugin": "e", "evaluator": "scores", "score": 0.25, "passed": true, "metadata": null}])
    );
}
