//! Load decisions, driven by plugin values in memory: which plugins start,
//! in which order, and the one line each failure gets.

use crate::plugin::in_memory::{host_with, source};
use crate::shared_cause::SharedCause;
use crate::{CallError, LoadError, ManifestCheckError, ServiceStartError, Stage};
use agent_host_plugin_sdk::{Action, ActionResult, Plugin, Service};
use std::error::Error;
use std::sync::{Arc, Mutex};

#[test]
fn plugins_start_after_their_dependencies_whatever_the_file_order() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let plugin = |name: &'static str, deps: &'static [&'static str]| {
        let started = Arc::clone(&started);
        source(&format!("{name}.so"), move || {
            let started = Arc::clone(&started);
            deps.iter()
                .fold(Plugin::new(name, "1.0.0"), |p, d| p.dependency(*d))
                .on_load(move |_| {
                    started.lock().expect("lock").push(name);
                    Ok(())
                })
        })
    };
    let (host, report) = host_with(
        "",
        vec![
            plugin("app", &["store", "cache"]),
            plugin("cache", &["store"]),
            plugin("store", &[]),
        ],
    );
    assert!(report.is_clean(), "{:?}", report.failures);
    assert_eq!(
        *started.lock().expect("lock"),
        vec!["store", "cache", "app"]
    );
    assert_eq!(host.plugin_names(), vec!["store", "cache", "app"]);
}

#[test]
fn a_missing_dependency_fails_its_plugin_and_skips_its_dependents_only() {
    let (host, report) = host_with(
        "",
        vec![
            source("app.so", || {
                Plugin::new("app", "1.0.0").dependency("store@^2")
            }),
            source("tool.so", || Plugin::new("tool", "1.0.0").dependency("app")),
            source("alone.so", || Plugin::new("alone", "1.0.0")),
        ],
    );
    let app = report.failure_of("app").expect("app fails");
    assert_eq!(app.stage(), Stage::Dependencies);
    assert_eq!(
        app.to_string(),
        "app.so: plugin 'app': missing dependency 'store@^2': no plugin of that name is present"
    );
    let tool = report.failure_of("tool").expect("tool is skipped");
    assert_eq!(
        tool.cause(),
        "skipped because its dependency 'app' failed to load"
    );
    assert_eq!(host.plugin_names(), vec!["alone"]);
}

#[test]
fn a_plugin_whose_on_load_fails_skips_its_dependents_and_keeps_nothing() {
    let (host, report) = host_with(
        "",
        vec![
            source("store.so", || {
                Plugin::new("store", "1.0.0")
                    .service(Service::new("store", ()))
                    .on_load(|_| agent_host_plugin_sdk::bail!("no disk"))
            }),
            source("app.so", || Plugin::new("app", "1.0.0").dependency("store")),
        ],
    );
    assert_eq!(
        report.failure_of("store").map(ToString::to_string),
        Some("store.so: plugin 'store': on_load: no disk".to_string())
    );
    assert_eq!(
        report.failure_of("app").map(|f| f.stage()),
        Some(Stage::Dependencies)
    );
    assert!(host.plugin_names().is_empty());
    assert!(host.statuses().iter().all(|s| s.services.is_empty()));
}

#[test]
fn two_sources_with_one_name_are_both_refused() {
    let (_host, report) = host_with(
        "",
        vec![
            source("one.so", || Plugin::new("twin", "1.0.0")),
            source("two.so", || Plugin::new("twin", "1.1.0")),
        ],
    );
    assert_eq!(report.failures.len(), 2);
    assert!(report.failures.iter().all(|f| f.stage() == Stage::Duplicate
        && f.cause()
            .starts_with("duplicate plugin name (found in one.so, two.so)")));
    assert!(report.loaded.is_empty());
}

#[test]
fn a_refused_manifest_keeps_the_field_and_the_pattern_error_as_causes() {
    let (_host, report) = host_with(
        "",
        vec![
            source("old.so", || Plugin::new("old", "one")),
            source("greedy.so", || {
                Plugin::new("greedy", "1.0.0").action(
                    Action::new("GRAB")
                        .pattern("(unclosed")
                        .validate(|_| true)
                        .handler(|_, _| Ok(ActionResult::default())),
                )
            }),
        ],
    );
    let old = report.failure_of("old").expect("old is refused");
    assert_eq!(old.stage(), Stage::Manifest);
    let LoadError::Manifest(ManifestCheckError::Invalid(invalid)) = &*old.error else {
        panic!("not a field error: {:?}", old.error);
    };
    assert_eq!(invalid.field, "version");

    let greedy = report.failure_of("greedy").expect("greedy is refused");
    assert_eq!(greedy.stage(), Stage::Manifest);
    assert!(
        greedy.cause().starts_with(
            "manifest field `actions[0].triggers.pattern`: action 'GRAB': \
             the pattern does not compile: "
        ),
        "{}",
        greedy.cause()
    );
    let check = Error::source(&*greedy.error).expect("the check error");
    let pattern = check.source().expect("the pattern error");
    let regex = pattern.source().expect("the regular expression's error");
    assert!(
        regex.downcast_ref::<SharedCause<regex::Error>>().is_some(),
        "{regex:?}"
    );
}

#[test]
fn a_service_name_already_taken_names_the_plugin_that_provides_it() {
    let (host, report) = host_with(
        "",
        vec![
            source("first.so", || {
                Plugin::new("first", "1.0.0").service(Service::new("store", ()))
            }),
            source("second.so", || {
                Plugin::new("second", "1.0.0").service(Service::new("store", ()))
            }),
        ],
    );
    // The two enter service side by side: either may come first.
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let failed = &report.failures[0];
    let loser = failed.plugin.clone().expect("a plugin");
    let winner = if loser == "first" { "second" } else { "first" };
    assert_eq!(failed.stage(), Stage::StartService);
    assert_eq!(
        *failed.error,
        LoadError::StartService {
            service: "store".to_string(),
            cause: ServiceStartError::Taken {
                service: "store".to_string(),
                provider: winner.to_string(),
            },
        }
    );
    assert_eq!(
        failed.cause(),
        format!("service 'store' failed to start: service 'store' is already provided by plugin '{winner}'")
    );
    assert_eq!(host.plugin_names(), vec![winner]);
}

#[test]
fn a_service_whose_start_fails_keeps_the_plugin_error_as_its_cause() {
    let (_host, report) = host_with(
        "",
        vec![source("store.so", || {
            Plugin::new("store", "1.0.0").service(
                Service::new("disk", ()).on_start(|_, _| agent_host_plugin_sdk::bail!("no disk")),
            )
        })],
    );
    let store = report.failure_of("store").expect("store fails");
    assert_eq!(store.cause(), "service 'disk' failed to start: no disk");
    let cause = Error::source(&*store.error).expect("the service's error");
    let call = cause.source().expect("the plugin's error");
    let call = call.downcast_ref::<CallError>().expect("a call error");
    assert_eq!(call.message, "no disk");
}
