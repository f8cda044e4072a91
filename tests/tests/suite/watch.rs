//! `--watch` on a real folder: a changed file reloads its plugin, a new file
//! loads (and so do plugins that were waiting for it), a removed file stops
//! its plugin and its dependents, a half-written file is retried.

use agent_host::{HostOptions, PluginHost};
use agent_host_tests::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn replace(target: &Path, build: &Path) {
    let temp = target.with_extension("staging");
    std::fs::copy(build, &temp).expect("copy");
    std::fs::rename(&temp, target).expect("rename");
}

fn version(host: &PluginHost, name: &str) -> Option<String> {
    host.status(name).map(|s| s.version)
}

#[test]
fn the_folder_drives_the_plugins() {
    // counter-user waits for counter, which is not there yet.
    let dir = folder_with(&[fixture("counter-user")]);
    let host = Arc::new(PluginHost::new(HostOptions::default()).expect("host"));
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.failure_of("counter-user").is_some());
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");

    // A new file loads, and the plugin waiting for it follows.
    let file = dir.path().join(format!("counter.{EXT}"));
    replace(&file, &fixture("counter-v1"));
    wait_until("counter and counter-user to load", || {
        version(&host, "counter").is_some() && version(&host, "counter-user").is_some()
    });
    assert_eq!(host.handle_message(msg("count")).text, "v1: 1");

    // A changed file reloads, with its state.
    replace(&file, &fixture("counter-v2"));
    // The new generation serves before its reload is counted (the old one
    // leaves service, then the audit record): wait for both, so that what
    // is read below is the finished reload.
    wait_until("the v2 reload, served and recorded", || {
        version(&host, "counter").as_deref() == Some("2.0.0")
            && reloads(&host, "watcher", "reloaded") >= 1
    });
    // The host reading the file for its private copy is not a change: one
    // rename, one reload. A later event on another file, once handled,
    // shows the watcher has handled what came before it.
    let generation = host.status("counter").expect("status").generation;
    let reloaded = reloads(&host, "watcher", "reloaded");
    let unchanged = reloads(&host, "watcher", "unchanged");
    let user_file = dir.path().join(format!("counter-user.{EXT}"));
    replace(&user_file, &fixture("counter-user"));
    wait_until("the watcher to handle a later event", || {
        reloads(&host, "watcher", "unchanged") > unchanged
    });
    assert_eq!(
        host.status("counter").expect("status").generation,
        generation,
        "no reload loop"
    );
    assert_eq!(
        reloads(&host, "watcher", "reloaded"),
        reloaded,
        "no reload loop"
    );
    assert_eq!(host.handle_message(msg("count")).text, "v2: 2");
    assert_eq!(host.handle_message(msg("use")).text, "user sees 2");

    // A file caught half-written is retried until it is whole.
    let whole = std::fs::read(fixture("counter-v1")).expect("read");
    let refused = reloads(&host, "watcher", "refused");
    std::fs::write(&file, &whole[..whole.len() / 2]).expect("write half");
    wait_until("the watcher to try the half-written file", || {
        reloads(&host, "watcher", "refused") > refused
    });
    assert_eq!(
        version(&host, "counter").as_deref(),
        Some("2.0.0"),
        "half a file never wins"
    );
    std::fs::write(&file, &whole).expect("write the rest");
    wait_until("the completed file to load", || {
        version(&host, "counter").as_deref() == Some("1.0.0")
    });
    assert_eq!(host.handle_message(msg("count")).text, "v1: 3");

    // A removed file stops its plugin and its dependent.
    std::fs::remove_file(&file).expect("remove");
    wait_until("counter and counter-user to stop", || {
        version(&host, "counter").is_none() && version(&host, "counter-user").is_none()
    });
    assert!(host.handle_message(msg("count")).action.is_none());
}

/// The value of the counter `agent_host_reloads_total` for `origin` and
/// `outcome` (0 when it never counted).
fn reloads(host: &PluginHost, origin: &str, outcome: &str) -> u64 {
    let prefix = format!("agent_host_reloads_total{{origin=\"{origin}\",outcome=\"{outcome}\"}} ");
    host.metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_file_event_that_changes_no_byte_reloads_nothing() {
    let dir = tempfile::tempdir().expect("temp folder");
    let file = add_as(
        dir.path(),
        &fixture("counter-v1"),
        &format!("counter.{EXT}"),
    );
    let host = Arc::new(PluginHost::new(HostOptions::default()).expect("host"));
    assert!(host.load_dir(dir.path()).expect("load").is_clean());
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");
    let generation = host.status("counter").expect("counter").generation;

    // The same bytes written again: the watcher sees the file change and
    // reloads nothing.
    replace(&file, &fixture("counter-v1"));
    wait_until("the watcher to skip the unchanged file", || {
        reloads(&host, "watcher", "unchanged") == 1
    });
    let status = host.status("counter").expect("counter");
    assert_eq!(status.generation, generation);
    assert_eq!(status.mapped.generations, 1);
    assert_eq!(reloads(&host, "watcher", "reloaded"), 0);

    // A new build reloaded by hand while the watcher also sees it: one of
    // the two reloads it, the other finds nothing to do.
    replace(&file, &fixture("counter-v2"));
    let by_hand = host.reload("counter").expect("reload");
    wait_until("the watcher to see the new build", || {
        reloads(&host, "watcher", "unchanged") + reloads(&host, "watcher", "reloaded") == 2
    });
    let status = host.status("counter").expect("counter");
    assert_eq!(status.version, "2.0.0");
    assert_eq!(status.mapped.generations, 2, "one new generation, not two");
    let reloaded = reloads(&host, "watcher", "reloaded") + reloads(&host, "api", "reloaded");
    assert_eq!(reloaded, 1, "{}", host.metrics_text());
    if by_hand.unchanged {
        assert_eq!(reloads(&host, "watcher", "reloaded"), 1);
    }
}
