//! `cargo xtask dev [--plugins-dir DIR] [-- ARGS...]`: the edit-and-reload loop.
//!
//! 1. builds `agent-host` (release) and builds and stages every plugin in
//!    `DIR` (default `target/plugins`), as `build-plugins` does: by temporary
//!    file and rename, and only the files whose bytes changed;
//! 2. starts `target/release/agent-host run --plugins DIR --config agent.toml
//!    --watch ARGS...` with this terminal's stdin, stdout and stderr, so the
//!    chat works;
//! 3. watches `plugins/*/src` and `plugins/*/Cargo.toml` (debounced) and on
//!    a change rebuilds and restages; the agent's `--watch` then hot-reloads
//!    the libraries that changed. A plugin folder that disappears has its
//!    staged library removed (the agent stops that plugin). A failed build
//!    prints the compiler's errors and the agent keeps the previous build;
//! 4. stops when the agent exits, or on Ctrl-C / SIGTERM / SIGHUP, and then
//!    stops the agent too (SIGTERM, then a kill after 10 seconds).

use crate::build::{self, BuildOptions};
use crate::{cargo, signals, workspace_root, Result};
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, DebouncedEvent};
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long file events are gathered into one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long the agent gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the loop looks at signals and at the agent.
const POLL: Duration = Duration::from_millis(100);

struct DevOptions {
    out: PathBuf,
    agent_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<DevOptions> {
    let mut options = DevOptions {
        out: build::default_out(),
        agent_args: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--plugins-dir" => {
                options.out = PathBuf::from(args.next().ok_or("--plugins-dir needs a folder")?);
            }
            "--" => {
                options.agent_args = args.cloned().collect();
                break;
            }
            other => {
                return Err(format!(
                    "unknown option '{other}' (agent-host options go after `--`)"
                ))
            }
        }
    }
    if options.out.is_relative() {
        options.out = std::env::current_dir()
            .map_err(|e| format!("current folder: {e}"))?
            .join(&options.out);
    }
    Ok(options)
}

/// The agent child process; stopped when this is dropped.
struct Agent(Child);

impl Agent {
    /// SIGTERM (where there is one), wait up to [`STOP_GRACE`], then kill.
    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        if signals::terminate(self.0.id()) {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(POLL);
            }
            eprintln!("xtask dev: the agent did not stop within {STOP_GRACE:?}; killing it");
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cargo xtask dev ...`.
pub fn dev_command(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    signals::install();
    let root = workspace_root();

    let status = cargo()
        .args(["build", "--release", "-p", "agent-host"])
        .status()
        .map_err(|e| format!("run cargo: {e}"))?;
    if let Some(signal) = signals::received() {
        return Err(format!("stopped by signal {signal}"));
    }
    if !status.success() {
        return Err("building agent-host failed".into());
    }

    let build_options = BuildOptions::release_into(options.out.clone());
    let mut known: BTreeSet<String> = match build::build_plugins(&build_options) {
        Ok(built) => built.crates.into_iter().collect(),
        Err(_) if signals::received().is_some() => BTreeSet::new(),
        Err(error) => {
            eprintln!(
                "xtask dev: {error}; starting the agent with what {} holds, fix the error and save",
                options.out.display()
            );
            std::fs::create_dir_all(&options.out)
                .map_err(|e| format!("create {}: {e}", options.out.display()))?;
            build::plugin_crates()?.into_iter().collect()
        }
    };
    if let Some(signal) = signals::received() {
        return Err(format!("stopped by signal {signal}"));
    }

    // Watch before starting the agent, so no change is missed.
    let plugins = root.join("plugins");
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, tx).map_err(|e| format!("watch: {e}"))?;
    debouncer
        .watch(&plugins, RecursiveMode::Recursive)
        .map_err(|e| format!("watch {}: {e}", plugins.display()))?;

    let binary = crate::target_dir()
        .join("release")
        .join(format!("agent-host{}", std::env::consts::EXE_SUFFIX));
    let child = Command::new(&binary)
        .current_dir(&root)
        .arg("run")
        .arg("--plugins")
        .arg(&options.out)
        .arg("--config")
        .arg(root.join("agent.toml"))
        .arg("--watch")
        .args(&options.agent_args)
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))?;
    let mut agent = Agent(child);
    eprintln!(
        "xtask dev: agent started (pid {}); watching {} for changes; Ctrl-C stops both",
        agent.0.id(),
        plugins.display()
    );

    loop {
        if let Some(signal) = signals::received() {
            eprintln!("xtask dev: signal {signal}, stopping the agent");
            agent.stop();
            return Ok(());
        }
        match agent.0.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("agent-host exited with {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("wait for agent-host: {e}")),
        }
        let mut changed = BTreeSet::new();
        match rx.recv_timeout(POLL) {
            Ok(result) => collect(&plugins, result, &mut changed),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err("the file watcher stopped".into()),
        }
        // Changes that arrived meanwhile go into the same rebuild.
        while let Ok(result) = rx.try_recv() {
            collect(&plugins, result, &mut changed);
        }
        if changed.is_empty() {
            continue;
        }
        let list: Vec<&str> = changed.iter().map(String::as_str).collect();
        eprintln!("xtask dev: {} changed; rebuilding", list.join(", "));
        rebuild(&build_options, &mut known);
    }
}

/// Rebuilds and restages; unstages the libraries of plugin folders that are gone.
fn rebuild(options: &BuildOptions, known: &mut BTreeSet<String>) {
    match build::build_plugins(options) {
        Ok(built) => {
            let now: BTreeSet<String> = built.crates.into_iter().collect();
            for gone in known.difference(&now) {
                let staged = options.out.join(build::library_file(gone));
                if staged.exists() {
                    match std::fs::remove_file(&staged) {
                        Ok(()) => eprintln!("unstaged {}", staged.display()),
                        Err(e) => eprintln!("xtask dev: remove {}: {e}", staged.display()),
                    }
                }
            }
            *known = now;
            eprintln!("xtask dev: rebuilt; the agent reloads what changed");
        }
        Err(error) => {
            eprintln!("xtask dev: {error}; the agent keeps the previous build");
        }
    }
}

/// Adds the plugin folders that `result`'s events touch to `changed`, and
/// reports watcher errors.
fn collect(plugins: &Path, result: DebounceEventResult, changed: &mut BTreeSet<String>) {
    match result {
        Ok(events) => {
            for event in &events {
                changed.extend(relevant(plugins, event));
            }
        }
        Err(errors) => {
            for error in errors {
                eprintln!("xtask dev: watch: {error}");
            }
        }
    }
}

/// The plugin folders an event concerns: `plugins/NAME` itself,
/// `plugins/NAME/Cargo.toml` or anything under `plugins/NAME/src`. Reads
/// (cargo reading the sources) and hidden or backup files are ignored.
fn relevant(plugins: &Path, event: &DebouncedEvent) -> Vec<String> {
    if matches!(event.kind, EventKind::Access(_)) {
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter_map(|path| plugin_of(plugins, path))
        .collect()
}

/// The plugin folder name when `path` is a watched plugin path.
fn plugin_of(plugins: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(plugins).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_string_lossy().into_owned(),
            _ => String::new(),
        })
        .collect();
    let hidden = |part: &String| part.is_empty() || part.starts_with('.') || part.ends_with('~');
    if parts.iter().any(hidden) {
        return None;
    }
    let watched = match parts.as_slice() {
        [_] => true,
        [_, file] => file == "Cargo.toml" || file == "src",
        [_, src, ..] => src == "src",
        [] => false,
    };
    watched.then(|| parts[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugin_sources_and_manifests_count() {
        let plugins = Path::new("/w/plugins");
        let of = |p: &str| plugin_of(plugins, Path::new(p));
        assert_eq!(
            of("/w/plugins/weather/src/lib.rs").as_deref(),
            Some("weather")
        );
        assert_eq!(
            of("/w/plugins/weather/src/a/b.rs").as_deref(),
            Some("weather")
        );
        assert_eq!(
            of("/w/plugins/weather/Cargo.toml").as_deref(),
            Some("weather")
        );
        assert_eq!(of("/w/plugins/weather").as_deref(), Some("weather"));
        assert_eq!(of("/w/plugins/weather/README.md"), None);
        assert_eq!(of("/w/plugins/weather/src/.lib.rs.swp"), None);
        assert_eq!(of("/w/plugins/weather/src/lib.rs~"), None);
        assert_eq!(of("/w/plugins/.x.new-1/src/lib.rs"), None);
        assert_eq!(of("/w/plugins"), None);
        assert_eq!(of("/elsewhere/lib.rs"), None);
    }

    #[test]
    fn options() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = parse(&args(&["--plugins-dir", "/tmp/p", "--", "--listen", "x"])).unwrap();
        assert_eq!(parsed.out, PathBuf::from("/tmp/p"));
        assert_eq!(parsed.agent_args, ["--listen", "x"]);
        assert!(parse(&args(&["--listen"])).is_err());
        assert!(parse(&args(&["--plugins-dir"])).is_err());
    }
}
