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
