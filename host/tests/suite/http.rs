//! The HTTP API of `agent-host run --listen`, tested as a client sees it: a
//! real process on real plugin files, real HTTP over loopback, and SIGTERM.
//!
//! The agent and the client are in `common/`. Every wait is bounded.

#![cfg(unix)]

use crate::common::*;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::fixture;

fn message(text: &str) -> Value {
    json!({"sender": "alice", "text": text})
}

#[test]
fn the_http_api_serves_messages_plugins_events_health_and_metrics_then_stops_on_sigterm() {
    let mut agent = Agent::start();

    // One message: stdin is closed already, and the server still serves.
    let reply = agent.post_json("/v1/messages", &message("multi"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = reply.json();
    assert_eq!(reply["text"], "multi-one says pong", "{reply}");
    assert_eq!(reply["ok"], true);
    assert_eq!(
        reply["action"],
        json!({"plugin": "multi-two", "action": "MULTI"})
    );

    // A batch: both answered, each scored by the evaluator's batch form.
    let batch = json!({"messages": [message("trap one"), {"id": "second", "text": "trap two"}]});
    let answer = agent.post_json("/v1/messages", &batch);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    let replies = answer["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 2, "{answer}");
    assert_eq!(replies[1]["id"], "second");
    for reply in replies {
        assert_eq!(reply["text"], "trap ok", "{reply}");
        assert_eq!(reply["action"]["action"], "TRAP");
        let evaluations = reply["evaluations"].as_array().expect("evaluations");
        assert!(
            evaluations
                .iter()
                .any(|e| e["plugin"] == "panicky" && e["evaluator"] == "trap"),
            "{reply}"
        );
    }

    // Plugins.
    let plugins = agent.get("/v1/plugins");
    assert_eq!(plugins.status, 200);
    let plugins = plugins.json();
    let names = plugin_names(&plugins);
    assert_eq!(names, ["fixture", "multi-one", "multi-two", "panicky"]);

    let two = agent.get("/v1/plugins/multi-two");
    assert_eq!(two.status, 200);
    let two = two.json();
    assert_eq!(two["name"], "multi-two");
    assert_eq!(two["version"], "1.0.0");
    assert!(two["file"].as_str().is_some_and(|f| f.contains("multi")));
    assert!(two["load_order"].is_u64());

    let missing = agent.get("/v1/plugins/no-such-plugin");
    assert_eq!(
        missing.error(404),
        "no plugin named 'no-such-plugin' is loaded"
    );

    // A manual reload of a file that has not changed does nothing, and says
    // so.
    let before = agent.get("/v1/plugins/multi-one").json();
    let skipped = agent.post_json("/v1/plugins/multi-one/reload", &json!({}));
    assert_eq!(skipped.status, 200, "{}", skipped.text());
    let skipped = skipped.json();
    assert_eq!(skipped["unchanged"], true, "{skipped}");
    assert_eq!(skipped["generation"], before["generation"], "{skipped}");
    let bad_query = agent.post_json("/v1/plugins/multi-one/reload?force=maybe", &json!({}));
    assert!(
        bad_query.error(400).contains("force=true"),
        "{}",
        bad_query.text()
    );

    // A forced reload: a new generation of multi-one serves its dependent.
    let reloaded = agent.post_json("/v1/plugins/multi-one/reload?force=true", &json!({}));
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let reloaded = reloaded.json();
    assert_eq!(reloaded["plugin"], "multi-one");
    assert_eq!(reloaded["to_version"], "1.0.0");
    assert_eq!(reloaded["unchanged"], false, "{reloaded}");
    // The audit trail: who asked, and the file's hash before and after.
    assert_eq!(reloaded["origin"], "http", "{reloaded}");
    assert_eq!(reloaded["identity"], Value::Null, "{reloaded}");
    assert!(
        reloaded["to_sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{reloaded}"
    );
    assert_eq!(
        reloaded["from_sha256"], reloaded["to_sha256"],
        "the same file"
    );
    let after = agent.get("/v1/plugins/multi-one").json();
    assert!(
        after["generation"].as_u64() > before["generation"].as_u64(),
        "{after}"
    );
    assert_eq!(after["mapped"]["generations"], 2, "{after}");
    assert!(after["mapped"]["bytes"].as_u64() > after["image_bytes"].as_u64());
    let reply = agent.post_json("/v1/messages", &message("multi")).json();
    assert_eq!(reply["text"], "multi-one says pong", "{reply}");
    // The same from the command line, against the running agent.
    let reload_cli = |extra: &[&str]| {
        let cli = Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .args(["reload", "multi-one", "--url"])
            .arg(format!("http://{}", agent.address))
            .args(extra)
            .output()
            .expect("run agent-host reload");
        let said = String::from_utf8_lossy(&cli.stdout).into_owned();
        assert!(
            cli.status.success(),
            "{said} {}",
            String::from_utf8_lossy(&cli.stderr)
        );
        said
    };
    let said = reload_cli(&[]);
    assert!(
        said.starts_with("multi-one not reloaded: its file is byte-identical"),
        "{said}"
    );
    let said = reload_cli(&["--force"]);
    assert!(
        said.starts_with("reloaded multi-one 1.0.0 -> 1.0.0"),
        "{said}"
    );
    let metrics = agent.get("/metrics").text();
    for origin in ["http", "cli"] {
        for outcome in ["reloaded", "unchanged"] {
            let line =
                format!("agent_host_reloads_total{{origin=\"{origin}\",outcome=\"{outcome}\"}} 1");
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["reload", "no-such-plugin", "--url"])
        .arg(format!("http://{}", agent.address))
        .output()
        .expect("run agent-host reload");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no plugin named 'no-such-plugin'"));
    let unknown = agent.post_json("/v1/plugins/no-such-plugin/reload", &json!({}));
    assert_eq!(
        unknown.error(404),
        "no plugin named 'no-such-plugin' is loaded"
    );

    // Malformed requests: each a 4xx JSON error that says what is wrong.
    let bad_json = request(
        agent.address,
        "POST",
        "/v1/messages",
        Some(("application/json", b"{\"text\": ")),
    );
    assert!(bad_json.error(400).contains("not valid JSON"));
    let wrong_type = request(
        agent.address,
        "POST",
        "/v1/messages",
        Some(("text/plain", b"{\"text\": \"multi\"}")),
    );
    assert!(wrong_type.error(415).contains("application/json"));
    let no_type = request(
        agent.address,
        "POST",
        "/v1/messages",
        Some(("", b"{\"text\": \"multi\"}")),
    );
    assert!(no_type.error(415).contains("no Content-Type"));
    let no_text = agent.post_json("/v1/messages", &json!({"sender": "alice"}));
    assert!(no_text.error(422).contains("'text'"));
    let bad_batch = agent.post_json(
        "/v1/messages",
        &json!({"messages": [{"text": "ok"}, {"text": 7}]}),
    );
    assert!(bad_batch.error(422).starts_with("messages[1]"));
    let unknown = agent.get("/v2/nothing");
    let unknown = unknown.error(404);
    assert!(unknown.contains("/v2/nothing"), "{unknown}");
    // The answer lists every route the API serves, the reload route included.
    assert!(
        unknown.contains("POST /v1/plugins/{name}/reload"),
        "{unknown}"
    );
    let wrong_method = request(agent.address, "DELETE", "/v1/plugins", None);
    assert!(wrong_method.error(405).contains("DELETE"));
    let get_messages = agent.get("/v1/messages");
    assert!(get_messages.error(405).contains("/v1/messages"));

    // ...and the server still serves.
    let reply = agent.post_json("/v1/messages", &message("multi"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["text"], "multi-one says pong");

    // A handler that panics: an answer, not a dropped connection.
    let reply = agent.post_json("/v1/messages", &message("panic:handler"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = reply.json();
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(
        reply["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("plugin 'panicky'"))),
        "{reply}"
    );

    // Events: subscribe, post, and see the action complete.
    let mut events = Events::open(agent.address);
    let reply = agent.post_json("/v1/messages", &json!({"id": "watched", "text": "multi"}));
    assert_eq!(reply.status, 200);
    let deadline = Instant::now() + WAIT;
    loop {
        let (name, data) = events
            .next(deadline)
            .expect("the stream stays open while the server runs");
        if name == "action:completed" && data["payload"]["message_id"] == "watched" {
            assert_eq!(data["name"], "action:completed");
            assert_eq!(data["source"], "host");
            assert_eq!(data["payload"]["plugin"], "multi-two");
            break;
        }
    }

    // Health and metrics.
    let health = agent.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        json!({"status": "ok", "plugins": 4, "reasons": []})
    );
    let metrics = agent.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(
        metrics.text().contains("agent_host_messages_total"),
        "{}",
        metrics.text()
    );

    // SIGTERM: exit 0, with an event stream still open.
    let status = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = agent.child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running after SIGTERM:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "exits 0 after SIGTERM:\n{}", agent.log());
    let deadline = Instant::now() + WAIT;
    while events.next(deadline).is_some() {}
    let log = agent.final_log();
    assert!(log.contains("unloaded plugin=multi-one"), "{log}");
}

/// Sends a message without waiting for the answer; the returned stream
/// reads it.
fn send_message(address: SocketAddr, text: &str) -> TcpStream {
    let mut stream = connect(address);
    let body = message(text).to_string();
    write_request(
        &mut stream,
        "POST",
        "/v1/messages",
        Some(("application/json", body.as_bytes())),
    );
    stream
}

#[test]
fn on_sigterm_new_requests_get_503_and_the_agent_exits_within_the_grace_period_past_a_stuck_call() {
    let grace = Duration::from_millis(1500);
    let mut agent = Agent::start_with(
        &[fixture("stubborn")],
        "[host]\nshutdown_grace_ms = 1500\n",
        false,
    );
    // A handler that ignores cancellation and outlives the grace period.
    let _stuck = send_message(agent.address, "sleep 30000");
    agent.wait_for_log("sleeping 30000 ms");

    agent.terminate();
    agent.wait_for_log("shutting down: taking no new work");
    let refused = agent.post_json("/v1/messages", &message("sleep 1"));
    assert_eq!(
        refused.error(503),
        "the agent is shutting down",
        "{}",
        refused.text()
    );
    let health = agent.get("/healthz");
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "draining", "{}", health.text());
    // A client keeping its connection alive is told it ends.
    let mut kept = connect(agent.address);
    kept.write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: agent\r\n\r\n")
        .expect("write a request");
    let (status, headers, error) = answer_within(&kept, Duration::from_secs(5));
    assert_eq!(status, 503, "{error}");
    assert!(says_close(&headers), "{headers:?}");

    let code = agent.wait_for_exit(grace + Duration::from_secs(4));
    assert_eq!(code, Some(0), "exits 0:\n{}", agent.log());
    // It waited for the call in flight: the host says so only once the
    // grace period is over.
    let log = agent.final_log();
    let stuck = log
        .lines()
        .find(|l| l.contains("still in flight after the shutdown grace period"))
        .unwrap_or_else(|| panic!("the stuck call is named:\n{log}"));
    assert!(
        stuck.contains("stubborn") && stuck.contains("action 'SLEEP' handler"),
        "{stuck}"
    );
    let warning = log
        .lines()
        .find(|l| l.contains("on_unload runs with 1 call(s) still in it"))
        .unwrap_or_else(|| panic!("on_unload's early run is said:\n{log}"));
    assert!(warning.contains("stubborn"), "{warning}");
    assert!(log.contains("stubborn on_unload"), "{log}");
}

#[test]
fn on_sigterm_request_lines_get_an_error_line_and_calls_in_flight_finish_before_on_unload() {
    let mut agent = Agent::start_with(
        &[fixture("stubborn")],
        "[host]\nshutdown_grace_ms = 10000\n",
        true,
    );
    let mut in_flight = send_message(agent.address, "sleep 1500");
    agent.wait_for_log("sleeping 1500 ms");
    agent.terminate();
    agent.wait_for_log("shutting down: taking no new work");

    let (mut stdin, mut stdout) = agent.lines.take().expect("piped stdin and stdout");
    writeln!(stdin, r#"{{"text": "sleep 1"}}"#).expect("write a request line");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the answer line");
    let answer: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(
        answer,
        json!({"error": "the agent is shutting down"}),
        "{line}"
    );

    // The call in flight is answered, not dropped.
    let mut reader = BufReader::new(&mut in_flight);
    let (status, _) = read_head(&mut reader);
    let mut body = String::new();
    reader.read_to_string(&mut body).expect("body");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("slept 1500 ms"), "{body}");

    let code = agent.wait_for_exit(WAIT);
    drop(stdin);
    assert_eq!(code, Some(0), "exits 0:\n{}", agent.log());
    let log = agent.final_log();
    let slept = log.find("slept 1500 ms").expect("the handler finished");
    let unloaded = log.find("stubborn on_unload").expect("on_unload ran");
    assert!(
        slept < unloaded,
        "on_unload waits for the call in flight:\n{log}"
    );
    assert!(!log.contains("still in flight after"), "{log}");
}

/// Sends `body` as a `POST /v1/messages` body without minding a write the
/// server cut short (it may answer before reading all of a body too large).
fn post_raw(address: SocketAddr, body: &[u8]) -> Response {
    let mut stream = connect(address);
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    let _ = stream.write_all(body);
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    let mut body = Vec::new();
    let _ = reader.read_to_end(&mut body);
    Response {
        status,
        headers,
        body,
    }
}

#[test]
fn a_request_line_and_a_request_body_are_refused_with_the_same_error() {
    let mut agent = Agent::start_with(&[fixture("")], "", true);
    let (mut stdin, mut stdout) = agent.lines.take().expect("piped stdin and stdout");
    let mut too_large = b"{\"text\": \"".to_vec();
    too_large.resize(too_large.len() + 2 * 1024 * 1024, b'a');
    too_large.extend_from_slice(b"\"}");
    let cases: [(&[u8], u16); 7] = [
        (b"{\"text\": \"bad \xff\xfe utf8\"}", 400),
        (b"{nope", 400),
        (b"{}", 422),
        (b"[\"hi\"]", 422),
        (b"{\"text\": 5}", 422),
        (b"{\"messages\": [{\"text\": \"a\"}, {}]}", 422),
        (&too_large, 413),
    ];
    for (request, status) in cases {
        stdin.write_all(request).expect("write a request line");
        stdin.write_all(b"\n").expect("end the line");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the answer line");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a JSON line ({e}): {line}\n{}", agent.log()));
        let on_stdin = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("an error line: {line}"));
        let over_http = post_raw(agent.address, request).error(status);
        assert_eq!(on_stdin, over_http);
    }
    drop(stdin);
    let reply = agent.post_json("/v1/messages", &message("still serving"));
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Reads until the server closes `stream` (an end of file, or a reset when
/// it closed with bytes unread); what it sent before, and how long that
/// took. Fails when the server keeps it open for `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "still open after {} ms ({e}); received {:?}",
                started.elapsed().as_millis(),
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (received, started.elapsed())
}

/// Sends `GET path` on a connection kept alive and reads the whole answer.
fn get_keeping_alive(reader: &mut BufReader<TcpStream>, path: &str) -> (u16, String) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n");
    reader
        .get_mut()
        .write_all(head.as_bytes())
        .expect("write a request");
    let (status, headers) = read_head(reader);
    let body = read_sized_body(reader, &headers);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The log filter under which the agent says why it closes a connection.
const CLOSE_REASONS: (&str, &str) = ("RUST_LOG", "info,agent_host::http=debug");

/// The log line of a connection closed for `reason` (the display of the
/// server's expired deadline).
fn closed_for(reason: &str) -> String {
    format!("closing an HTTP connection: {reason}")
}

const HEADER_TIMEOUT: &str = "the client did not send a request's headers in time";
const IDLE_TIMEOUT: &str = "the connection stayed idle past the idle timeout";

#[test]
fn a_connection_that_sends_nothing_or_half_a_request_is_closed_after_the_header_timeout() {
    let agent = Agent::launch(
        &[fixture("")],
        "[host]\nhttp_header_timeout_ms = 300\n",
        false,
        &["--listen", "127.0.0.1:0"],
        &[CLOSE_REASONS],
    );
    let mut silent = connect(agent.address);
    let mut half = connect(agent.address);
    half.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: agent\r\nContent-Le")
        .expect("write half a request");
    for stream in [&mut silent, &mut half] {
        let (received, _) = read_until_closed(stream, Duration::from_secs(5));
        assert!(
            received.is_empty(),
            "{}",
            String::from_utf8_lossy(&received)
        );
    }
    // Both were closed by their header timeout, not for another reason.
    agent.wait_for_log_count(&closed_for(HEADER_TIMEOUT), 2);
    let health = agent.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let agent = Agent::launch(
        &[fixture("")],
        "[host]\nhttp_header_timeout_ms = 300\nhttp_idle_timeout_ms = 3000\n",
        false,
        &["--listen", "127.0.0.1:0"],
        &[CLOSE_REASONS],
    );
    let mut reader = BufReader::new(connect(agent.address));
    let (status, body) = get_keeping_alive(&mut reader, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_keeping_alive(&mut reader, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (rest, _) = read_until_closed(reader.get_mut(), WAIT);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // Idle for longer than the header timeout, the connection was closed by
    // its idle timeout, never by the header timeout.
    agent.wait_for_log(&closed_for(IDLE_TIMEOUT));
    assert!(
        !agent.log().contains(&closed_for(HEADER_TIMEOUT)),
        "{}",
        agent.log()
    );
}

#[test]
fn beyond_max_connections_a_request_gets_503_and_once_they_close_requests_succeed() {
    let agent = Agent::start_with(&[fixture("")], "[host]\nhttp_max_connections = 4\n", false);
    // Four connections, each served once and then held open, idle.
    let held: Vec<BufReader<TcpStream>> = (0..4)
        .map(|_| {
            let mut reader = BufReader::new(connect(agent.address));
            let (status, body) = get_keeping_alive(&mut reader, "/healthz");
            assert_eq!(status, 200, "{body}");
            reader
        })
        .collect();
    for _ in 0..3 {
        let refused = agent.get("/healthz");
        assert_eq!(
            refused.error(503),
            "the agent serves at most 4 connections at once; try again later"
        );
    }
    agent.wait_for_log("HTTP connection limit reached");

    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let health = agent.get("/healthz");
        if health.status == 200 {
            break;
        }
        assert_eq!(health.status, 503, "{}", health.text());
        assert!(Instant::now() < deadline, "still refused:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.wait_for_log("HTTP connections are accepted again");
    let log = agent.log();
    let said = log
        .lines()
        .filter(|l| l.contains("HTTP connection limit reached"))
        .count();
    assert_eq!(said, 1, "said once, not once per refusal:\n{log}");
}

#[test]
fn on_sigterm_connections_without_a_request_in_progress_are_closed_at_once() {
    let mut agent = Agent::start();
    let _silent = connect(agent.address);
    let mut half = connect(agent.address);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .expect("write half a request");
    let mut idle = BufReader::new(connect(agent.address));
    let (status, body) = get_keeping_alive(&mut idle, "/healthz");
    assert_eq!(status, 200, "{body}");

    agent.terminate();
    assert_eq!(agent.wait_for_exit(WAIT), Some(0), "{}", agent.log());
    let log = agent.final_log();
    assert!(log.contains("HTTP server stopped"), "{log}");
    assert!(!log.contains("did not stop"), "{log}");
}

/// The status, headers and JSON error of the answer on `stream`, which must
/// come within `limit` (read while the connection stays open for writing).
fn answer_within(stream: &TcpStream, limit: Duration) -> (u16, Vec<(String, String)>, String) {
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    if let Err(error) = reader.fill_buf() {
        panic!("no answer within {} ms: {error}", limit.as_millis());
    }
    let (status, headers) = read_head(&mut reader);
    let body = read_sized_body(&mut reader, &headers);
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    let error = body["error"].as_str().unwrap_or_default().to_string();
    (status, headers, error)
}

/// Whether `headers` say `Connection: close`.
fn says_close(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"))
}

/// The head of a `POST /v1/messages` kept alive, with `framing` (a
/// `Content-Length` or `Transfer-Encoding` header line).
fn message_head(framing: &str) -> String {
    format!(
        "POST /v1/messages HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n\
         {framing}\r\n\r\n"
    )
}

/// Writes one byte every 100 ms on a clone of `stream` until a write fails
/// or `limit` passes: a body that arrives far too slowly.
fn trickle(stream: &TcpStream, limit: Duration) -> std::thread::JoinHandle<()> {
    let mut writer = stream.try_clone().expect("clone the stream");
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < limit {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[test]
fn a_body_that_does_not_arrive_within_the_body_timeout_is_answered_408_and_its_slot_freed() {
    let agent = Agent::start_with(
        &[fixture("")],
        "[host]\nhttp_body_timeout_ms = 1000\nhttp_max_connections = 3\n",
        false,
    );
    // Every slot taken by a client sending a 1000-byte body a byte at a time.
    let slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(agent.address);
            stream
                .write_all(message_head("Content-Length: 1000").as_bytes())
                .expect("write the head");
            stream
        })
        .collect();
    let trickles: Vec<_> = slow
        .iter()
        .map(|s| trickle(s, Duration::from_secs(8)))
        .collect();
    for stream in &slow {
        let (status, headers, error) = answer_within(stream, Duration::from_secs(6));
        assert_eq!(status, 408, "{error}");
        assert!(says_close(&headers), "{headers:?}");
        assert!(
            error.contains("1000 ms") && error.contains("http_body_timeout_ms"),
            "{error}"
        );
    }
    // Their slots are free again.
    let deadline = Instant::now() + WAIT;
    loop {
        let health = agent.get("/healthz");
        if health.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(slow);
    for trickle in trickles {
        trickle.join().expect("the trickling thread");
    }
    let log = agent.log();
    assert!(log.contains("http_body_timeout_ms"), "{log}");
}

/// A connection to `address` from `local`, an address of 127.0.0.0/8 (all
/// of it is loopback on Linux).
#[cfg(target_os = "linux")]
fn connect_from(local: [u8; 4], address: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((local, 0)))
            .expect("bind the client's address");
        socket.connect(address).await.expect("connect")
    });
    let stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    stream
}

#[cfg(target_os = "linux")]
#[test]
fn one_address_cannot_take_every_connection_and_other_addresses_are_still_served() {
    let agent = Agent::start_with(
        &[fixture("")],
        "[host]\nhttp_max_connections = 8\nhttp_max_connections_per_address = 3\n",
        false,
    );
    let first = [127, 0, 0, 1];
    // Three slow bodies from one address: all it may hold.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect_from(first, agent.address);
            stream
                .write_all(message_head("Content-Length: 1000").as_bytes())
                .expect("write the head");
            stream.write_all(b" ").expect("a byte of the body");
            stream
        })
        .collect();
    // Let the server count them before the next ones arrive.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..2 {
        let mut more = connect_from(first, agent.address);
        more.write_all(message_head("Content-Length: 1000").as_bytes())
            .expect("write the head");
        let (status, headers, error) = answer_within(&more, Duration::from_secs(5));
        assert_eq!(status, 503, "{error}");
        assert!(says_close(&headers), "{headers:?}");
        assert!(
            error.contains("at most 3 connections from one address"),
            "{error}"
        );
    }
    // Another address is served all the same.
    let mut other = connect_from([127, 0, 0, 2], agent.address);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        .expect("write a request");
    let (status, _, error) = answer_within(&other, Duration::from_secs(5));
    assert_eq!(status, 200, "{error}");
    agent.wait_for_log("http_max_connections_per_address");
    drop(held);
}

#[test]
fn an_over_limit_content_length_or_chunk_size_is_refused_with_413_before_the_body() {
    let agent = Agent::start_with(&[fixture("")], "", false);
    let chunked = "Transfer-Encoding: chunked";
    let too_large = format!("{:x}", 2 * 1024 * 1024 + 1);
    let cases = [
        (
            message_head("Content-Length: 3000000"),
            "larger than 2 MiB",
            "3 MB Content-Length",
        ),
        (
            format!("{}ffffffffffffffff\r\n", message_head(chunked)),
            "larger than 2 MiB",
            "a chunk size of 16 hex digits",
        ),
        (
            format!("{}{too_large}\r\n", message_head(chunked)),
            "larger than 2 MiB",
            "a chunk one byte over the limit",
        ),
        (
            format!(
                "{}10\r\n{{\"text\": \"hi\"}}  \r\n{too_large}\r\n",
                message_head(chunked)
            ),
            "larger than 2 MiB",
            "a second chunk that takes the body over the limit",
        ),
        (
            format!("{}00000000000000001\r\n", message_head(chunked)),
            "more than 16 hex digits",
            "a chunk size of 17 hex digits",
        ),
    ];
    for (head, expected, case) in cases {
        let mut stream = connect(agent.address);
        stream.write_all(head.as_bytes()).expect("write the head");
        let (status, headers, error) = answer_within(&stream, Duration::from_secs(5));
        assert_eq!(status, 413, "{case}: {error}");
        assert!(says_close(&headers), "{case}: {headers:?}");
        assert!(error.contains(expected), "{case}: {error}");
    }
    // A chunked body within the limit is served, and so is the next request
    // on the same connection.
    let mut stream = connect(agent.address);
    let body = r#"{"text": "hi"}"#;
    let request = format!(
        "{}{:x}\r\n{body}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        message_head(chunked),
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("write a request");
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200, "{headers:?}");
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .expect("a Content-Length");
    let mut reply = vec![0; length];
    reader.read_exact(&mut reply).expect("the reply");
    let (status, body) = get_keeping_alive(&mut reader, "/healthz");
    assert_eq!(status, 200, "{body}");
    let refused = format!("{}ffffffff\r\n", message_head(chunked));
    reader
        .get_mut()
        .write_all(refused.as_bytes())
        .expect("write the head");
    let (status, headers, error) = answer_within(reader.get_ref(), Duration::from_secs(5));
    assert_eq!(status, 413, "{error}");
    assert!(says_close(&headers), "{headers:?}");
}
