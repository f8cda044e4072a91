//! Deadlines on a plugin's life, driven by plugin values in memory: what
//! the host does with a step that is late, and that it never calls a plugin
//! it gave up on.

use crate::plugin::in_memory::{host_with, message, source};
use agent_host_plugin_sdk::{Action, ActionResult, Plugin, Runtime};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Holds the hooks that wait on it until released (at the end of a test,
/// so that no thread is left behind in the test process).
#[derive(Clone, Default)]
struct Gate(Arc<AtomicBool>);

impl Gate {
    fn wait(&self) {
        while !self.0.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn release(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn answers(name: &'static str) -> Action {
    Action::new(name)
        .validate(move |m| m.text() == name)
        .handler(move |_, _| Ok(ActionResult::text(name)))
}

#[test]
fn a_hook_that_watches_its_cancellation_sees_it_and_returns() {
    let saw = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&saw);
    let (host, report) = host_with(
        "[host]\nlifecycle_timeout_ms = 200\n",
        vec![source("watcher.so", move || {
            let seen = Arc::clone(&seen);
            Plugin::new("watcher", "1.0.0").on_load(move |rt: &Runtime<'_>| {
                assert!(rt.deadline().is_some(), "on_load has a deadline");
                while !rt.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                seen.store(true, Ordering::SeqCst);
                rt.check_cancelled()
            })
        })],
    );
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let line = report.failures[0].to_string();
    assert!(
        line.contains(
            "plugin 'watcher': on_load: did not return within 200 ms ([host] \
             lifecycle_timeout_ms); it returned once cancelled"
        ),
        "{line}"
    );
    assert!(saw.load(Ordering::SeqCst));
    assert!(host.status("watcher").is_none());
}

#[test]
fn a_plugin_given_up_at_start_is_never_called_again_and_the_others_serve() {
    let gate = Gate::default();
    let unloads = Arc::new(AtomicUsize::new(0));
    let (g, u) = (gate.clone(), Arc::clone(&unloads));
    let (host, report) = host_with(
        "[host]\nlifecycle_timeout_ms = 100\n",
        vec![
            source("stuck.so", move || {
                let (g, u) = (g.clone(), Arc::clone(&u));
                Plugin::new("stuck", "1.0.0")
                    .action(answers("stuck"))
                    .on_load(move |_rt| {
                        g.wait();
                        Ok(())
                    })
                    .on_unload(move |_rt| {
                        u.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
            }),
            source("fine.so", || {
                Plugin::new("fine", "1.0.0").action(answers("fine"))
            }),
        ],
    );
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let line = report.failures[0].to_string();
    assert!(
        line.contains("on_load: did not return within 100 ms")
            && line.contains("a thread is left running in the plugin"),
        "{line}"
    );
    assert_eq!(host.handle_message(message("fine")).text, "fine");
    assert_ne!(host.handle_message(message("stuck")).text, "stuck");
    gate.release();
    assert!(host.shutdown().is_empty());
    assert_eq!(unloads.load(Ordering::SeqCst), 0, "never called again");
}

#[test]
fn a_late_on_unload_is_named_and_the_shutdown_stops_the_others() {
    let gate = Gate::default();
    let unloads = Arc::new(AtomicUsize::new(0));
    let (g, u) = (gate.clone(), Arc::clone(&unloads));
    let (host, report) = host_with(
        "[host]\nlifecycle_timeout_ms = 100\n",
        vec![
            source("first.so", move || {
                let u = Arc::clone(&u);
                Plugin::new("first", "1.0.0").on_unload(move |_rt| {
                    u.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            }),
            source("second.so", move || {
                let g = g.clone();
                Plugin::new("second", "1.0.0").on_unload(move |_rt| {
                    g.wait();
                    Ok(())
                })
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let errors: Vec<String> = host.shutdown().iter().map(ToString::to_string).collect();
    gate.release();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("plugin 'second': on_unload: did not return within 100 ms"),
        "{errors:?}"
    );
    assert_eq!(
        unloads.load(Ordering::SeqCst),
        1,
        "the other plugin stopped"
    );
}
