//! `cargo xtask cross-check [TARGET...]`: runs clippy, with warnings as
//! errors, over the whole workspace for the other operating systems the
//! host supports (macOS and Windows by default), from a Linux machine.
//!
//! Checking needs each target's standard library (`rustup target add
//! TARGET`) but no linker. It does need every build script to succeed, and
//! a few dependencies compile C code in theirs; for a check nothing uses
//! those objects, so a stand-in C compiler (a shell script written into
//! `target/xtask/`) creates the files it is asked for and compiles nothing.
//!
//! It must never build or link anything for those targets that could be
//! mistaken for a working binary: it runs `cargo clippy`, which stops at
//! type checking, into a target folder of its own.

use crate::{cargo, target_dir, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The targets checked when none is named.
const DEFAULT_TARGETS: [&str; 2] = ["x86_64-apple-darwin", "x86_64-pc-windows-msvc"];

/// A C compiler and archiver that compiles nothing: it creates each output
/// file named by `-o FILE`, `-FoFILE` or `/FoFILE`, `-out:FILE` or
/// `/OUT:FILE`, or (as
/// `ar`) the archive after an `r`/`c`/`q`/`s` flag word, so that build
/// scripts find what they expect.
const STAND_IN_COMPILER: &str = r#"#!/bin/sh
# Written by `cargo xtask cross-check`: creates the files it is asked to
# produce and compiles nothing (a type check links nothing).
touch_out() { mkdir -p "$(dirname "$1")" && : >> "$1"; }
case "$1" in
  cr*|rc*|cq*|q*|crs*|rcs*|s) [ -n "$2" ] && touch_out "$2"; exit 0 ;;
esac
previous=""
for argument in "$@"; do
  if [ "$previous" = "-o" ]; then touch_out "$argument"; fi
  case "$argument" in
    -Fo?*|/Fo?*) touch_out "${argument#???}" ;;
    -OUT:?*|/OUT:?*|-out:?*|/out:?*) touch_out "${argument#?????}" ;;
  esac
  previous="$argument"
done
exit 0
"#;

/// Runs the check for each target named in `args`, or the defaults.
pub(crate) fn cross_check_command(args: &[String]) -> Result<()> {
    let targets: Vec<&str> = if args.is_empty() {
        DEFAULT_TARGETS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    let installed = installed_targets()?;
    if let Some(missing) = targets.iter().find(|t| !installed.iter().any(|i| i == *t)) {
        return Err(format!(
            "the standard library for {missing} is not installed: run `rustup target add {missing}`"
        ));
    }
    let compiler = write_stand_in_compiler(&target_dir().join("xtask"))?;
    for target in targets {
        eprintln!("xtask: checking the workspace for {target}");
        let variable = target.replace('-', "_");
        let status = cargo()
            .args(["clippy", "--workspace", "--all-targets", "--target", target])
            .args(["--", "-D", "warnings"])
            .env("CARGO_TARGET_DIR", target_dir().join("cross-check"))
            .env(format!("CC_{variable}"), &compiler)
            .env(format!("AR_{variable}"), &compiler)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("the workspace does not check cleanly for {target}"));
        }
    }
    Ok(())
}

/// The targets whose standard library rustup has installed.
pub(crate) fn installed_targets() -> Result<Vec<String>> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| {
            format!("cannot run rustup (needed to see which targets are installed): {e}")
        })?;
    if !output.status.success() {
        return Err("`rustup target list --installed` failed".to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect())
}

/// Writes the stand-in compiler into `dir`; returns its path.
fn write_stand_in_compiler(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("stand-in-cc");
    std::fs::write(&path, STAND_IN_COMPILER)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
    }
    Ok(path)
}
