//! An isolated plugin on the shared database pool: `notes` runs in a
//! sandboxed worker with no network grant and stores its notes on
//! PostgreSQL through the `database` plugin (in the host), over its
//! service calls alone.

use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage};
use serde_json::json;
use test_support::servers::{require, unique_name, Server};

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

#[test]
fn an_isolated_plugin_without_network_grants_uses_the_pool_on_postgres() {
    let test = "an_isolated_plugin_without_network_grants_uses_the_pool_on_postgres";
    let Some(url) = require(Server::Postgres, test) else {
        return;
    };
    let schema = unique_name("pool_isolated");
    let files: Vec<_> = test_support::examples()
        .into_iter()
        .filter(|file| {
            let name = file.file_name().map(|n| n.to_string_lossy().to_string());
            name.is_some_and(|n| n.contains("database") || n.contains("notes"))
        })
        .collect();
    assert_eq!(files.len(), 2, "the database and notes examples: {files:?}");
    let config = format!(
        "[isolation]\nprocess = [\"notes\"]\nworker_program = \"{WORKER}\"\n\
         [plugins.database]\nurl = {url:?}\nschema = {schema:?}\n\
         [grants]\ndatabase = [\"config:*\", \"network:connect:5432\"]\n\
         notes = [\"event:emit:notes:*\", \"service:database\"]\n"
    );
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&files, options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    let status = agent.host.status("notes").expect("notes loaded");
    assert!(status.worker.is_some(), "notes runs in a worker");
    assert!(
        !status.permissions.iter().any(|p| p.starts_with("network")),
        "notes holds no network permission: {:?}",
        status.permissions
    );
    let say = |id: &str, text: &str| {
        agent.host.handle_message(InboundMessage {
            id: id.into(),
            sender: "dana".into(),
            text: text.into(),
            ..InboundMessage::default()
        })
    };
    assert_eq!(
        say("i-1", "remember the gate code").text,
        "Noted: the gate code"
    );
    assert_eq!(
        say("i-1", "remember the gate code").text,
        "Noted: the gate code"
    );
    assert_eq!(say("i-2", "recall").text, "Your notes:\n1. the gate code");
    let rows = agent
        .host
        .call_service(
            "database",
            "query",
            &json!({"sql": "SELECT count(*) AS n FROM notes WHERE sender = $1", "params": ["dana"]}),
        )
        .expect("count the rows");
    assert_eq!(rows["rows"], json!([[1]]), "{rows}");
    agent
        .host
        .call_service(
            "database",
            "execute",
            &json!({"sql": format!("DROP SCHEMA {schema} CASCADE")}),
        )
        .expect("drop the schema");
    assert!(agent.host.shutdown().is_empty());
}
