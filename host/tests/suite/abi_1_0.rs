//! Plugins built against plugin ABI 1.0 as released serve in this host.
//!
//! `test_support::abi_1_0` builds the `abi-one` plugin of
//! `tests/fixtures/abi-1.0` against the ABI crate 1.0.0 and the SDK 0.1.0
//! exactly as released; the `abi-1-0-twin` fixture is the same source file
//! built against the current SDK. The 1.0 file loads, every component kind
//! of it works, it answers a fixed script exactly as its twin does, in
//! process and in a worker, and a reload from one build to the other,
//! either way, keeps its count. The files of the pinned workspace keep the
//! digests they were released with.

use crate::common::wait_until;
use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost, Reply};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

/// The fixture's plugin, and its service.
const PLUGIN: &str = "abi-one";

/// Where the plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    InProcess,
    Worker,
}

/// The host's options: the operator's config for the plugin (over its
/// default config), and a worker for it when `place` says so.
fn options(place: Place) -> HostOptions {
    let mut config = format!("[plugins.{PLUGIN}]\ngreeting = \"Good day\"\nstep = 2\n");
    if place == Place::Worker {
        config.push_str(&format!(
            "[isolation]\nprocess = [\"{PLUGIN}\"]\nworker_program = \"{WORKER}\"\n"
        ));
    }
    HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    }
}

/// Checks that the plugin of `host` loaded from `file` serves at `place`.
fn assert_serving(host: &PluginHost, place: Place, file: &Path) {
    let status = host
        .status(PLUGIN)
        .unwrap_or_else(|| panic!("{} holds no plugin {PLUGIN}", file.display()));
    match place {
        Place::InProcess => assert!(status.worker.is_none(), "{status:?}"),
        Place::Worker => assert!(
            status.worker.is_some_and(|worker| worker.pid.is_some()),
            "{} serves in no worker",
            file.display()
        ),
    }
}

/// An agent serving a copy of `file` at `place`.
fn serving(file: &Path, place: Place) -> TestAgent {
    let agent = TestAgent::load_with(&[file], options(place)).expect("stage the file");
    assert!(
        agent.report.is_clean(),
        "{}: {:?}",
        file.display(),
        agent.report.failures
    );
    assert_serving(&agent.host, place, file);
    agent
}

fn msg(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

fn say(host: &PluginHost, text: &str) -> Reply {
    host.handle_message(msg(text))
}

/// The plugin's `status` method: what its serving generation saw.
fn plugin_status(host: &PluginHost) -> Value {
    host.call_service(PLUGIN, "status", &Value::Null)
        .expect("the status method")
}

/// The payloads of the events matching `pattern`, as the host hears them.
fn recorded(host: &PluginHost, pattern: &str) -> Arc<Mutex<Vec<Value>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    host.on(pattern, move |event| {
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.payload.clone());
        Ok(())
    });
    events
}

fn seen(events: &Mutex<Vec<Value>>) -> Vec<Value> {
    events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

#[test]
fn the_1_0_file_serves_every_component_kind_in_process() {
    every_component_kind(Place::InProcess);
}

#[test]
fn the_1_0_file_serves_every_component_kind_in_a_worker() {
    every_component_kind(Place::Worker);
}

fn every_component_kind(place: Place) {
    let agent = serving(&test_support::abi_1_0(), place);
    let host = &agent.host;
    let status = host.status(PLUGIN).expect("status");
    assert_eq!(
        status.manifest.sdk_version, "0.1.0",
        "built against the SDK as released"
    );
    assert!(status.services.iter().all(|s| s.running), "{status:?}");

    // An action found by its keyword trigger, with the operator's config
    // over the plugin's default, and the state of an uncached provider.
    let hello = say(host, "hello there");
    assert_eq!(hello.text, "Good day, tester!", "{hello:?}");
    assert!(hello.ok);
    let action = hello.action.as_ref().expect("an action answered");
    assert_eq!(
        (action.plugin.as_str(), action.action.as_str()),
        (PLUGIN, "GREET")
    );
    assert_eq!(
        hello.data["profile"],
        json!({"sender": "tester", "chars": 11})
    );
    assert_eq!(say(host, "nothing for anyone").action, None);

    // An action found by its pattern, which calls the plugin's own service
    // back through the host, adding the configured step.
    assert_eq!(say(host, "count").text, "count: 2");
    assert_eq!(say(host, "count 5").text, "count: 7");
    assert_eq!(
        host.call_service(PLUGIN, "total", &Value::Null)
            .expect("total"),
        json!(7)
    );
    assert_eq!(
        host.call_service(PLUGIN, "echo", &json!({"a": [1, 2]}))
            .expect("echo"),
        json!({"echo": {"a": [1, 2]}})
    );

    // Events: emitted by an action and heard by the plugin's own
    // subscription before the emit returns; the host's are heard too.
    let shout = say(host, "shout abi one");
    assert_eq!(shout.text, "heard \"abi one\"", "{shout:?}");
    assert_eq!(
        shout.metadata["event"],
        json!({"name": "abi-one:shout", "source": PLUGIN, "payload": {"words": "abi one"}})
    );
    assert!(host.emit("abi-one:from-host", json!(1)).is_empty());

    // The cached provider ran once for all these messages.
    let state = say(host, "state");
    assert_eq!(state.data["visits"], json!({"calls": 1}), "{state:?}");
    assert_eq!(state.data["visits_stale"], json!(false));

    // The evaluator, one message at a time and in its batch form.
    let polite = say(host, "please be rude");
    assert_eq!(
        serde_json::to_value(&polite.evaluations).expect("evaluations"),
        json!([{"plugin": PLUGIN, "evaluator": "polite", "score": 1.0, "passed": false,
                "metadata": {"words": 3}}])
    );
    let batch = host.handle_batch(vec![msg("hi"), msg("please")]);
    let scored: Vec<Value> = batch
        .iter()
        .map(|reply| serde_json::to_value(&reply.evaluations).expect("evaluations"))
        .collect();
    assert_eq!(
        scored,
        [
            json!([{"plugin": PLUGIN, "evaluator": "polite", "score": 0.5, "passed": true,
                    "metadata": {"words": 1, "batch": 2}}]),
            json!([{"plugin": PLUGIN, "evaluator": "polite", "score": 1.0, "passed": true,
                    "metadata": {"words": 1, "batch": 2}}]),
        ]
    );

    // A failing handler and a panicking one: errors naming the plugin, and
    // the plugin serves on.
    let fail = say(host, "fail");
    assert!(!fail.ok);
    assert!(
        fail.errors
            .iter()
            .any(|e| e.contains("plugin 'abi-one'") && e.contains("failing on purpose")),
        "{fail:?}"
    );
    let panicked = say(host, "panic");
    assert!(!panicked.ok);
    assert!(
        panicked
            .errors
            .iter()
            .any(|e| e.contains("plugin 'abi-one'")
                && e.contains("panicked at")
                && e.contains("panicking on purpose")),
        "{panicked:?}"
    );
    assert_eq!(say(host, "count").text, "count: 9", "serving after a panic");

    // The timer set in on_load fires; the subscribable provider pushes its
    // value from a timer of its own.
    wait_until("the timer set in on_load", || {
        plugin_status(host)["timer_fired"] == json!(true)
    });
    wait_until("the pushed value", || {
        say(host, "pulse").text == "pulse: \"pushed\""
    });
    let seen_by_plugin = plugin_status(host);
    assert_eq!(seen_by_plugin["loaded"], json!(true));
    assert_eq!(seen_by_plugin["serving"], json!(true));
    assert_eq!(seen_by_plugin["pushed"], json!(true));
    assert_eq!(
        seen_by_plugin["heard"][1],
        json!({"name": "abi-one:from-host", "source": "host", "payload": 1}),
        "{seen_by_plugin}"
    );

    // on_unload runs at shutdown (it emits the count).
    let unloaded = recorded(host, "abi-one:unloaded");
    let failures = host.shutdown();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen(&unloaded), [json!({"count": 9})]);
}

/// The messages both builds answer, in this order.
const SCRIPT: &[&str] = &[
    "hello there",
    "Hi",
    "count",
    "count 5",
    "shout abi one",
    "state",
    "please count",
    "fail",
    "panic",
    "rude words",
    "count",
    "state",
];

/// `reply` as JSON, without what differs from one message to the next
/// whoever answers (the id, the timings), and with the path of a panic's
/// source file cut (the two builds name the one file by different paths).
fn comparable(reply: Reply) -> Value {
    let mut reply = serde_json::to_value(reply).expect("a reply is JSON");
    let fields = reply.as_object_mut().expect("a reply is an object");
    fields.remove("id");
    fields.remove("timings");
    if let Some(Value::Array(errors)) = fields.get_mut("errors") {
        for error in errors.iter_mut() {
            if let Value::String(text) = error {
                *text = without_source_path(text);
            }
        }
    }
    reply
}

/// `error` with the folders before the plugin's source file left out of a
/// panic's location.
fn without_source_path(error: &str) -> String {
    const AT: &str = "panicked at ";
    const FILE: &str = "abi_one.rs:";
    match (error.find(AT), error.find(FILE)) {
        (Some(at), Some(file)) if at < file => {
            format!("{}{}", &error[..at + AT.len()], &error[file..])
        }
        _ => error.to_string(),
    }
}

/// What a fresh agent on `file` at `place` answers: [`SCRIPT`] one message
/// at a time, then as one batch, then some service calls; and the manifest,
/// without the SDK version it records.
fn transcript(file: &Path, place: Place) -> Vec<Value> {
    let agent = serving(file, place);
    let host = &agent.host;
    let mut lines: Vec<Value> = SCRIPT
        .iter()
        .map(|text| json!({"said": text, "reply": comparable(say(host, text))}))
        .collect();
    let batch = host.handle_batch(SCRIPT.iter().map(|text| msg(text)).collect());
    lines.extend(batch.into_iter().map(comparable));
    for (method, args) in [
        ("echo", json!(["abi", 1.0])),
        ("add", json!(3)),
        ("total", Value::Null),
    ] {
        let answer = host
            .call_service(PLUGIN, method, &args)
            .map_err(|e| e.to_string());
        lines.push(json!({"called": method, "answer": format!("{answer:?}")}));
    }
    let mut manifest =
        serde_json::to_value(host.status(PLUGIN).expect("status").manifest).expect("manifest");
    manifest
        .as_object_mut()
        .expect("a manifest is an object")
        .remove("sdk_version");
    lines.push(manifest);
    lines
}

fn answers_as_its_twin(place: Place) {
    let old = transcript(&test_support::abi_1_0(), place);
    let twin = transcript(&test_support::fixture("abi-1-0-twin"), place);
    assert_eq!(old.len(), twin.len());
    for (old, twin) in old.iter().zip(&twin) {
        assert_eq!(old, twin, "the 1.0 file answers otherwise than its twin");
    }
    assert!(
        old.iter().any(|line| line["reply"]["ok"] == json!(true)),
        "the script is answered: {old:?}"
    );
}

#[test]
fn the_1_0_file_answers_as_its_twin_in_process() {
    answers_as_its_twin(Place::InProcess);
}

#[test]
fn the_1_0_file_answers_as_its_twin_in_a_worker() {
    answers_as_its_twin(Place::Worker);
}

/// Replaces the plugin file as a build tool should: a temporary file
/// renamed into place.
fn replace(target: &Path, build: &Path) {
    let temp = target.with_extension("staging");
    std::fs::copy(build, &temp).expect("copy the new build");
    std::fs::rename(&temp, target).expect("rename into place");
}

fn reloads_keep_the_count(place: Place) {
    let dir = test_support::folder_with(&[]);
    let file = test_support::add_as(
        dir.path(),
        &test_support::abi_1_0(),
        &format!("{PLUGIN}.{}", test_support::EXT),
    );
    let host = PluginHost::new(options(place)).expect("host");
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    assert_serving(&host, place, &file);
    let unloaded = recorded(&host, "abi-one:unloaded");
    assert_eq!(say(&host, "count 3").text, "count: 3");

    let builds: [(&str, PathBuf); 2] = [
        ("the twin", test_support::fixture("abi-1-0-twin")),
        ("the 1.0 file", test_support::abi_1_0()),
    ];
    let mut total = 3;
    for (round, (name, build)) in builds.iter().enumerate() {
        let before = host.status(PLUGIN).expect("status");
        replace(&file, build);
        let done = host
            .reload(PLUGIN)
            .unwrap_or_else(|e| panic!("the reload to {name}: {e}"));
        let after = host.status(PLUGIN).expect("status");
        assert_ne!(done.from_sha256, done.to_sha256, "{name}");
        assert_eq!(after.sha256, done.to_sha256, "{name} serves");
        assert_serving(&host, place, &file);
        if place == Place::Worker {
            let pid = |status: &agent_host::PluginStatus| status.worker.as_ref()?.pid;
            assert_ne!(pid(&before), pid(&after), "{name} runs in a new worker");
        }
        let status = plugin_status(&host);
        assert_eq!(
            (&status["loaded"], &status["serving"]),
            (&json!(true), &json!(true)),
            "{name}: {status}"
        );
        // The old generation's on_unload ran, with the count it handed over.
        wait_until(&format!("on_unload before {name}"), || {
            seen(&unloaded).len() == round + 1
        });
        assert_eq!(seen(&unloaded)[round], json!({"count": total}), "{name}");
        total += 10;
        assert_eq!(
            say(&host, "count 10").text,
            format!("count: {total}"),
            "{name} carries the count on"
        );
    }
    assert_eq!(
        host.status(PLUGIN).expect("status").manifest.sdk_version,
        "0.1.0",
        "the 1.0 file serves again"
    );
    let failures = host.shutdown();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn reloads_between_the_1_0_file_and_its_twin_keep_the_count_in_process() {
    reloads_keep_the_count(Place::InProcess);
}

#[test]
fn reloads_between_the_1_0_file_and_its_twin_keep_the_count_in_a_worker() {
    reloads_keep_the_count(Place::Worker);
}

/// Every file of `tests/fixtures/abi-1.0` but its README, with its SHA-256:
/// of its bytes (a CRLF read as LF), or of its target for a link.
const PINNED: &[(&str, &str)] = &[
    (
        "Cargo.lock",
        "10165159a84aaf2e9d9ddc5576a76e8a24276f6cbb9c0f76bf1b7dd44f4cd30f",
    ),
    (
        "Cargo.toml",
        "2e35ccbb10362acf12897672eea5875ddcce7bf14e50967c976305156a451eb4",
    ),
    (
        "LICENSE-APACHE",
        "4219cae644a01759f302a926799038c303bc3bcdd71e033d468a591ea014ae27",
    ),
    (
        "LICENSE-MIT",
        "404754bedc002f621f4e2255dc4cf0567f84a32b5fafd46f261d47c5e95523b5",
    ),
    (
        "plugin-api/Cargo.toml",
        "c33bf36e1480de9919d544b5413c7f40109a7dc33e189dffeeeb600c1f94d0bd",
    ),
    (
        "plugin-api/LICENSE-APACHE",
        "154397a08d0cb342110281129971868cd562542d0780b0d10722788cd11a1399",
    ),
    (
        "plugin-api/LICENSE-MIT",
        "72af89a828df52a9dcc42512ed64663b3b8d7961dd7a5586d44478eede82bc7a",
    ),
    (
        "plugin-api/README.md",
        "e9afec8e097c554243139dc3e8514ca19bed4c2014d18acd23a8890c7769ffb3",
    ),
    (
        "plugin-api/abi/Cargo.toml",
        "939f1d0efdb785024bbd5299871b736614aa9ad158294f0ca8f965c1348a5dea",
    ),
    (
        "plugin-api/abi/LICENSE-APACHE",
        "9cff568488e9d56aae60f162404acdb15d8533a0202cf01f6eb0843b264f20ff",
    ),
    (
        "plugin-api/abi/LICENSE-MIT",
        "94949dd83279f3ca3d0ce42ce0fc154d0ed817444454ee2925e903eec93949b6",
    ),
    (
        "plugin-api/abi/README.md",
        "cacb56f3cc5d0f81671ad5ee323539699dcab3065ed674879e214f817c150468",
    ),
    (
        "plugin-api/abi/src/lib.rs",
        "77ff90a0f39700c1c14b025b6e18a7f76a9972a6326e81fa7a1eccd78f296ca2",
    ),
    (
        "plugin-api/src/action.rs",
        "687356de9a319143f331e248362b6395ba75a5fdfa540574ca13b99540a7db13",
    ),
    (
        "plugin-api/src/error.rs",
        "cec452707a4068b31cbcc3cfec1edbea9377bbfe85ad2a6b9d95c63d383a54f5",
    ),
    (
        "plugin-api/src/evaluator.rs",
        "005f7a9367c91de00c33fe7e00d5e45e938a8ef25ad649025b6d40b3b928305a",
    ),
    (
        "plugin-api/src/export.rs",
        "5393b89426020ebfb74b2329114a1ff373baa38d8226b1c4eadf1961019ec283",
    ),
    (
        "plugin-api/src/lib.rs",
        "1d0a9ca8c6103bdffd2996cf86dfad7ab8bc5a3d2f2eace7f8546cb4c7d781ab",
    ),
    (
        "plugin-api/src/manifest.rs",
        "c308955e70e7412b8e4229d3d7d5b81ad06a786838c9ccc96fdc5a987a93f9d7",
    ),
    (
        "plugin-api/src/message.rs",
        "53feb816094f91937490c60da9332de64bdef13875d77870e491fa6a697955cf",
    ),
    (
        "plugin-api/src/object.rs",
        "0d776be3b06e83df19b1de80734d5c95c8ad185de38fc8a1a11bda59bd54c713",
    ),
    (
        "plugin-api/src/panic_report.rs",
        "81940a4bd6e31c5b86103bbf2a412275fd7280336aa37041945ea21fb747c0bd",
    ),
    (
        "plugin-api/src/plugin.rs",
        "cf57d1581a32333b10bf89d96af99332be05f458d01b31d7eca8c90d392045ba",
    ),
    (
        "plugin-api/src/provider.rs",
        "5aab2b6f6eda648e59f7270b60a2e46a22c36119ae4413c5bb7ddb09142dd31f",
    ),
    (
        "plugin-api/src/runtime.rs",
        "68392fc64be379b0e029d90cb6ef1c9400a7e71bdd3906b8704c350a2d77e1ef",
    ),
    (
        "plugin-api/src/service.rs",
        "da41637cae36d0e88021066691193976de5d2906bb7270d98d3e7138eb4564c6",
    ),
    (
        "plugin-api/src/testing.rs",
        "c129b3cad678c96516270cf770b8211edfbbb0f39afcda22e8aa1135a5302037",
    ),
    (
        "plugin/Cargo.toml",
        "764b040c9a3785d1c38fc9a404e1e8996f31281475f786d8364ab7028520fe3d",
    ),
    (
        "plugin/src/abi_one.rs",
        "13259cd10fa657e2b79bcc87e494c879a8ac289a6b955fb17a5d9eb7ee0f6fad",
    ),
    (
        "plugin/src/lib.rs",
        "cbd643daf0d7cdf32049796233643b7c94d49ad1353f13ee93f87817337b216d",
    ),
];

/// The SHA-256 of each file under `dir` (but `README.md` and a `target`
/// folder at `root`), by its path from `root` with `/` between folders.
fn digests(root: &Path, dir: &Path, found: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("read the folder") {
        let path = entry.expect("a folder entry").path();
        let relative = path
            .strip_prefix(root)
            .expect("under the root")
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if relative == "README.md" || relative == "target" {
            continue;
        }
        let kind = std::fs::symlink_metadata(&path).expect("metadata");
        let bytes = if kind.is_symlink() {
            let target = std::fs::read_link(&path).expect("a link's target");
            target.to_string_lossy().replace('\\', "/").into_bytes()
        } else if kind.is_dir() {
            digests(root, &path, found);
            continue;
        } else {
            let text = std::fs::read(&path).expect("read the file");
            let mut bytes = Vec::with_capacity(text.len());
            for (i, &byte) in text.iter().enumerate() {
                if !(byte == b'\r' && text.get(i + 1) == Some(&b'\n')) {
                    bytes.push(byte);
                }
            }
            bytes
        };
        let digest = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        found.insert(relative, digest);
    }
}

#[test]
fn the_pinned_workspace_holds_the_crates_as_released() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
        .join("abi-1.0");
    let mut found = BTreeMap::new();
    digests(&root, &root, &mut found);
    let pinned: BTreeMap<String, String> = PINNED
        .iter()
        .map(|(file, digest)| (file.to_string(), digest.to_string()))
        .collect();
    let changed: std::collections::BTreeSet<&String> = found
        .keys()
        .chain(pinned.keys())
        .filter(|file| found.get(*file) != pinned.get(*file))
        .collect();
    assert!(
        changed.is_empty(),
        "tests/fixtures/abi-1.0 holds the ABI and SDK crates as released and the plugin built \
         against them, and never changes; these files differ: {changed:?}"
    );
}
