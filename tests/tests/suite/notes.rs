//! The `notes` example plugin, loaded from its real release file next to the
//! other examples: notes are kept per sender in a real SQLite file served by
//! the `database` plugin, and they survive a shutdown of the host, a new
//! host on the same file and reloads of either plugin.

use agent_host::{HostOptions, InboundMessage, PluginHost};
use agent_host_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};

fn from(sender: &str, text: &str) -> InboundMessage {
    InboundMessage {
        sender: sender.into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// The `database` plugin's URL of the SQLite file at `path`.
fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A host with the plugins of `plugins` loaded, the notes kept in `database`.
fn host_on(database: &Path, plugins: &Path) -> PluginHost {
    let host = PluginHost::new(HostOptions {
        configs: [(
            "database".to_string(),
            json!({ "url": sqlite_url(database) }),
        )]
        .into(),
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(plugins).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    assert!(report.loaded("notes"), "{:?}", report.loaded);
    host
}

fn action_of(reply: &agent_host::Reply) -> Option<&str> {
    reply.action.as_ref().map(|a| a.action.as_str())
}

#[test]
fn notes_are_kept_per_sender_and_survive_a_restart() {
    let plugins = folder_with(&examples());
    let data = tempfile::tempdir().expect("temp folder");
    let database = data.path().join("notes.sqlite3");

    let host = host_on(&database, plugins.path());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    host.on("notes:*", move |event| {
        seen.lock()
            .expect("lock")
            .push((event.name.clone(), event.payload.clone()));
        Ok(())
    });

    let reply = host.handle_message(from("alice", "remember buy milk"));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(action_of(&reply), Some("REMEMBER"));
    assert_eq!(reply.text, "Noted: buy milk");
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    let id = reply.data["id"].as_i64().expect("the new note's id");

    let reply = host.handle_message(from("alice", "recall"));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(action_of(&reply), Some("RECALL"));
    assert_eq!(reply.text, "Your notes:\n1. buy milk");
    assert_eq!(reply.data["notes"][0]["id"], id);

    // Another sender sees none of alice's notes.
    let reply = host.handle_message(from("bob", "What did I tell you?"));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.text, "You have no notes yet.");
    let reply = host.handle_message(from("bob", "recall milk"));
    assert_eq!(reply.text, "You have no notes containing \"milk\".");

    assert_eq!(
        *events.lock().expect("lock"),
        [(
            "notes:remembered".to_string(),
            json!({"sender": "alice", "id": id})
        )]
    );
    assert_eq!(
        host.call_service("notes", "count", &json!({"sender": "alice"}))
            .expect("count"),
        json!(1)
    );

    let errors = host.shutdown();
    assert!(errors.is_empty(), "{errors:?}");
    drop(host);

    // The file is a real SQLite database.
    let header = std::fs::read(&database).expect("the database file exists");
    assert!(
        header.starts_with(b"SQLite format 3\0"),
        "not an SQLite file"
    );

    // A new host on the same file finds alice's note.
    let host = host_on(&database, plugins.path());
    let reply = host.handle_message(from("alice", "recall"));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.text, "Your notes:\n1. buy milk");
    assert_eq!(reply.data["notes"][0]["id"], id);
    let reply = host.handle_message(from("bob", "recall"));
    assert_eq!(reply.text, "You have no notes yet.");

    // And the service keeps working on it.
    let reply = host.handle_message(from("alice", "Note that the café opens at 8"));
    assert_eq!(reply.text, "Noted: the café opens at 8");
    let notes = host
        .call_service(
            "notes",
            "recall",
            &json!({"sender": "alice", "query": "CAFÉ"}),
        )
        .expect("recall");
    // SQLite's LIKE ignores the case of ASCII letters only.
    assert_eq!(notes, json!([]));
    let notes = host
        .call_service(
            "notes",
            "recall",
            &json!({"sender": "alice", "query": "Café"}),
        )
        .expect("recall");
    assert_eq!(notes[0]["text"], "the café opens at 8", "{notes}");
    assert_eq!(
        host.call_service("notes", "forget", &json!({"sender": "alice", "id": id}))
            .expect("forget"),
        Value::Bool(true)
    );
    assert_eq!(
        host.handle_message(from("alice", "recall")).text,
        "Your notes:\n1. the café opens at 8"
    );
    assert!(host.shutdown().is_empty());
}

/// The plugin log lines of this test process, from the first call on.
fn plugin_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    Arc::clone(LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("plugin=info")
            .with_ansi(false)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    }))
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn reloads_hand_the_database_over_and_lose_no_acknowledged_note() {
    let log = plugin_log();
    let plugins = folder_with(&examples());
    let data = tempfile::tempdir().expect("temp folder");
    let database = data.path().join("notes.sqlite3");
    let host = host_on(&database, plugins.path());

    const WRITERS: usize = 4;
    const RELOADS: usize = 20;
    let writing = std::sync::atomic::AtomicBool::new(true);
    let acknowledged: Vec<Vec<String>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (host, writing) = (&host, &writing);
                scope.spawn(move || {
                    let mut noted = Vec::new();
                    let mut next = 0;
                    while writing.load(std::sync::atomic::Ordering::SeqCst) || next < 20 {
                        let note = format!("note {next} of writer {writer}");
                        let reply = host.handle_message(from(
                            &format!("w{writer}"),
                            &format!("remember {note}"),
                        ));
                        if reply.text == format!("Noted: {note}") {
                            noted.push(note);
                        }
                        next += 1;
                    }
                    noted
                })
            })
            .collect();
        for reload in 0..RELOADS {
            // Every other reload is of the pool under the notes.
            let plugin = if reload % 2 == 0 { "notes" } else { "database" };
            host.reload_as(
                plugin,
                None,
                agent_host::ReloadOrigin::Api,
                agent_host::WhenUnchanged::Reload,
            )
            .expect("reload");
        }
        writing.store(false, std::sync::atomic::Ordering::SeqCst);
        writers
            .into_iter()
            .map(|writer| writer.join().expect("writer"))
            .collect()
    });

    for (writer, noted) in acknowledged.iter().enumerate() {
        assert!(!noted.is_empty(), "writer {writer} got no note through");
        let stored = host
            .call_service("notes", "recall", &json!({"sender": format!("w{writer}")}))
            .expect("recall");
        let stored: Vec<&str> = stored
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|note| note["text"].as_str())
            .collect();
        let lost: Vec<&String> = noted
            .iter()
            .filter(|note| !stored.contains(&note.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "writer {writer} lost acknowledged notes: {lost:?}"
        );
    }
    assert!(host.shutdown().is_empty());

    // Each generation of the pool opened only after the one before closed.
    let log = String::from_utf8_lossy(&log.lock().expect("lock")).into_owned();
    let url = sqlite_url(&database);
    let opened = format!("database pool open: sqlite at {url} ");
    let closed = format!("database pool closed: {url}");
    let mut open = 0;
    let mut opens = 0;
    for line in log.lines() {
        if line.contains(&opened) {
            open += 1;
            opens += 1;
            assert_eq!(open, 1, "the pool was opened twice at once:\n{log}");
        } else if line.contains(&closed) {
            open -= 1;
        }
    }
    assert_eq!(opens, RELOADS / 2 + 1, "{log}");
    assert_eq!(open, 0, "{log}");
}

#[test]
fn a_database_that_cannot_be_opened_fails_only_the_pool_and_the_notes() {
    let plugins = folder_with(&examples());
    let data = tempfile::tempdir().expect("temp folder");
    let database = data.path().join("no-such-folder").join("notes.sqlite3");
    let host = PluginHost::new(HostOptions {
        configs: [(
            "database".to_string(),
            json!({ "url": sqlite_url(&database) }),
        )]
        .into(),
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(plugins.path()).expect("load");
    assert!(!report.loaded("database"));
    assert!(!report.loaded("notes"));
    let failure = report
        .failures
        .iter()
        .find(|f| f.plugin.as_deref() == Some("database"))
        .unwrap_or_else(|| panic!("no failure for database: {:?}", report.failures));
    assert!(
        failure.cause().contains("cannot connect to sqlite://"),
        "{failure}"
    );
    for other in ["http-client", "geolocation", "weather", "sentiment"] {
        assert!(report.loaded(other), "{other}: {:?}", report.failures);
    }
    let reply = host.handle_message(from("alice", "remember buy milk"));
    assert!(reply.action.is_none(), "{reply:?}");
}
