//! The lock file: the plugin files the operator pinned, by file name and
//! SHA-256, with the plugins each exports.
//!
//! ```toml
//! # Written by `agent-host lock`. The host loads only files whose SHA-256 is here.
//! version = 1
//!
//! [[file]]
//! name = "libweather.so"
//! sha256 = "3f5c...e1"
//! plugins = [{ name = "weather", version = "0.1.0" }]
//! ```
//!
//! A file is admitted when its SHA-256 is pinned, under any file name (the
//! same bytes renamed are the same build). When it is not, the refusal says
//! whether a file of that name is pinned with another hash (a changed
//! build) or the file is not in the lock at all.

use super::digest::is_sha256_hex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The version of the lock file format this host reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// The most bytes a lock file may hold: about 5,000 pinned files.
pub const MAX_LOCK_BYTES: u64 = 1024 * 1024;

/// The lock file's name in the plugin folder when none is given.
pub const DEFAULT_LOCK_NAME: &str = "plugins.lock";

/// The pinned plugin files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The format version ([`LOCK_VERSION`]).
    pub version: u32,
    /// One entry per pinned file, sorted by file name.
    #[serde(rename = "file", default)]
    pub files: Vec<LockedFile>,
}

/// One pinned plugin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    /// Its file name in the plugin folder.
    pub name: String,
    /// The SHA-256 of its bytes, in lowercase hexadecimal.
    pub sha256: String,
    /// The plugins it exports.
    #[serde(default)]
    pub plugins: Vec<LockedPlugin>,
}

/// A plugin a pinned file exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlugin {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Why a file is not admitted by the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockMismatch {
    /// No pinned file has this SHA-256, and no file of this name is pinned.
    NotInLock,
    /// A file of this name is pinned with another SHA-256.
    HashDiffers {
        /// The pinned SHA-256.
        locked: String,
    },
}

/// A lock file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("lock file {}: {cause}", file.display())]
pub struct LockFileError {
    /// The lock file.
    pub file: PathBuf,
    /// Why.
    #[source]
    pub cause: LockProblem,
}

/// What is wrong with a lock file, or its text.
#[derive(Debug, thiserror::Error)]
pub enum LockProblem {
    /// It cannot be read (or is not a regular file, or too large).
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// Its text is not TOML of the lock's shape (the parser's message on
    /// one line).
    #[error("{}", .0.to_string().trim().replace('\n', " "))]
    Syntax(#[from] toml::de::Error),
    /// It is of another format version.
    #[error("format version {0} is not the version {LOCK_VERSION} this host reads")]
    Version(u32),
    /// A pinned hash is not written as a SHA-256.
    #[error("file '{name}': sha256 '{sha256}' is not 64 lowercase hexadecimal digits")]
    NotASha256 {
        /// The pinned file's name.
        name: String,
        /// What stands for its hash.
        sha256: String,
    },
    /// A file name is pinned twice.
    #[error("file '{0}' is pinned twice")]
    PinnedTwice(String),
}

impl LockFile {
    /// An empty lock of the current format.
    pub fn new() -> Self {
        Self {
            version: LOCK_VERSION,
            files: Vec::new(),
        }
    }

    /// Reads and checks the lock file at `path`: a regular file of at most
    /// [`MAX_LOCK_BYTES`] (a FIFO or a device is refused without waiting on
    /// it or reading it).
    pub fn read(path: &Path) -> Result<Self, LockFileError> {
        let error = |cause: LockProblem| LockFileError {
            file: path.to_path_buf(),
            cause,
        };
        let text = crate::regular_file::read_to_string(path, MAX_LOCK_BYTES)
            .map_err(|e| error(e.into()))?;
        Self::parse(&text).map_err(error)
    }

    /// Parses and checks lock file text: the format version, each hash
    /// written as a SHA-256, no file name twice.
    pub fn parse(text: &str) -> Result<Self, LockProblem> {
        let lock: LockFile = toml::from_str(text)?;
        if lock.version != LOCK_VERSION {
            return Err(LockProblem::Version(lock.version));
        }
        for (i, entry) in lock.files.iter().enumerate() {
            if !is_sha256_hex(&entry.sha256) {
                return Err(LockProblem::NotASha256 {
                    name: entry.name.clone(),
                    sha256: entry.sha256.clone(),
                });
            }
            if lock.files[..i].iter().any(|e| e.name == entry.name) {
                return Err(LockProblem::PinnedTwice(entry.name.clone()));
            }
        }
        Ok(lock)
    }

    /// The lock as TOML text, with a header saying what it is.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Written by `agent-host lock`. With the lock configured, the host loads only\n\
             # plugin files whose SHA-256 is here. Re-pin with `agent-host lock DIR` or\n\
             # `agent-host lock DIR --update NAME`.\n{body}"
        )
    }

    /// Writes the lock to `path` (a temporary file renamed into place, so a
    /// reader never sees half of it).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_LOCK_NAME.into());
        let temp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        std::fs::write(&temp, self.to_toml())?;
        std::fs::rename(&temp, path)
    }

    /// Whether the file named `file_name` with this SHA-256 is admitted.
    pub fn check(&self, file_name: &str, sha256: &str) -> Result<(), LockMismatch> {
        if self.files.iter().any(|e| e.sha256 == sha256) {
            return Ok(());
        }
        match self.files.iter().find(|e| e.name == file_name) {
            Some(entry) => Err(LockMismatch::HashDiffers {
                locked: entry.sha256.clone(),
            }),
            None => Err(LockMismatch::NotInLock),
        }
    }

    /// Pins `entry`, replacing the entry of the same file name; the
    /// entries stay sorted by file name.
    pub fn pin(&mut self, entry: LockedFile) {
        self.files.retain(|e| e.name != entry.name);
        self.files.push(entry);
        self.files.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The file name pinned for `name`: a pinned file of that name, or
    /// the pinned file that exports a plugin of that name.
    pub fn file_named_or_exporting(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|e| e.name == name)
            .or_else(|| {
                self.files
                    .iter()
                    .find(|e| e.plugins.iter().any(|p| p.name == name))
            })
            .map(|e| e.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, fill: char, plugin: &str) -> LockedFile {
        LockedFile {
            name: name.into(),
            sha256: fill.to_string().repeat(64),
            plugins: vec![LockedPlugin {
                name: plugin.into(),
                version: "1.0.0".into(),
            }],
        }
    }

    #[test]
    fn a_written_lock_reads_back_the_same() {
        let mut lock = LockFile::new();
        lock.pin(entry("libb.so", 'b', "bee"));
        lock.pin(entry("liba.so", 'a', "ant"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DEFAULT_LOCK_NAME);
        lock.write(&path).expect("write");
        let read = LockFile::read(&path).expect("read");
        assert_eq!(read, lock);
        assert_eq!(read.files[0].name, "liba.so", "sorted by file name");
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.starts_with("# Written by `agent-host lock`"), "{text}");
        assert!(text.contains("[[file]]"), "{text}");
    }

    #[test]
    fn pinned_hashes_are_admitted_and_others_say_why_not() {
        let mut lock = LockFile::new();
        lock.pin(entry("liba.so", 'a', "ant"));
        assert_eq!(lock.check("liba.so", &"a".repeat(64)), Ok(()));
        assert_eq!(
            lock.check("renamed.so", &"a".repeat(64)),
            Ok(()),
            "the same bytes under another name"
        );
        assert_eq!(
            lock.check("liba.so", &"c".repeat(64)),
            Err(LockMismatch::HashDiffers {
                locked: "a".repeat(64)
            })
        );
        assert_eq!(
            lock.check("libz.so", &"c".repeat(64)),
            Err(LockMismatch::NotInLock)
        );
    }

    #[test]
    fn re_pinning_replaces_one_entry_and_keeps_the_others() {
        let mut lock = LockFile::new();
        lock.pin(entry("liba.so", 'a', "ant"));
        lock.pin(entry("libb.so", 'b', "bee"));
        lock.pin(entry("liba.so", 'c', "ant"));
        assert_eq!(lock.files.len(), 2);
        assert_eq!(lock.check("liba.so", &"c".repeat(64)), Ok(()));
        assert!(lock.check("liba.so", &"a".repeat(64)).is_err());
        assert_eq!(lock.check("libb.so", &"b".repeat(64)), Ok(()));
        assert_eq!(lock.file_named_or_exporting("bee"), Some("libb.so"));
        assert_eq!(lock.file_named_or_exporting("liba.so"), Some("liba.so"));
        assert_eq!(lock.file_named_or_exporting("wasp"), None);
    }

    #[test]
    fn a_bad_lock_file_is_refused_with_the_cause() {
        let bad_hash = "version = 1\n[[file]]\nname = \"a.so\"\nsha256 = \"XYZ\"\n";
        assert!(LockFile::parse(bad_hash)
            .expect_err("bad hash")
            .to_string()
            .contains("file 'a.so': sha256 'XYZ' is not 64 lowercase"));
        let twice = format!(
            "version = 1\n[[file]]\nname = \"a.so\"\nsha256 = \"{0}\"\n[[file]]\nname = \"a.so\"\nsha256 = \"{0}\"\n",
            "a".repeat(64)
        );
        assert!(matches!(
            LockFile::parse(&twice).expect_err("twice"),
            LockProblem::PinnedTwice(name) if name == "a.so"
        ));
        assert!(LockFile::parse("version = 2\n")
            .expect_err("version")
            .to_string()
            .contains("format version 2"));
        let unknown = LockFile::parse("version = 1\nextra = 1\n").expect_err("unknown key");
        assert!(matches!(unknown, LockProblem::Syntax(_)), "{unknown}");
        assert!(unknown.to_string().contains("extra"), "{unknown}");
        assert!(!unknown.to_string().contains('\n'), "{unknown}");
        let missing = LockFile::read(Path::new("/nonexistent/plugins.lock")).expect_err("missing");
        assert!(missing
            .to_string()
            .starts_with("lock file /nonexistent/plugins.lock: "));
        assert!(
            matches!(&missing.cause, LockProblem::Read(e) if e.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(std::error::Error::source(&missing).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_fifo_or_too_large_is_refused_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join(DEFAULT_LOCK_NAME);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let error = LockFile::read(&fifo).expect_err("a FIFO").to_string();
        assert!(
            error.starts_with(&format!("lock file {}: ", fifo.display())),
            "{error}"
        );
        assert!(error.contains("not a regular file but a FIFO"), "{error}");

        let large = dir.path().join("large.lock");
        let comment = "#".repeat(MAX_LOCK_BYTES as usize);
        std::fs::write(&large, format!("version = 1\n{comment}\n")).expect("write");
        let error = LockFile::read(&large).expect_err("too large").to_string();
        assert!(error.contains("larger than the 1048576 bytes"), "{error}");
    }
}
