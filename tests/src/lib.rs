//! Shared helpers for the integration tests in `tests/tests/suite/`.
//!
//! The tests load real plugin files (built by `test-support`) into a real
//! [`agent_host::PluginHost`]. This crate must never fake a plugin: anything
//! about loading is tested on files that went through `dlopen`.

use agent_host::{HostOptions, InboundMessage, LoadReport, PluginHost};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use test_support::{add_as, examples, fixture, folder_with, not_a_plugin, EXT};

/// A host loaded from `dir`, with its report.
pub fn load(dir: &Path) -> (PluginHost, LoadReport) {
    let host = PluginHost::new(HostOptions::default()).expect("create host");
    let report = host.load_dir(dir).expect("read plugin folder");
    (host, report)
}

/// A host loaded from a fresh folder holding `files`, with the folder kept alive.
pub fn load_files(files: &[PathBuf]) -> (PluginHost, LoadReport, tempfile::TempDir) {
    let dir = folder_with(files);
    let (host, report) = load(dir.path());
    (host, report, dir)
}

/// A message from the sender `tester`.
pub fn msg(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "tester".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// Waits, at most 20 s, until `done` holds; `what` names it on timeout.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The plugin guide, `docs/plugin-guide.md`, as a doctest: `cargo test`
/// compiles and runs every Rust example in it, so the guide cannot drift from
/// the SDK.
#[cfg(doctest)]
#[doc = include_str!("../../docs/plugin-guide.md")]
pub struct PluginGuide;

/// The SDK's README, `plugin-api/README.md`, as a doctest, for the same reason.
#[cfg(doctest)]
#[doc = include_str!("../../plugin-api/README.md")]
pub struct SdkReadme;

/// The front page, `README.md`, as a doctest: its first plugin compiles.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct Readme;
