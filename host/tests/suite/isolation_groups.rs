//! Workers shared by several isolated plugins, on real plugin files: the
//! `isolated` fixture's two plugins (`faulty` and `neighbour`) share their
//! file's worker, `[isolation.groups]` puts `faulty` and the `multi`
//! fixture's `multi-one` in one worker whose sandbox holds both their
//! grants, and `worker_per = "plugin"` keeps one worker per plugin.

use crate::common::wait_until;
use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage};
use serde_json::{json, Value};

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

/// What the fixtures' plugins need, granted (a `[grants]` table grants
/// nothing it does not name), with `faulty` also granted `extra`.
fn grants(extra: &[String]) -> String {
    let mut faulty = vec![
        "service:neighbour".to_string(),
        "event:emit:faulty:*".to_string(),
    ];
    faulty.extend(extra.iter().cloned());
    format!(
        "[grants]\nfaulty = {faulty:?}\nneighbour = [\"service:faulty\", \"event:emit:neighbour:*\"]\n\
         multi-two = [\"service:multi-one\"]\n"
    )
}

/// An agent of `fixtures` with `[isolation]` holding `isolation`, its
/// config written to a file as an operator's would be. `None` when the
/// kernel has no landlock (the reason is printed).
fn agent(fixtures: &[&str], isolation: &str, extra: &[String]) -> Option<TestAgent> {
    let config = format!(
        "[isolation]\nworker_program = \"{WORKER}\"\n{isolation}\n{}",
        grants(extra)
    );
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("agent.toml"), &config).expect("config file");
    let options = HostOptions {
        config: AgentConfig::load(&folder.path().join("agent.toml")).expect("config"),
        ..HostOptions::default()
    };
    let files: Vec<_> = fixtures.iter().map(|f| test_support::fixture(f)).collect();
    let agent = TestAgent::load_with(&files, options).expect("stage");
    if let Some(failure) = agent.report.failures.first() {
        let line = failure.to_string();
        if line.contains("landlock") && line.contains("not supported") {
            eprintln!("skipped: this kernel has no landlock ({line})");
            return None;
        }
        panic!("{line}");
    }
    Some(agent)
}

fn worker(agent: &TestAgent, plugin: &str) -> agent_host::isolation::WorkerStatus {
    agent
        .host
        .status(plugin)
        .unwrap_or_else(|| panic!("no plugin {plugin}"))
        .worker
        .unwrap_or_else(|| panic!("{plugin} runs in no worker"))
}

fn pid(agent: &TestAgent, plugin: &str) -> Option<u32> {
    agent.host.status(plugin)?.worker?.pid
}

fn ping(agent: &TestAgent) -> String {
    agent
        .host
        .handle_message(InboundMessage {
            text: "fault ping".into(),
            ..InboundMessage::default()
        })
        .text
}

fn call(agent: &TestAgent, plugin: &str, method: &str, argument: Value) -> Value {
    agent
        .host
        .call_service(plugin, method, &argument)
        .unwrap_or_else(|e| panic!("{plugin}.{method}: {e}"))
}

#[test]
fn the_isolated_plugins_of_one_file_share_its_worker_unless_told_otherwise() {
    let both = "process = [\"faulty\", \"neighbour\"]";
    let Some(agent) = agent(&["isolated"], both, &[]) else {
        return;
    };
    let (faulty, neighbour) = (worker(&agent, "faulty"), worker(&agent, "neighbour"));
    assert!(faulty.pid.is_some());
    assert_eq!(faulty.pid, neighbour.pid, "one worker for the file");
    assert_eq!(faulty.plugins, ["faulty", "neighbour"]);
    assert_eq!(faulty.group, None);
    // Both answer from that one process (the plugins see its pid as 2 in
    // a PID namespace of their own, so each asks the other's).
    let from_faulty = call(&agent, "faulty", "pid", Value::Null);
    let from_neighbour = call(&agent, "neighbour", "hello", Value::Null);
    assert_eq!(
        from_neighbour,
        json!(format!("hello from {from_faulty}")),
        "one process serves both"
    );
    assert!(ping(&agent).starts_with("pong from "));

    let Some(agent) = agent_per_plugin(both) else {
        return;
    };
    let (faulty, neighbour) = (pid(&agent, "faulty"), pid(&agent, "neighbour"));
    assert!(faulty.is_some() && neighbour.is_some());
    assert_ne!(
        faulty, neighbour,
        "worker_per = \"plugin\": one worker each"
    );
    assert_eq!(worker(&agent, "faulty").plugins, ["faulty"]);
}

fn agent_per_plugin(placement: &str) -> Option<TestAgent> {
    agent(
        &["isolated"],
        &format!("worker_per = \"plugin\"\n{placement}"),
        &[],
    )
}

#[test]
fn a_group_of_two_files_shares_one_worker_whose_sandbox_is_their_union() {
    let root = tempfile::tempdir().expect("tempdir");
    let (granted, other) = (root.path().join("granted"), root.path().join("other"));
    for dir in [&granted, &other] {
        std::fs::create_dir(dir).expect("dir");
        std::fs::write(dir.join("file.txt"), "data").expect("file");
    }
    open_to_the_worker_user(root.path());
    let grant = format!("filesystem:read:{}", granted.display());
    let isolation =
        "process = [\"neighbour\"]\n[isolation.groups]\nsearch = [\"faulty\", \"multi-one\"]";
    let Some(agent) = agent(
        &["isolated", "multi"],
        isolation,
        std::slice::from_ref(&grant),
    ) else {
        return;
    };
    let (faulty, multi_one) = (worker(&agent, "faulty"), worker(&agent, "multi-one"));
    assert!(faulty.pid.is_some());
    assert_eq!(faulty.pid, multi_one.pid, "one worker for the group");
    assert_eq!(multi_one.group.as_deref(), Some("search"));
    assert_eq!(multi_one.plugins, ["faulty", "multi-one"]);
    assert_eq!(multi_one.grants, [grant], "the union of the grants");
    assert!(
        multi_one.describe().contains("of group search"),
        "{}",
        multi_one.describe()
    );
    // The member granted a path reads it through the group's sandbox,
    // and nothing else.
    let read = |path: std::path::PathBuf| call(&agent, "faulty", "read", json!(path));
    assert_eq!(read(granted.join("file.txt"))["ok"], json!(true));
    assert_eq!(read(other.join("file.txt"))["ok"], json!(false));
    // Both members serve; `multi-two`, in the host, calls `multi-one`.
    assert!(ping(&agent).starts_with("pong from "));
    let reply = agent.host.handle_message(InboundMessage {
        text: "multi".into(),
        ..InboundMessage::default()
    });
    assert_eq!(reply.text, "multi-one says pong", "{reply:?}");
    // A plugin of the same file outside the group keeps a sandbox of its
    // own, without the group's grants.
    let neighbour = worker(&agent, "neighbour");
    assert!(neighbour.pid.is_some());
    assert_ne!(neighbour.pid, faulty.pid);
    assert_eq!(neighbour.plugins, ["neighbour"]);
    assert!(neighbour.grants.is_empty(), "{:?}", neighbour.grants);
    assert_eq!(
        agent.host.status("multi-two").expect("multi-two").worker,
        None
    );
}

#[test]
fn a_killed_shared_worker_comes_back_with_all_its_plugins() {
    let Some(agent) = agent(&["isolated"], "process = [\"faulty\", \"neighbour\"]", &[]) else {
        return;
    };
    let old = pid(&agent, "faulty").expect("a worker");
    let mut events = agent.host.events();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_until("both plugins in a new worker", || {
        let (faulty, neighbour) = (pid(&agent, "faulty"), pid(&agent, "neighbour"));
        faulty.is_some_and(|p| p != old) && faulty == neighbour
    });
    wait_until("both plugins serving again", || {
        ping(&agent).starts_with("pong from ")
            && agent
                .host
                .call_service("neighbour", "hello", &Value::Null)
                .is_ok()
    });
    // Their `on_load` ran again: the neighbour's pong subscription works.
    let pongs = || call(&agent, "neighbour", "pongs", Value::Null);
    let before = pongs();
    call(&agent, "neighbour", "ping_faulty", Value::Null);
    wait_until("a pong", || pongs() != before);
    let mut crashed = Vec::new();
    let mut restarted = Vec::new();
    while let Ok(event) = events.try_recv() {
        let plugin = event.payload["plugin"].as_str().unwrap_or("").to_string();
        match event.name.as_str() {
            "plugin:crashed" => crashed.push(plugin),
            "plugin:restarted" => restarted.push(plugin),
            _ => {}
        }
    }
    crashed.sort();
    restarted.sort();
    assert_eq!(crashed, ["faulty", "neighbour"]);
    assert_eq!(restarted, ["faulty", "neighbour"]);
    let status = worker(&agent, "neighbour");
    assert_eq!(status.restarts, 1, "one restart of the one worker");
    assert!(
        status
            .last_crash
            .as_deref()
            .is_some_and(|c| c.contains("SIGKILL")),
        "{status:?}"
    );
}

#[test]
fn one_plugin_of_a_shared_worker_reloads_and_the_other_serves_on() {
    let Some(agent) = agent(&["isolated"], "process = [\"faulty\", \"neighbour\"]", &[]) else {
        return;
    };
    let shared = pid(&agent, "faulty").expect("a worker");
    let reloaded = agent
        .host
        .reload_as(
            "neighbour",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        )
        .expect("reload");
    assert!(!reloaded.unchanged);
    // The new build runs in a worker of the new copy; the old worker
    // serves on for the plugin not reloaded.
    let new = pid(&agent, "neighbour").expect("a worker");
    assert_ne!(new, shared);
    assert_eq!(pid(&agent, "faulty"), Some(shared));
    assert!(ping(&agent).starts_with("pong from "));
    // The old generation leaves the shared worker once nothing holds it
    // (the messages take a serving plan without it).
    wait_until("the old generation to leave", || {
        ping(&agent);
        worker(&agent, "faulty").plugins == ["faulty"]
    });
    assert!(call(&agent, "neighbour", "hello", Value::Null)
        .as_str()
        .is_some_and(|s| s.starts_with("hello from ")));
    // Services cross between the two workers both ways.
    let said = call(&agent, "neighbour", "round_trip", Value::Null);
    assert!(
        said.as_str()
            .is_some_and(|s| s.starts_with("neighbour said: hello from ")),
        "{said}"
    );
    // Reloading the other one too brings them together again, in the
    // worker of the new build.
    agent
        .host
        .reload_as(
            "faulty",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        )
        .expect("reload");
    assert_ne!(pid(&agent, "faulty"), Some(shared));
    assert_eq!(pid(&agent, "faulty"), pid(&agent, "neighbour"));
    wait_until("the old shared worker to end", || {
        ping(&agent);
        !std::path::Path::new(&format!("/proc/{shared}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{shared}/status"))
                .is_ok_and(|s| s.contains("zombie"))
    });
    assert!(ping(&agent).starts_with("pong from "));
}

#[test]
fn a_bad_group_is_a_config_error_naming_the_group_and_the_entry() {
    let cases = [
        (
            "search = []",
            "[isolation.groups] search: the group lists no plugin",
        ),
        (
            "search = [\"faulty\"]\nother = [\"multi-one\", \"faulty\"]",
            "[isolation.groups] search: entry 'faulty' is already in group 'other'",
        ),
        (
            "search = [\"fault*\"]",
            "[isolation.groups] search: entry 'fault*' is not a plugin name",
        ),
    ];
    for (groups, cause) in cases {
        let text = format!("[isolation.groups]\n{groups}\n");
        let error = AgentConfig::parse(&text).expect_err(groups).to_string();
        assert!(error.contains(cause), "{groups}: {error}");
    }
    let kept =
        "[isolation]\nin_process = [\"faulty\"]\n[isolation.groups]\nsearch = [\"faulty\"]\n";
    let error = AgentConfig::parse(kept)
        .expect_err("in_process")
        .to_string();
    assert!(
        error.contains("search: entry 'faulty' is also kept in the host"),
        "{error}"
    );
    // A name no plugin has is reported with the other unknown names.
    let Some(agent) = agent(
        &["isolated"],
        "[isolation.groups]\nsearch = [\"faulty\", \"neighbor\"]",
        &[],
    ) else {
        return;
    };
    assert!(
        agent.report.unknown_config.iter().any(|line| line
            .contains("[isolation.groups] search: entry 'neighbor'")
            && line.contains("did you mean 'neighbour'")),
        "{:?}",
        agent.report.unknown_config
    );
    assert_eq!(worker(&agent, "faulty").group.as_deref(), Some("search"));
}

/// Makes `path` and what it holds the worker user's when the tests run as
/// root, as an operator gives a root agent's workers (`nobody`) the
/// folders it grants them.
#[cfg(unix)]
fn open_to_the_worker_user(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let nobody = Some(65534);
    for entry in walk(path) {
        std::os::unix::fs::chown(&entry, nobody, nobody).expect("chown");
        if entry.is_dir() {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
    }
}

#[cfg(unix)]
fn walk(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![path.to_path_buf()];
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("a folder") {
            all.extend(walk(&entry.expect("an entry").path()));
        }
    }
    all
}

#[cfg(not(unix))]
fn open_to_the_worker_user(_path: &std::path::Path) {}
