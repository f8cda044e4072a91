//! Deadlines and bulkheads, driven by plugin values in memory: a late call
//! is abandoned on time and the message goes on without it; a plugin with
//! too many calls in flight is refused at once while the others serve.
//!
//! Plugins here block on a [`Gate`] instead of sleeping, so every stuck
//! call is released when its test ends. That the host answered on time is
//! shown by its answering while the gate still held the late call, never by
//! a measured duration; time the host must see pass is skipped on the
//! watchdog's clock.

use crate::plugin::in_memory::{host_with, message, source};
use crate::watchdog::test_clock;
use agent_host_plugin_sdk::{json, Action, ActionResult, Evaluation, Evaluator, Plugin, Provider};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Holds plugin calls until the test opens it (at the latest after 10 s,
/// so a failed test leaves no call stuck for long), and counts the calls it
/// let through.
#[derive(Clone, Default)]
struct Gate(Arc<(AtomicBool, AtomicUsize)>);

impl Gate {
    fn wait(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.0 .0.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.0 .1.fetch_add(1, Ordering::SeqCst);
    }

    fn open(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
    }

    /// Whether no call has got through yet: a host that answers while this
    /// holds did not wait for the held call.
    fn holds(&self) -> bool {
        self.0 .1.load(Ordering::SeqCst) == 0
    }
}

fn answering(name: &'static str, accepts: &'static str) -> Action {
    Action::new(name)
        .validate(move |m| m.text().contains(accepts))
        .handler(move |_, _| Ok(ActionResult::text(name)))
}

fn answer(host: &crate::PluginHost, text: &str) -> crate::Reply {
    host.answer_blocking(message(text))
}

#[test]
fn a_hung_provider_is_left_out_on_time_and_its_cached_value_served_stale() {
    let clock = test_clock::install();
    let gate = Gate::default();
    let hang = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let (plugin_gate, plugin_hang, plugin_asked) =
        (gate.clone(), Arc::clone(&hang), Arc::clone(&asked));
    let (host, report) = host_with(
        // A budget longer than the provider's deadline: the call times out.
        "[host]\nprovider_backoff_after = 2\nstate_budget_ms = 1000\n",
        vec![
            source("slow.so", move || {
                let (gate, hang, asked) = (
                    plugin_gate.clone(),
                    Arc::clone(&plugin_hang),
                    Arc::clone(&plugin_asked),
                );
                Plugin::new("slow", "1.0.0").provider(
                    Provider::new("weather")
                        .timeout(Duration::from_millis(100))
                        .cache(Duration::from_millis(1), false)
                        .get(move |_, _| {
                            asked.fetch_add(1, Ordering::SeqCst);
                            if hang.load(Ordering::SeqCst) {
                                gate.wait();
                            }
                            Ok(json!({"sky": "clear"}))
                        }),
                )
            }),
            source("count.so", || {
                Plugin::new("count", "1.0.0").action(answering("COUNT", "count"))
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let first = answer(&host, "count");
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    hang.store(true, Ordering::SeqCst);
    // The cached value (1 ms on the watchdog's clock) expires.
    clock.skip(5);

    let late = answer(&host, "count");
    assert_eq!(late.text, "COUNT", "the message is answered without it");
    assert!(gate.holds(), "answered while the provider was still held");
    assert!(
        late.errors
            .iter()
            .any(|e| e == "plugin 'slow': provider 'weather' get: timed out after 100 ms (the host cancelled the call and went on without it)"),
        "{:?}",
        late.errors
    );

    // The second timeout in a row backs the provider off: the next message
    // does not ask it, and is served the stale value at once.
    answer(&host, "count");
    assert!(gate.holds(), "answered while the provider was still held");
    let asked_before = asked.load(Ordering::SeqCst);
    let backed_off = answer(&host, "count");
    assert_eq!(asked.load(Ordering::SeqCst), asked_before, "not asked");
    assert!(
        backed_off
            .errors
            .iter()
            .any(|e| e.contains("provider 'weather' get: backed off after 2 failures in a row")),
        "{:?}",
        backed_off.errors
    );
    gate.open();
}

#[test]
fn a_provider_past_the_state_budget_is_left_behind_uncancelled_and_its_value_cached() {
    let gate = Gate::default();
    let cancelled = Arc::new(AtomicBool::new(true));
    let asked = Arc::new(AtomicUsize::new(0));
    let (plugin_gate, plugin_cancelled, plugin_asked) =
        (gate.clone(), Arc::clone(&cancelled), Arc::clone(&asked));
    let (host, report) = host_with(
        "[host]\nstate_budget_ms = 50\n",
        vec![
            source("slow.so", move || {
                let (gate, cancelled, asked) = (
                    plugin_gate.clone(),
                    Arc::clone(&plugin_cancelled),
                    Arc::clone(&plugin_asked),
                );
                Plugin::new("slow", "1.0.0").provider(
                    Provider::new("weather")
                        .timeout(Duration::from_secs(30))
                        .cache(Duration::from_secs(600), false)
                        .get(move |_, rt| {
                            asked.fetch_add(1, Ordering::SeqCst);
                            gate.wait();
                            cancelled.store(rt.is_cancelled(), Ordering::SeqCst);
                            Ok(json!({"sky": "clear"}))
                        }),
                )
            }),
            source("count.so", || {
                Plugin::new("count", "1.0.0").action(answering("COUNT", "count"))
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let first = answer(&host, "count");
    assert_eq!(first.text, "COUNT");
    assert!(gate.holds(), "answered while the provider was still held");
    assert!(
        first.errors.iter().any(|e| e
            == "plugin 'slow': provider 'weather' get: slower than the state budget (50 ms); \
                left out, its call goes on within its own deadline of 30000 ms"),
        "{:?}",
        first.errors
    );
    // While the call runs, the provider is neither asked nor waited for.
    let meanwhile = answer(&host, "count");
    assert!(gate.holds(), "answered while the provider was still held");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "asked again");
    assert!(
        meanwhile
            .errors
            .iter()
            .any(|e| e.contains("provider 'weather' get: still answering an earlier message")),
        "{:?}",
        meanwhile.errors
    );
    gate.open();
    let give_up = Instant::now() + Duration::from_secs(10);
    while asked.load(Ordering::SeqCst) == 1 && !answer(&host, "count").errors.is_empty() {
        assert!(Instant::now() < give_up, "the late value was never served");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !cancelled.load(Ordering::SeqCst),
        "the call left behind was cancelled"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1, "served from the cache");
}

#[test]
fn the_context_marks_a_stale_value() {
    let clock = test_clock::install();
    let gate = Gate::default();
    let hang = Arc::new(AtomicBool::new(false));
    let (plugin_gate, plugin_hang) = (gate.clone(), Arc::clone(&hang));
    let (host, _) = host_with(
        "",
        vec![source("p.so", move || {
            let (gate, hang) = (plugin_gate.clone(), Arc::clone(&plugin_hang));
            Plugin::new("p", "1.0.0")
                .provider(
                    Provider::new("weather")
                        .timeout(Duration::from_millis(50))
                        .cache(Duration::from_millis(1), false)
                        .get(move |_, _| {
                            if hang.load(Ordering::SeqCst) {
                                gate.wait();
                            }
                            Ok(json!("sunny"))
                        }),
                )
                .action(Action::new("SHOW").validate(|_| true).handler(|m, _| {
                    Ok(ActionResult::text(format!(
                        "{} stale={}",
                        m.state("weather").cloned().unwrap_or_default(),
                        m.is_stale("weather")
                    )))
                }))
        })],
    );
    let fresh = answer(&host, "x");
    assert_eq!(fresh.text, r#""sunny" stale=false"#);
    hang.store(true, Ordering::SeqCst);
    // The cached value (1 ms on the watchdog's clock) expires.
    clock.skip(5);
    let stale = answer(&host, "x");
    assert_eq!(stale.text, r#""sunny" stale=true"#, "{:?}", stale.errors);
    gate.open();
}

#[test]
fn a_slow_validate_is_abandoned_and_the_other_actions_answer() {
    let gate = Gate::default();
    let plugin_gate = gate.clone();
    let (host, _) = host_with(
        "[host]\nvalidate_timeout_ms = 100\n",
        vec![
            source("slow.so", move || {
                let gate = plugin_gate.clone();
                Plugin::new("slow", "1.0.0").action(
                    Action::new("SLOW")
                        .priority(9)
                        .validate(move |_| {
                            gate.wait();
                            true
                        })
                        .handler(|_, _| Ok(ActionResult::text("SLOW"))),
                )
            }),
            source("fast.so", || {
                Plugin::new("fast", "1.0.0").action(answering("FAST", ""))
            }),
        ],
    );
    let reply = answer(&host, "hello");
    assert_eq!(reply.text, "FAST");
    assert!(gate.holds(), "answered while the validate was still held");
    assert_eq!(
        reply.errors,
        vec!["plugin 'slow': actions' validate: timed out after 100 ms (the host cancelled the call and went on without it)".to_string()]
    );
    gate.open();
}

#[test]
fn a_hung_evaluator_is_abandoned_and_the_others_score() {
    let gate = Gate::default();
    let plugin_gate = gate.clone();
    let (host, _) = host_with(
        "[host]\nevaluator_timeout_ms = 100\n",
        vec![source("e.so", move || {
            let gate = plugin_gate.clone();
            Plugin::new("e", "1.0.0")
                .evaluator(Evaluator::new("hung").evaluate(move |_, rt| {
                    while !rt.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    gate.wait();
                    Ok(Evaluation::new(1.0, true))
                }))
                .evaluator(Evaluator::new("quick").evaluate(|_, _| Ok(Evaluation::new(0.5, true))))
        })],
    );
    let reply = answer(&host, "x");
    assert!(gate.holds(), "answered while the evaluator was still held");
    assert_eq!(reply.evaluations.len(), 1);
    assert_eq!(reply.evaluations.get(0).map(|e| e.evaluator), Some("quick"));
    assert_eq!(
        reply.errors,
        vec!["plugin 'e': evaluator 'hung' evaluate: timed out after 100 ms (the host cancelled the call and went on without it)".to_string()]
    );
    gate.open();
}

#[test]
fn a_plugin_at_its_limit_is_refused_at_once_while_another_serves() {
    let gate = Gate::default();
    let entered = Arc::new(AtomicUsize::new(0));
    let (plugin_gate, plugin_entered) = (gate.clone(), Arc::clone(&entered));
    let (host, _) = host_with(
        "[host]\nmax_calls_in_flight = 2\naction_timeout_ms = 60000\n",
        vec![
            source("stuck.so", move || {
                let (gate, entered) = (plugin_gate.clone(), Arc::clone(&plugin_entered));
                Plugin::new("stuck", "1.0.0").action(
                    Action::new("STUCK")
                        .validate(|m| m.text() == "stuck")
                        .handler(move |_, _| {
                            entered.fetch_add(1, Ordering::SeqCst);
                            gate.wait();
                            Ok(ActionResult::text("done"))
                        }),
                )
            }),
            source("fast.so", || {
                Plugin::new("fast", "1.0.0").action(answering("FAST", "fast"))
            }),
        ],
    );
    let host = Arc::new(host);
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let host = Arc::clone(&host);
            std::thread::spawn(move || host.handle_message(message("stuck")))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    while entered.load(Ordering::SeqCst) < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(entered.load(Ordering::SeqCst), 2);

    let refused = answer(&host, "stuck");
    assert!(gate.holds(), "refused while both calls were still held");
    assert!(!refused.ok);
    assert_eq!(entered.load(Ordering::SeqCst), 2, "no third call went in");
    assert!(
        refused.errors.iter().any(|e| e.contains("plugin 'stuck'")
            && e.contains("already has 2 calls in flight (its limit)")),
        "{:?}",
        refused.errors
    );
    let fast = answer(&host, "fast");
    assert_eq!(fast.text, "FAST");
    assert!(gate.holds(), "the other plugin served while both were held");

    gate.open();
    for call in stuck {
        assert_eq!(call.join().expect("joins").text, "done");
    }
}

#[test]
fn a_call_within_its_deadline_is_never_taken_for_late_however_old_the_host() {
    let clock = test_clock::install();
    let (host, _) = host_with(
        "[host]\nprovider_timeout_ms = 50\n",
        vec![source("p.so", || {
            Plugin::new("p", "1.0.0")
                .provider(Provider::new("slowish").get(|_, _| {
                    std::thread::sleep(Duration::from_millis(10));
                    Ok(json!(1))
                }))
                .action(answering("A", ""))
        })],
    );
    // The watchdog's clock is now well past the provider's deadline.
    clock.skip(3_600_000);
    for _ in 0..5 {
        let reply = answer(&host, "x");
        assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    }
}

#[test]
fn a_late_event_handler_is_abandoned_and_sees_the_cancellation() {
    let saw = Arc::new(AtomicBool::new(false));
    let gate = Gate::default();
    let (plugin_saw, plugin_gate) = (Arc::clone(&saw), gate.clone());
    let (host, report) = host_with(
        "[host]\nevent_timeout_ms = 100\n",
        vec![source("e.so", move || {
            let (saw, gate) = (Arc::clone(&plugin_saw), plugin_gate.clone());
            Plugin::new("e", "1.0.0").on_load(move |rt| {
                let (saw, gate) = (Arc::clone(&saw), gate.clone());
                rt.on("tick", move |_, rt| {
                    let until = Instant::now() + Duration::from_secs(10);
                    while !rt.is_cancelled() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    saw.store(
                        rt.is_cancelled() && rt.deadline().is_some(),
                        Ordering::SeqCst,
                    );
                    gate.wait();
                    Ok(())
                })?;
                Ok(())
            })
        })],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let failures = host.emit("tick", json!(null));
    assert!(
        gate.holds(),
        "emit returned while the handler was still held"
    );
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]
            .error
            .contains("plugin 'e': event handler for 'tick': timed out after 100 ms"),
        "{:?}",
        failures
    );
    let until = Instant::now() + Duration::from_secs(10);
    while !saw.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        saw.load(Ordering::SeqCst),
        "the handler saw its cancellation"
    );
    gate.open();
}

#[test]
fn a_batch_is_answered_on_time_past_a_late_validate_and_a_hung_batch_evaluator() {
    let gate = Gate::default();
    let (validate_gate, evaluator_gate) = (gate.clone(), gate.clone());
    let (host, _) = host_with(
        "[host]\nvalidate_timeout_ms = 100\nevaluator_timeout_ms = 100\n",
        vec![
            source("slow.so", move || {
                let (validate_gate, evaluator_gate) =
                    (validate_gate.clone(), evaluator_gate.clone());
                Plugin::new("slow", "1.0.0")
                    .action(
                        Action::new("SLOW")
                            .validate(move |m| {
                                if m.text() == "first" {
                                    validate_gate.wait();
                                }
                                false
                            })
                            .handler(|_, _| Ok(ActionResult::text("never"))),
                    )
                    .evaluator(Evaluator::new("hung").evaluate(move |_, _| {
                        evaluator_gate.wait();
                        Ok(Evaluation::new(1.0, true))
                    }))
            }),
            source("fast.so", || {
                Plugin::new("fast", "1.0.0")
                    .action(answering("FAST", ""))
                    .evaluator(
                        Evaluator::new("quick").evaluate(|_, _| Ok(Evaluation::new(0.5, true))),
                    )
            }),
        ],
    );
    let replies = host.answer_batch_blocking(vec![message("first"), message("second")]);
    assert!(
        gate.holds(),
        "answered while the late calls were still held"
    );
    assert_eq!(replies.len(), 2);
    for reply in &replies {
        assert_eq!(reply.text, "FAST");
        assert_eq!(reply.evaluations.len(), 1, "{:?}", reply.errors);
        assert!(
            reply.errors.iter().any(|e| e.contains(
                "plugin 'slow': evaluator 'hung' evaluate_batch: timed out after 100 ms"
            )),
            "{:?}",
            reply.errors
        );
    }
    assert!(
        replies[0]
            .errors
            .iter()
            .any(|e| e.contains("plugin 'slow': actions' validate: timed out after 100 ms")),
        "{:?}",
        replies[0].errors
    );
    gate.open();
}
