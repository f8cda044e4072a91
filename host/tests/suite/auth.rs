//! Who may use the HTTP API, on the real server: API tokens and their
//! roles, the refusals (status, JSON error, `WWW-Authenticate`, audit log
//! line, metric), the sender a token speaks as, permissions from the config
//! rather than from the message, the config's refusals of plain secrets, and
//! the refusal to serve a non-loopback address without tokens.
//!
//! `cargo test -p agent-host --test auth -- --nocapture` prints each
//! attempt, what it should get and what it got.

#![cfg(unix)]

use crate::common::sha256_hex;
use crate::common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::{fixture, folder_with};

const OPS: &str = "ops-token-6c1f0e";
const WATCH: &str = "watch-token-93ab21";
const BOT: &str = "bot-token-from-the-environment";
const BOT_VARIABLE: &str = "AUTH_TEST_BOT_TOKEN";

/// `ops` may chat and administer, `bot` (from the environment) may chat,
/// `watch` may administer; only the sender `ops` holds `data:secret`.
fn token_config() -> String {
    format!(
        r#"
[senders]
ops = ["data:secret"]

[[api.tokens]]
name = "ops"
sender = "ops"
roles = ["chat", "admin"]
sha256 = "{}"

[[api.tokens]]
name = "bot"
sender = "bot"
roles = ["chat"]
env = "{BOT_VARIABLE}"

[[api.tokens]]
name = "watch"
sender = "watch"
roles = ["admin"]
sha256 = "{}"
"#,
        sha256_hex(OPS),
        sha256_hex(WATCH)
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Attempts and their outcomes, printed as a table at the end of a test.
#[derive(Default)]
struct Attempts {
    rows: Vec<(String, String, String)>,
}

impl Attempts {
    /// Sends a request and records what it should get and what it got.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        agent: &Agent,
        label: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        expected: u16,
    ) -> Response {
        let authorization = token.map(bearer);
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| vec![("Authorization", value)])
            .unwrap_or_default();
        let body_text = body.map(Value::to_string);
        let response = request_with(
            agent.address,
            method,
            path,
            &headers,
            body_text
                .as_deref()
                .map(|text| ("application/json", text.as_bytes())),
        );
        self.record(
            format!("{label}: {method} {path}"),
            expected.to_string(),
            response.status.to_string(),
        );
        assert_eq!(
            response.status,
            expected,
            "{label}: {method} {path}: {}",
            response.text()
        );
        response
    }

    fn record(&mut self, attempt: String, expected: String, observed: String) {
        self.rows.push((attempt, expected, observed));
    }

    fn print(&self) {
        println!("| attempt | expected | observed |\n| --- | --- | --- |");
        for (attempt, expected, observed) in &self.rows {
            println!("| {attempt} | {expected} | {observed} |");
        }
    }
}

/// Asserts a refusal: its status, a JSON error, and for a 401 the
/// `WWW-Authenticate: Bearer` challenge.
fn assert_refused(response: &Response, status: u16) -> String {
    let error = response.error(status);
    if status == 401 {
        assert!(
            response
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{:?}",
            response.headers
        );
    }
    error
}

/// The value of a metric line starting with `prefix`, 0 when absent.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The status of `GET path` with `token`, reading the head only (an event
/// stream does not end).
fn head_status(agent: &Agent, path: &str, token: &str) -> u16 {
    let mut stream = connect(agent.address);
    let authorization = bearer(token);
    write_request_with(
        &mut stream,
        "GET",
        path,
        &[("Authorization", &authorization)],
        None,
    );
    let mut reader = std::io::BufReader::new(stream);
    read_head(&mut reader).0
}

/// `agent-host reload PLUGIN --url` against `agent`, with `token` in
/// AGENT_HOST_TOKEN (or that variable removed).
fn reload_cli(agent: &Agent, plugin: &str, token: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent-host"));
    command
        .args(["reload", plugin, "--force", "--url"])
        .arg(format!("http://{}", agent.address))
        .env_remove("AGENT_HOST_TOKEN");
    if let Some(token) = token {
        command.env("AGENT_HOST_TOKEN", token);
    }
    command.output().expect("run agent-host reload")
}

#[test]
fn tokens_and_roles_decide_every_route_and_refusals_are_answered_logged_and_counted() {
    // With tokens, a non-loopback address needs no other permission.
    let agent = Agent::launch(
        &[fixture("runtime")],
        &token_config(),
        false,
        &["--listen", "0.0.0.0:0"],
        &[(BOT_VARIABLE, BOT)],
    );
    let mut attempts = Attempts::default();
    let secret = json!({"text": "secret"});

    // /healthz is open.
    attempts.send(&agent, "no token", "GET", "/healthz", None, None, 200);

    // 401: no token, a wrong one, a malformed header, a token elsewhere.
    for path in [
        "/v1/messages",
        "/v1/plugins",
        "/v1/events",
        "/metrics",
        "/nowhere",
    ] {
        let method = if path == "/v1/messages" {
            "POST"
        } else {
            "GET"
        };
        let body = (method == "POST").then_some(&secret);
        let refused = attempts.send(&agent, "no token", method, path, None, body, 401);
        let error = assert_refused(&refused, 401);
        assert!(error.contains("Authorization: Bearer"), "{error}");
    }
    let refused = attempts.send(
        &agent,
        "wrong token",
        "POST",
        "/v1/messages",
        Some("not-a-token"),
        Some(&secret),
        401,
    );
    assert_eq!(assert_refused(&refused, 401), "the API token is not valid");
    let refused = attempts.send(
        &agent,
        "the token's SHA-256 as a token",
        "GET",
        "/v1/plugins",
        Some(&sha256_hex(OPS)),
        None,
        401,
    );
    assert_refused(&refused, 401);
    let basic = request_with(
        agent.address,
        "GET",
        "/v1/plugins",
        &[("Authorization", &format!("Basic {OPS}"))],
        None,
    );
    attempts.record(
        "Basic scheme: GET /v1/plugins".into(),
        "401".into(),
        basic.status.to_string(),
    );
    assert!(assert_refused(&basic, 401).contains("Bearer"));
    for path in [
        format!("/v1/plugins?token={OPS}"),
        format!("/v1/plugins?access_token={OPS}"),
    ] {
        let refused = attempts.send(&agent, "token in the query", "GET", &path, None, None, 401);
        assert_refused(&refused, 401);
    }
    let in_body = json!({"text": "secret", "token": OPS, "authorization": bearer(OPS)});
    let refused = attempts.send(
        &agent,
        "token in the body",
        "POST",
        "/v1/messages",
        None,
        Some(&in_body),
        401,
    );
    assert_refused(&refused, 401);

    // chat: messages, as the token's sender, with that sender's permissions.
    let reply = attempts.send(
        &agent,
        "ops (chat+admin)",
        "POST",
        "/v1/messages",
        Some(OPS),
        Some(&secret),
        200,
    );
    assert_eq!(reply.json()["text"], "the secret", "{}", reply.text());
    let same = json!({"sender": "ops", "text": "secret"});
    let reply = attempts.send(
        &agent,
        "ops naming itself",
        "POST",
        "/v1/messages",
        Some(OPS),
        Some(&same),
        200,
    );
    assert_eq!(reply.json()["text"], "the secret");
    let reply = attempts.send(
        &agent,
        "bot (chat, env token)",
        "POST",
        "/v1/messages",
        Some(BOT),
        Some(&secret),
        200,
    );
    let reply = reply.json();
    assert_eq!(reply["ok"], false, "bot holds no data:secret: {reply}");
    assert!(
        reply["text"]
            .as_str()
            .is_some_and(|t| t.contains("'data:secret'")),
        "{reply}"
    );
    let claimed = json!({"text": "secret", "permissions": ["data:secret"]});
    let reply = attempts.send(
        &agent,
        "bot claiming data:secret",
        "POST",
        "/v1/messages",
        Some(BOT),
        Some(&claimed),
        200,
    );
    assert_eq!(reply.json()["ok"], false, "the claim is ignored");

    // 403: a message naming another sender, a role the token lacks.
    let as_ops = json!({"sender": "ops", "text": "secret"});
    let refused = attempts.send(
        &agent,
        "bot naming sender ops",
        "POST",
        "/v1/messages",
        Some(BOT),
        Some(&as_ops),
        403,
    );
    let error = assert_refused(&refused, 403);
    assert!(
        error.contains("'bot'") && error.contains("'ops'"),
        "{error}"
    );
    let batch = json!({"messages": [{"text": "secret"}, {"sender": "ops", "text": "secret"}]});
    let refused = attempts.send(
        &agent,
        "bot batch naming ops",
        "POST",
        "/v1/messages",
        Some(BOT),
        Some(&batch),
        403,
    );
    assert_refused(&refused, 403);
    for (method, path) in [
        ("GET", "/v1/plugins"),
        ("GET", "/v1/plugins/runtime"),
        ("POST", "/v1/plugins/runtime/reload"),
        ("GET", "/v1/events"),
        ("GET", "/metrics"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let refused = attempts.send(
            &agent,
            "bot (chat only)",
            method,
            path,
            Some(BOT),
            body.as_ref(),
            403,
        );
        let error = assert_refused(&refused, 403);
        assert!(error.contains("lacks the role 'admin'"), "{error}");
    }
    let refused = attempts.send(
        &agent,
        "watch (admin only)",
        "POST",
        "/v1/messages",
        Some(WATCH),
        Some(&secret),
        403,
    );
    assert!(assert_refused(&refused, 403).contains("lacks the role 'chat'"));

    // admin: plugins, reload, events, metrics; any valid token reaches a 404.
    let plugins = attempts.send(
        &agent,
        "watch (admin)",
        "GET",
        "/v1/plugins",
        Some(WATCH),
        None,
        200,
    );
    assert!(plugins.json()["plugins"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    attempts.send(
        &agent,
        "watch (admin)",
        "GET",
        "/v1/plugins/runtime",
        Some(WATCH),
        None,
        200,
    );
    attempts.send(
        &agent,
        "watch (admin)",
        "POST",
        "/v1/plugins/runtime/reload?force=true",
        Some(WATCH),
        Some(&json!({})),
        200,
    );
    agent.wait_for_log("event=\"plugin_reloaded\"");
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("event=\"plugin_reloaded\"")
                && l.contains("origin=\"http\"")
                && l.contains("identity=\"watch\"")),
        "{}",
        agent.log()
    );
    let events = head_status(&agent, "/v1/events", WATCH);
    attempts.record(
        "watch (admin): GET /v1/events".into(),
        "200".into(),
        events.to_string(),
    );
    assert_eq!(events, 200);
    attempts.send(
        &agent,
        "ops (chat+admin)",
        "GET",
        "/nowhere",
        Some(OPS),
        None,
        404,
    );
    let metrics = attempts.send(
        &agent,
        "ops (chat+admin)",
        "GET",
        "/metrics",
        Some(OPS),
        None,
        200,
    );
    let text = metrics.text();

    // Every refusal was counted by reason, and logged with stable fields.
    for (reason, at_least) in [
        ("missing_token", 8),
        ("unknown_token", 2),
        ("malformed_header", 1),
        ("sender_mismatch", 2),
        ("wrong_role", 6),
    ] {
        let count = metric(
            &text,
            &format!("agent_host_auth_failures_total{{reason=\"{reason}\"}}"),
        );
        assert!(count >= at_least, "{reason}: {count}\n{text}");
    }
    assert!(
        metric(
            &text,
            "agent_host_action_runs_total{plugin=\"runtime\",action=\"SECRET\",outcome=\"denied\"}"
        ) >= 2,
        "{text}"
    );
    let log = agent.log();
    let audit = |needles: &[&str]| log.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        audit(&[
            "event=\"auth_failed\"",
            "reason=\"missing_token\"",
            "route=\"/v1/messages\"",
            "peer=\"127.0.0.1:"
        ]),
        "{log}"
    );
    assert!(
        audit(&[
            "event=\"auth_failed\"",
            "reason=\"wrong_role\"",
            "identity=\"bot\""
        ]),
        "{log}"
    );
    assert!(
        audit(&[
            "event=\"auth_failed\"",
            "reason=\"sender_mismatch\"",
            "identity=\"bot\""
        ]),
        "{log}"
    );
    assert!(
        audit(&["event=\"permission_denied\"", "sender=bot", "action=SECRET"]),
        "{log}"
    );
    assert!(
        !log.contains(OPS) && !log.contains(BOT),
        "no token in the log:\n{log}"
    );

    // reload --url: the token from AGENT_HOST_TOKEN.
    let with = reload_cli(&agent, "runtime", Some(WATCH));
    attempts.record(
        "reload --url, AGENT_HOST_TOKEN=watch".into(),
        "exit 0".into(),
        format!("exit {:?}", with.status.code()),
    );
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).starts_with("reloaded runtime"));
    let without = reload_cli(&agent, "runtime", None);
    let said = String::from_utf8_lossy(&without.stderr);
    attempts.record(
        "reload --url, no AGENT_HOST_TOKEN".into(),
        "exit 1, 401".into(),
        format!(
            "exit {:?}, {}",
            without.status.code(),
            said.lines().next().unwrap_or("")
        ),
    );
    assert_eq!(without.status.code(), Some(1), "{said}");
    assert!(
        said.contains("reload refused (401)") && said.contains("AGENT_HOST_TOKEN"),
        "{said}"
    );
    let chat_only = reload_cli(&agent, "runtime", Some(BOT));
    let said = String::from_utf8_lossy(&chat_only.stderr);
    attempts.record(
        "reload --url, AGENT_HOST_TOKEN=bot".into(),
        "exit 1, 403".into(),
        format!(
            "exit {:?}, {}",
            chat_only.status.code(),
            said.lines().next().unwrap_or("")
        ),
    );
    assert!(said.contains("reload refused (403)"), "{said}");

    attempts.print();
}

#[test]
fn a_messages_claimed_permissions_count_only_with_the_development_switch() {
    let mallory = json!({"sender": "mallory", "permissions": ["data:secret"], "text": "secret"});
    let mut attempts = Attempts::default();

    // By default, over HTTP and on stdin: the claim is ignored.
    let mut agent = Agent::launch(
        &[fixture("runtime")],
        "",
        true,
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    agent.wait_for_log("anyone on this machine can talk to the agent");
    let reply = attempts.send(
        &agent,
        "no tokens, claim, default",
        "POST",
        "/v1/messages",
        None,
        Some(&mallory),
        200,
    );
    assert_eq!(reply.json()["ok"], false, "{}", reply.text());
    let line = answer_line(&mut agent, &mallory);
    attempts.record(
        "stdin line claiming data:secret, default".into(),
        "ok false".into(),
        format!("ok {}", line["ok"]),
    );
    assert_eq!(line["ok"], false, "{line}");
    // A sender [senders] lists holds its permissions whatever it claims.
    drop(agent);

    let mut agent = Agent::launch(
        &[fixture("runtime")],
        "[host]\ntrust_claimed_permissions = true\n",
        true,
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    agent.wait_for_log("trust_claimed_permissions is on");
    let reply = attempts.send(
        &agent,
        "no tokens, claim, switch on",
        "POST",
        "/v1/messages",
        None,
        Some(&mallory),
        200,
    );
    assert_eq!(reply.json()["text"], "the secret", "{}", reply.text());
    let line = answer_line(&mut agent, &mallory);
    attempts.record(
        "stdin line claiming data:secret, switch on".into(),
        "ok true".into(),
        format!("ok {}", line["ok"]),
    );
    assert_eq!(line["text"], "the secret", "{line}");
    attempts.print();
}

/// Writes one request line to the agent's stdin; its reply line.
fn answer_line(agent: &mut Agent, request: &Value) -> Value {
    use std::io::{BufRead, Write};
    let (stdin, stdout) = agent.lines.as_mut().expect("piped");
    writeln!(stdin, "{request}").expect("write a line");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Runs `agent-host run` with `config` and `args`, expecting it to stop
/// with an error before serving; its stderr.
fn refused_run(config: &str, args: &[&str]) -> String {
    refused_run_with(config, args, &[])
}

/// [`refused_run`] with `envs` in the agent's environment.
fn refused_run_with(config: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let dir = folder_with(&[fixture("runtime")]);
    let config_file = dir.path().join("agent.toml");
    std::fs::write(&config_file, config).expect("write the config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .arg("run")
        .args(args)
        .arg("--config")
        .arg(&config_file)
        .arg("--plugins")
        .arg(dir.path())
        .env_remove(BOT_VARIABLE)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent-host run");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent-host run {args:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    stderr
}

#[test]
fn a_token_written_in_the_config_or_an_unset_variable_stops_the_agent_naming_the_entry() {
    let entry = |source: &str| {
        format!("[[api.tokens]]\nname = \"ops\"\nsender = \"ops\"\nroles = [\"admin\"]\n{source}\n")
    };
    let error = refused_run(&entry("token = \"hunter2\""), &["--listen", "127.0.0.1:0"]);
    assert!(
        error.contains("[[api.tokens]] entry 'ops' holds its token in plain text"),
        "{error}"
    );
    assert!(!error.contains("hunter2\"\n"), "{error}");
    let error = refused_run(&entry("sha256 = \"hunter2\""), &["--listen", "127.0.0.1:0"]);
    assert!(error.contains("entry 'ops': `sha256` must be"), "{error}");
    let error = refused_run(
        &entry(&format!("env = \"{BOT_VARIABLE}\"")),
        &["--listen", "127.0.0.1:0"],
    );
    assert!(
        error.contains(&format!(
            "entry 'ops' wants its token in the environment variable {BOT_VARIABLE}"
        )),
        "{error}"
    );
}

#[test]
fn without_tokens_a_non_loopback_address_is_refused_unless_allowed_explicitly() {
    let error = refused_run("", &["--listen", "0.0.0.0:0"]);
    assert!(
        error.contains("refusing to serve the HTTP API on 0.0.0.0:0")
            && error.contains("--allow-unauthenticated"),
        "{error}"
    );
    let agent = Agent::launch(
        &[fixture("runtime")],
        "",
        false,
        &["--listen", "0.0.0.0:0", "--allow-unauthenticated"],
        &[],
    );
    agent.wait_for_log("--allow-unauthenticated: anyone who reaches");
    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(agent.get("/v1/plugins").status, 200);
}

#[test]
fn a_short_or_padded_env_token_or_a_malformed_sha256_stops_the_agent_naming_the_entry_and_cause() {
    let entry = |source: &str| {
        format!("[[api.tokens]]\nname = \"bot\"\nsender = \"bot\"\nroles = [\"chat\"]\n{source}\n")
    };
    let listen = ["--listen", "127.0.0.1:0"];
    let by_env = entry(&format!("env = \"{BOT_VARIABLE}\""));
    for (token, cause) in [
        ("x", "is 1 byte long; a token has at least 16 bytes"),
        (
            "short-token-15b",
            "is 15 bytes long; a token has at least 16 bytes",
        ),
        (
            "a-long-enough-token-from-a-file\n",
            "ends with whitespace (a line break?)",
        ),
        (
            " a-long-enough-token-after-a-space",
            "starts with whitespace",
        ),
        ("a-long-enough token-with-a-space", "holds whitespace"),
    ] {
        let error = refused_run_with(&by_env, &listen, &[(BOT_VARIABLE, token)]);
        assert!(
            error.contains(&format!(
                "[[api.tokens]] entry 'bot': the token in the environment variable {BOT_VARIABLE} {cause}"
            )),
            "{token:?}: {error}"
        );
        if token.trim().len() >= 16 {
            assert!(
                !error.contains(token.trim()),
                "the token is not shown: {error}"
            );
        }
    }
    let digest = sha256_hex(BOT);
    for (sha256, cause) in [
        (format!("{digest}0"), "has 65 characters"),
        (digest[1..].to_string(), "has 63 characters"),
        (
            format!("+{}", &digest[1..]),
            "'+' at position 1, which is not a hex digit",
        ),
        (
            format!(" {}", &digest[1..]),
            "' ' at position 1, which is not a hex digit",
        ),
    ] {
        let error = refused_run(&entry(&format!("sha256 = \"{sha256}\"")), &listen);
        assert!(
            error.contains("[[api.tokens]] entry 'bot': `sha256` must be") && error.contains(cause),
            "{sha256:?}: {error}"
        );
    }
}

/// Sends a `POST /v1/messages` with `authorization` and a body far larger
/// than the server reads before refusing, on a connection kept alive; the
/// answer's status and headers, and whether the server then closed it.
fn refused_post_keeping_alive(
    agent: &Agent,
    authorization: &str,
) -> (u16, Vec<(String, String)>, bool) {
    use std::io::{BufReader, Write};
    let mut stream = connect(agent.address);
    let body = format!("{{\"text\": \"{}\"}}", "a".repeat(256 * 1024));
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: agent\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write the head");
    let mut writer = stream.try_clone().expect("clone the stream");
    // The server may answer and close before the body is all written.
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(body.as_bytes());
    });
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    // The whole answer, up to where a closed connection would show.
    read_sized_body(&mut reader, &headers);
    let mut rest = [0; 64];
    let closed = matches!(reader.read(&mut rest), Ok(0) | Err(_));
    sending.join().expect("the sending thread");
    (status, headers, closed)
}

#[test]
fn a_refusal_before_the_body_is_read_says_connection_close() {
    let agent = Agent::launch(
        &[fixture("runtime")],
        &token_config(),
        false,
        &["--listen", "127.0.0.1:0"],
        &[(BOT_VARIABLE, BOT)],
    );
    for (authorization, status) in [
        (bearer("not-a-token-of-this-agent"), 401),
        ("Basic b3BzOg==".to_string(), 401),
        (bearer(WATCH), 403),
    ] {
        let (got, headers, closed) = refused_post_keeping_alive(&agent, &authorization);
        assert_eq!(got, status, "{authorization}: {headers:?}");
        let connection = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| v.to_ascii_lowercase());
        assert_eq!(
            connection.as_deref(),
            Some("close"),
            "{authorization}: {headers:?}"
        );
        assert!(closed, "the connection is closed as announced");
    }
}
