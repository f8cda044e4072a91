//! `cargo xtask ...`: the project's chores, in Rust so they run wherever cargo does.
//!
//! * `cargo xtask build-plugins [--debug] [--out DIR]`: builds every plugin
//!   crate in `plugins/` (release builds are stripped) and stages the
//!   libraries in one folder (default `target/plugins`), each by writing a
//!   temporary file and renaming it into place, so a running host never sees
//!   a half-written file and no loaded file is overwritten in place.
//! * `cargo xtask run [ARGS...]`: builds and stages the plugins, then runs
//!   `agent-host run --plugins target/plugins --config agent.toml ARGS...`.
//!
//! It must never write into a plugin folder except by rename.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build-plugins") => build_plugins_command(&args[1..]).map(|_| ()),
        Some("run") => run(&args[1..]),
        _ => {
            eprintln!(
                "usage:\n  cargo xtask build-plugins [--debug] [--out DIR]\n  cargo xtask run [agent-host run options...]"
            );
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

type Result<T> = std::result::Result<T, String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// The plugin crates: every folder in `plugins/` with a Cargo.toml, by package name.
fn plugin_crates() -> Result<Vec<String>> {
    let dir = workspace_root().join("plugins");
    let mut names = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .skip_while(|l| l.trim() != "[package]")
            .find_map(|l| {
                let (key, value) = l.split_once('=')?;
                (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
            })
            .ok_or_else(|| format!("{}: no package name", manifest.display()))?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

fn library_file(crate_name: &str) -> String {
    let stem = crate_name.replace('-', "_");
    let ext = std::env::consts::DLL_EXTENSION;
    if cfg!(windows) {
        format!("{stem}.{ext}")
    } else {
        format!("lib{stem}.{ext}")
    }
}

struct BuildOptions {
    release: bool,
    out: PathBuf,
}

fn parse_build_options(args: &[String]) -> Result<BuildOptions> {
    let mut options = BuildOptions {
        release: true,
        out: workspace_root().join("target").join("plugins"),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--debug" => options.release = false,
            "--out" => {
                options.out = PathBuf::from(args.next().ok_or("--out needs a folder")?);
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    Ok(options)
}

fn build_plugins_command(args: &[String]) -> Result<PathBuf> {
    build_plugins(&parse_build_options(args)?)
}

/// Builds every plugin and stages it in `options.out` by temp file and rename.
fn build_plugins(options: &BuildOptions) -> Result<PathBuf> {
    let crates = plugin_crates()?;
    let mut command = cargo();
    command.arg("build");
    if options.release {
        command.arg("--release");
    }
    for name in &crates {
        command.args(["-p", name]);
    }
    let status = command.status().map_err(|e| format!("run cargo: {e}"))?;
    if !status.success() {
        return Err("building the plugins failed".into());
    }
    let profile = if options.release { "release" } else { "debug" };
    let built = workspace_root().join("target").join(profile);
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("create {}: {e}", options.out.display()))?;
    for name in &crates {
        let file = library_file(name);
        let from = built.join(&file);
        let to = options.out.join(&file);
        let temp = options.out.join(format!(".{file}.staging"));
        std::fs::copy(&from, &temp).map_err(|e| format!("copy {}: {e}", from.display()))?;
        std::fs::rename(&temp, &to).map_err(|e| format!("stage {}: {e}", to.display()))?;
        eprintln!("staged {}", to.display());
    }
    Ok(options.out.clone())
}

fn run(args: &[String]) -> Result<()> {
    let out = build_plugins(&parse_build_options(&[])?)?;
    let status = cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "agent-host",
            "--",
            "run",
            "--plugins",
        ])
        .arg(&out)
        .arg("--config")
        .arg(workspace_root().join("agent.toml"))
        .args(args)
        .status()
        .map_err(|e| format!("run agent-host: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("agent-host exited with {status}"))
    }
}
