//! Private copies of plugin files, one per load generation.
//!
//! `dlopen` returns the library it already has when the path or the inode is
//! the same (a hard link too), so a rebuilt file at the same path would run the
//! old code. Every load therefore copies the file to a fresh, unique path in a
//! folder private to this process, and loads the copy. Copies are never
//! overwritten; the folder is removed when the host exits.
//!
//! A host that was killed cannot remove its folder, so each folder holds a
//! lock file that its host keeps locked while it runs: a folder whose lock
//! can be taken belongs to no running host and is removed at the next
//! start. File locks work the same on every operating system.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const PREFIX: &str = "agent-host-shadow-";

/// The lock file in each folder.
const LOCK_FILE: &str = ".lock";

/// A private folder of plugin copies.
#[derive(Debug)]
pub struct ShadowDir {
    dir: PathBuf,
    next_generation: AtomicU64,
    /// Held locked for as long as the folder is in use.
    _lock: std::fs::File,
}

impl ShadowDir {
    /// Creates a fresh folder under the system's temporary folder, and removes
    /// folders left behind by host processes that no longer run.
    pub fn create() -> io::Result<Self> {
        let base = std::env::temp_dir();
        remove_stale(&base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("{PREFIX}{}-{nanos:08x}", std::process::id());
        // Built under a name the cleanup ignores, then renamed into place
        // with its lock already held, so no other host ever sees it unlocked.
        let building = base.join(format!(".{name}"));
        std::fs::create_dir_all(&building)?;
        let lock = std::fs::File::create(building.join(LOCK_FILE))?;
        lock.try_lock().map_err(io::Error::other)?;
        let dir = base.join(name);
        std::fs::rename(&building, &dir)?;
        Ok(Self {
            dir,
            next_generation: AtomicU64::new(1),
            _lock: lock,
        })
    }

    /// The folder's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Copies `file` to a new unique path in the folder and returns it.
    pub fn copy(&self, file: &Path) -> io::Result<PathBuf> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let extension = file
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let target = self.dir.join(format!("{stem}.g{generation}{extension}"));
        std::fs::copy(file, &target)?;
        Ok(target)
    }
}

impl Drop for ShadowDir {
    fn drop(&mut self) {
        // Loaded copies stay mapped after their files are removed (Unix keeps
        // the blocks until exit), so removing the folder is safe.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the private folders of hosts that no longer run: those whose
/// lock file is not locked.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(PREFIX));
        if !is_ours {
            continue;
        }
        let Ok(lock) = std::fs::File::open(entry.path().join(LOCK_FILE)) else {
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
    fn each_copy_gets_a_new_path_and_inode() {
        let source = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(source.path(), b"library bytes").expect("write");
        let shadow = ShadowDir::create().expect("shadow dir");
        let first = shadow.copy(source.path()).expect("copy");
        let second = shadow.copy(source.path()).expect("copy");
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&second).expect("read"), b"library bytes");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let inode = |p: &Path| std::fs::metadata(p).expect("metadata").ino();
            assert_ne!(inode(&first), inode(&second));
        }
        let dir = shadow.path().to_path_buf();
        drop(shadow);
        assert!(!dir.exists());
    }

    #[test]
    fn a_folder_whose_host_is_gone_is_removed_and_a_live_one_is_kept() {
        let live = ShadowDir::create().expect("shadow dir");
        let base = live.path().parent().expect("a parent").to_path_buf();
        let stale = base.join(format!("{PREFIX}0-deadbeef"));
        std::fs::create_dir_all(&stale).expect("mkdir");
        std::fs::write(stale.join(LOCK_FILE), b"").expect("an unlocked lock file");
        std::fs::write(stale.join("old.g1.so"), b"x").expect("a copy");
        remove_stale(&base);
        assert!(!stale.exists(), "nobody holds its lock");
        assert!(live.path().exists(), "its host holds the lock");
    }
}
