//! Finding plugin files in a folder.

use std::io;
use std::path::{Path, PathBuf};

/// The file extension of dynamic libraries on this platform (`so`, `dylib`, `dll`).
pub const LIBRARY_EXTENSION: &str = std::env::consts::DLL_EXTENSION;

/// Whether `path` names a plugin candidate: a library extension, and not a
/// hidden or temporary file (editors and build tools write those next to the
/// real one before renaming it into place).
pub fn is_plugin_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.ends_with('~'));
    !hidden && path.extension().and_then(|e| e.to_str()) == Some(LIBRARY_EXTENSION)
}

/// Whether two paths name the same place in the folder: the same file name
/// in the same (canonical) folder, whether the paths are relative or not.
/// The file itself may no longer exist.
pub fn same_place(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let folder = |p: &Path| {
        let parent = p
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parent.canonicalize().ok()
    };
    a.file_name() == b.file_name() && folder(a).is_some() && folder(a) == folder(b)
}

/// The plugin files directly inside `dir`, sorted by path. Other files are ignored.
pub fn plugin_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_file() && is_plugin_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_library_files_are_found_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            format!("b.{LIBRARY_EXTENSION}"),
            format!("a.{LIBRARY_EXTENSION}"),
            format!(".hidden.{LIBRARY_EXTENSION}"),
            "notes.txt".to_string(),
            format!("c.{LIBRARY_EXTENSION}.tmp"),
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        std::fs::create_dir(dir.path().join(format!("d.{LIBRARY_EXTENSION}"))).expect("mkdir");
        let found: Vec<String> = plugin_files(dir.path())
            .expect("reads")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            found,
            vec![
                format!("a.{LIBRARY_EXTENSION}"),
                format!("b.{LIBRARY_EXTENSION}")
            ]
        );
    }
}
