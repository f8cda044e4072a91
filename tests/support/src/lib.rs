//! Builds real plugin files for integration tests, and stages them in folders.
//!
//! Plugins are built in release mode (stripped, as operators run them) into
//! their own target folder, `target/fixtures`, because the outer `cargo test`
//! holds the lock of the main target folder while tests run. A file lock
//! serializes builds across test processes; each build's library is copied
//! out under a name of its own before the next build can overwrite it.
//!
//! Two fixtures, `foreign-abi` and `foreign-layout`, need
//! `agent-host-plugin-abi` itself built differently (another ABI version,
//! another `MessageView` layout). That crate offers no feature for it, so
//! that no dependent can ever publish such a plugin: they are built with a
//! `--cfg agent_host_abi_fixture="..."` rustflag instead, into a target folder
//! of their own, `target/fixtures-foreign`, so that the flag never
//! invalidates the other fixture builds. Those builds name the host's target
//! triple, so the flag reaches only the plugin's own code and its
//! dependencies, and the two builds share their proc macros and build scripts.
//!
//! One fixture, `hand-export-aborts`, is built with `-C panic=abort` (a
//! profile cannot set a panic strategy for one crate), the same way, into
//! `target/fixtures-abort`.
//!
//! It must never build into the main target folder, and never hand a test a
//! file that another test may still overwrite.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The platform's library extension.
pub const EXT: &str = std::env::consts::DLL_EXTENSION;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support sits two levels below the workspace root")
        .to_path_buf()
}

/// The target folder used for plugin builds.
pub fn fixture_target() -> PathBuf {
    workspace_root().join("target").join("fixtures")
}

/// The target folder used for the fixtures built with a foreign ABI.
fn foreign_target() -> PathBuf {
    workspace_root().join("target").join("fixtures-foreign")
}

/// The target folder used for the fixtures built with `-C panic=abort`.
fn aborting_target() -> PathBuf {
    workspace_root().join("target").join("fixtures-abort")
}

/// The `agent_host_abi_fixture` value that `agent-host-plugin-abi` needs for
/// a fixture feature, if it needs one.
fn abi_fixture_cfg(feature: &str) -> Option<&'static str> {
    match feature {
        "foreign-abi" => Some("foreign_version"),
        "foreign-layout" => Some("foreign_layout"),
        _ => None,
    }
}

/// The target triple of the toolchain that runs the tests.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let output = Command::new(rustc)
        .args(["--print", "host-tuple"])
        .output()
        .expect("run rustc --print host-tuple");
    assert!(output.status.success(), "rustc --print host-tuple failed");
    String::from_utf8(output.stdout)
        .expect("the host triple is text")
        .trim()
        .to_string()
}

/// Whether the fixture with `feature` is built with `-C panic=abort`.
fn builds_with_panic_abort(feature: &str) -> bool {
    feature == "hand-export-aborts"
}

fn library_file_name(crate_name: &str) -> String {
    let stem = crate_name.replace('-', "_");
    if cfg!(windows) {
        format!("{stem}.{EXT}")
    } else {
        format!("lib{stem}.{EXT}")
    }
}

/// Holds the cross-process build lock while alive.
struct BuildLock(#[allow(dead_code)] File);

fn build_lock() -> BuildLock {
    let dir = fixture_target();
    std::fs::create_dir_all(&dir).expect("create target/fixtures");
    let file = File::create(dir.join(".build.lock")).expect("create the build lock file");
    file.lock().expect("take the build lock");
    BuildLock(file)
}

fn cargo_build(args: &[&str]) {
    let status = cargo_command(&fixture_target())
        .args(args)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// `cargo build --release` into `target_dir`, with no rustflags from the
/// environment of the outer `cargo test`.
fn cargo_command(target_dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

/// Builds the fixture plugin with `feature` and `--cfg
/// agent_host_abi_fixture="<cfg>"`; returns the library it built.
fn cargo_build_foreign(feature: &str, cfg: &str) -> PathBuf {
    let triple = host_triple();
    let status = cargo_command(&foreign_target())
        .args(["-p", "fixture-plugin", "--features", feature, "--target"])
        .arg(&triple)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg\x1fagent_host_abi_fixture=\"{cfg}\""),
        )
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cargo build of fixture {feature} with agent_host_abi_fixture={cfg} failed"
    );
    foreign_target()
        .join(triple)
        .join("release")
        .join(library_file_name("fixture-plugin"))
}

/// Builds the fixture plugin with `feature` and `-C panic=abort`; returns
/// the library it built. Like the foreign builds, it names the host's
/// target triple so that the flag reaches only the plugin and its
/// dependencies, never the proc macros.
fn cargo_build_aborting(feature: &str) -> PathBuf {
    let triple = host_triple();
    let status = cargo_command(&aborting_target())
        .args(["-p", "fixture-plugin", "--features", feature, "--target"])
        .arg(&triple)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Cpanic=abort")
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cargo build of fixture {feature} with -C panic=abort failed"
    );
    aborting_target()
        .join(triple)
        .join("release")
        .join(library_file_name("fixture-plugin"))
}

fn copy_atomically(from: &Path, to: &Path) {
    let parent = to.parent().expect("destination has a folder");
    std::fs::create_dir_all(parent).expect("create destination folder");
    let temp = parent.join(format!(
        ".{}.tmp{}",
        to.file_name().expect("file name").to_string_lossy(),
        std::process::id()
    ));
    std::fs::copy(from, &temp).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::rename(&temp, to).expect("rename into place");
}

static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();

/// Builds the fixture plugin with `feature` (empty for the default, a
/// well-behaved plugin named `fixture`) and returns its library file,
/// `target/fixtures/out/<feature>.<ext>`.
pub fn fixture(feature: &str) -> PathBuf {
    let name = if feature.is_empty() {
        "fixture"
    } else {
        feature
    };
    let out = fixture_target().join("out").join(format!("{name}.{EXT}"));
    let built = BUILT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut built = built.lock().unwrap_or_else(PoisonError::into_inner);
    if built.contains(name) {
        return out;
    }
    let _lock = build_lock();
    let artifact = match abi_fixture_cfg(feature) {
        Some(cfg) => cargo_build_foreign(feature, cfg),
        None if builds_with_panic_abort(feature) => cargo_build_aborting(feature),
        None => {
            let mut args = vec!["-p", "fixture-plugin"];
            if !feature.is_empty() {
                args.extend(["--features", feature]);
            }
            cargo_build(&args);
            fixture_target()
                .join("release")
                .join(library_file_name("fixture-plugin"))
        }
    };
    copy_atomically(&artifact, &out);
    built.insert(name.to_string());
    out
}

/// Builds the library that is not a plugin.
pub fn not_a_plugin() -> PathBuf {
    let out = fixture_target()
        .join("out")
        .join(format!("not-a-plugin.{EXT}"));
    let built = BUILT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut built = built.lock().unwrap_or_else(PoisonError::into_inner);
    if built.contains("not-a-plugin") {
        return out;
    }
    let _lock = build_lock();
    cargo_build(&["-p", "not-a-plugin"]);
    copy_atomically(
        &fixture_target()
            .join("release")
            .join(library_file_name("not-a-plugin")),
        &out,
    );
    built.insert("not-a-plugin".into());
    out
}

/// Builds the `hostile-worker` program (a worker that speaks the worker
/// protocol badly on purpose, see its crate) and returns it,
/// `target/fixtures/out/hostile-worker`.
pub fn hostile_worker() -> PathBuf {
    let name = format!("hostile-worker{}", std::env::consts::EXE_SUFFIX);
    let out = fixture_target().join("out").join(&name);
    let built = BUILT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut built = built.lock().unwrap_or_else(PoisonError::into_inner);
    if built.contains("hostile-worker") {
        return out;
    }
    let _lock = build_lock();
    cargo_build(&["-p", "hostile-worker"]);
    copy_atomically(&fixture_target().join("release").join(&name), &out);
    built.insert("hostile-worker".into());
    out
}

/// The example plugins shipped in `plugins/`.
pub const EXAMPLES: [&str; 5] = [
    "http-client",
    "geolocation",
    "weather",
    "sentiment",
    "notes",
];

/// Builds the example plugins and returns their library files, in the
/// order of [`EXAMPLES`].
pub fn examples() -> Vec<PathBuf> {
    let built = BUILT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut built = built.lock().unwrap_or_else(PoisonError::into_inner);
    let out = |name: &str| fixture_target().join("out").join(format!("{name}.{EXT}"));
    if !built.contains("examples") {
        let _lock = build_lock();
        let mut args = Vec::new();
        for name in EXAMPLES {
            args.extend(["-p", name]);
        }
        cargo_build(&args);
        for name in EXAMPLES {
            copy_atomically(
                &fixture_target()
                    .join("release")
                    .join(library_file_name(name)),
                &out(name),
            );
        }
        built.insert("examples".into());
    }
    EXAMPLES.iter().map(|name| out(name)).collect()
}

/// A fresh folder holding copies of `files`, each under its own file name.
pub fn folder_with(files: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp folder");
    for file in files {
        let name = file.file_name().expect("file name");
        std::fs::copy(file, dir.path().join(name))
            .unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
    dir
}

/// Copies `file` into `dir` under `name`.
pub fn add_as(dir: &Path, file: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    target
}

/// Runs `script` (a `sh -c` script, with `$1` = `path`) as the user
/// `nobody` (uid and gid 65534, no groups) through `setpriv`; whether it
/// succeeded. `None` when this process cannot become that user, which needs
/// root (the reason is printed): a test of what another local user can do
/// then skips.
#[cfg(unix)]
pub fn as_nobody(script: &str, path: &Path) -> Option<bool> {
    use std::process::{Command, Stdio};
    let run = |script: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["sh", "-c", script, "sh"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    match run("true") {
        Ok(status) if status.success() => run(script).ok().map(|s| s.success()),
        outcome => {
            eprintln!("skipped: cannot run a command as uid 65534 with setpriv: {outcome:?}");
            None
        }
    }
}

/// Asserts that another local user (`nobody`) can neither list `folder`
/// nor read, write, replace or remove `copy` in it. Skips (with the reason
/// printed) unless this process is root, which becoming that user needs.
#[cfg(unix)]
pub fn assert_another_user_cannot_touch(folder: &Path, copy: &Path) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped the second user's attempts: they need root to become uid 65534");
        return;
    }
    let Some(listed) = as_nobody("ls \"$1\"", folder) else {
        return;
    };
    assert!(!listed, "another user lists the folder");
    let attempts = [
        ("reads the copy", "cat \"$1\" > /dev/null"),
        ("writes into the copy", "echo rewritten > \"$1\""),
        (
            "replaces the copy",
            "echo rewritten > \"$1.new\" && mv -f \"$1.new\" \"$1\"",
        ),
        ("removes the copy", "rm -f \"$1\""),
    ];
    for (what, script) in attempts {
        assert_eq!(as_nobody(script, copy), Some(false), "another user {what}");
    }
}
