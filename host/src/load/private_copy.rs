//! Private copies of plugin files, one per load generation.
//!
//! `dlopen` returns the library it already has when the path or the inode is
//! the same (DESIGN fact 2), so a rebuilt file at the same path would run the
//! old code. Every load therefore copies the file to a fresh, unique path in a
//! folder private to this process, and loads the copy. Copies are never
//! overwritten; the folder is removed when the host exits.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const PREFIX: &str = "agent-host-shadow-";

/// A private folder of plugin copies.
#[derive(Debug)]
pub struct ShadowDir {
    dir: PathBuf,
    next_generation: AtomicU64,
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
        let dir = base.join(format!("{PREFIX}{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            next_generation: AtomicU64::new(1),
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

/// Removes shadow folders whose owning process is gone (Linux only: elsewhere
/// there is no cheap liveness check, and the system's temp cleaner handles them).
fn remove_stale(base: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
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
}
