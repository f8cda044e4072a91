//! The files `cargo xtask new-plugin` writes, as text.

/// Which component examples a scaffolded plugin gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Components {
    /// An action (`ECHO`) with `validate` and a handler.
    pub actions: bool,
    /// A provider (`words`).
    pub providers: bool,
    /// An evaluator (`length`).
    pub evaluators: bool,
    /// A service (named like the plugin: service names are unique across the
    /// agent) with two methods.
    pub services: bool,
}

impl Components {
    /// Every component kind.
    pub const ALL: Self = Self {
        actions: true,
        providers: true,
        evaluators: true,
        services: true,
    };

    /// No component kind (what the flags start from).
    pub const NONE: Self = Self {
        actions: false,
        providers: false,
        evaluators: false,
        services: false,
    };
}

const DESCRIPTION: &str = "A new agent-host plugin, scaffolded by `cargo xtask new-plugin`.";

/// `plugins/NAME/Cargo.toml`.
pub fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
description = "{DESCRIPTION}"
edition.workspace = true
license.workspace = true
rust-version.workspace = true
publish = false

[lib]
# cdylib: the file agent-host loads; rlib: for unit tests and `cargo doc`.
crate-type = ["cdylib", "rlib"]

[lints]
workspace = true

[dependencies]
agent-host-plugin-sdk.workspace = true
"#
    )
}

/// Replaces the placeholders of a code template.
fn fill(template: &str, name: &str) -> String {
    template.replace("@NAME@", name)
}

/// `plugins/NAME/src/lib.rs`: the requested examples and their unit tests.
pub fn lib_rs(name: &str, parts: Components) -> String {
    let mut out = String::new();
    out.push_str("//! `@NAME@`: a new agent-host plugin.\n//!\n//! It offers\n//!\n");
    if parts.actions {
        out.push_str(
            "//! * the [`ECHO_ACTION`] action, which answers a message that starts with\n\
             //!   `@NAME@ ` with the rest of the message;\n",
        );
    }
    if parts.providers {
        out.push_str(
            "//! * the [`WORDS_PROVIDER`] provider, which tells the other components\n\
             //!   how many words the message has: `{\"words\": n}`;\n",
        );
    }
    if parts.evaluators {
        out.push_str(
            "//! * the [`LENGTH_EVALUATOR`] evaluator, which passes messages of at most\n\
             //!   [`MAX_CHARS`] characters;\n",
        );
    }
    if parts.services {
        out.push_str(
            "//! * the [`COUNTER_SERVICE`] service, a counter other plugins can call:\n\
             //!   `add(n)` returns the new total, `total()` the current one;\n",
        );
    }
    out.push_str(
        "//!\n//! Test it with `cargo test -p @NAME@`; README.md says how to build it and\n\
         //! hot-reload it into a running agent.\n\nuse agent_host_plugin_sdk::prelude::*;\n",
    );
    if parts.services {
        out.push_str("use std::sync::atomic::{AtomicU64, Ordering};\n");
    }
    out.push_str(
        "\n/// The plugin's name, as the host knows it.\npub const NAME: &str = \"@NAME@\";\n",
    );
    if parts.actions {
        out.push_str(ACTION_ITEMS);
    }
    if parts.providers {
        out.push_str(PROVIDER_ITEMS);
    }
    if parts.evaluators {
        out.push_str(EVALUATOR_ITEMS);
    }
    if parts.services {
        out.push_str(SERVICE_ITEMS);
    }
    out.push_str(PLUGIN_START);
    if parts.actions {
        out.push_str(ACTION_BUILD);
    }
    if parts.providers {
        out.push_str(PROVIDER_BUILD);
    }
    if parts.evaluators {
        out.push_str(EVALUATOR_BUILD);
    }
    if parts.services {
        out.push_str(SERVICE_BUILD);
    }
    out.push_str(PLUGIN_END);
    out.push_str(TESTS_START);
    if parts.actions {
        out.push_str(ACTION_TEST);
    }
    if parts.providers {
        out.push_str(PROVIDER_TEST);
    }
    if parts.evaluators {
        out.push_str(EVALUATOR_TEST);
    }
    if parts.services {
        out.push_str(SERVICE_TEST);
    }
    out.push_str("}\n");
    fill(&out, name)
}

const ACTION_ITEMS: &str = r#"
/// The action's name.
pub const ECHO_ACTION: &str = "ECHO";

/// The text after `@NAME@ ` at the start of `text`, or `None` when the
/// message does not start with the plugin's name, a space and some text.
pub fn echo_text(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix(NAME)?;
    let echoed = rest.trim();
    if rest.starts_with(char::is_whitespace) && !echoed.is_empty() {
        Some(echoed)
    } else {
        None
    }
}
"#;

const PROVIDER_ITEMS: &str = r#"
/// The provider's name.
pub const WORDS_PROVIDER: &str = "words";
"#;

const EVALUATOR_ITEMS: &str = r#"
/// The evaluator's name.
pub const LENGTH_EVALUATOR: &str = "length";

/// Messages longer than this many characters fail the evaluation.
pub const MAX_CHARS: usize = 280;

/// The length evaluation of `text`: the score is the length as a share of
/// [`MAX_CHARS`] (at most 1), and it passes up to [`MAX_CHARS`] characters.
pub fn length_evaluation(text: &str) -> Evaluation {
    let chars = text.chars().count();
    let score = (chars as f64 / MAX_CHARS as f64).min(1.0);
    Evaluation::new(score, chars <= MAX_CHARS).with_metadata(json!({ "chars": chars }))
}
"#;

const SERVICE_ITEMS: &str = r#"
/// The service's name (unique across the agent).
pub const COUNTER_SERVICE: &str = NAME;
"#;

const PLUGIN_START: &str = r#"
/// Builds the `@NAME@` plugin.
pub fn plugin() -> Plugin {
    Plugin::new(NAME, env!("CARGO_PKG_VERSION"))
        .description("A new agent-host plugin")
"#;

const ACTION_BUILD: &str = r#"        .action(
            Action::new(ECHO_ACTION)
                .description("Echoes what follows the plugin's name at the start of a message")
                .example(format!("{NAME} hello"), "hello")
                .validate(|msg| echo_text(msg.text()).is_some())
                .handler(|msg, rt| {
                    let text = echo_text(msg.text()).unwrap_or_default();
                    rt.info(format!("echoing {} characters", text.chars().count()));
                    Ok(ActionResult::text(text))
                }),
        )
"#;

const PROVIDER_BUILD: &str = r#"        .provider(
            Provider::new(WORDS_PROVIDER)
                .description("How many words the message has: {\"words\": n}")
                .get(|msg, _rt| Ok(json!({ "words": msg.text().split_whitespace().count() }))),
        )
"#;

const EVALUATOR_BUILD: &str = r#"        .evaluator(
            Evaluator::new(LENGTH_EVALUATOR)
                .description("Passes messages of at most 280 characters; score = length / 280")
                .evaluate(|msg, _rt| Ok(length_evaluation(msg.text()))),
        )
"#;

const SERVICE_BUILD: &str = r#"        .service(
            Service::new(COUNTER_SERVICE, AtomicU64::new(0))
                .description("add(n) -> the new total; total() -> the total")
                .method("add", |total: &AtomicU64, n: u64, _rt| {
                    Ok(total.fetch_add(n, Ordering::Relaxed) + n)
                })
                .method("total", |total: &AtomicU64, (): (), _rt| {
                    Ok(total.load(Ordering::Relaxed))
                }),
        )
"#;

const PLUGIN_END: &str = r#"}

agent_host_plugin_sdk::export_plugin!(plugin);
"#;

const TESTS_START: &str = r#"
#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;

    #[test]
    fn manifest_is_valid() {
        plugin().manifest().validate().unwrap();
        assert!(plugin().problems().is_empty(), "{:?}", plugin().problems());
        assert_eq!(plugin().name(), NAME);
    }
"#;

const ACTION_TEST: &str = r#"
    #[test]
    fn action_echoes_what_follows_the_name() {
        let host = TestHost::new(NAME);
        let loaded = host.load(plugin()).unwrap();
        let message = format!("{NAME} hello there");
        assert!(loaded.validate(ECHO_ACTION, &message).unwrap());
        assert!(!loaded.validate(ECHO_ACTION, "hello there").unwrap());
        assert!(!loaded.validate(ECHO_ACTION, NAME).unwrap());
        let reply = loaded.handle(ECHO_ACTION, &message).unwrap();
        assert_eq!(reply.text, "hello there");
        assert_eq!(host.logs()[0].1, "echoing 11 characters");
    }
"#;

const PROVIDER_TEST: &str = r#"
    #[test]
    fn provider_counts_words() {
        let host = TestHost::new(NAME);
        let loaded = host.load(plugin()).unwrap();
        let value = loaded.provide(WORDS_PROVIDER, "one two  three").unwrap();
        assert_eq!(value, json!({ "words": 3 }));
    }
"#;

const EVALUATOR_TEST: &str = r#"
    #[test]
    fn evaluator_passes_short_messages() {
        let host = TestHost::new(NAME);
        let loaded = host.load(plugin()).unwrap();
        let short = loaded.evaluate(LENGTH_EVALUATOR, "hello").unwrap();
        assert!(short.passed);
        assert_eq!(short.metadata["chars"], 5);
        let too_long = "x".repeat(MAX_CHARS + 1);
        let long = loaded.evaluate(LENGTH_EVALUATOR, &too_long).unwrap();
        assert!(!long.passed);
        assert_eq!(long.score, 1.0);
    }
"#;

const SERVICE_TEST: &str = r#"
    #[test]
    fn service_counts() {
        let host = TestHost::new(NAME);
        let loaded = host.load(plugin()).unwrap();
        let call = |method: &str, args: Value| loaded.call_service(COUNTER_SERVICE, method, args);
        assert_eq!(call("add", json!(2)).unwrap(), json!(2));
        assert_eq!(call("add", json!(3)).unwrap(), json!(5));
        assert_eq!(call("total", Value::Null).unwrap(), json!(5));
        assert!(call("add", json!("two")).is_err(), "bad arguments are an error");
    }
"#;

/// `plugins/NAME/README.md`.
pub fn readme(name: &str, parts: Components) -> String {
    let mut offers = String::new();
    if parts.actions {
        offers.push_str("* action `ECHO`: answers `@NAME@ some text` with `some text`;\n");
    }
    if parts.providers {
        offers.push_str("* provider `words`: `{\"words\": n}` for each message;\n");
    }
    if parts.evaluators {
        offers.push_str("* evaluator `length`: passes messages of at most 280 characters;\n");
    }
    if parts.services {
        offers.push_str(
            "* service `@NAME@`: a counter; `add(n)` returns the new total, `total()` the current one.\n",
        );
    }
    let text = format!(
        r#"# @NAME@

A plugin for agent-host, scaffolded by `cargo xtask new-plugin`. It is a
`cdylib` crate built against `agent-host-plugin-sdk`; `src/lib.rs` builds the plugin
and exports it with `agent_host_plugin_sdk::export_plugin!`. It offers:

{offers}
Replace the examples with your own; each has a unit test at the bottom of
`src/lib.rs`.

## Test

```sh
cargo test -p @NAME@
```

The tests use `agent_host_plugin_sdk::testing::TestHost`: no host, no dynamic loading.

## Build and check

```sh
cargo xtask build-plugins                              # every plugin, staged in target/plugins
cargo run --release -p agent-host -- check target/plugins
```

`cargo build --release -p @NAME@` alone leaves the library in
`target/release/` (`lib{stem}.so` on Linux, `.dylib` on macOS, `{stem}.dll`
on Windows).

## Run and hot-reload

```sh
cargo xtask dev
```

builds and stages every plugin, starts the agent with `--watch` and chats on
this terminal; every save under `src/` or of `Cargo.toml` rebuilds the
plugins and the agent reloads the new file. A build that fails prints the
compiler's error and the agent keeps the previous build.{try_it}

If the plugin asks for permissions (`.permission("config:*")`, a service of
another plugin, events), grant them in the `[grants]` table of `agent.toml`:
once that table exists, a plugin missing from it gets nothing.
"#,
        stem = name.replace('-', "_"),
        try_it = if parts.actions {
            " With the example\naction, try `@NAME@ hello` in the chat."
        } else {
            ""
        },
    );
    fill(&text, name)
}
