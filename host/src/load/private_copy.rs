//! Private copies of plugin files, one per load generation.
//!
//! `dlopen` returns the library it already has when the path or the inode is
//! the same (a hard link too), so a rebuilt file at the same path would run the
//! old code. Every load therefore writes the file's bytes to a fresh, unique
//! path in a folder private to this process, and loads the copy.
//!
//! The folder is this process's user's alone: created fresh (never reused:
//! a path that exists is refused, naming its owner and mode) with mode 0700
//! whatever the umask. A copy is written once, with mode 0444, from the
//! bytes the host read and checked in memory ([`ShadowDir::write_copy`]),
//! never read back; its file stays open read-only for as long as it is in
//! use ([`ShadowCopy::file`]). The world-readable mode lets a sandboxed
//! worker running as another user open the copy through a file descriptor
//! the host passes it; nobody else can reach it by path.
//!
//! A copy is removed when its [`ShadowCopy`] is dropped: at once for an
//! in-process load (the mapping outlives the file), when the last user is
//! done for a copy workers open. `agent_host_private_copies` and
//! `agent_host_private_copies_bytes` ([`CopyGauges`]) show what is on disk.
//! The folder is removed when the host exits.
//!
//! A host that was killed cannot remove its folder, so each folder holds a
//! lock file that its host keeps locked while it runs: a folder of this
//! user whose lock can be taken belongs to no running host and is removed
//! at the next start. File locks work the same on every operating system.

use crate::sys;
use prometheus_client::metrics::gauge::Gauge;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const PREFIX: &str = "agent-host-shadow-";

/// The lock file in each folder.
const LOCK_FILE: &str = ".lock";

/// The copies on disk, as the host's metrics show them.
#[derive(Debug, Clone, Default)]
pub struct CopyGauges {
    /// How many copies are on disk.
    pub count: Gauge,
    /// Their bytes in total.
    pub bytes: Gauge,
}

impl CopyGauges {
    fn add(&self, bytes: u64) {
        self.count.inc();
        self.bytes.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn remove(&self, bytes: u64) {
        self.count.dec();
        self.bytes.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// A private folder of plugin copies.
#[derive(Debug)]
pub struct ShadowDir {
    dir: PathBuf,
    next_generation: AtomicU64,
    gauges: CopyGauges,
    /// Held locked for as long as the folder is in use.
    _lock: File,
}

/// An error about the folder `path`, naming it.
fn folder_error(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("the folder of private copies {}: {error}", path.display()),
    )
}

impl ShadowDir {
    /// Creates a fresh folder under the system's temporary folder, and removes
    /// folders left behind by host processes of this user that no longer
    /// run. The copies it holds are counted in `gauges`.
    pub fn create(gauges: CopyGauges) -> io::Result<Self> {
        static FOLDERS: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        remove_stale(&base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{PREFIX}{}-{nanos:08x}-{}",
            std::process::id(),
            FOLDERS.fetch_add(1, Ordering::Relaxed)
        );
        Self::create_at(&base, &name, gauges)
    }

    /// Creates the folder `name` in `base`: neither it nor the name it is
    /// built under may exist.
    fn create_at(base: &Path, name: &str, gauges: CopyGauges) -> io::Result<Self> {
        let dir = base.join(name);
        // Built under a name the cleanup ignores, then renamed into place
        // with its lock already held, so no other host ever sees it unlocked.
        let building = base.join(format!(".{name}"));
        for path in [&dir, &building] {
            if let Ok(found) = std::fs::symlink_metadata(path) {
                let what = sys::check_private_folder(path)
                    .err()
                    .map_or_else(|| "is a folder".to_string(), |e| e.to_string());
                return Err(folder_error(
                    path,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "exists already ({what}; {} bytes): a fresh one is made for each host, never one found",
                            found.len()
                        ),
                    ),
                ));
            }
        }
        sys::create_private_folder(&building).map_err(|e| folder_error(&building, e))?;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(building.join(LOCK_FILE))
            .and_then(|lock| lock.try_lock().map(|()| lock).map_err(io::Error::other))
            .map_err(|e| folder_error(&building, e));
        let lock = match lock {
            Ok(lock) => lock,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&building);
                return Err(error);
            }
        };
        // Renaming a folder fails onto anything but an empty folder, which
        // it replaces: what is at `dir` afterwards is this folder.
        if let Err(error) =
            std::fs::rename(&building, &dir).and_then(|()| sys::check_private_folder(&dir))
        {
            let _ = std::fs::remove_dir_all(&building);
            return Err(folder_error(&dir, error));
        }
        Ok(Self {
            dir,
            next_generation: AtomicU64::new(1),
            gauges,
            _lock: lock,
        })
    }

    /// The folder's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes`, the contents of the plugin file `file`, to a new
    /// read-only file at a unique path in the folder, and opens it
    /// read-only. The copy is removed when the returned value is dropped.
    pub fn write_copy(&self, file: &Path, bytes: &[u8]) -> io::Result<ShadowCopy> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let extension = file
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let path = self.dir.join(format!("{stem}.g{generation}{extension}"));
        let written = sys::create_read_only_file(&path).and_then(|mut out| {
            out.write_all(bytes)?;
            out.flush()
        });
        match written.and_then(|()| File::open(&path)) {
            Ok(read_only) => {
                let size = bytes.len() as u64;
                self.gauges.add(size);
                Ok(ShadowCopy {
                    path,
                    file: read_only,
                    bytes: size,
                    gauges: self.gauges.clone(),
                })
            }
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
    }
}

impl Drop for ShadowDir {
    fn drop(&mut self) {
        // Loaded copies stay mapped after their files are removed (Unix keeps
        // the blocks until exit), so removing the folder is safe.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One copy on disk: its path and its file, open read-only. Dropping it
/// removes the file (a library mapped from it stays mapped).
#[derive(Debug)]
pub struct ShadowCopy {
    path: PathBuf,
    file: File,
    bytes: u64,
    gauges: CopyGauges,
}

impl ShadowCopy {
    /// The copy's path, in the private folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The copy's file, open read-only.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for ShadowCopy {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => self.gauges.remove(self.bytes),
            // The folder went first (the host is ending).
            Err(error) if error.kind() == io::ErrorKind::NotFound => self.gauges.remove(self.bytes),
            Err(error) => tracing::debug!(
                copy = %self.path.display(),
                "the private copy stays on disk until the host exits: {error}"
            ),
        }
    }
}

/// Removes the private folders of hosts of this user that no longer run:
/// those whose lock file is not locked.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(PREFIX))
            && std::fs::symlink_metadata(entry.path())
                .is_ok_and(|found| found.file_type().is_dir() && sys::is_own(&found));
        if !is_ours {
            continue;
        }
        let Ok(lock) = crate::regular_file::open(&entry.path().join(LOCK_FILE)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            drop(lock);
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_copy_gets_a_new_path_and_inode_and_is_removed_when_dropped() {
        let gauges = CopyGauges::default();
        let shadow = ShadowDir::create(gauges.clone()).expect("shadow dir");
        let first = shadow
            .write_copy(Path::new("/plugins/libp.so"), b"library bytes")
            .expect("copy");
        let second = shadow
            .write_copy(Path::new("/plugins/libp.so"), b"library bytes")
            .expect("copy");
        assert_ne!(first.path(), second.path());
        assert!(first.path().ends_with("libp.g1.so"), "{first:?}");
        assert_eq!(
            std::fs::read(second.path()).expect("read"),
            b"library bytes"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let inode = |p: &Path| std::fs::metadata(p).expect("metadata").ino();
            assert_ne!(inode(first.path()), inode(second.path()));
            assert_eq!(
                second.file().metadata().expect("fstat").ino(),
                inode(second.path()),
                "the open file is the copy"
            );
        }
        assert_eq!((gauges.count.get(), gauges.bytes.get()), (2, 26));
        let first_path = first.path().to_path_buf();
        drop(first);
        assert!(!first_path.exists(), "removed with its last user");
        assert_eq!((gauges.count.get(), gauges.bytes.get()), (1, 13));
        let dir = shadow.path().to_path_buf();
        drop(shadow);
        assert!(!dir.exists());
        drop(second);
        assert_eq!((gauges.count.get(), gauges.bytes.get()), (0, 0));
    }

    #[test]
    fn a_folder_is_never_reused() {
        let base = tempfile::tempdir().expect("tempdir");
        let found = base.path().join("agent-host-shadow-found");
        std::fs::create_dir(&found).expect("mkdir");
        std::fs::write(found.join("libp.g1.so"), b"planted").expect("a planted copy");
        let error = ShadowDir::create_at(
            base.path(),
            "agent-host-shadow-found",
            CopyGauges::default(),
        )
        .expect_err("the folder exists");
        let line = error.to_string();
        assert!(line.contains(&found.display().to_string()), "{line}");
        assert!(line.contains("exists already"), "{line}");
        #[cfg(unix)]
        assert!(line.contains("with mode 0755"), "{line}");
        assert_eq!(
            std::fs::read(found.join("libp.g1.so")).expect("read"),
            b"planted"
        );

        // The name it is built under, too.
        let building = base.path().join(".agent-host-shadow-building");
        std::fs::write(&building, b"").expect("a file");
        let error = ShadowDir::create_at(
            base.path(),
            "agent-host-shadow-building",
            CopyGauges::default(),
        )
        .expect_err("the building name exists");
        assert!(error.to_string().contains("exists already"), "{error}");

        let fresh = ShadowDir::create_at(
            base.path(),
            "agent-host-shadow-fresh",
            CopyGauges::default(),
        )
        .expect("a fresh name");
        assert!(fresh.path().is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn a_copy_is_read_only_in_a_folder_that_only_its_user_can_open() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let source = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(source.path(), b"library bytes").expect("write");
        std::fs::set_permissions(source.path(), std::fs::Permissions::from_mode(0o666))
            .expect("chmod 0666");
        let shadow = ShadowDir::create(CopyGauges::default()).expect("shadow dir");
        let bytes = std::fs::read(source.path()).expect("read");
        let written = shadow.write_copy(source.path(), &bytes).expect("copy");
        let copy = written.path().to_path_buf();
        let mode = |p: &Path| std::fs::symlink_metadata(p).expect("metadata").mode() & 0o7777;
        assert_eq!(mode(&copy), 0o444, "the copy is read-only for everyone");
        assert_eq!(mode(shadow.path()), 0o700, "the folder is its user's alone");
        let owner = std::fs::symlink_metadata(shadow.path())
            .expect("metadata")
            .uid();
        assert_eq!(owner, rustix::process::geteuid().as_raw());

        test_support::assert_another_user_cannot_touch(shadow.path(), &copy);
        assert_eq!(std::fs::read(&copy).expect("read"), b"library bytes");
    }

    #[test]
    fn a_folder_whose_host_is_gone_is_removed_and_a_live_one_is_kept() {
        let live = ShadowDir::create(CopyGauges::default()).expect("shadow dir");
        let base = live.path().parent().expect("a parent").to_path_buf();
        let stale = base.join(format!("{PREFIX}0-deadbeef"));
        std::fs::create_dir_all(&stale).expect("mkdir");
        std::fs::write(stale.join(LOCK_FILE), b"").expect("an unlocked lock file");
        std::fs::write(stale.join("old.g1.so"), b"x").expect("a copy");
        remove_stale(&base);
        assert!(!stale.exists(), "nobody holds its lock");
        assert!(live.path().exists(), "its host holds the lock");
    }

    #[cfg(unix)]
    #[test]
    fn the_cleanup_leaves_other_users_folders_and_never_waits_on_a_lock_file() {
        let base = tempfile::tempdir().expect("tempdir");
        let fifo_lock = base.path().join(format!("{PREFIX}0-fifo"));
        std::fs::create_dir(&fifo_lock).expect("mkdir");
        let made = std::process::Command::new("mkfifo")
            .arg(fifo_lock.join(LOCK_FILE))
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        remove_stale(base.path());
        assert!(
            fifo_lock.exists(),
            "a lock file that is a FIFO is not a host's"
        );

        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped another user's folder: it needs root to make one");
            return;
        }
        let foreign = base.path().join(format!("{PREFIX}0-foreign"));
        std::fs::create_dir(&foreign).expect("mkdir");
        std::fs::write(foreign.join(LOCK_FILE), b"").expect("an unlocked lock file");
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
        remove_stale(base.path());
        assert!(
            foreign.exists(),
            "another user's folder is not this host's to remove"
        );
    }
}
