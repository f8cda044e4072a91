//! `cargo xtask new-plugin NAME [--actions] [--providers] [--evaluators] [--services] [--all]`.
//!
//! Creates `plugins/NAME/` with a Cargo.toml, a `src/lib.rs` holding a
//! working example of each requested component kind (all four without a
//! flag) and unit tests for them, and a README. The files are written into a
//! hidden temporary folder under `plugins/` and renamed into place at the
//! end, so a failure never leaves half a plugin; a refused name writes
//! nothing.

use crate::template::{self, Components};
use crate::{cargo, workspace_root, Result};
use std::path::{Path, PathBuf};

/// Names cargo or rustc refuse for a package or a library, or that the
/// platforms reserve for files, compared in their `snake_case` form.
const RESERVED: &[&str] = &[
    // Rust keywords (a library named after one cannot be used).
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    // The built-in libraries.
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    // Cargo's own folders in target/.
    "build",
    "deps",
    "examples",
    "incremental",
    // Windows device names.
    "con",
    "prn",
    "aux",
    "nul",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
];

/// Checks a plugin name: kebab-case ASCII (lowercase letters, digits and
/// single dashes, starting with a letter, not ending with a dash), 1 to 64
/// characters, the rule `agent-host-plugin-sdk` applies to manifests; and not a name
/// cargo, rustc or Windows reserve.
pub fn check_name(name: &str) -> Result<()> {
    // The very rule the host applies to manifests, so a scaffolded plugin
    // can never be one the host refuses for its name.
    agent_host_plugin_sdk::manifest::check_name(name)?;
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(format!(
            "'{name}' is reserved by Rust, cargo or Windows; pick another plugin name"
        ));
    }
    Ok(())
}

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct NewPlugin {
    /// The plugin's (and the package's) name.
    pub name: String,
    /// The component examples to write.
    pub components: Components,
}

/// Parses `NAME [--actions] [--providers] [--evaluators] [--services] [--all]`.
pub fn parse(args: &[String]) -> Result<NewPlugin> {
    let mut name = None;
    let mut parts = Components::NONE;
    for arg in args {
        match arg.as_str() {
            "--actions" => parts.actions = true,
            "--providers" => parts.providers = true,
            "--evaluators" => parts.evaluators = true,
            "--services" => parts.services = true,
            "--all" => parts = Components::ALL,
            flag if flag.starts_with("--") => return Err(format!("unknown option '{flag}'")),
            other if name.is_none() => name = Some(other.to_string()),
            other => return Err(format!("one plugin name only (got '{other}' too)")),
        }
    }
    let name = name.ok_or(
        "new-plugin needs a NAME: cargo xtask new-plugin NAME [--actions] [--providers] [--evaluators] [--services] [--all]",
    )?;
    if parts == Components::NONE {
        parts = Components::ALL;
    }
    Ok(NewPlugin {
        name,
        components: parts,
    })
}

/// `cargo xtask new-plugin ...`: returns the new plugin's folder.
pub fn new_plugin_command(args: &[String]) -> Result<PathBuf> {
    let request = parse(args)?;
    check_name(&request.name)?;
    let plugins = workspace_root().join("plugins");
    let folder = plugins.join(&request.name);
    if folder.symlink_metadata().is_ok() {
        return Err(format!(
            "{} already exists; pick another name or remove it first",
            folder.display()
        ));
    }
    check_unused_in_workspace(&request.name)?;
    create(&plugins, &request)?;
    eprintln!(
        "created {}\nnext: cargo test -p {name}, then cargo xtask dev (see {}/README.md)",
        folder.display(),
        folder.display(),
        name = request.name,
    );
    Ok(folder)
}

/// Refuses a name that a workspace package, or a library target, already has
/// (cargo would then refuse the whole workspace, or two builds would write
/// the same library file).
fn check_unused_in_workspace(name: &str) -> Result<()> {
    let output = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .output()
        .map_err(|e| format!("run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed, so the workspace is broken; fix it first:\n{}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("read cargo metadata: {e}"))?;
    let snake = name.replace('-', "_");
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for package in &packages {
        let package_name = package["name"].as_str().unwrap_or_default();
        let libs =
            package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|target| {
                    target["kind"].as_array().into_iter().flatten().any(|kind| {
                        matches!(kind.as_str(), Some("lib" | "cdylib" | "rlib" | "dylib"))
                    })
                });
        let taken = package_name == name
            || libs
                .filter_map(|lib| lib["name"].as_str())
                .any(|lib| lib.replace('-', "_") == snake);
        if taken {
            return Err(format!(
                "the workspace already has a package or library named '{name}' ({}); pick another name",
                package["manifest_path"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(())
}

/// Removes a temporary folder unless it was renamed into place.
struct TempFolder(Option<PathBuf>);

impl Drop for TempFolder {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Runs rustfmt on a generated file, so that long names wrap as rustfmt
/// wants; without rustfmt the file is still valid Rust, only maybe wider.
fn format_source(path: &Path) {
    let formatted = std::process::Command::new("rustfmt")
        .args(["--edition", "2021"])
        .arg(path)
        .status();
    if !formatted.is_ok_and(|status| status.success()) {
        eprintln!(
            "xtask: rustfmt did not run on {}; format it yourself",
            path.display()
        );
    }
}

/// Writes the plugin into `plugins/.NAME.new-PID` and renames it to `plugins/NAME`.
fn create(plugins: &Path, request: &NewPlugin) -> Result<()> {
    let name = &request.name;
    let temp = plugins.join(format!(".{name}.new-{}", std::process::id()));
    let mut guard = TempFolder(Some(temp.clone()));
    // The workspace takes every folder in plugins/ as a member: write the
    // manifest first so the temporary folder is a package for as short a
    // time as possible without one.
    std::fs::create_dir_all(temp.join("src"))
        .map_err(|e| format!("create {}: {e}", temp.display()))?;
    write(&temp.join("Cargo.toml"), &template::cargo_toml(name))?;
    let lib_rs = temp.join("src").join("lib.rs");
    write(&lib_rs, &template::lib_rs(name, request.components))?;
    format_source(&lib_rs);
    write(
        &temp.join("README.md"),
        &template::readme(name, request.components),
    )?;
    let folder = plugins.join(name);
    if folder.symlink_metadata().is_ok() {
        return Err(format!(
            "{} appeared meanwhile; left it alone",
            folder.display()
        ));
    }
    std::fs::rename(&temp, &folder)
        .map_err(|e| format!("rename {} to {}: {e}", temp.display(), folder.display()))?;
    guard.0 = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_follow_the_manifest_rule() {
        for good in ["a", "weather", "my-plugin", "x1-2y", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Bad_Name",
            "1abc",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "A",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            let error = check_name(bad).unwrap_err();
            assert!(error.contains("not a valid plugin name"), "{bad}: {error}");
        }
        for reserved in ["test", "std", "proc-macro", "build", "fn", "con"] {
            assert!(
                check_name(reserved).unwrap_err().contains("reserved"),
                "{reserved}"
            );
        }
    }

    #[test]
    fn flags_choose_components() {
        let all = parse(&args(&["x"])).unwrap();
        assert_eq!(all.components, Components::ALL);
        assert_eq!(
            parse(&args(&["x", "--all"])).unwrap().components,
            Components::ALL
        );
        let some = parse(&args(&["--providers", "x", "--services"])).unwrap();
        assert_eq!(some.name, "x");
        assert_eq!(
            some.components,
            Components {
                providers: true,
                services: true,
                ..Components::NONE
            }
        );
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["x", "y"])).is_err());
        assert!(parse(&args(&["x", "--action"]))
            .unwrap_err()
            .contains("--action"));
    }
}
