//! The operator console (`GET /` of `agent-host run --listen`): its files
//! served without a token under a strict Content-Security-Policy, and the
//! page itself driven in a headless Chromium against a real agent with real
//! plugin files: sign-in, a chat exchange, a reload, a quarantined plugin,
//! the live event stream, the cluster page, and a token without the admin
//! role. Screenshots of each page go to `target/console-screenshots/`.

#![cfg(unix)]

use crate::common::browser::Browser;
use crate::common::sha256_hex;
use crate::common::*;
use serde_json::{json, Value};
use test_support::{add_as, fixture};

const ADMIN: &str = "console-admin-token-5d2e81";
const USER: &str = "console-user-token-77a0c4";

/// The policy every console file is served with.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// `ops` may chat and administer, `bot` may only chat; two panics
/// quarantine a plugin.
fn config() -> String {
    format!(
        r#"
[host]
quarantine_after_panics = 2

[[api.tokens]]
name = "ops"
sender = "ops"
roles = ["chat", "admin"]
sha256 = "{}"

[[api.tokens]]
name = "bot"
sender = "bot"
roles = ["chat"]
sha256 = "{}"
"#,
        sha256_hex(ADMIN),
        sha256_hex(USER)
    )
}

fn get_as(agent: &Agent, path: &str, token: Option<&str>) -> Response {
    let header = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    request_with(agent.address, "GET", path, &headers, None)
}

fn post_message_as(agent: &Agent, token: &str, text: &str) -> Value {
    let header = format!("Bearer {token}");
    let body = json!({ "text": text }).to_string();
    let response = request_with(
        agent.address,
        "POST",
        "/v1/messages",
        &[("Authorization", &header)],
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[test]
fn the_console_files_need_no_token_carry_a_strict_policy_and_hold_no_data() {
    let agent = Agent::start_with(&[fixture("")], &config(), false);
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        let response = agent.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(
            response.header("content-security-policy"),
            Some(POLICY),
            "{path}"
        );
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(
            !response.text().contains("fixture"),
            "{path} holds no data of the agent"
        );
    }
    // Everything else still needs a token: the data, another path, and a
    // request that is not a read of a console file.
    for (method, path) in [
        ("GET", "/v1/plugins"),
        ("GET", "/v1/whoami"),
        ("GET", "/console/other.js"),
        ("POST", "/"),
    ] {
        let response = request(agent.address, method, path, None);
        response.error(401);
    }
    let who = get_as(&agent, "/v1/whoami", Some(USER));
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(
        who.json(),
        json!({"open": false, "token": "bot", "sender": "bot", "roles": ["chat"]})
    );
    let who = get_as(&agent, "/v1/whoami", Some(ADMIN)).json();
    assert_eq!(who["roles"], json!(["chat", "admin"]));

    // Without tokens the API is open, and says so to the console.
    let open = Agent::start_with(&[fixture("")], "", false);
    let who = open.get("/v1/whoami");
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(
        who.json(),
        json!({"open": true, "roles": ["chat", "admin"]})
    );
    assert_eq!(open.get("/").status, 200);
}

#[test]
fn the_console_signs_in_chats_reloads_and_shows_quarantine_and_live_events_in_a_browser() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(console_in_a_browser());
}

async fn console_in_a_browser() {
    let test = "console::the_console_signs_in_chats_reloads_and_shows_quarantine_and_live_events_in_a_browser";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let agent = Agent::start_with(
        &[fixture("counter-v1"), fixture("panicky"), fixture("")],
        &config(),
        false,
    );
    let url = format!("http://{}/", agent.address);
    browser.client.goto(&url).await.expect("open the console");

    // Sign in: a wrong token is refused with the API's words; the right
    // one shows who it is.
    browser.wait_for_text("#login", "Sign in").await;
    browser
        .type_into("#token", "not-a-token-of-this-agent")
        .await;
    browser.click("#login-button").await;
    browser
        .wait_for_text("#login-error", "the API token is not valid")
        .await;
    browser.screenshot("login").await;
    browser.type_into("#token", ADMIN).await;
    browser.click("#login-button").await;
    browser
        .wait_for_text("#identity", "signed in as token 'ops'")
        .await;
    let address = browser.client.current_url().await.expect("the URL");
    assert!(
        !address.as_str().contains(ADMIN),
        "never in a URL: {address}"
    );
    let kept = browser
        .run("return sessionStorage.getItem('agent-host-token')")
        .await;
    assert_eq!(kept, json!(ADMIN), "kept in the tab's session storage");

    // The events page subscribes, and stays subscribed on other pages.
    browser.click(".tab[data-page=events]").await;
    browser.wait_for_text("#events-status", "live").await;

    // Chat: the reply's text, action and timings appear.
    browser.click(".tab[data-page=chat]").await;
    browser.type_into("#chat-text", "count").await;
    browser.click("#chat-send").await;
    let log = browser.wait_for_text("#chat-log", "v1: 1").await;
    assert!(log.contains("ops: count"), "{log}");
    assert!(log.contains("action: counter/COUNT · ok"), "{log}");
    assert!(log.contains("handler ") && log.contains("total "), "{log}");
    browser.type_into("#chat-text", "trap").await;
    browser.click("#chat-send").await;
    let log = browser
        .wait_for_text("#chat-log", "panicky/trap: score 0.50, passed")
        .await;
    assert!(log.contains("trap ok"), "{log}");
    // A handler's panic is the reply's error (and the first of the two
    // that quarantine the plugin).
    browser.type_into("#chat-text", "panic:handler").await;
    browser.click("#chat-send").await;
    browser
        .wait_for_text("#chat-log", "handler was told to panic")
        .await;
    browser.screenshot("chat").await;

    // Reload: a new build of counter on disk, the button, the outcome.
    let counter_v1 = fixture("counter-v1");
    let counter = agent
        .plugins_dir()
        .join(counter_v1.file_name().expect("a file name"));
    let staged = add_as(agent.plugins_dir(), &fixture("counter-v2"), "counter.next");
    std::fs::rename(&staged, &counter).expect("put the new build in place");
    browser.click(".tab[data-page=plugins]").await;
    let row = "#plugins-rows tr[data-plugin=counter]";
    browser.wait_for_text(row, "1.0.0").await;
    let generation_cell = format!("{row} td.col-generation");
    let generation = |text: &str| -> u64 {
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("a generation: {text:?}"))
    };
    let before = generation(&browser.text(&generation_cell).await);
    browser.click("button.reload[data-plugin=counter]").await;
    let outcome = browser
        .wait_for_text("#reload-outcome", "counter reloaded: 1.0.0 → 2.0.0")
        .await;
    let after = outcome
        .split("generation ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .map(generation)
        .unwrap_or_else(|| panic!("a generation in the outcome: {outcome}"));
    assert!(
        after > before,
        "the generation goes up: {before} -> {after}"
    );
    assert!(outcome.contains("bytes of state handed over"), "{outcome}");
    browser
        .wait_for_text(&generation_cell, &after.to_string())
        .await;
    browser
        .wait_for_text(&format!("{row} td.col-version"), "2.0.0")
        .await;

    // Quarantine: the second panic, and the page's next refresh shows it.
    post_message_as(&agent, USER, "panic:handler");
    let state = browser
        .wait_for_text(
            "#plugins-rows tr[data-plugin=panicky] td.col-state",
            "quarantined",
        )
        .await;
    assert!(
        browser
            .text("#plugins-rows tr[data-plugin=counter] td.col-state")
            .await
            != state,
        "only panicky is quarantined"
    );
    let placement = browser
        .text("#plugins-rows tr[data-plugin=panicky] td.col-placement")
        .await;
    assert_eq!(placement, "in process");
    // The health badge follows on the same refresh.
    browser.wait_for_text("#health", "degraded").await;
    browser.screenshot("plugins").await;

    // Events: what happened meanwhile arrived live; the filters narrow it.
    browser.click(".tab[data-page=events]").await;
    browser
        .wait_for_text("#events-rows", "plugin:reloaded")
        .await;
    browser
        .wait_for_text("#events-rows", "plugin:quarantined")
        .await;
    browser.type_into("#filter-name", "quarantined").await;
    let shown = browser.text("#events-rows").await;
    assert!(shown.contains("plugin:quarantined"), "{shown}");
    assert!(!shown.contains("plugin:reloaded"), "filtered out: {shown}");
    browser.type_into("#filter-name", "").await;
    browser.type_into("#filter-source", "host").await;
    post_message_as(&agent, ADMIN, "count");
    browser
        .wait_for_text("#events-rows", "action:completed")
        .await;
    browser.screenshot("events").await;

    // Cluster: this agent is in none.
    browser.click(".tab[data-page=cluster]").await;
    browser
        .wait_for_text("#cluster-summary", "not in cluster mode")
        .await;
    browser.screenshot("cluster").await;

    // A token without the admin role chats, and sees the refusal of the
    // rest.
    browser.click("#sign-out").await;
    browser.wait_for_text("#login", "Sign in").await;
    let kept = browser
        .run("return sessionStorage.getItem('agent-host-token')")
        .await;
    assert_eq!(kept, Value::Null, "signing out forgets the token");
    browser.type_into("#token", USER).await;
    browser.click("#login-button").await;
    browser
        .wait_for_text(
            "#identity",
            "signed in as token 'bot' (sender 'bot'; roles chat)",
        )
        .await;
    browser.click(".tab[data-page=plugins]").await;
    browser
        .wait_for_text(
            "#plugins-error",
            "403 token 'bot' lacks the role 'admin' this route needs",
        )
        .await;
    browser.click(".tab[data-page=chat]").await;
    browser.type_into("#chat-text", "count").await;
    browser.click("#chat-send").await;
    browser.wait_for_text("#chat-log", "bot: count").await;
    browser.wait_for_text("#chat-log", "v2: ").await;

    // Without tokens the API is open: the console asks for none and says so.
    let open = Agent::start_with(&[fixture("counter-v1")], "", false);
    let open_url = format!("http://{}/", open.address);
    browser
        .client
        .goto(&open_url)
        .await
        .expect("open the console");
    browser
        .wait_for_text("#identity", "open API: no [[api.tokens]] configured")
        .await;
    browser.type_into("#chat-text", "count").await;
    browser.click("#chat-send").await;
    browser.wait_for_text("#chat-log", "v1: 1").await;
    browser.close().await;
}
