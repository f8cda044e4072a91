//! `cargo xtask new-plugin` end to end: a scaffolded plugin passes its own
//! tests, builds in release and loads in `agent-host check`; bad names and
//! existing folders are refused without writing anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set, else the workspace's `target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(workspace_root())
        .args(args)
        .output()
        .expect("run xtask")
}

fn cargo(args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(args)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo {args:?} failed");
}

/// Removes a folder when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes everything a scaffolded plugin left behind when dropped, even
/// when the test panics: its folder, its build artifacts, and its entry in
/// Cargo.lock (cargo prunes it on the next resolve).
struct ScaffoldCleanup(String);

impl Drop for ScaffoldCleanup {
    fn drop(&mut self) {
        let root = workspace_root();
        let _ = std::fs::remove_dir_all(root.join("plugins").join(&self.0));
        let snake = self.0.replace('-', "_");
        let target = root.join("target");
        let profiles = [
            target_dir().join("debug"),
            target_dir().join("release"),
            target.join("fixtures").join("release"),
        ];
        for profile in &profiles {
            for sub in ["", "deps", ".fingerprint", "incremental"] {
                let dir = profile.join(sub);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let file = entry.file_name().to_string_lossy().into_owned();
                    if file.contains(&snake) || file.contains(&self.0) {
                        let path = entry.path();
                        let _ =
                            std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                    }
                }
            }
        }
        let _ = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["metadata", "--offline", "--format-version", "1"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

fn library_file(name: &str) -> String {
    let stem = name.replace('-', "_");
    let ext = std::env::consts::DLL_EXTENSION;
    if cfg!(windows) {
        format!("{stem}.{ext}")
    } else {
        format!("lib{stem}.{ext}")
    }
}

#[test]
fn scaffolded_plugin_tests_builds_and_loads() {
    let name = format!("zz-scaffold-test-{}", std::process::id());
    let root = workspace_root();
    let folder = root.join("plugins").join(&name);
    let _cleanup = ScaffoldCleanup(name.clone());
    // Built where the test fixtures are built, so the release build of the
    // SDK and its dependencies is shared with theirs.
    let fixtures = root.join("target").join("fixtures");
    let built = fixtures.join("release").join(library_file(&name));

    let output = xtask(&["new-plugin", &name]);
    assert!(
        output.status.success(),
        "new-plugin failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["Cargo.toml", "README.md", "src/lib.rs"] {
        assert!(folder.join(file).is_file(), "{file} missing");
    }
    let manifest = std::fs::read_to_string(folder.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(&format!("name = \"{name}\"")));
    assert!(manifest.contains("crate-type = [\"cdylib\", \"rlib\"]"));
    let lib = std::fs::read_to_string(folder.join("src/lib.rs")).unwrap();
    for part in [
        "Action::new",
        "Provider::new",
        "Evaluator::new",
        "Service::new",
        "TestHost",
    ] {
        assert!(lib.contains(part), "lib.rs lacks {part}");
    }
    let hidden: Vec<_> = std::fs::read_dir(root.join("plugins"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!(".{name}."))
        })
        .collect();
    assert!(hidden.is_empty(), "a temporary folder was left behind");

    cargo(&["test", "--quiet", "-p", &name]);
    cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        &name,
        "--target-dir",
        &fixtures.to_string_lossy(),
    ]);
    assert!(built.is_file(), "{} was not built", built.display());

    // The host accepts it.
    cargo(&["build", "--quiet", "-p", "agent-host"]);
    let host = target_dir()
        .join("debug")
        .join(format!("agent-host{}", std::env::consts::EXE_SUFFIX));
    {
        let dir = std::env::temp_dir().join(format!("{name}-check"));
        let _dir_cleanup = RemoveOnDrop(dir.clone());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&built, dir.join(library_file(&name))).unwrap();
        let check = Command::new(&host).arg("check").arg(&dir).output().unwrap();
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(check.status.success(), "agent-host check: {stdout}");
        assert!(stdout.contains(&format!("ok    {name} 0.1.0")), "{stdout}");
    }
}

/// The names of the entries in `plugins/` that mention `word`.
fn entries_mentioning(word: &str) -> Vec<String> {
    std::fs::read_dir(workspace_root().join("plugins"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(word))
        .collect()
}

#[test]
fn bad_names_and_existing_folders_are_refused() {
    let output = xtask(&["new-plugin", "Bad_Name"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a valid plugin name"), "{stderr}");
    assert!(entries_mentioning("Bad_Name").is_empty());

    let weather = workspace_root().join("plugins").join("weather");
    let read = |file: &str| std::fs::read(weather.join(file)).unwrap();
    let before = (read("Cargo.toml"), read("src/lib.rs"));
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        names
    };
    let files_before = listing(&weather);
    let output = xtask(&["new-plugin", "weather", "--actions"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!((read("Cargo.toml"), read("src/lib.rs")), before);
    assert_eq!(listing(&weather), files_before);
    assert_eq!(entries_mentioning("weather"), ["weather"]);

    // A name another workspace package has, and a name cargo reserves.
    for (name, why) in [("xtask", "already has a package"), ("test", "reserved")] {
        let output = xtask(&["new-plugin", name]);
        assert_eq!(output.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert!(!workspace_root().join("plugins").join(name).exists());
    }
}
