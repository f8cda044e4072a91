//! Shutdown of a `PluginHost`, driven by plugin values in memory: calls in
//! flight finish before `on_unload`, within the grace period.

use crate::plugin::in_memory::{host_with, message, source};
use agent_host_plugin_sdk::{Action, ActionResult, Plugin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A plugin whose `sleep` handler sleeps `millis` (ignoring
/// cancellation) and whose hooks write down what happened, in order.
fn sleeper(
    millis: u64,
    events: &Arc<Mutex<Vec<&'static str>>>,
    started: &Arc<AtomicBool>,
) -> Plugin {
    let (in_handler, in_unload) = (Arc::clone(events), Arc::clone(events));
    let started = Arc::clone(started);
    Plugin::new("sleeper", "1.0.0")
        .action(
            Action::new("SLEEP")
                .timeout(Duration::from_secs(60))
                .validate(|m| m.text() == "sleep")
                .handler(move |_, _| {
                    started.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(millis));
                    in_handler
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push("handler done");
                    Ok(ActionResult::text("slept"))
                }),
        )
        .on_unload(move |_| {
            in_unload
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push("on_unload");
            Ok(())
        })
}

fn wait_for(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the handler started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn on_unload_waits_for_a_call_in_flight_that_ends_within_the_grace_period() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicBool::new(false));
    let (e, s) = (Arc::clone(&events), Arc::clone(&started));
    let (host, _) = host_with(
        "[host]\nshutdown_grace_ms = 5000\n",
        vec![source("sleeper.so", move || sleeper(300, &e, &s))],
    );
    std::thread::scope(|scope| {
        let call = scope.spawn(|| host.handle_message(message("sleep")));
        wait_for(&started);
        assert!(host.shutdown().is_empty());
        let reply = call.join().expect("the message thread");
        assert_eq!(reply.text, "slept", "{reply:?}");
    });
    assert_eq!(
        *events.lock().unwrap_or_else(PoisonError::into_inner),
        ["handler done", "on_unload"]
    );
    let refused = host.handle_message(message("sleep"));
    assert_eq!(refused.text, crate::SHUTTING_DOWN);
    assert!(host.is_shutting_down());
}

#[test]
fn a_call_stuck_past_the_grace_period_does_not_hold_the_shutdown() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicBool::new(false));
    let (e, s) = (Arc::clone(&events), Arc::clone(&started));
    let (host, _) = host_with(
        "[host]\nshutdown_grace_ms = 100\n",
        vec![source("sleeper.so", move || sleeper(1500, &e, &s))],
    );
    std::thread::scope(|scope| {
        let _call = scope.spawn(|| host.handle_message(message("sleep")));
        wait_for(&started);
        let stopping = Instant::now();
        host.shutdown();
        assert!(
            stopping.elapsed() < Duration::from_millis(1000),
            "stopped after the grace period, not after the call"
        );
        assert_eq!(
            *events.lock().unwrap_or_else(PoisonError::into_inner),
            ["on_unload"]
        );
    });
}

#[test]
fn a_batch_holds_the_shutdown_as_one_entry_and_one_after_it_is_refused_whole() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicBool::new(false));
    let (plugin_events, plugin_started) = (Arc::clone(&events), Arc::clone(&started));
    let (host, _) = host_with(
        "[host]\nshutdown_grace_ms = 5000\n",
        vec![source("sleeper.so", move || {
            sleeper(200, &plugin_events, &plugin_started)
        })],
    );
    std::thread::scope(|scope| {
        let batch = scope.spawn(|| host.handle_batch(vec![message("sleep"), message("sleep")]));
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        host.shutdown();
        let replies = batch.join().expect("the batch");
        assert_eq!(replies.len(), 2);
        assert!(
            replies.iter().all(|r| r.ok),
            "both messages ran: the shutdown waited for the whole batch: {replies:?}"
        );
    });
    let log = events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(log.last(), Some(&"on_unload"), "{log:?}");
    let refused = host.handle_batch(vec![message("sleep"), message("sleep")]);
    assert_eq!(refused.len(), 2);
    assert!(refused
        .iter()
        .all(|r| r.text == crate::pipeline::SHUTTING_DOWN));
}
