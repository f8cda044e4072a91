//! Shutdown of a `PluginHost`, driven by plugin values in memory: calls in
//! flight finish before `on_unload`, within the grace period.

use crate::plugin::in_memory::{host_with, message, source};
use agent_host_plugin_sdk::{Action, ActionResult, Plugin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A gate that calls wait at until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }

    fn wait(&self) {
        let (open, changed) = &*self.0;
        let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
        while !*open {
            open = changed.wait(open).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A plugin whose `sleep` handler waits at `gate` (ignoring cancellation)
/// and whose hooks write down what happened, in order.
fn sleeper(
    gate: &Gate,
    events: &Arc<Mutex<Vec<&'static str>>>,
    started: &Arc<AtomicBool>,
) -> Plugin {
    let (in_handler, in_unload) = (Arc::clone(events), Arc::clone(events));
    let (started, gate) = (Arc::clone(started), gate.clone());
    Plugin::new("sleeper", "1.0.0")
        .action(
            Action::new("SLEEP")
                .timeout(Duration::from_secs(60))
                .validate(|m| m.text() == "sleep")
                .handler(move |_, _| {
                    started.store(true, Ordering::SeqCst);
                    gate.wait();
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

/// Waits until `done` holds; the bound only keeps a broken host from
/// hanging the test.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < give_up, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn on_unload_waits_for_a_call_in_flight_that_ends_within_the_grace_period() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicBool::new(false));
    let gate = Gate::default();
    let (e, s, g) = (Arc::clone(&events), Arc::clone(&started), gate.clone());
    let (host, _) = host_with(
        "[host]\nshutdown_grace_ms = 600000\n",
        vec![source("sleeper.so", move || sleeper(&g, &e, &s))],
    );
    std::thread::scope(|scope| {
        let call = scope.spawn(|| host.handle_message(message("sleep")));
        wait_until("the handler started", || started.load(Ordering::SeqCst));
        let shutdown = scope.spawn(|| host.shutdown());
        wait_until("the shutdown began", || host.is_shutting_down());
        assert!(
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "on_unload waits for the call"
        );
        gate.open();
        assert!(shutdown.join().expect("the shutdown thread").is_empty());
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
    let gate = Gate::default();
    let (e, s, g) = (Arc::clone(&events), Arc::clone(&started), gate.clone());
    let (host, _) = host_with(
        "[host]\nshutdown_grace_ms = 100\n",
        vec![source("sleeper.so", move || sleeper(&g, &e, &s))],
    );
    std::thread::scope(|scope| {
        let _call = scope.spawn(|| host.handle_message(message("sleep")));
        wait_until("the handler started", || started.load(Ordering::SeqCst));
        // The call stays stuck until the shutdown is over: that the
        // shutdown returns at all shows it did not wait for the call.
        host.shutdown();
        assert_eq!(
            *events.lock().unwrap_or_else(PoisonError::into_inner),
            ["on_unload"],
            "unloaded while the call was still stuck"
        );
        gate.open();
    });
}

#[test]
fn a_batch_holds_the_shutdown_as_one_entry_and_one_after_it_is_refused_whole() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicBool::new(false));
    let gate = Gate::default();
    let (plugin_events, plugin_started, plugin_gate) =
        (Arc::clone(&events), Arc::clone(&started), gate.clone());
    let (host, _) = host_with(
        "[host]\nshutdown_grace_ms = 600000\n",
        vec![source("sleeper.so", move || {
            sleeper(&plugin_gate, &plugin_events, &plugin_started)
        })],
    );
    std::thread::scope(|scope| {
        let batch = scope.spawn(|| host.handle_batch(vec![message("sleep"), message("sleep")]));
        wait_until("the first call started", || started.load(Ordering::SeqCst));
        let shutdown = scope.spawn(|| host.shutdown());
        wait_until("the shutdown began", || host.is_shutting_down());
        gate.open();
        shutdown.join().expect("the shutdown thread");
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
