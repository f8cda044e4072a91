//! When a lazy plugin starts, driven by plugin values in memory: no library
//! is built or loaded.

use crate::plugin::in_memory::{host_with, message, source};
use agent_host_plugin_sdk::{json, Action, ActionResult, Plugin, Service};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts each plugin's `on_load` runs, and records their order.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<String>>>);

impl Starts {
    fn of(&self, name: &str) -> usize {
        let starts = self.0.lock().expect("not poisoned");
        starts.iter().filter(|n| *n == name).count()
    }

    fn order(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").clone()
    }

    fn plugin(&self, name: &'static str) -> Plugin {
        let starts = self.clone();
        Plugin::new(name, "1.0.0").on_load(move |_rt| {
            starts
                .0
                .lock()
                .expect("not poisoned")
                .push(name.to_string());
            Ok(())
        })
    }
}

fn answers(name: &'static str) -> Action {
    Action::new(name)
        .validate(|_| true)
        .handler(move |_, _| Ok(ActionResult::text(name)))
}

fn started(host: &crate::PluginHost, name: &str) -> bool {
    host.status(name).is_some_and(|s| s.started)
}

#[test]
fn a_lazy_plugin_starts_with_the_first_message_its_triggers_match() {
    let starts = Starts::default();
    let s = starts.clone();
    let (host, report) = host_with(
        "[host]\nlazy_plugins = [\"weather\"]\n",
        vec![source("weather.so", move || {
            s.plugin("weather")
                .action(answers("WEATHER").keywords(["weather"]))
        })],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    assert!(report.loaded[0].lazy);
    assert_eq!(starts.of("weather"), 0, "checked, not started");
    let status = host.status("weather").expect("listed");
    assert!(!status.started);
    assert_eq!(status.generation, 0);
    assert_eq!(host.plugin_names(), ["weather"]);

    let reply = host.handle_message(message("hello"));
    assert_eq!(reply.text, crate::NO_ACTION_TEXT);
    assert_eq!(starts.of("weather"), 0, "its triggers do not match");

    let reply = host.handle_message(message("Weather today?"));
    assert_eq!(reply.text, "WEATHER", "{:?}", reply.errors);
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    assert_eq!(starts.of("weather"), 1);
    assert!(started(&host, "weather"));

    host.handle_message(message("weather again"));
    assert_eq!(starts.of("weather"), 1, "started once");
}

#[test]
fn an_action_without_triggers_starts_its_lazy_plugin_with_any_message() {
    let starts = Starts::default();
    let s = starts.clone();
    let (host, _) = host_with(
        "[host]\nlazy_plugins = [\"a*\"]\n",
        vec![source("any.so", move || {
            s.plugin("any").action(answers("ANY"))
        })],
    );
    assert_eq!(starts.of("any"), 0);
    assert_eq!(host.handle_message(message("whatever")).text, "ANY");
    assert_eq!(starts.of("any"), 1);
}

#[test]
fn a_service_call_starts_the_lazy_plugin_that_provides_it() {
    let starts = Starts::default();
    let s = starts.clone();
    let (host, _) = host_with(
        "[host]\nlazy_plugins = [\"clock\"]\n",
        vec![source("clock.so", move || {
            s.plugin("clock")
                .service(Service::new("clock", ()).method("now", |_, (): (), _rt| Ok(12)))
        })],
    );
    let status = host.status("clock").expect("listed");
    assert!(!status.started);
    assert!(!status.services[0].running);
    assert_eq!(starts.of("clock"), 0);
    let now = host
        .call_service("clock", "now", &json!(null))
        .expect("started and answered");
    assert_eq!(now, json!(12));
    assert_eq!(starts.of("clock"), 1);
    assert!(host.status("clock").expect("listed").services[0].running);
    host.call_service("clock", "now", &json!(null))
        .expect("answers");
    assert_eq!(starts.of("clock"), 1);
}

#[test]
fn an_event_its_manifest_subscribes_to_starts_it_and_reaches_it() {
    let starts = Starts::default();
    let received = Arc::new(AtomicUsize::new(0));
    let (s, r) = (starts.clone(), Arc::clone(&received));
    let (host, _) = host_with(
        "[host]\nlazy_plugins = [\"audit\"]\n",
        vec![source("audit.so", move || {
            let r = Arc::clone(&r);
            s.plugin("audit")
                .subscribes_to("order:*")
                .on_load(move |rt| {
                    let r = Arc::clone(&r);
                    rt.on("order:*", move |_event, _rt| {
                        r.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })?;
                    Ok(())
                })
        })],
    );
    host.emit("invoice:paid", json!({}));
    assert_eq!(starts.of("audit"), 0, "not an event it subscribes to");
    let failures = host.emit("order:placed", json!({"id": 1}));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(starts.of("audit"), 1);
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "the waking event is delivered"
    );
    host.emit("order:shipped", json!({"id": 1}));
    assert_eq!(received.load(Ordering::SeqCst), 2);
    assert_eq!(starts.of("audit"), 1);
}

#[test]
fn dependencies_start_first_and_an_eager_dependent_starts_its_lazy_dependency_at_load() {
    let starts = Starts::default();
    let (a, b, c, d) = (
        starts.clone(),
        starts.clone(),
        starts.clone(),
        starts.clone(),
    );
    let (host, report) = host_with(
        "[host]\nlazy_plugins = [\"store\", \"app\", \"db\"]\n",
        vec![
            source("store.so", move || a.plugin("store")),
            source("app.so", move || {
                b.plugin("app")
                    .dependency("store")
                    .action(answers("APP").keywords(["app"]))
            }),
            source("db.so", move || c.plugin("db")),
            source("web.so", move || d.plugin("web").dependency("db")),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    assert_eq!(starts.order(), ["db", "web"], "web is eager and needs db");
    assert!(!started(&host, "store") && !started(&host, "app"));

    assert_eq!(host.handle_message(message("app please")).text, "APP");
    assert_eq!(starts.order(), ["db", "web", "store", "app"]);
}

#[test]
fn concurrent_first_messages_start_it_once() {
    let starts = Starts::default();
    let s = starts.clone();
    let (host, _) = host_with(
        "[host]\nlazy_plugins = [\"slow\"]\n",
        vec![source("slow.so", move || {
            s.plugin("slow")
                .on_load(|_rt| {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    Ok(())
                })
                .action(answers("SLOW").keywords(["go"]))
        })],
    );
    let host = Arc::new(host);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let host = Arc::clone(&host);
            std::thread::spawn(move || host.handle_message(message("go")).text)
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("no panic"), "SLOW");
    }
    assert_eq!(starts.of("slow"), 1);
}

#[test]
fn a_failed_start_is_reported_once_and_takes_down_no_other_plugin() {
    let (host, report) = host_with(
        "[host]\nlazy_plugins = [\"broken\", \"after\"]\n",
        vec![
            source("broken.so", || {
                Plugin::new("broken", "1.0.0")
                    .on_load(|_rt| Err(agent_host_plugin_sdk::Error::msg("no database")))
                    .action(answers("BROKEN").priority(9).keywords(["x"]))
            }),
            source("after.so", || {
                Plugin::new("after", "1.0.0")
                    .dependency("broken")
                    .action(answers("AFTER").priority(9).keywords(["y"]))
            }),
            source("fine.so", || {
                Plugin::new("fine", "1.0.0").action(answers("FINE"))
            }),
        ],
    );
    assert!(report.is_clean(), "checked fine: {:?}", report.failures);
    let reply = host.handle_message(message("x"));
    assert_eq!(reply.text, "FINE");
    assert!(
        reply.errors.iter().any(|e| e.contains("plugin 'broken'")
            && e.contains("on_load")
            && e.contains("no database")),
        "{:?}",
        reply.errors
    );
    assert!(
        host.status("broken").is_none(),
        "neither started nor pending"
    );

    let reply = host.handle_message(message("x y"));
    assert_eq!(reply.text, "FINE");
    assert_eq!(reply.errors.len(), 1, "{:?}", reply.errors);
    assert!(
        reply.errors[0].contains("plugin 'after'")
            && reply.errors[0].contains("dependency 'broken' failed"),
        "{:?}",
        reply.errors
    );
    assert!(
        host.handle_message(message("x y")).errors.is_empty(),
        "reported once"
    );
}

#[test]
fn eager_plugins_are_untouched_by_an_empty_lazy_list() {
    let starts = Starts::default();
    let s = starts.clone();
    let (host, report) = host_with(
        "",
        vec![source("e.so", move || {
            s.plugin("eager").action(answers("E"))
        })],
    );
    assert!(!report.loaded[0].lazy);
    assert_eq!(starts.of("eager"), 1);
    assert!(started(&host, "eager"));
}

#[test]
fn an_on_load_that_calls_another_lazy_plugin_starts_it_on_the_way() {
    // Each step of a start runs on a thread of its own while the starter
    // holds the start lock: the step's own needs must start on that thread
    // rather than wait for the lock until the step's deadline.
    let starts = Starts::default();
    let (s1, s2) = (starts.clone(), starts.clone());
    let (host, report) = host_with(
        "[host]\nlazy_plugins = [\"front\", \"back\"]\nlifecycle_timeout_ms = 5000\n",
        vec![
            source("front.so", move || {
                s1.plugin("front")
                    .permission("service:back")
                    .action(answers("FRONT").keywords(["front"]))
                    .on_load(|rt| {
                        let ready: bool = rt.service("back").call("ready", &())?;
                        if ready {
                            Ok(())
                        } else {
                            Err(agent_host_plugin_sdk::Error::msg("back is not ready"))
                        }
                    })
            }),
            source("back.so", move || {
                s2.plugin("back")
                    .service(Service::new("back", ()).method("ready", |_, (): (), _rt| Ok(true)))
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let reply = host.handle_message(message("front"));
    assert_eq!(reply.text, "FRONT", "{:?}", reply.errors);
    assert_eq!(starts.order(), ["front", "back"]);
}
