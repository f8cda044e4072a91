//! `cargo xtask ...`: the project's chores, in Rust so they run wherever cargo does.
//!
//! * `cargo xtask build-plugins [--debug] [--out DIR] [--sign KEY]`: builds every plugin
//!   crate in `plugins/` (release builds are stripped) and stages the
//!   libraries in one folder (default `target/plugins`), each by writing a
//!   temporary file and renaming it into place, so a running host never sees
//!   a half-written file and no loaded file is overwritten in place. A file
//!   whose bytes did not change is left alone, so a watching host does not
//!   reload it. With `--sign KEY` (a minisign secret key; an encrypted
//!   one's password in `AGENT_HOST_SIGNING_PASSWORD`) each changed library
//!   is signed by `agent-host sign` and its `.minisig` staged before it.
//! * `cargo xtask run [ARGS...]`: builds and stages the plugins, then runs
//!   `agent-host run --plugins target/plugins --config agent.toml ARGS...`.
//! * `cargo xtask new-plugin NAME [--actions] [--providers] [--evaluators]
//!   [--services] [--all]`: scaffolds `plugins/NAME/` (see [`scaffold`]).
//! * `cargo xtask dev [--plugins-dir DIR] [-- ARGS...]`: builds and stages
//!   the plugins, runs the agent with `--watch`, and rebuilds and restages
//!   on every change to a plugin's sources (see [`dev`]).
//! * `cargo xtask cross-check [TARGET...]`: clippy over the workspace for
//!   macOS and Windows (or the targets named), from Linux (see [`cross`]).
//! * `cargo xtask wine-check`: builds the host and plugins for Windows and
//!   runs isolated plugins and their faults under Wine (see [`wine`]).
//! * `cargo xtask tidy`: lists the imports of the host that break its layers
//!   (see [`tidy`]); `cargo test` fails on any.
//!
//! It must never write into a plugin folder except by rename (staged
//! libraries and scaffolded plugins alike), never overwrite or delete a
//! plugin's sources, and never leave the agent it started running after it
//! exits.

mod build;
mod cross;
mod dev;
mod scaffold;
mod signals;
mod template;
mod tidy;
mod wine;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage:
  cargo xtask build-plugins [--debug] [--out DIR] [--sign KEY]
  cargo xtask run [agent-host run options...]
  cargo xtask new-plugin NAME [--actions] [--providers] [--evaluators] [--services] [--all]
  cargo xtask dev [--plugins-dir DIR] [-- agent-host run options...]
  cargo xtask cross-check [TARGET...]
  cargo xtask wine-check
  cargo xtask tidy";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build-plugins") => build::build_plugins_command(&args[1..]).map(|_| ()),
        Some("run") => build::run(&args[1..]),
        Some("new-plugin") => scaffold::new_plugin_command(&args[1..]).map(|_| ()),
        Some("dev") => dev::dev_command(&args[1..]),
        Some("cross-check") => cross::cross_check_command(&args[1..]),
        Some("wine-check") => wine::wine_check_command(&args[1..]),
        Some("tidy") => tidy::tidy_command(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every failure is one line for the user.
type Result<T> = std::result::Result<T, String>;

/// The workspace root (the folder holding `xtask/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative
/// to the workspace root), else the workspace's `target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// A `cargo` command run from the workspace root (the same cargo that runs xtask).
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}
