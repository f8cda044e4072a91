//! Hot reload on real plugin files: a new build swaps in while the agent
//! serves, hands over its state, keeps its dependents working, and a broken
//! build never wins.

use agent_host::{HostOptions, InboundMessage, PluginHost};
use agent_host_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn msg(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// Replaces the plugin file the way a build tool should: a temporary file
/// renamed into place.
fn replace(target: &Path, build: &Path) {
    let temp = target.with_extension("staging");
    std::fs::copy(build, &temp).expect("copy the new build");
    std::fs::rename(&temp, target).expect("rename into place");
}

fn setup() -> (PluginHost, tempfile::TempDir, PathBuf) {
    let dir = folder_with(&[fixture("counter-user")]);
    let file = add_as(
        dir.path(),
        &fixture("counter-v1"),
        &format!("counter.{EXT}"),
    );
    let host = PluginHost::new(HostOptions::default()).expect("host");
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    (host, dir, file)
}

fn recorded(host: &PluginHost, pattern: &str) -> Arc<Mutex<Vec<Value>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    host.on(pattern, move |event| {
        sink.lock().expect("lock").push(event.payload.clone());
        Ok(())
    });
    events
}

#[test]
fn a_new_build_swaps_in_with_its_state_and_dependents_follow() {
    let (host, _dir, file) = setup();
    let reloaded = recorded(&host, "plugin:reloaded");
    for n in 1..=5 {
        assert_eq!(host.handle_message(msg("count")).text, format!("v1: {n}"));
    }
    replace(&file, &fixture("counter-v2"));
    let done = host.reload("counter").expect("the new build loads");
    assert_eq!(
        (done.from_version.as_str(), done.to_version.as_str()),
        ("1.0.0", "2.0.0")
    );
    assert_eq!(
        host.handle_message(msg("count")).text,
        "v2: 6",
        "state carried over"
    );
    assert_eq!(
        host.handle_message(msg("use")).text,
        "user sees 6",
        "the dependent reaches the new generation"
    );
    assert_eq!(reloaded.lock().expect("lock").len(), 1);
    let status = host.status("counter").expect("status");
    assert_eq!(status.version, "2.0.0");
    assert_eq!(status.generation, done.generation);
    assert_eq!(
        status.mapped.generations, 2,
        "both generations stay mapped and are counted"
    );
    let size = |feature: &str| std::fs::metadata(fixture(feature)).expect("fixture").len();
    assert_eq!(
        status.mapped.bytes,
        size("counter-v1") + size("counter-v2"),
        "the bytes of both generations"
    );
}

#[test]
fn a_broken_build_never_wins_and_a_fixed_one_then_reloads() {
    let (host, dir, file) = setup();
    let failed = recorded(&host, "plugin:reload_failed");
    assert_eq!(host.handle_message(msg("count")).text, "v1: 1");

    let cases: Vec<(PathBuf, &str)> = vec![
        (
            fixture("counter-broken"),
            "on_load: this build is broken on purpose",
        ),
        (fixture("counter-panics"), "on_load: panicked at"),
        (
            fixture("counter-v3"),
            "plugin 'counter-user' requires counter@>=1, <3",
        ),
        (fixture("foreign-layout"), "incompatible plugin ABI layout"),
        (
            fixture("multi"),
            "holds no plugin of that name (it holds: multi-one, multi-two)",
        ),
    ];
    for (build, cause) in cases {
        replace(&file, &build);
        let failure = host.reload("counter").expect_err("refused");
        assert!(failure.cause().contains(cause), "{failure}");
        assert!(failure
            .to_string()
            .contains("the running generation keeps serving"));
        assert!(
            host.handle_message(msg("count")).ok,
            "the old generation still serves"
        );
    }
    // Half-written: a truncated file.
    let bytes = std::fs::read(fixture("counter-v2")).expect("read");
    std::fs::write(
        dir.path().join("partial.staging"),
        &bytes[..bytes.len() / 3],
    )
    .expect("write");
    std::fs::rename(dir.path().join("partial.staging"), &file).expect("rename");
    let failure = host.reload("counter").expect_err("half a file is refused");
    assert!(
        failure.cause().contains("the file is incomplete"),
        "{failure}"
    );
    assert_eq!(failed.lock().expect("lock").len(), 6);

    replace(&file, &fixture("counter-v2"));
    host.reload("counter").expect("a fixed build reloads");
    assert_eq!(
        host.handle_message(msg("count")).text,
        "v2: 7",
        "no count was lost on the way"
    );
}

#[test]
fn a_hundred_swaps_under_load_fail_nothing_and_lose_nothing() {
    let (host, _dir, file) = setup();
    let host = Arc::new(host);
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (host, stop, counted, failures) = (
                Arc::clone(&host),
                Arc::clone(&stop),
                Arc::clone(&counted),
                Arc::clone(&failures),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let reply = host.handle_message(msg("count"));
                    if reply.ok {
                        counted.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.lock().expect("lock").push(format!("{reply:?}"));
                    }
                }
            })
        })
        .collect();
    let builds = [fixture("counter-v2"), fixture("counter-v1")];
    for swap in 0..100 {
        replace(&file, &builds[swap % 2]);
        host.reload("counter")
            .unwrap_or_else(|e| panic!("swap {swap}: {e}"));
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("client thread");
    }
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let total = host
        .call_service("counter", "total", &Value::Null)
        .expect("total");
    let counted = counted.load(Ordering::SeqCst);
    assert!(counted > 100, "the clients kept sending: {counted}");
    assert_eq!(
        total,
        Value::from(counted),
        "every count survived 100 swaps"
    );
    assert_eq!(
        host.status("counter").expect("status").mapped.generations,
        101
    );
}
