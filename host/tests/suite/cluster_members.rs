//! Cluster mode, the members: real `agent-host run` processes of one agent
//! on the real NATS server announce themselves with their lock hash, a
//! host whose plugins differ takes no messages until its hash is
//! accepted, plugin events cross hosts, and a rolling reload goes host by
//! host while messages keep being answered.

use crate::common::cluster::{
    agent_gone, config_of, delete_agent, host_in, operator, start_host, wait_for_status,
    AgentOnServer,
};
use crate::common::{Agent, WAIT};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::fixture;
use test_support::servers::{require, Server};

fn alive_hosts(status: &Value) -> usize {
    status["hosts"].as_array().map_or(0, |hosts| {
        hosts.iter().filter(|h| h["alive"] == true).count()
    })
}

/// Sends `relay?` `per_front` times to each front end's HTTP API, all at
/// once; the host each reply says ran it, after checking every reply.
fn relay_messages(fronts: &[&Agent], per_front: usize) -> Vec<String> {
    std::thread::scope(|scope| {
        let senders: Vec<_> = fronts
            .iter()
            .map(|front| {
                scope.spawn(move || {
                    (0..per_front)
                        .map(|_| {
                            let answer =
                                front.post_json("/v1/messages", &json!({ "text": "relay?" }));
                            assert_eq!(answer.status, 200, "{}", answer.text());
                            let reply = answer.json();
                            assert_eq!(reply["text"], "relay here", "{reply}");
                            reply["host"].as_str().expect("the host").to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|sender| sender.join().expect("a sender thread"))
            .collect()
    })
}

#[test]
fn hosts_announce_their_lock_hash_and_a_host_with_other_plugins_waits_until_accepted() {
    let Some(url) = require(
        Server::Nats,
        "hosts_announce_their_lock_hash_and_a_host_with_other_plugins_waits_until_accepted",
    ) else {
        return;
    };
    let server = AgentOnServer::new(&url, "members");
    let agent = server.agent.clone();
    let full = [fixture("relay"), fixture("")];
    let first = start_host(&url, &agent, "h1", &full, "");
    let mut second = start_host(&url, &agent, "h2", &full, "");
    // One plugin file fewer: another lock hash.
    let third = start_host(&url, &agent, "h3", &[fixture("relay")], "");
    let config = config_of(&first);

    let status = wait_for_status(&config, "three hosts alive", |s| alive_hosts(s) == 3);
    let (h1, h2, h3) = (
        host_in(&status, "h1").expect("h1"),
        host_in(&status, "h2").expect("h2"),
        host_in(&status, "h3").expect("h3"),
    );
    assert_eq!(h1["lock_hash"], h2["lock_hash"], "{status:#}");
    assert_ne!(h1["lock_hash"], h3["lock_hash"], "{status:#}");
    assert_eq!(
        status["accepted_locks"],
        json!([h1["lock_hash"].clone()]),
        "the first host's hash is the accepted one: {status:#}"
    );
    assert_eq!(h1["plugins"], json!(["fixture@1.0.0", "relay@1.0.0"]));
    assert_eq!(h3["plugins"], json!(["relay@1.0.0"]));
    let waiting = wait_for_status(&config, "h3 announced not taking messages", |s| {
        host_in(s, "h3").is_some_and(|h| h["taking_messages"] == false)
            && host_in(s, "h1").is_some_and(|h| h["taking_messages"] == true)
    });
    let h3 = host_in(&waiting, "h3").expect("h3");
    assert_eq!(h3["lock_accepted"], false);
    assert!(
        h3["not_taking_because"]
            .as_str()
            .is_some_and(|why| why.contains("not accepted")),
        "{h3}"
    );
    let h3_hash = h3["lock_hash"].as_str().expect("a hash").to_string();
    third.wait_for_log(&format!("cluster accept-lock {h3_hash}"));
    // Each host announces where its HTTP API listens.
    for (name, host) in [("h1", &first), ("h2", &second), ("h3", &third)] {
        let announced = host_in(&waiting, name).expect("the host");
        assert_eq!(
            announced["http_address"],
            host.address.to_string(),
            "{announced}"
        );
    }

    // Messages sent to every host's front end, the waiting host's too, are
    // all answered by the hosts whose plugins match.
    let fronts = [&first, &second, &third];
    let ran_on = relay_messages(&fronts, 8);
    assert!(
        ran_on.iter().all(|host| host == "h1" || host == "h2"),
        "only h1 and h2 take messages before h3's hash is accepted: {ran_on:?}"
    );

    // The text form names the hosts and the short hashes.
    let text = operator(&config, &["cluster", "status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("h3") && text.contains(&h3_hash[..12]),
        "{text}"
    );
    assert!(text.contains("not accepted"), "{text}");

    // The same from the HTTP API of any host.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = second.get("/v1/cluster");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let seen = answer.json();
        if alive_hosts(&seen) == 3 {
            assert_eq!(seen["agent"], agent.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "GET /v1/cluster: {seen:#}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Accepting its hash (by its first 12 digits) lets it take messages.
    let accepted = operator(&config, &["cluster", "accept-lock", &h3_hash[..12]]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(String::from_utf8_lossy(&accepted.stdout).contains(&h3_hash));
    wait_for_status(&config, "h3 taking messages", |s| {
        host_in(s, "h3").is_some_and(|h| h["taking_messages"] == true && h["lock_accepted"] == true)
    });
    third.wait_for_log("lock hash accepted: taking messages");
    // Now h3 runs some of them too.
    let deadline = Instant::now() + WAIT;
    let mut ran_on = Vec::new();
    while !ran_on.iter().any(|host| host == "h3") {
        assert!(
            Instant::now() < deadline,
            "h3 ran none of the messages after its hash was accepted: {ran_on:?}"
        );
        ran_on.extend(relay_messages(&fronts, 4));
    }

    // Retiring it stops it again; the others serve on.
    let retired = operator(&config, &["cluster", "retire-lock", &h3_hash]);
    assert!(retired.status.success());
    wait_for_status(&config, "h3 stopped again", |s| {
        host_in(s, "h3").is_some_and(|h| h["taking_messages"] == false)
            && host_in(s, "h2").is_some_and(|h| h["taking_messages"] == true)
    });
    let bad = operator(&config, &["cluster", "accept-lock", "xyz"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a lock hash"));

    // A host that stops leaves the bucket.
    second.terminate();
    assert_eq!(second.wait_for_exit(WAIT), Some(0));
    wait_for_status(&config, "h2 gone", |s| host_in(s, "h2").is_none());
    drop((first, second, third));
    delete_agent(&url, &agent);
    assert!(agent_gone(&url, &agent), "the agent's buckets are left");
}

#[test]
fn cluster_commands_and_the_route_say_what_is_missing() {
    // No server needed: no [cluster] table, or a server that is not there.
    let agent = Agent::start();
    let answer = agent.get("/v1/cluster");
    assert!(answer.error(404).contains("not in cluster mode"));
    let config = config_of(&agent);
    let output = operator(&config, &["cluster", "status"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no [cluster] table"), "{stderr}");

    let dir = tempfile::tempdir().expect("a folder");
    let unreachable = dir.path().join("agent.toml");
    std::fs::write(
        &unreachable,
        "[cluster]\nurl = \"nats://127.0.0.1:1\"\nagent = \"nobody\"\n",
    )
    .expect("write");
    let output = operator(&unreachable, &["cluster", "accept-lock", &"a".repeat(64)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn run_with_an_unreachable_server_stops_at_once_with_one_line_naming_its_url() {
    // No server needed: nothing listens on port 1.
    let dir = test_support::folder_with(&[fixture("relay")]);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[cluster]\nurl = \"nats://127.0.0.1:1\"\nagent = \"nobody\"\n",
    )
    .expect("write the config");
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--plugins")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agent-host run");
    let deadline = started + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "agent-host run still runs {} s after its start",
                WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_after = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    let naming: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("nats://127.0.0.1:1"))
        .collect();
    assert_eq!(naming.len(), 1, "one line names the server: {stderr}");
    assert!(
        naming[0].starts_with("error: cannot connect to NATS at nats://127.0.0.1:1: "),
        "{stderr}"
    );
    // It stopped before loading any plugin.
    assert!(!stderr.contains("agent ready"), "{stderr}");
    println!(
        "agent-host run with an unreachable server stopped after {} ms",
        stopped_after.as_millis()
    );
}

/// The `relay:said` lines a host's log holds from another host: their `n`
/// and latency in microseconds, in log order.
fn heard_from(log: &str, source: &str) -> Vec<(u64, u64)> {
    let needle = format!(" from {source} after ");
    log.lines()
        .filter(|line| line.contains("heard relay:said n=") && line.contains(&needle))
        .filter_map(|line| {
            let n = line
                .split("n=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let us = line
                .split(&needle)
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((n, us))
        })
        .collect()
}

#[test]
fn an_event_emitted_on_one_host_reaches_the_subscribers_of_the_others_in_order() {
    let Some(url) = require(
        Server::Nats,
        "an_event_emitted_on_one_host_reaches_the_subscribers_of_the_others_in_order",
    ) else {
        return;
    };
    let server = AgentOnServer::new(&url, "events");
    let agent = server.agent.clone();
    let plugins = [fixture("relay")];
    let b = start_host(&url, &agent, "b", &plugins, "");
    let c = start_host(&url, &agent, "c", &plugins, "");
    let a = start_host(
        &url,
        &agent,
        "a",
        &plugins,
        "[plugins.relay]\nemit = true\nevery_ms = 20\n",
    );
    const EVENTS: usize = 200;
    for host in [&b, &c] {
        let deadline = Instant::now() + WAIT;
        while heard_from(&host.log(), "relay@a").len() < EVENTS {
            assert!(
                Instant::now() < deadline,
                "fewer than {EVENTS} events:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let heard = heard_from(&host.log(), "relay@a");
        // In the order A emitted them, none twice.
        assert!(
            heard.windows(2).all(|w| w[0].0 < w[1].0),
            "out of order: {heard:?}"
        );
    }
    // A hears its own events once, locally, and never back from the others.
    assert!(!heard_from(&a.log(), "relay").is_empty());
    assert!(!a.log().contains(" from relay@"), "{}", a.log());
    let mut latencies: Vec<u64> = heard_from(&b.log(), "relay@a")
        .into_iter()
        .take(EVENTS)
        .map(|(_, us)| us)
        .collect();
    latencies.sort_unstable();
    println!(
        "event latency host a -> subscriber on host b over {EVENTS} events: median {} us, \
         p90 {} us, max {} us",
        latencies[EVENTS / 2],
        latencies[EVENTS * 9 / 10],
        latencies[EVENTS - 1]
    );
    drop((a, b, c));
}

#[test]
fn a_rolling_reload_goes_host_by_host_while_every_message_is_answered() {
    let Some(url) = require(
        Server::Nats,
        "a_rolling_reload_goes_host_by_host_while_every_message_is_answered",
    ) else {
        return;
    };
    let server = AgentOnServer::new(&url, "roll");
    let agent = server.agent.clone();
    let plugins = [fixture("relay"), fixture("")];
    let hosts = [
        start_host(&url, &agent, "r1", &plugins, ""),
        start_host(&url, &agent, "r2", &plugins, ""),
        start_host(&url, &agent, "r3", &plugins, ""),
    ];
    let config = config_of(&hosts[0]);
    wait_for_status(&config, "three hosts taking messages", |s| {
        s["hosts"].as_array().is_some_and(|all| {
            all.iter()
                .filter(|h| h["alive"] == true && h["taking_messages"] == true)
                .count()
                == 3
        })
    });

    // A steady trickle of messages to every host while the roll runs.
    let addresses: Vec<_> = hosts.iter().map(|h| h.address).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let trickle = {
        let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let address = addresses[i % addresses.len()];
                let body = json!({"sender": "alice", "text": "ping"}).to_string();
                let reply = crate::common::request(
                    address,
                    "POST",
                    "/v1/messages",
                    Some(("application/json", body.as_bytes())),
                );
                answers
                    .lock()
                    .expect("answers")
                    .push((reply.status, reply.text()));
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let rolled = operator(&config, &["reload", "fixture", "--cluster", "--force"]);
    let stdout = String::from_utf8_lossy(&rolled.stdout).into_owned();
    assert!(
        rolled.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    trickle.join().expect("the trickle");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("r1: reloaded fixture 1.0.0 -> 1.0.0"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("r2: reloaded"), "{stdout}");
    assert!(lines[2].starts_with("r3: reloaded"), "{stdout}");
    assert!(stdout.contains("reloaded fixture on 3 host(s)"), "{stdout}");
    for host in &hosts {
        host.wait_for_log("reload asked by a rolling reload of the cluster");
    }
    let answers = answers.lock().expect("answers");
    assert!(answers.len() > 10, "too few messages: {}", answers.len());
    for (status, text) in answers.iter() {
        assert_eq!(*status, 200, "{text}");
        assert!(text.contains("\"pong\""), "{text}");
    }

    // A refused reload stops the roll at the first host and says so.
    let refused = operator(&config, &["reload", "nosuch", "--cluster"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("host r1 refused the reload of nosuch")
            && stderr.contains("no host was reloaded"),
        "{stderr}"
    );
    drop(hosts);
}
