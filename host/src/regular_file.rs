//! Reading the files the host checks before it trusts a plugin file: the
//! plugin file itself, its `.minisig` signature, the lock file, key files.
//! Each must be a regular file, and is read up to a cap.
//!
//! A path may name a FIFO (opening it waits for a writer, reading it waits
//! for data), a device (`/dev/zero` never ends) or a socket, directly or
//! through a symbolic link. So a file is opened without blocking
//! ([`crate::sys::open_without_blocking`]), refused unless `fstat` on the
//! open file says it is a regular file, and never read past its cap.
//! Reading one never waits on another process, so it may happen under the
//! host's `reloading` lock.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading without blocking, and refuses anything but a
/// regular file (a symbolic link counts as what it points to).
pub(crate) fn open(path: &Path) -> io::Result<File> {
    let file = crate::sys::open_without_blocking(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file but {}", describe(&kind)),
        ))
    }
}

/// Reads `file` (opened by [`open`]) from where it stands to its end: at
/// most `limit` bytes, else an error that gives the limit.
pub(crate) fn read_open(file: &mut File, limit: u64) -> io::Result<Vec<u8>> {
    let size = file.metadata()?.len();
    if size > limit {
        return Err(too_large(limit, &format!("{size} bytes")));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The file may grow while it is read: one byte past the limit tells.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit, "it grew while it was read"));
    }
    Ok(bytes)
}

/// Reads the regular file at `path`, of at most `limit` bytes.
pub(crate) fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_open(&mut open(path)?, limit)
}

/// Reads the regular file at `path`, of at most `limit` bytes, as UTF-8
/// text.
pub(crate) fn read_to_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_large(limit: u64, found: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the {limit} bytes such a file may hold ({found})"),
    )
}

/// What a file that is not a regular file is, for an error message.
fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "something other than a file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_up_to_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("small");
        std::fs::write(&file, b"12345").expect("write");
        assert_eq!(read(&file, 5).expect("at the cap"), b"12345");
        let error = read(&file, 4).expect_err("over the cap");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("larger than the 4 bytes")
                && error.to_string().contains("5 bytes"),
            "{error}"
        );
        let missing = read(&dir.path().join("none"), 5).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let folder = read(dir.path(), 5).expect_err("a folder");
        assert!(folder.to_string().contains("a folder"), "{folder}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_device_behind_a_link_is_refused_without_waiting_or_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        // Opened as usual, a FIFO nobody writes into would wait forever.
        let error = read(&fifo, 4096).expect_err("a FIFO");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("FIFO"), "{error}");

        // Read as usual, /dev/zero would fill the memory.
        let zeros = dir.path().join("zeros");
        std::os::unix::fs::symlink("/dev/zero", &zeros).expect("symlink");
        let error = read_to_string(&zeros, 4096).expect_err("a device");
        assert!(
            error
                .to_string()
                .contains("not a regular file but a character device"),
            "{error}"
        );
    }
}
