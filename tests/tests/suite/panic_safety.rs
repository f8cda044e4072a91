//! A panic in any plugin entry point becomes an error naming the plugin and
//! the entry point, and the host keeps serving. Every case runs a real plugin
//! file whose code panics.

use agent_host::{InboundMessage, Stage};
use agent_host_tests::*;
use serde_json::{json, Value};

/// The panicky fixture in a host that never quarantines, so one host can be
/// driven through every panic (quarantine has its own test).
fn load_panicky(
    extra: &[std::path::PathBuf],
) -> (
    agent_host::PluginHost,
    agent_host::LoadReport,
    tempfile::TempDir,
) {
    let mut files = vec![fixture("panicky")];
    files.extend_from_slice(extra);
    let dir = folder_with(&files);
    let config =
        agent_host::AgentConfig::parse("[host]\nquarantine_after_panics = 0\n").expect("config");
    let host = agent_host::PluginHost::new(agent_host::HostOptions {
        config,
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(dir.path()).expect("load");
    (host, report, dir)
}

fn message(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// The host still answers normally after a panic.
fn still_serves(host: &agent_host::PluginHost) {
    let reply = host.handle_message(message("trap"));
    assert!(reply.ok, "the host still serves: {reply:?}");
    assert_eq!(reply.text, "trap ok");
    assert_eq!(
        host.call_service("trap", "ok", &Value::Null)
            .expect("service still works"),
        json!("fine")
    );
}

fn assert_names(error: &str, entry: &str) {
    assert!(
        error.contains("plugin 'panicky'"),
        "names the plugin: {error}"
    );
    assert!(
        error.contains(entry),
        "names the entry point '{entry}': {error}"
    );
    assert!(
        error.contains("panicked at"),
        "says it panicked, and where: {error}"
    );
    assert!(
        error.contains("was told to panic") || error.contains("always panics"),
        "keeps the message: {error}"
    );
}

#[test]
fn panics_in_message_entry_points_become_errors() {
    let (host, report, _dir) = load_panicky(&[]);
    assert!(report.is_clean(), "{:?}", report.failures);

    for (text, entry) in [
        ("panic:validate", "action 'TRAP' validate"),
        ("panic:handler", "action 'TRAP' handler"),
        ("panic:provider trap", "provider 'trap' get"),
        ("panic:evaluate trap", "evaluator 'trap' evaluate"),
    ] {
        let reply = host.handle_message(message(text));
        let error = reply
            .errors
            .iter()
            .find(|e| e.contains(entry))
            .unwrap_or_else(|| panic!("no error for {entry}: {reply:?}"));
        assert_names(error, entry);
        still_serves(&host);
    }
}

#[test]
fn panics_in_service_calls_and_event_handlers_become_errors() {
    let (host, report, _dir) = load_panicky(&[]);
    assert!(report.is_clean(), "{:?}", report.failures);

    let error = host
        .call_service("trap", "panic", &Value::Null)
        .expect_err("the method panics");
    assert_names(&error.message, "service 'trap' method 'panic'");
    still_serves(&host);

    let failures = host.emit("fixture:panic", json!({}));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_names(&failures[0].error, "event handler for 'fixture:panic'");
    assert!(
        host.emit("fixture:ok", json!({})).is_empty(),
        "other events still deliver"
    );
    still_serves(&host);
}

#[test]
fn panics_in_service_stop_and_on_unload_are_reported_at_shutdown() {
    let (host, report, _dir) = load_panicky(&[fixture("")]);
    assert!(report.is_clean(), "{:?}", report.failures);
    let errors: Vec<String> = host.shutdown().iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_names(&errors[0], "service 'trap' stop");
    assert_names(&errors[1], "on_unload");
    assert!(
        host.plugin_names().is_empty(),
        "every plugin was unloaded despite the panics"
    );
}

#[test]
fn panics_while_loading_fail_only_that_plugin() {
    let (host, report, _dir) = load_files(&[
        fixture("manifest-panics"),
        fixture("create-panics"),
        fixture("on-load-panics"),
        fixture("service-panics"),
        fixture(""),
    ]);
    let cause_of = |file: &str| {
        report
            .failures
            .iter()
            .find(|f| {
                f.file
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() == format!("{file}.{EXT}"))
            })
            .unwrap_or_else(|| panic!("no failure for {file}: {:?}", report.failures))
            .clone()
    };
    let manifest = cause_of("manifest-panics");
    assert_eq!(manifest.stage(), Stage::Open);
    assert!(
        manifest.cause().contains("manifest: panicked at"),
        "{manifest}"
    );

    let create = cause_of("create-panics");
    assert_eq!(
        (create.stage(), create.plugin.as_deref()),
        (Stage::Create, Some("create-panics"))
    );
    assert!(create.cause().contains("create: panicked at"), "{create}");

    let on_load = cause_of("on-load-panics");
    assert_eq!(
        (on_load.stage(), on_load.plugin.as_deref()),
        (Stage::OnLoad, Some("on-load-panics"))
    );
    assert!(
        on_load.cause().contains("on_load: panicked at"),
        "{on_load}"
    );

    let start = cause_of("service-panics");
    assert_eq!(
        (start.stage(), start.plugin.as_deref()),
        (Stage::StartService, Some("service-panics"))
    );
    assert!(
        start
            .cause()
            .contains("service 'explosive' failed to start: panicked at"),
        "{start}"
    );

    assert_eq!(
        host.plugin_names(),
        vec!["fixture".to_string()],
        "the good plugin loaded"
    );
    assert!(host.call_service("fixture", "ticks", &Value::Null).is_ok());
}
