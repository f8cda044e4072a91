//! Building the plugins and staging their libraries (`build-plugins`, `run`).

use crate::{cargo, target_dir, workspace_root, Result};
use std::path::{Path, PathBuf};

/// The plugin crates: every folder in `plugins/` with a Cargo.toml, by
/// package name. Hidden folders (such as a plugin being scaffolded) are skipped.
pub fn plugin_crates() -> Result<Vec<String>> {
    let dir = workspace_root().join("plugins");
    let mut names = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
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

/// The file name of a crate's dynamic library on this platform.
pub fn library_file(crate_name: &str) -> String {
    let stem = crate_name.replace('-', "_");
    let ext = std::env::consts::DLL_EXTENSION;
    if cfg!(windows) {
        format!("{stem}.{ext}")
    } else {
        format!("lib{stem}.{ext}")
    }
}

/// How to build and where to stage.
pub struct BuildOptions {
    /// Release build (the default) or debug build.
    pub release: bool,
    /// The folder the libraries are staged in.
    pub out: PathBuf,
    /// A minisign secret key to sign each library with (`--sign KEY`): the
    /// signature is staged next to it, before the library.
    pub sign: Option<PathBuf>,
}

impl BuildOptions {
    /// A release build staged in `out`, unsigned.
    pub fn release_into(out: PathBuf) -> Self {
        Self {
            release: true,
            out,
            sign: None,
        }
    }
}

/// The default staging folder, `target/plugins`.
pub fn default_out() -> PathBuf {
    workspace_root().join("target").join("plugins")
}

fn parse_build_options(args: &[String]) -> Result<BuildOptions> {
    let mut options = BuildOptions::release_into(default_out());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--debug" => options.release = false,
            "--out" => {
                options.out = PathBuf::from(args.next().ok_or("--out needs a folder")?);
            }
            "--sign" => {
                options.sign = Some(PathBuf::from(
                    args.next().ok_or("--sign needs a secret key file")?,
                ));
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    Ok(options)
}

/// `cargo xtask build-plugins [--debug] [--out DIR] [--sign KEY]`.
pub fn build_plugins_command(args: &[String]) -> Result<PathBuf> {
    build_plugins(&parse_build_options(args)?).map(|built| built.out)
}

/// What one [`build_plugins`] did.
pub struct Built {
    /// The staging folder.
    pub out: PathBuf,
    /// The plugin crates that were built.
    pub crates: Vec<String>,
}

/// Builds every plugin and stages it in `options.out` by temp file and
/// rename; a library whose bytes are already staged is left alone.
pub fn build_plugins(options: &BuildOptions) -> Result<Built> {
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
    let built = target_dir().join(profile);
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("create {}: {e}", options.out.display()))?;
    let files: Vec<PathBuf> = crates.iter().map(|n| built.join(library_file(n))).collect();
    // Only what changed is signed (and so restaged): an unchanged library
    // keeps its signature, and a watching agent does not reload it.
    let changed: Vec<PathBuf> = files
        .iter()
        .filter(|file| !is_staged(file, &options.out, options.sign.is_some()))
        .cloned()
        .collect();
    if let Some(key) = options.sign.as_ref().filter(|_| !changed.is_empty()) {
        sign(key, &changed)?;
    }
    for file in &changed {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if options.sign.is_some() {
            // The signature first: a watching agent that sees the new
            // library then finds the signature that matches it.
            let signature = format!("{name}.minisig");
            stage(
                &file.with_file_name(&signature),
                &options.out.join(&signature),
            )?;
        }
        stage(file, &options.out.join(&*name))?;
    }
    Ok(Built {
        out: options.out.clone(),
        crates,
    })
}

/// Whether `out` holds `file`'s bytes already (and, when `signed`, a
/// signature beside them).
fn is_staged(file: &Path, out: &Path, signed: bool) -> bool {
    let Some(name) = file.file_name() else {
        return false;
    };
    let signature = out.join(format!("{}.minisig", name.to_string_lossy()));
    match (std::fs::read(file), std::fs::read(out.join(name))) {
        (Ok(built), Ok(staged)) => built == staged && (!signed || signature.exists()),
        _ => false,
    }
}

/// Signs `files` with the secret key `key` through `agent-host sign`
/// (each gets `FILE.minisig`); an encrypted key's password comes from
/// `AGENT_HOST_SIGNING_PASSWORD`.
fn sign(key: &Path, files: &[PathBuf]) -> Result<()> {
    let status = agent_host(&["sign", "--key"])
        .arg(key)
        .args(files)
        .status()
        .map_err(|e| format!("run agent-host sign: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("signing the plugins failed ({status})"))
    }
}

/// `agent-host ARGS...`, built in release mode first if it needs to be.
fn agent_host(args: &[&str]) -> std::process::Command {
    let mut command = cargo();
    command
        .args(["run", "--release", "--quiet", "-p", "agent-host", "--"])
        .args(args);
    command
}

/// Copies `from` to `to` through a temporary file in `to`'s folder and a
/// rename, unless `to` already holds the same bytes.
fn stage(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    if std::fs::read(to).is_ok_and(|staged| staged == bytes) {
        return Ok(());
    }
    let file = to.file_name().unwrap_or_default().to_string_lossy();
    let temp = to.with_file_name(format!(".{file}.staging{}", std::process::id()));
    std::fs::write(&temp, &bytes).map_err(|e| format!("write {}: {e}", temp.display()))?;
    if let Err(e) = std::fs::rename(&temp, to) {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("stage {}: {e}", to.display()));
    }
    eprintln!("staged {}", to.display());
    Ok(())
}

/// `cargo xtask run [ARGS...]`.
pub fn run(args: &[String]) -> Result<()> {
    let out = build_plugins(&parse_build_options(&[])?)?.out;
    let status = agent_host(&["run", "--plugins"])
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
