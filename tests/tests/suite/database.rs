//! The `database` plugin from its real release file, on SQLite (a temp file)
//! and on PostgreSQL (a schema of the test's own, dropped at the end), and
//! `notes` stored through it: bound parameters, transactions that commit
//! whole or not at all, the `service:database` grant, a server that cannot
//! be reached, notes that outlive reloads and are shared by two hosts, and
//! a message handled twice.

use agent_host::{
    AgentConfig, HostOptions, InboundMessage, PluginHost, ReloadOrigin, WhenUnchanged,
};
use agent_host_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use test_support::servers::{require, unique_name, Server};

/// A host on the example plugins with `config` (TOML) as its config file.
fn host_with(plugins: &Path, config: &str) -> PluginHost {
    let host = PluginHost::new(HostOptions {
        config: AgentConfig::parse(config).expect("config"),
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(plugins).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    host
}

/// The config of an agent whose database is `url` (TOML-quoted), with
/// `extra` lines in the database's table; notes granted the service.
fn config_for(url: &str, extra: &str) -> String {
    format!(
        "[plugins.database]\nurl = {url:?}\n{extra}\n\
         [grants]\ndatabase = [\"config:*\", \"network:connect:5432\"]\n\
         notes = [\"event:emit:notes:*\", \"service:database\"]\n\
         http-client = [\"config:*\"]\ngeolocation = [\"config:*\"]\n\
         weather = [\"config:*\", \"service:http-client\", \"service:geolocation\"]\n\
         sentiment = [\"config:*\"]\n"
    )
}

fn call(host: &PluginHost, method: &str, args: Value) -> Result<Value, String> {
    host.call_service("database", method, &args)
        .map_err(|e| e.to_string())
}

fn say(host: &PluginHost, id: &str, sender: &str, text: &str) -> agent_host::Reply {
    host.handle_message(InboundMessage {
        id: id.into(),
        sender: sender.into(),
        text: text.into(),
        ..InboundMessage::default()
    })
}

/// The same checks on either dialect: bound parameters, a transaction that
/// commits, one whose second statement fails and changes nothing.
fn exercise(host: &PluginHost, dialect: &str) {
    assert_eq!(call(host, "dialect", Value::Null), Ok(json!(dialect)));
    call(
        host,
        "execute",
        json!({"sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, ok BOOLEAN)"}),
    )
    .expect("create");
    let hostile = "x'); DROP TABLE items; --";
    let inserted = call(
        host,
        "execute",
        json!({"sql": "INSERT INTO items (id, name, price, ok) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)",
               "params": [1, "tea", 2.5, true, 2, hostile, null, false]}),
    )
    .expect("insert");
    assert_eq!(inserted, json!({"rows_affected": 2}));
    let rows = call(
        host,
        "query",
        json!({"sql": "SELECT id, name, price, ok FROM items WHERE id >= $1 ORDER BY id", "params": [1]}),
    )
    .expect("query");
    assert_eq!(
        rows,
        json!({"columns": ["id", "name", "price", "ok"],
               "rows": [[1, "tea", 2.5, true], [2, hostile, null, false]]})
    );

    let done = call(
        host,
        "transaction",
        json!({"statements": [
            {"sql": "INSERT INTO items (id, name) VALUES ($1, $2)", "params": [3, "coffee"]},
            {"sql": "UPDATE items SET price = $1 WHERE id = $2", "params": [3.0, 3]},
            {"sql": "SELECT name FROM items WHERE id = $1", "params": [3]},
        ]}),
    )
    .expect("transaction");
    assert_eq!(
        done,
        json!({"results": [
            {"rows_affected": 1},
            {"rows_affected": 1},
            // The database's own count: PostgreSQL counts the rows a
            // SELECT returned, SQLite does not.
            {"rows_affected": if dialect == "postgres" { 1 } else { 0 }, "rows": [["coffee"]]},
        ]})
    );

    let error = call(
        host,
        "transaction",
        json!({"statements": [
            {"sql": "INSERT INTO items (id, name) VALUES ($1, $2)", "params": [4, "cocoa"]},
            {"sql": "INSERT INTO items (id, name) VALUES ($1, $2)", "params": [1, "duplicate"]},
        ]}),
    )
    .expect_err("the second statement breaks the primary key");
    assert!(
        error.contains("database.transaction: statement 1 failed"),
        "{error}"
    );
    let count = call(
        host,
        "query",
        json!({"sql": "SELECT count(*) AS n FROM items"}),
    )
    .expect("count");
    assert_eq!(
        count["rows"],
        json!([[3]]),
        "nothing of the failed transaction stays"
    );

    let error = call(
        host,
        "query",
        json!({"sql": "SELECT $1", "params": [{"a": 1}]}),
    )
    .expect_err("an object is no parameter");
    assert!(error.contains("parameter $1"), "{error}");
}

#[test]
fn sqlite_binds_parameters_and_transactions_commit_whole() {
    let plugins = folder_with(&examples());
    let data = tempfile::tempdir().expect("temp folder");
    let url = format!("sqlite://{}", data.path().join("agent.sqlite3").display());
    let host = host_with(plugins.path(), &config_for(&url, ""));
    exercise(&host, "sqlite");
    assert!(host.shutdown().is_empty());
}

#[test]
fn postgres_binds_parameters_and_transactions_commit_whole() {
    let test = "postgres_binds_parameters_and_transactions_commit_whole";
    let Some(url) = require(Server::Postgres, test) else {
        return;
    };
    let schema = unique_name("db_exercise");
    let plugins = folder_with(&examples());
    let host = host_with(
        plugins.path(),
        &config_for(&url, &format!("schema = {schema:?}")),
    );
    exercise(&host, "postgres");
    let drop = format!("DROP SCHEMA {schema} CASCADE");
    call(&host, "execute", json!({ "sql": drop })).expect("drop the schema");
    assert!(host.shutdown().is_empty());
}

#[test]
fn a_plugin_not_granted_the_service_is_refused() {
    let plugins = folder_with(&examples());
    let config = config_for("sqlite::memory:", "").replace(
        "notes = [\"event:emit:notes:*\", \"service:database\"]",
        "notes = [\"event:emit:notes:*\"]",
    );
    let host = PluginHost::new(HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(plugins.path()).expect("load");
    assert!(report.loaded("database"), "{:?}", report.failures);
    assert!(!report.loaded("notes"));
    let failure = report
        .failures
        .iter()
        .find(|f| f.plugin.as_deref() == Some("notes"))
        .unwrap_or_else(|| panic!("no failure for notes: {:?}", report.failures));
    assert!(failure.cause().contains("service:database"), "{failure}");
}

#[test]
fn an_unreachable_server_fails_the_pool_naming_the_url_without_its_password() {
    let plugins = folder_with(&examples());
    // Port 1 on the loopback address: nothing listens there.
    let url = "postgres://agent:s3cret-pw@127.0.0.1:1/agent";
    let host = PluginHost::new(HostOptions {
        config: AgentConfig::parse(&config_for(url, "acquire_timeout_ms = 300")).expect("config"),
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(plugins.path()).expect("load");
    let failure = report
        .failures
        .iter()
        .find(|f| f.plugin.as_deref() == Some("database"))
        .unwrap_or_else(|| panic!("no failure for database: {:?}", report.failures));
    let cause = failure.cause();
    assert!(
        cause.contains("cannot connect to postgres://agent:***@127.0.0.1:1/agent"),
        "{cause}"
    );
    assert!(!cause.contains("s3cret-pw"), "{cause}");
    assert!(!report.loaded("notes"), "notes needs the pool");
    for other in ["http-client", "geolocation", "weather", "sentiment"] {
        assert!(report.loaded(other), "{other}: {:?}", report.failures);
    }
    let reply = say(&host, "m1", "alice", "I love this");
    // The others serve on: the sentiment evaluator scores the message.
    assert!(
        reply.evaluations.iter().any(|e| e.plugin == "sentiment"),
        "{reply:?}"
    );
}

fn reload(host: &PluginHost, plugin: &str) {
    host.reload_as(plugin, None, ReloadOrigin::Api, WhenUnchanged::Reload)
        .unwrap_or_else(|e| panic!("reload {plugin}: {e}"));
}

/// Notes on `url` (with `extra` config): they survive reloads of notes and
/// of the pool, and a message handled twice stores one note.
fn notes_survive_reloads_and_duplicates(url: &str, extra: &str, plugins: &Path) {
    let host = host_with(plugins, &config_for(url, extra));
    assert_eq!(
        say(&host, "n-1", "alice", "remember buy milk").text,
        "Noted: buy milk"
    );
    reload(&host, "notes");
    reload(&host, "database");
    let reply = say(&host, "n-2", "alice", "recall");
    assert_eq!(reply.text, "Your notes:\n1. buy milk", "{reply:?}");

    // The same message again (a cluster redelivering it): one note.
    let again = say(&host, "n-1", "alice", "remember buy milk");
    assert_eq!(again.text, "Noted: buy milk", "{again:?}");
    assert_eq!(
        host.call_service("notes", "count", &json!({"sender": "alice"}))
            .expect("count"),
        json!(1)
    );
    assert!(host.shutdown().is_empty());
}

#[test]
fn sqlite_notes_survive_reloads_and_store_a_message_once() {
    let plugins = folder_with(&examples());
    let data = tempfile::tempdir().expect("temp folder");
    let url = format!("sqlite://{}", data.path().join("agent.sqlite3").display());
    notes_survive_reloads_and_duplicates(&url, "", plugins.path());
}

#[test]
fn postgres_notes_are_shared_by_two_hosts_and_survive_reloads() {
    let test = "postgres_notes_are_shared_by_two_hosts_and_survive_reloads";
    let Some(url) = require(Server::Postgres, test) else {
        return;
    };
    let schema = unique_name("db_notes");
    let extra = format!("schema = {schema:?}");
    let plugins = folder_with(&examples());
    notes_survive_reloads_and_duplicates(&url, &extra, plugins.path());

    let first = host_with(plugins.path(), &config_for(&url, &extra));
    let second = host_with(plugins.path(), &config_for(&url, &extra));
    assert_eq!(
        say(&first, "s-1", "bob", "remember the café opens at 8").text,
        "Noted: the café opens at 8"
    );
    assert_eq!(
        say(&second, "s-2", "bob", "remember call Ann").text,
        "Noted: call Ann"
    );
    // The message the first host handled, handled again by the second.
    assert_eq!(
        say(&second, "s-1", "bob", "remember the café opens at 8").text,
        "Noted: the café opens at 8"
    );
    for host in [&first, &second] {
        let reply = say(host, "s-3", "bob", "recall");
        assert_eq!(
            reply.text, "Your notes:\n1. the café opens at 8\n2. call Ann",
            "{reply:?}"
        );
        // ILIKE on PostgreSQL ignores the case of every letter.
        let reply = say(host, "s-4", "bob", "recall CAFÉ");
        assert_eq!(
            reply.text,
            "Your notes containing \"CAFÉ\":\n1. the café opens at 8"
        );
    }
    let drop = format!("DROP SCHEMA {schema} CASCADE");
    call(&first, "execute", json!({ "sql": drop })).expect("drop the schema");
    assert!(first.shutdown().is_empty());
    assert!(second.shutdown().is_empty());
}

#[test]
fn a_restarted_agent_gives_its_messages_new_ids_so_no_note_is_taken_for_a_repeat() {
    // Messages without ids get theirs from the host; notes keys each note by
    // its message's id, so an id the host gave before a restart must never
    // come again after it.
    let plugins = folder_with(&examples());
    let data = tempfile::tempdir().expect("temp folder");
    let url = format!("sqlite://{}", data.path().join("agent.sqlite3").display());
    for note in ["apples", "pears"] {
        let host = host_with(plugins.path(), &config_for(&url, ""));
        let reply = say(&host, "", "erin", &format!("remember {note}"));
        assert_eq!(reply.text, format!("Noted: {note}"));
        assert!(host.shutdown().is_empty());
    }
    let host = host_with(plugins.path(), &config_for(&url, ""));
    assert_eq!(
        say(&host, "", "erin", "recall").text,
        "Your notes:\n1. apples\n2. pears"
    );
    assert!(host.shutdown().is_empty());
}
