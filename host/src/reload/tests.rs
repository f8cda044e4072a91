//! Hot reload decisions, driven by plugin values in memory: a new
//! generation either takes over with the old one's state, or is refused
//! and the old one keeps serving.

use crate::plugin::in_memory::{host_with, message, source};
use agent_host_plugin_sdk::{json, Action, ActionResult, Plugin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A counter plugin at `version` whose handler answers `version:count`;
/// `on_load` fails when `broken`.
fn counter(version: &'static str, broken: bool) -> Plugin {
    let count = Arc::new(AtomicU64::new(0));
    let (exported, imported, counted) = (Arc::clone(&count), Arc::clone(&count), count);
    Plugin::new("counter", version)
        .action(
            Action::new("COUNT")
                .validate(|m| m.text() == "count")
                .handler(move |_, _| {
                    let now = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(ActionResult::text(format!("{version}:{now}")))
                }),
        )
        .state_hooks(
            move |_| Ok(json!(exported.load(Ordering::SeqCst))),
            move |state, _| {
                imported.store(state.as_u64().unwrap_or(0), Ordering::SeqCst);
                Ok(())
            },
        )
        .on_load(move |_| {
            if broken {
                agent_host_plugin_sdk::bail!("the new build cannot start")
            }
            Ok(())
        })
}

#[test]
fn a_reload_hands_the_state_over_and_the_new_generation_serves() {
    let (host, _) = host_with("", vec![source("counter.so", || counter("1.0.0", false))]);
    assert_eq!(host.handle_message(message("count")).text, "1.0.0:1");
    assert_eq!(host.handle_message(message("count")).text, "1.0.0:2");
    let done = host
        .reload_source("counter", source("counter.so", || counter("1.1.0", false)))
        .expect("the new build is accepted");
    assert_eq!(
        (done.from_version.as_str(), done.to_version.as_str()),
        ("1.0.0", "1.1.0")
    );
    assert_eq!(host.handle_message(message("count")).text, "1.1.0:3");
}

#[test]
fn a_build_whose_on_load_fails_is_refused_and_the_old_one_keeps_serving() {
    let (host, _) = host_with("", vec![source("counter.so", || counter("1.0.0", false))]);
    assert_eq!(host.handle_message(message("count")).text, "1.0.0:1");
    let failure = host
        .reload_source("counter", source("counter.so", || counter("2.0.0", true)))
        .expect_err("refused");
    assert!(
        failure.to_string().contains("the new build cannot start"),
        "{failure}"
    );
    let generation = host.status("counter").expect("still loaded").generation;
    assert_eq!(host.handle_message(message("count")).text, "1.0.0:2");
    assert_eq!(
        host.status("counter").map(|s| s.generation),
        Some(generation)
    );
}

#[test]
fn a_build_with_another_name_is_refused() {
    let (host, _) = host_with("", vec![source("counter.so", || counter("1.0.0", false))]);
    let failure = host
        .reload_source(
            "counter",
            source("counter.so", || Plugin::new("other", "1.0.0")),
        )
        .expect_err("refused");
    assert!(
        failure
            .to_string()
            .contains("holds no plugin of that name (it holds: other)"),
        "{failure}"
    );
    assert_eq!(host.handle_message(message("count")).text, "1.0.0:1");
}

#[test]
fn a_version_that_breaks_a_dependent_is_refused() {
    let (host, report) = host_with(
        "",
        vec![
            source("counter.so", || counter("1.0.0", false)),
            source("user.so", || {
                Plugin::new("user", "1.0.0").dependency("counter@^1")
            }),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    let failure = host
        .reload_source("counter", source("counter.so", || counter("2.0.0", false)))
        .expect_err("refused");
    assert!(
        failure
            .to_string()
            .contains("plugin 'user' requires counter@^1"),
        "{failure}"
    );
    assert_eq!(host.handle_message(message("count")).text, "1.0.0:1");
}

#[test]
fn a_build_that_would_close_a_dependency_cycle_is_refused() {
    let (host, _) = host_with(
        "",
        vec![
            source("counter.so", || counter("1.0.0", false)),
            source("user.so", || {
                Plugin::new("user", "1.0.0").dependency("counter")
            }),
        ],
    );
    let failure = host
        .reload_source(
            "counter",
            source("counter.so", || counter("1.1.0", false).dependency("user")),
        )
        .expect_err("refused");
    assert!(failure.to_string().contains("cycle"), "{failure}");
}

/// A plugin whose service holds `file` while it runs (as a database
/// connection would) and fails to start if another generation holds it.
/// Its `on_load` fails when `broken`.
fn holder(
    version: &'static str,
    file: &Arc<std::sync::Mutex<Option<&'static str>>>,
    broken: bool,
) -> Plugin {
    let (taken, released) = (Arc::clone(file), Arc::clone(file));
    Plugin::new("holder", version)
        .service(
            agent_host_plugin_sdk::Service::new("file", ())
                .on_start(move |(), _| {
                    let mut holder = taken.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(other) = *holder {
                        agent_host_plugin_sdk::bail!("the file is held by generation {other}")
                    }
                    *holder = Some(version);
                    Ok(())
                })
                .on_stop(move |(), _| {
                    *released.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    Ok(())
                })
                .method("holder", move |(), (): (), _| Ok(version)),
        )
        .on_load(move |_| {
            if broken {
                agent_host_plugin_sdk::bail!("the new build cannot start")
            }
            Ok(())
        })
}

#[test]
fn the_old_generation_lets_go_of_its_services_before_the_new_one_starts_them() {
    let file = Arc::new(std::sync::Mutex::new(None));
    let first = Arc::clone(&file);
    let (host, report) = host_with(
        "",
        vec![source("holder.so", move || holder("1.0.0", &first, false))],
    );
    assert!(report.is_clean(), "{:?}", report.failures);

    let second = Arc::clone(&file);
    host.reload_source(
        "holder",
        source("holder.so", move || holder("2.0.0", &second, false)),
    )
    .expect("the new generation takes the file over");
    let serving = host.call_service("file", "holder", &json!(null));
    assert_eq!(serving.expect("served"), json!("2.0.0"));

    // A reload refused after the old generation let go gives it back.
    let third = Arc::clone(&file);
    host.reload_source(
        "holder",
        source("holder.so", move || holder("3.0.0", &third, true)),
    )
    .expect_err("refused");
    assert_eq!(
        *file.lock().unwrap_or_else(|e| e.into_inner()),
        Some("2.0.0")
    );
    let serving = host.call_service("file", "holder", &json!(null));
    assert_eq!(serving.expect("served"), json!("2.0.0"));
}
