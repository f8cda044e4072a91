//! Builds real plugin files for integration tests, and stages them in folders.
//!
//! Plugins are built in release mode (stripped, as operators run them) into
//! their own target folder, `target/fixtures`, because the outer `cargo test`
//! holds the lock of the main target folder while tests run. A file lock
//! serializes builds across test processes; each build's libraries are
//! copied out under names of their own before the next build can overwrite
//! them.
//!
//! Every fixture plugin is a package of its own in `tests/fixtures/variants/`
//! (`fixture-<name>`, and `fixture-default` for the plugin named `fixture`)
//! over one shared library, `fixture-plugin`. The first plugin a test process
//! asks for builds them all in one `cargo build`, with the example plugins,
//! the library that is not a plugin and the hostile worker; the benchmarks'
//! large fixtures (`bench-*`) are built only when asked for.
//!
//! Two fixtures need their whole dependency tree built differently, so they
//! are built one by one, with a rustflag, for the host's target triple (so
//! that the flag reaches only the plugin and its dependencies, never the
//! proc macros and build scripts), under `target/fixtures/<triple>`:
//! `foreign-layout` needs `agent-host-plugin-abi` itself built with another
//! `MessageView` layout, deep in the types the host checks. That crate offers
//! no feature for it, so that no dependent can ever publish such a plugin: it
//! is built with a `--cfg agent_host_abi_fixture="foreign_layout"` rustflag
//! instead. `hand-export-aborts` is built with `-C panic=abort` (a profile
//! cannot set a panic strategy for one crate), which every crate of the
//! library must share, since the ABI crate records the strategy the library
//! was built with. (`foreign-abi` needs no such build: the version a library
//! was built against is one value of its header, which that fixture's own
//! root module declares.)
//!
//! One fixture is no package of this workspace: the plugin pinned at ABI
//! 1.0 ([`abi_1_0`]), whose folder `tests/fixtures/abi-1.0` is a workspace
//! of its own (the ABI and SDK crates as released, and its own lock file),
//! built from its own manifest into the same target folder.
//!
//! It must never build into the main target folder, and never hand a test a
//! file that another test may still overwrite.

pub mod servers;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

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

/// The folder of the fixture packages, one per fixture plugin.
fn variants_dir() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("fixtures")
        .join("variants")
}

/// The package of the fixture named `name` (`fixture` is the default one).
fn fixture_package(name: &str) -> String {
    match name {
        "fixture" => "fixture-default".to_string(),
        _ => format!("fixture-{name}"),
    }
}

/// How a fixture is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// With all the others, in the one shared build.
    Shared,
    /// Alone, only when asked for (the benchmarks' large fixtures).
    OnDemand,
    /// Alone, with these rustflags (`\x1f`-separated), for the host triple.
    Flagged(&'static str),
}

/// How the fixture named `name` is built.
fn build_of(name: &str) -> Build {
    match name {
        "foreign-layout" => Build::Flagged("--cfg\x1fagent_host_abi_fixture=\"foreign_layout\""),
        "newer-abi-minor" => Build::Flagged("--cfg\x1fagent_host_abi_fixture=\"newer_minor\""),
        "hand-export-aborts" => Build::Flagged("-Cpanic=abort"),
        _ if name.starts_with("bench-") => Build::OnDemand,
        _ => Build::Shared,
    }
}

/// The names of all fixtures: the folders of `tests/fixtures/variants`,
/// with `default` named `fixture`.
fn fixture_names() -> Vec<String> {
    let entries = std::fs::read_dir(variants_dir()).expect("read tests/fixtures/variants");
    let mut names: Vec<String> = entries
        .map(|entry| {
            let name = entry.expect("a fixture folder").file_name();
            let name = name.to_string_lossy();
            match name.as_ref() {
                "default" => "fixture".to_string(),
                other => other.to_string(),
            }
        })
        .collect();
    names.sort();
    names
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

/// `cargo build --release --quiet` into `target/fixtures`, run from the
/// workspace root, with no rustflags from the environment of the outer
/// `cargo test`: the start of every fixture build.
fn cargo_build_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(fixture_target())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

/// `cargo build --release` into `target/fixtures` of the packages
/// `packages`, with `rustflags` (none from the environment of the outer
/// `cargo test`); with rustflags, for the host triple, whose release folder
/// it returns.
fn cargo_build(packages: &[String], rustflags: Option<&str>) -> PathBuf {
    let mut command = cargo_build_command();
    for package in packages {
        command.args(["-p", package]);
    }
    let mut release = fixture_target();
    if let Some(flags) = rustflags {
        let triple = host_triple();
        command
            .args(["--target", &triple])
            .env("CARGO_ENCODED_RUSTFLAGS", flags);
        release.push(triple);
    }
    let status = command.status().expect("run cargo");
    assert!(
        status.success(),
        "cargo build of {packages:?} with rustflags {rustflags:?} failed"
    );
    release.join("release")
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

/// Where a built file is handed to tests: `target/fixtures/out/<file_name>`.
fn out(file_name: &str) -> PathBuf {
    fixture_target().join("out").join(file_name)
}

/// What this process has built (and copied out), by build: each is made
/// once, and a test waits only for the builds it needs, not for others'.
static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<()>>>>> = OnceLock::new();

/// Runs `build` once per process under the name `key`; later callers, and
/// callers while it runs, wait for that one run.
fn once(key: &str, build: impl FnOnce()) {
    let done = {
        let mut built = BUILT
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(built.entry(key.to_string()).or_default())
    };
    done.get_or_init(build);
}

/// What the shared build is recorded as in [`BUILT`].
const SHARED_BUILD: &str = "the shared build";

/// Builds, once per process, everything [`Build::Shared`] in one `cargo
/// build`: the fixtures, the example plugins, the library that is not a
/// plugin and the hostile worker; and copies each out.
fn build_shared() {
    once(SHARED_BUILD, || {
        let _lock = build_lock();
        let fixtures: Vec<String> = fixture_names()
            .into_iter()
            .filter(|name| build_of(name) == Build::Shared)
            .collect();
        let mut packages: Vec<String> = fixtures.iter().map(|name| fixture_package(name)).collect();
        packages.extend(EXAMPLES.iter().map(|name| name.to_string()));
        packages.extend(["not-a-plugin".to_string(), "hostile-worker".to_string()]);
        let release = cargo_build(&packages, None);
        for name in &fixtures {
            copy_atomically(
                &release.join(library_file_name(&fixture_package(name))),
                &out(&format!("{name}.{EXT}")),
            );
        }
        for name in EXAMPLES.iter().copied().chain(["not-a-plugin"]) {
            copy_atomically(
                &release.join(library_file_name(name)),
                &out(&format!("{name}.{EXT}")),
            );
        }
        let worker = format!("hostile-worker{}", std::env::consts::EXE_SUFFIX);
        copy_atomically(&release.join(&worker), &out(&worker));
    });
}

/// Builds the fixture plugin `name` (empty for the default, a well-behaved
/// plugin named `fixture`; otherwise a folder of `tests/fixtures/variants`)
/// and returns its library file, `target/fixtures/out/<name>.<ext>`.
pub fn fixture(name: &str) -> PathBuf {
    let name = if name.is_empty() { "fixture" } else { name };
    let file = out(&format!("{name}.{EXT}"));
    let package = fixture_package(name);
    match build_of(name) {
        Build::Shared => build_shared(),
        build => once(name, || {
            let _lock = build_lock();
            let flags = match build {
                Build::Flagged(flags) => Some(flags),
                _ => None,
            };
            let release = cargo_build(std::slice::from_ref(&package), flags);
            copy_atomically(&release.join(library_file_name(&package)), &file);
        }),
    }
    assert!(
        file.exists(),
        "no fixture {name}: tests/fixtures/variants has no package {package}"
    );
    file
}

/// The workspace of the ABI 1.0 fixture, `tests/fixtures/abi-1.0`.
fn abi_1_0_workspace() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("fixtures")
        .join("abi-1.0")
}

/// The package of the ABI 1.0 fixture's plugin, in its workspace.
const ABI_1_0_PACKAGE: &str = "abi-1-0-plugin";

/// Builds, once per process, the plugin pinned at ABI 1.0: the `abi-one`
/// plugin of `tests/fixtures/abi-1.0`, a workspace of its own holding the
/// ABI crate 1.0.0 and the SDK 0.1.0 as released, built `--locked` against
/// its own `Cargo.lock`. It builds into `target/fixtures` like every other
/// fixture, for the same target and with the same profile, so the
/// dependencies it shares with them at the same version and features are
/// compiled once. Returns `target/fixtures/out/abi-1.0.<ext>`.
pub fn abi_1_0() -> PathBuf {
    let file = out(&format!("abi-1.0.{EXT}"));
    once("abi-1.0", || {
        let _lock = build_lock();
        let manifest = abi_1_0_workspace().join("Cargo.toml");
        let status = cargo_build_command()
            .arg("--locked")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["-p", ABI_1_0_PACKAGE])
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "cargo build --locked of {} failed",
            manifest.display()
        );
        copy_atomically(
            &fixture_target()
                .join("release")
                .join(library_file_name(ABI_1_0_PACKAGE)),
            &file,
        );
    });
    file
}

/// Builds the library that is not a plugin.
pub fn not_a_plugin() -> PathBuf {
    build_shared();
    out(&format!("not-a-plugin.{EXT}"))
}

/// Builds the `hostile-worker` program (a worker that speaks the worker
/// protocol badly on purpose, see its crate) and returns it,
/// `target/fixtures/out/hostile-worker`.
pub fn hostile_worker() -> PathBuf {
    build_shared();
    out(&format!("hostile-worker{}", std::env::consts::EXE_SUFFIX))
}

/// The example plugins shipped in `plugins/`.
pub const EXAMPLES: [&str; 6] = [
    "http-client",
    "geolocation",
    "weather",
    "sentiment",
    "database",
    "notes",
];

/// Builds the example plugins and returns their library files, in the
/// order of [`EXAMPLES`].
pub fn examples() -> Vec<PathBuf> {
    build_shared();
    EXAMPLES
        .iter()
        .map(|name| out(&format!("{name}.{EXT}")))
        .collect()
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
