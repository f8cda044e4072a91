//! Faults on real plugin files: each is counted
//! (`agent_host_plugin_faults_total{plugin,entry,cause}` and the plugin's
//! `stats`) and said in the log once per plugin and cause, the repeats
//! counted and their number said later; `/healthz` and `/v1/plugins` tell
//! the truth about them; a reply no action answered names the plugins that
//! could not take part; `agent-host list` starts nothing.

use crate::common::{run_with_stdin, Agent};
use serde_json::{json, Value};
use std::process::Command;
use test_support::{fixture, folder_with};

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

#[test]
fn a_message_whose_event_cascade_is_cut_writes_one_line_and_the_count_of_the_rest() {
    let dir = folder_with(&[fixture("storm")]);
    let output = run_with_stdin(dir.path(), b"{\"text\":\"storm:tick\"}\n".to_vec());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("deliveries: "), "{stdout}\n{stderr}");
    let cut: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("not delivered"))
        .collect();
    assert_eq!(cut.len(), 1, "one line for the whole storm:\n{stderr}");
    assert!(cut[0].contains("storm"), "{}", cut[0]);
    // The rest are counted, and their number said before the agent exits.
    let summary = stderr
        .lines()
        .find(|line| line.contains("more 'events_cut' fault(s)"))
        .unwrap_or_else(|| panic!("no count of the faults left out:\n{stderr}"));
    let left_out: u64 = summary
        .split("plugin 'storm': ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {summary}"));
    assert!(left_out >= 1_000, "{summary}");
    assert!(stderr.lines().count() < 50, "{stderr}");
}

/// The agent's answer to `text` over HTTP.
fn say(agent: &Agent, text: &str) -> Value {
    let response = agent.post_json("/v1/messages", &json!({"text": text}));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// The `not_taking_part` entry of `plugin` in `reply`.
fn absent<'a>(reply: &'a Value, plugin: &str) -> &'a Value {
    reply["metadata"]["not_taking_part"]
        .as_array()
        .and_then(|list| list.iter().find(|entry| entry["plugin"] == plugin))
        .unwrap_or_else(|| panic!("'{plugin}' not named as not taking part: {reply}"))
}

#[test]
fn an_isolated_validate_that_times_out_is_counted_logged_once_and_named_in_the_reply() {
    let config = format!(
        "[host]\nvalidate_timeout_ms = 300\n[isolation]\nprocess = [\"laggard\"]\n\
         worker_program = \"{WORKER}\"\n"
    );
    let agent = Agent::start_with(&[fixture("laggard")], &config, false);
    let reply = say(&agent, "slow-validate");
    assert_eq!(reply["ok"], false, "{reply}");
    let reason = absent(&reply, "laggard")["reason"].to_string();
    assert!(reason.contains("validate"), "{reason}");

    let metrics = agent.get("/metrics").text();
    assert!(
        metrics.contains(
            r#"agent_host_plugin_faults_total{plugin="laggard",entry="validate",cause="timed_out"} 1"#
        ),
        "{metrics}"
    );
    agent.wait_for_log("cause=\"timed_out\"");
    let log = agent.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cause=\"timed_out\""))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("laggard"), "{}", lines[0]);
    assert!(lines[0].contains("entry=\"validate\""), "{}", lines[0]);

    let plugins = agent.get("/v1/plugins").json();
    let laggard = &plugins["plugins"][0];
    assert_eq!(laggard["name"], "laggard", "{plugins}");
    // The round that was killed held its evaluator too: one timeout each.
    assert!(
        laggard["stats"]["timeouts"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{laggard}"
    );
}

#[test]
fn a_file_that_failed_to_load_degrades_health_and_is_listed_and_named_in_replies() {
    let agent = Agent::start_with(&[fixture("on-load-fails"), fixture("multi")], "", false);
    let health = agent.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    let health = health.json();
    assert_eq!(health["status"], "degraded", "{health}");
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("plugin 'on-load-fails' failed to load"),
        "{reasons}"
    );
    assert!(reasons.contains("the database is unreachable"), "{reasons}");

    let plugins = agent.get("/v1/plugins").json();
    let failed = plugins["failed"].as_array().expect("a failed list");
    assert_eq!(failed.len(), 1, "{plugins}");
    assert_eq!(failed[0]["plugin"], "on-load-fails");
    assert!(failed[0]["file"]
        .as_str()
        .is_some_and(|f| f.contains("on-load-fails")));
    for plugin in plugins["plugins"].as_array().expect("plugins") {
        assert_eq!(plugin["state"], "serving", "{plugin}");
        assert!(
            plugin["memory_bytes"].as_u64().is_some_and(|b| b > 0),
            "{plugin}"
        );
        assert!(plugin["stats"]["calls"].is_u64(), "{plugin}");
    }

    let reply = say(&agent, "nothing answers this");
    let reason = absent(&reply, "on-load-fails")["reason"].to_string();
    assert!(reason.contains("failed to load"), "{reason}");
    assert!(reason.contains("the database is unreachable"), "{reason}");

    let metrics = agent.get("/metrics").text();
    assert!(
        metrics.contains(
            r#"agent_host_plugin_faults_total{plugin="on-load-fails",entry="load",cause="load_failed"} 1"#
        ),
        "{metrics}"
    );
}

#[test]
fn a_healthy_agent_says_ok_with_no_reasons() {
    let agent = Agent::start_with(&[fixture("multi")], "", false);
    let health = agent.get("/healthz").json();
    assert_eq!(health, json!({"status": "ok", "plugins": 2, "reasons": []}));
}

#[test]
fn list_reads_the_manifests_and_starts_nothing() {
    let dir = folder_with(&[fixture("footprint")]);
    let work = tempfile::tempdir().expect("a folder");
    let footprint = work.path().join("footprint");
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.footprint]\nfootprint = {:?}\n",
            footprint.display().to_string()
        ),
    )
    .expect("write the config");
    let output = Command::new(WORKER)
        .arg("list")
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run agent-host list");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(". footprint 1.0.0"), "{stdout}");
    assert!(stdout.contains("services:     footprint"), "{stdout}");
    assert!(!footprint.exists(), "list ran on_load");
    assert!(
        !work.path().join("footprint.service").exists(),
        "list started a service"
    );

    // Served, the same plugin starts: the footprints show the test can tell.
    let agent = Agent::start_with(
        &[fixture("footprint")],
        &format!(
            "[plugins.footprint]\nfootprint = {:?}\n",
            footprint.display().to_string()
        ),
        false,
    );
    assert!(footprint.exists(), "on_load ran when served");
    assert!(work.path().join("footprint.service").exists());

    // `list --url` shows what the serving agent runs.
    let output = Command::new(WORKER)
        .args(["list", "--url", &format!("http://{}", agent.address)])
        .output()
        .expect("run agent-host list --url");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(". footprint 1.0.0"), "{stdout}");
    assert!(stdout.contains("state:        serving"), "{stdout}");
    assert!(
        stdout.contains("runs:         in the agent's process"),
        "{stdout}"
    );
}

#[test]
fn list_url_shows_the_worker_pid_of_the_serving_agent() {
    let config = format!("[isolation]\nprocess = [\"faulty\"]\nworker_program = \"{WORKER}\"\n");
    let agent = Agent::start_with(&[fixture("isolated")], &config, false);
    let plugins = agent.get("/v1/plugins").json();
    let faulty = plugins["plugins"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "faulty"))
        .cloned()
        .expect("faulty");
    let pid = faulty["worker"]["pid"].as_u64().expect("a worker pid");
    let output = Command::new(WORKER)
        .args([
            "list",
            "--url",
            &format!("http://{}", agent.address),
            "--json",
        ])
        .output()
        .expect("run agent-host list --url --json");
    let listed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        listed["plugins"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert!(listed["failed"].is_array(), "{listed}");
    let output = Command::new(WORKER)
        .args(["list", "--url", &format!("http://{}", agent.address)])
        .output()
        .expect("run agent-host list --url");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("in worker process {pid}")),
        "{stdout}"
    );
    // The worker's memory is its resident set, well over a plugin image.
    let memory = faulty["memory_bytes"].as_u64().expect("memory");
    assert!(
        memory > faulty["image_bytes"].as_u64().unwrap_or(0),
        "{faulty}"
    );
}
