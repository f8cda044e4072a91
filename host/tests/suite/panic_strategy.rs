//! Panics that the SDK cannot catch, on real plugin files: a library built
//! with `panic = "abort"` (exported by hand, around the export macro's
//! guard) is refused in process with one line and runs in a worker, where
//! its panic ends only the worker; a panic in a thread a plugin started
//! reaches the host log with the plugin's name.

use agent_host::testing::TestAgent;
#[cfg(unix)]
use agent_host::{AgentConfig, HostOptions};
use agent_host::{InboundMessage, Reply};
use std::process::Command;
#[cfg(unix)]
use std::time::{Duration, Instant};
use test_support::{fixture, folder_with};

use crate::common::run_with_stdin;

const AGENT_HOST: &str = env!("CARGO_BIN_EXE_agent-host");

fn say(agent: &TestAgent, text: &str) -> Reply {
    agent.host.handle_message(InboundMessage {
        text: text.into(),
        ..InboundMessage::default()
    })
}

#[test]
fn a_library_built_to_abort_on_panic_is_refused_in_process_and_the_rest_serves() {
    let agent = TestAgent::load(&[fixture("hand-export-aborts"), fixture("")]).expect("stage");
    assert!(agent.report.loaded("fixture"), "{:?}", agent.report.loaded);
    assert!(!agent.report.loaded("aborter"), "{:?}", agent.report.loaded);
    let failure = agent
        .report
        .failures
        .iter()
        .find(|failure| {
            failure
                .file
                .to_string_lossy()
                .contains("hand-export-aborts")
        })
        .expect("the aborting file is a failure");
    let line = failure.to_string();
    assert!(line.contains("built with panic = \"abort\""), "{line}");
    assert!(line.contains("run it isolated"), "{line}");
    assert_eq!(say(&agent, "ping").text, "pong");

    // `check` fails on it, naming the file and the cause.
    let dir = folder_with(&[fixture("hand-export-aborts")]);
    let output = Command::new(AGENT_HOST)
        .arg("check")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run agent-host check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("hand-export-aborts") && stdout.contains("panic = \"abort\""),
        "{stdout}"
    );
}

#[cfg(unix)]
#[test]
fn a_library_built_to_abort_on_panic_runs_isolated_and_its_panic_ends_only_its_worker() {
    let config =
        format!("[isolation]\nprocess = [\"aborter\"]\nworker_program = \"{AGENT_HOST}\"\n");
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&[fixture("hand-export-aborts"), fixture("")], options)
        .expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    assert_eq!(say(&agent, "alive").text, "still here");

    let crashed = say(&agent, "crash");
    let errors = format!("{:?}", crashed.errors);
    assert!(errors.contains("aborter"), "{errors}");
    assert!(errors.contains("worker"), "{errors}");
    // The host and the in-process plugin never noticed; the worker is
    // replaced.
    assert_eq!(say(&agent, "ping").text, "pong");
    let started = Instant::now();
    while say(&agent, "alive").text != "still here" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "aborter never served again"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_panic_in_a_thread_the_plugin_started_reaches_the_host_log_with_its_name() {
    let dir = folder_with(&[fixture("thread-panics")]);
    let output = run_with_stdin(dir.path(), b"{\"text\":\"spawn\"}\n".to_vec());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{log}");
    assert!(
        stdout.contains("the thread ended in a panic: true"),
        "{stdout}"
    );
    let line = log
        .lines()
        .find(|line| line.contains("boom from a thread"))
        .unwrap_or_else(|| panic!("the panic is in the host log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("plugin=\"spawner\"") || line.contains("plugin=spawner"),
        "{line}"
    );
    assert!(line.contains("'doomed'"), "{line}");
}
