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

/// The plugin files directly inside `dir`, sorted by path, following
/// symbolic links. Other files are ignored.
pub fn plugin_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(discover(dir)?.files)
}

/// What a folder holds: its plugin files, and the plugin-named links that
/// lead nowhere (dangling, or a loop), each with the cause.
#[derive(Debug, Default)]
pub struct Discovered {
    /// The plugin files, sorted by path.
    pub files: Vec<PathBuf>,
    /// Links named like plugin files that cannot be followed.
    pub broken: Vec<(PathBuf, io::Error)>,
}

/// Looks through `dir` (see [`Discovered`]).
pub fn discover(dir: &Path) -> io::Result<Discovered> {
    let mut found = Discovered::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !is_plugin_file(&path) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(target) if target.is_file() => found.files.push(path),
                Ok(_) => found.broken.push((
                    path,
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the link leads to something that is not a file",
                    ),
                )),
                Err(error) => found.broken.push((path, error)),
            }
        } else if kind.is_file() {
            found.files.push(path);
        }
    }
    found.files.sort();
    found.broken.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn links_are_followed_and_broken_ones_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.bin");
        std::fs::write(&real, b"x").expect("write");
        let name = |n: &str| dir.path().join(format!("{n}.{LIBRARY_EXTENSION}"));
        std::os::unix::fs::symlink(&real, name("good")).expect("link");
        std::os::unix::fs::symlink(dir.path().join("missing"), name("dangling")).expect("link");
        std::os::unix::fs::symlink(name("loop"), name("loop")).expect("link");
        let found = discover(dir.path()).expect("reads");
        assert_eq!(found.files, vec![name("good")]);
        let broken: Vec<&PathBuf> = found.broken.iter().map(|(p, _)| p).collect();
        assert_eq!(broken, vec![&name("dangling"), &name("loop")]);
        assert_eq!(
            found.broken[0].1.kind(),
            io::ErrorKind::NotFound,
            "{:?}",
            found.broken
        );
        assert!(
            found.broken[1].1.to_string().contains("symbolic links"),
            "{:?}",
            found.broken
        );
    }

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
