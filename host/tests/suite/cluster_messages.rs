//! Cluster mode, the messages: real `agent-host run` hosts of one agent on
//! the NATS server share its messages through one consumer, a message a
//! killed host held goes to another, and an id is answered once.

use crate::common::cluster::{launch_host, AgentOnServer};
use crate::common::Agent;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_support::fixture;
use test_support::servers::{require, Server};

/// The fixture plugin every host runs: `work MILLIS TAG`.
fn plugins() -> Vec<PathBuf> {
    vec![fixture("cluster-work")]
}

/// The config after `[cluster]`: the fixture records its runs in `runs`.
fn recording_runs_in(runs: &Path) -> String {
    format!(
        "[plugins.cluster-work]\nruns_file = \"{}\"\n",
        runs.display()
    )
}

/// The ids the fixture ran, one per run, in the order they ran.
fn runs_of(runs: &Path) -> Vec<String> {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Posts one message to `host`; its reply (200 expected).
fn send(host: &Agent, message: &Value) -> Value {
    let response = host.post_json("/v1/messages", message);
    assert_eq!(response.status, 200, "{}\n{}", response.text(), host.log());
    response.json()
}

/// The ids `agent`'s log says it took from the shared consumer, and the
/// ones it acknowledged.
fn taken_and_acknowledged(log: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let ids_after = |marker: &str| -> BTreeSet<String> {
        log.split(marker)
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .map(str::to_string)
            .collect()
    };
    (
        ids_after("took message '"),
        ids_after("acknowledged message '"),
    )
}

#[test]
fn two_hosts_share_the_messages_and_each_is_answered_once() {
    let Some(nats) = require(Server::Nats, "two_hosts_share_the_messages") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "shared");
    let agent = server.agent.clone();
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let runs = scratch.path().join("runs");
    let rest = recording_runs_in(&runs);
    let cluster = "max_in_flight = 4\n";
    let a = launch_host(&nats, &agent, "a", &plugins(), cluster, &rest);
    let b = launch_host(&nats, &agent, "b", &plugins(), cluster, &rest);

    const MESSAGES: usize = 300;
    const SENDERS_PER_HOST: usize = 6;
    let replies: Vec<(usize, Value)> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..2 * SENDERS_PER_HOST)
            .map(|sender| {
                let front = if sender % 2 == 0 { &a } else { &b };
                scope.spawn(move || {
                    (sender..MESSAGES)
                        .step_by(2 * SENDERS_PER_HOST)
                        .map(|n| (n, send(front, &json!({ "text": format!("work 10 t{n}") }))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|sender| sender.join().expect("a sender thread"))
            .collect()
    });

    assert_eq!(replies.len(), MESSAGES);
    let mut by_host: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (n, reply) in &replies {
        assert_eq!(reply["ok"], true, "{reply}");
        let text = reply["text"].as_str().expect("a text");
        assert!(text.starts_with(&format!("worked t{n},")), "{reply}");
        let host = reply["host"].as_str().expect("the host that ran it");
        *by_host.entry(host.to_string()).or_default() += 1;
        assert!(ids.insert(reply["id"].as_str().expect("an id").to_string()));
    }
    assert_eq!(
        by_host.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "both hosts ran messages: {by_host:?}"
    );
    let ran = runs_of(&runs);
    let ran_once: BTreeSet<String> = ran.iter().cloned().collect();
    assert_eq!(ran.len(), MESSAGES, "no message ran twice");
    assert_eq!(ran_once, ids, "every message ran, under its id");
    eprintln!("messages run by host: {by_host:?}");
}

#[test]
fn the_messages_a_killed_host_held_are_answered_by_another() {
    let Some(nats) = require(Server::Nats, "the_messages_a_killed_host_held") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "redelivery");
    let agent = server.agent.clone();
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let runs = scratch.path().join("runs");
    let rest = recording_runs_in(&runs);
    const ACK_WAIT: Duration = Duration::from_millis(2000);
    let cluster = format!("ack_wait_ms = {}\n", ACK_WAIT.as_millis());
    let mut a = launch_host(&nats, &agent, "a", &plugins(), &cluster, &rest);
    let b = launch_host(&nats, &agent, "b", &plugins(), &cluster, &rest);

    // A burst through B's front end; each message takes a while.
    const MESSAGES: usize = 16;
    let (killed_at, replies) = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..MESSAGES)
            .map(|n| {
                let b = &b;
                scope.spawn(move || {
                    let reply = send(b, &json!({ "text": format!("work 600 t{n}") }));
                    (reply, Instant::now())
                })
            })
            .collect();
        // Kill A while it holds messages it has not acknowledged.
        let deadline = Instant::now() + crate::common::WAIT;
        loop {
            let (taken, acknowledged) = taken_and_acknowledged(&a.log());
            if taken.difference(&acknowledged).next().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "A took no message:\n{}", a.log());
            std::thread::sleep(Duration::from_millis(5));
        }
        a.child.kill().expect("kill -9 host A");
        let killed_at = Instant::now();
        let replies: Vec<(Value, Instant)> = senders
            .into_iter()
            .map(|sender| sender.join().expect("a sender thread"))
            .collect();
        (killed_at, replies)
    });
    let _ = a.child.wait();
    let (taken, acknowledged) = taken_and_acknowledged(&a.final_log());
    let held: BTreeSet<String> = taken.difference(&acknowledged).cloned().collect();
    assert!(!held.is_empty());

    assert_eq!(replies.len(), MESSAGES);
    for (reply, answered_at) in &replies {
        assert_eq!(reply["ok"], true, "{reply}\n{}", b.log());
        let id = reply["id"].as_str().expect("an id");
        if held.contains(id) {
            assert_eq!(reply["host"], "b", "B ran what A held: {reply}");
            let after_kill = answered_at.saturating_duration_since(killed_at);
            assert!(
                after_kill <= 2 * ACK_WAIT,
                "{id} answered {} ms after the kill",
                after_kill.as_millis()
            );
        }
    }
    let answered: BTreeSet<&str> = replies
        .iter()
        .filter_map(|(reply, _)| reply["id"].as_str())
        .collect();
    assert_eq!(answered.len(), MESSAGES);
    assert!(
        held.iter().all(|id| answered.contains(id.as_str())),
        "every message A held was answered: {held:?}"
    );
}

#[test]
fn an_id_sent_again_gets_the_same_reply_and_runs_once() {
    let Some(nats) = require(Server::Nats, "an_id_sent_again_gets_the_same_reply") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "idempotent");
    let agent = server.agent.clone();
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let runs = scratch.path().join("runs");
    let rest = recording_runs_in(&runs);
    let a = launch_host(&nats, &agent, "a", &plugins(), "", &rest);
    let b = launch_host(&nats, &agent, "b", &plugins(), "", &rest);

    // One after the other: to A, to A again, then to B.
    let message = json!({ "id": "order 17/a.b*>", "text": "work 50 once" });
    let first = send(&a, &message);
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["id"], "order 17/a.b*>");
    assert_eq!(send(&a, &message), first);
    assert_eq!(send(&b, &message), first);
    assert_eq!(runs_of(&runs), ["order 17/a.b*>"]);

    // At the same time, to both hosts: one run, one reply for both.
    let message = json!({ "id": "together", "text": "work 500 twice" });
    let (to_a, to_b) = std::thread::scope(|scope| {
        let to_a = scope.spawn(|| send(&a, &message));
        let to_b = scope.spawn(|| send(&b, &message));
        (
            to_a.join().expect("the sender to A"),
            to_b.join().expect("the sender to B"),
        )
    });
    assert_eq!(to_a["ok"], true, "{to_a}");
    assert_eq!(to_a, to_b);
    let ran = runs_of(&runs);
    assert_eq!(
        ran.iter().filter(|id| *id == "together").count(),
        1,
        "{ran:?}"
    );

    // Without an id, each message is new.
    let one = send(&a, &json!({ "text": "work 0 fresh" }));
    let two = send(&a, &json!({ "text": "work 0 fresh" }));
    assert_ne!(one["id"], two["id"]);
    assert_ne!(one["text"], two["text"]);
}

#[test]
fn a_late_reply_is_a_504_naming_the_id_and_a_retry_gets_it_without_a_second_run() {
    let Some(nats) = require(Server::Nats, "a_late_reply_is_a_504") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "late");
    let agent = server.agent.clone();
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let runs = scratch.path().join("runs");
    let rest = recording_runs_in(&runs);
    let a = launch_host(
        &nats,
        &agent,
        "a",
        &plugins(),
        "reply_timeout_ms = 300\n",
        &rest,
    );

    let message = json!({ "id": "slow-1", "text": "work 1500 slow" });
    let late = a.post_json("/v1/messages", &message);
    let error = late.error(504);
    assert!(
        error.contains("'slow-1'") && error.contains("same id"),
        "{error}"
    );
    // The message runs on; once it is done, the retry gets its reply.
    let deadline = Instant::now() + crate::common::WAIT;
    while runs_of(&runs).is_empty() {
        assert!(Instant::now() < deadline, "slow-1 never ran:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    a.wait_for_log("acknowledged message 'slow-1'");
    let reply = send(&a, &message);
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(reply["text"]
        .as_str()
        .is_some_and(|t| t.starts_with("worked slow,")));
    assert_eq!(runs_of(&runs), ["slow-1"]);
}

#[test]
fn a_host_stopping_finishes_the_messages_it_holds() {
    let Some(nats) = require(Server::Nats, "a_host_stopping_finishes") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "stopping");
    let agent = server.agent.clone();
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let runs = scratch.path().join("runs");
    let rest = recording_runs_in(&runs);
    let mut a = launch_host(&nats, &agent, "a", &plugins(), "", &rest);

    std::thread::scope(|scope| {
        let sender = scope.spawn(|| send(&a, &json!({ "id": "last", "text": "work 800 last" })));
        a.wait_for_log("took message 'last'");
        a.terminate();
        let reply = sender.join().expect("the sender");
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["host"], "a");
    });
    assert_eq!(a.wait_for_exit(crate::common::WAIT), Some(0));
    let log = a.final_log();
    assert!(log.contains("acknowledged message 'last'"), "{log}");
    assert_eq!(runs_of(&runs), ["last"]);
}
