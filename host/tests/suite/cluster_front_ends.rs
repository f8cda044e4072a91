//! Cluster mode, the front ends besides one HTTP message: a batch over
//! HTTP and JSON lines on stdin go through the cluster too, each message
//! on its own, and their replies come back in order, under the right ids,
//! from whichever host ran them.

use crate::common::cluster::{launch_host, launch_piped_host, AgentOnServer};
use crate::common::{Agent, WAIT};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use test_support::fixture;
use test_support::servers::{require, Server};

/// The fixture plugin every host runs: `work MILLIS TAG`.
fn plugins() -> Vec<PathBuf> {
    vec![fixture("cluster-work")]
}

/// One message at a time per host: the messages of a batch sent at once
/// cannot all be held by one host, so both hosts run some of them.
const ONE_AT_A_TIME: &str = "max_in_flight = 1\n";

/// A batch of `count` messages `work MILLIS {tag}{n}`; the even ones carry
/// an id `{tag}-{n}`, the odd ones none (the front end gives one).
fn batch(tag: &str, count: usize, millis: u64) -> Value {
    let messages: Vec<Value> = (0..count)
        .map(|n| {
            let text = format!("work {millis} {tag}{n}");
            if n % 2 == 0 {
                json!({ "id": format!("{tag}-{n}"), "text": text })
            } else {
                json!({ "text": text })
            }
        })
        .collect();
    json!({ "messages": messages })
}

/// Checks the replies to [`batch`]`(tag, ..)`: in order, each the reply of
/// its own message and under its id, every id distinct. The hosts that ran
/// them.
fn check_batch_replies(tag: &str, replies: &[Value]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["ok"], true, "{reply}");
        let text = reply["text"].as_str().expect("a text");
        assert!(
            text.starts_with(&format!("worked {tag}{n},")),
            "{n}: {reply}"
        );
        let id = reply["id"].as_str().expect("an id");
        if n % 2 == 0 {
            assert_eq!(id, format!("{tag}-{n}"), "{reply}");
        }
        assert!(ids.insert(id.to_string()), "id {id} twice: {replies:?}");
        hosts.insert(reply["host"].as_str().expect("the host").to_string());
    }
    hosts
}

/// Waits until both hosts serve in the cluster.
fn both_joined(a: &Agent, b: &Agent) {
    a.wait_for_log("as host 'a'");
    b.wait_for_log("as host 'b'");
}

#[test]
fn a_batch_over_http_goes_through_the_cluster_and_its_replies_come_back_in_order() {
    let Some(nats) = require(Server::Nats, "a_batch_over_http_goes_through_the_cluster") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "batch");
    let agent = server.agent.clone();
    let a = launch_host(&nats, &agent, "a", &plugins(), ONE_AT_A_TIME, "");
    let b = launch_host(&nats, &agent, "b", &plugins(), ONE_AT_A_TIME, "");
    both_joined(&a, &b);

    const MESSAGES: usize = 8;
    let answer = a.post_json("/v1/messages", &batch("h", MESSAGES, 150));
    assert_eq!(answer.status, 200, "{}\n{}", answer.text(), a.log());
    let body = answer.json();
    let replies = body["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), MESSAGES, "{body:#}");
    let hosts = check_batch_replies("h", replies);
    assert_eq!(
        hosts.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "both hosts ran messages of the batch: {body:#}"
    );
    // Each message went through the shared consumer, none ran here unasked.
    let taken = |host: &Agent| host.log().matches("took message '").count();
    assert_eq!(taken(&a) + taken(&b), MESSAGES, "{}\n{}", a.log(), b.log());
}

/// Reads the lines a host writes on stdout, each as it comes.
struct Lines {
    lines: mpsc::Receiver<String>,
}

impl Lines {
    /// Starts reading `agent`'s stdout.
    fn of(agent: &mut Agent) -> (std::process::ChildStdin, Self) {
        let (stdin, mut stdout) = agent.lines.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        (stdin, Self { lines })
    }

    /// The next line, read as JSON; bounded by [`WAIT`].
    fn next(&self, log: &Agent) -> Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no reply line:\n{}", log.log()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

#[test]
fn json_lines_on_stdin_go_through_the_cluster_and_are_answered_in_order() {
    let Some(nats) = require(Server::Nats, "json_lines_on_stdin_go_through_the_cluster") else {
        return;
    };
    let server = AgentOnServer::new(&nats, "lines");
    let agent = server.agent.clone();
    let mut a = launch_piped_host(&nats, &agent, "a", &plugins(), ONE_AT_A_TIME, "");
    let b = launch_host(&nats, &agent, "b", &plugins(), ONE_AT_A_TIME, "");
    both_joined(&a, &b);
    let (mut stdin, lines) = Lines::of(&mut a);

    // Lines written all at once: single messages (with and without an id),
    // a batch, and a line that is no request; answered one line each, in
    // the order written.
    const SINGLES: usize = 6;
    const BATCH: usize = 6;
    let mut input = String::new();
    for n in 0..SINGLES {
        let message = if n % 2 == 0 {
            json!({ "id": format!("line-{n}"), "text": format!("work 20 l{n}") })
        } else {
            json!({ "text": format!("work 20 l{n}") })
        };
        input.push_str(&format!("{message}\n"));
    }
    input.push_str(&format!("{}\n", batch("s", BATCH, 150)));
    input.push_str("{\"no\": \"text\"}\n");
    input.push_str(&format!(
        "{}\n",
        json!({ "id": "last", "text": "work 0 last" })
    ));
    stdin.write_all(input.as_bytes()).expect("write the lines");
    stdin.flush().expect("flush stdin");

    let mut hosts = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for n in 0..SINGLES {
        let reply = lines.next(&a);
        assert_eq!(reply["ok"], true, "{reply}");
        let text = reply["text"].as_str().expect("a text");
        assert!(text.starts_with(&format!("worked l{n},")), "{n}: {reply}");
        let id = reply["id"].as_str().expect("an id").to_string();
        if n % 2 == 0 {
            assert_eq!(id, format!("line-{n}"));
        }
        assert!(ids.insert(id), "{reply}");
        hosts.insert(reply["host"].as_str().expect("the host").to_string());
    }
    let batch_answer = lines.next(&a);
    let replies = batch_answer["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), BATCH, "{batch_answer:#}");
    let batch_hosts = check_batch_replies("s", replies);
    assert_eq!(
        batch_hosts.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "both hosts ran messages of the batch: {batch_answer:#}"
    );
    hosts.extend(batch_hosts);
    let refused = lines.next(&a);
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("no 'text' field")),
        "{refused}"
    );
    let last = lines.next(&a);
    assert_eq!(last["id"], "last", "{last}");
    assert_eq!(last["ok"], true, "{last}");
    assert!(hosts.contains("b"), "some ran on the other host: {hosts:?}");

    // The end of stdin does not end a host that serves HTTP too.
    drop(stdin);
    a.wait_for_log("stdin closed");
    let after = a.post_json("/v1/messages", &json!({ "text": "work 0 after" }));
    assert_eq!(after.status, 200, "{}", after.text());
}
