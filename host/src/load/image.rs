//! Checks of a plugin file's object headers, before anything maps it.
//!
//! Only the headers are read (through `object`'s read cache), never the
//! whole file: a file that is not a shared library, one built for another
//! operating system or processor, one over the size limit, or one whose
//! headers point past its end (a build still writing it) is refused with a
//! precise line. The last case matters most: `dlopen` would map segments
//! past the end of the file, and the first touch of those pages kills the
//! process with SIGBUS.

use super::OpenError;
use crate::sys;
use object::read::ReadCache;
use object::{Architecture, BinaryFormat, FileKind, Object, ObjectKind, ObjectSegment};
use std::fs::File;
use std::path::Path;

/// Checks the headers of `path`: an existing, non-empty regular file of at
/// most `limit` bytes that is a complete shared library for this platform.
pub(crate) fn check(path: &Path, limit: u64) -> Result<(), OpenError> {
    checked(path, limit, |_| Ok(()))
}

/// [`check`] on a file already open (through [`crate::regular_file::open`]).
/// Reading moves the file's position.
pub(crate) fn check_open(file: &File, limit: u64) -> Result<(), OpenError> {
    let file = file.try_clone().map_err(io("cannot read the file"))?;
    checked_file(file, limit, |_| Ok(()))
}

/// [`check`], then the panic strategy the library recorded
/// ([`panic_strategy`]), from one reading of the file.
pub(crate) fn check_with_panic_strategy(
    path: &Path,
    limit: u64,
) -> Result<PanicStrategy, OpenError> {
    checked(path, limit, panic_strategy)
}

fn io(doing: &'static str) -> impl Fn(std::io::Error) -> OpenError {
    move |e: std::io::Error| OpenError::Io {
        doing,
        cause: e.into(),
    }
}

/// The checks of [`check`]; then `then` on the parsed file.
fn checked<T>(
    path: &Path,
    limit: u64,
    then: impl for<'data> FnOnce(&object::File<'data, &'data ReadCache<File>>) -> Result<T, OpenError>,
) -> Result<T, OpenError> {
    let file = crate::regular_file::open(path).map_err(io("cannot read the file"))?;
    checked_file(file, limit, then)
}

/// The checks of [`check`] on an open file; then `then` on the parsed file.
fn checked_file<T>(
    file: File,
    limit: u64,
    then: impl for<'data> FnOnce(&object::File<'data, &'data ReadCache<File>>) -> Result<T, OpenError>,
) -> Result<T, OpenError> {
    let bytes = file.metadata().map_err(io("cannot read the file"))?.len();
    if bytes == 0 {
        return Err(OpenError::Empty);
    }
    if bytes > limit {
        return Err(OpenError::TooLarge { bytes, limit });
    }
    let data = ReadCache::new(file);
    let kind = FileKind::parse(&data).map_err(|_| OpenError::NotALibrary {
        found: "its first bytes are not an object file header".into(),
    })?;
    match kind {
        FileKind::Elf32
        | FileKind::Elf64
        | FileKind::MachO32
        | FileKind::MachO64
        | FileKind::Pe32
        | FileKind::Pe64 => {}
        other => {
            return Err(OpenError::NotALibrary {
                found: format!("a {other:?} file"),
            })
        }
    }
    // A header that parses only in part is a file cut short.
    let object = object::File::parse(&data).map_err(|e| OpenError::Incomplete {
        what: format!("its headers ({e})"),
        bytes,
    })?;
    let (format, architecture) = (object.format(), object.architecture());
    let (host_format, host_architecture) = (sys::library_format(), sys::architecture());
    if format != host_format || architecture != host_architecture {
        return Err(OpenError::WrongPlatform {
            built_for: platform(format, architecture),
            host: platform(host_format, host_architecture),
        });
    }
    match object.kind() {
        ObjectKind::Dynamic => {}
        ObjectKind::Executable => {
            return Err(OpenError::NotALibrary {
                found: "an executable".into(),
            })
        }
        ObjectKind::Relocatable => {
            return Err(OpenError::NotALibrary {
                found: "a relocatable object (.o)".into(),
            })
        }
        other => {
            return Err(OpenError::NotALibrary {
                found: format!("an object of kind {other:?}"),
            })
        }
    }
    for segment in object.segments() {
        let (offset, size) = segment.file_range();
        if offset.saturating_add(size) > bytes {
            return Err(OpenError::Incomplete {
                what: "a loadable segment".into(),
                bytes,
            });
        }
    }
    then(&object)
}

/// How a library handles a panic, as it recorded when it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PanicStrategy {
    /// `panic = "unwind"`: the SDK catches a panic at the boundary.
    Unwind,
    /// `panic = "abort"`: a panic ends the process that runs the library.
    Abort,
    /// The library records none (built against an older plugin ABI crate).
    Unrecorded,
}

/// Reads the panic strategy a parsed library recorded in its exported
/// [`agent_host_plugin_abi::PANIC_STRATEGY`]: nothing is mapped or run. A
/// library without the symbol is `Unrecorded`; one whose symbol holds
/// neither value is refused.
fn panic_strategy<'data>(
    object: &object::File<'data, &'data ReadCache<File>>,
) -> Result<PanicStrategy, OpenError> {
    use agent_host_plugin_abi::{PANICS_ABORT, PANICS_UNWIND, PANIC_STRATEGY_SYMBOL};
    use object::ObjectSection;
    let exports = object.exports().map_err(|e| OpenError::NotALibrary {
        found: format!("its export table does not parse ({e})"),
    })?;
    // Mach-O prefixes C symbols with an underscore.
    let is_strategy =
        |name: &[u8]| name.strip_prefix(b"_").unwrap_or(name) == PANIC_STRATEGY_SYMBOL.as_bytes();
    let mut found = None;
    for export in exports {
        let export = export.map_err(|e| OpenError::NotALibrary {
            found: format!("its export table does not parse ({e})"),
        })?;
        let named =
            matches!(export.name(), object::read::NameOrOrdinal::Name(name) if is_strategy(name));
        if let (true, object::read::ExportTarget::Address { address }) = (named, export.target()) {
            found = Some(address);
            break;
        }
    }
    let Some(address) = found else {
        return Ok(PanicStrategy::Unrecorded);
    };
    let size = PANICS_UNWIND.len() as u64;
    let value = object
        .sections()
        .find_map(|section| section.data_range(address, size).ok().flatten());
    match value {
        Some(value) if value == PANICS_UNWIND => Ok(PanicStrategy::Unwind),
        Some(value) if value == PANICS_ABORT => Ok(PanicStrategy::Abort),
        _ => Err(OpenError::NotALibrary {
            found: format!("its {PANIC_STRATEGY_SYMBOL} symbol holds no known panic strategy"),
        }),
    }
}

/// "x86_64 (ELF)", as operators know platforms.
fn platform(format: BinaryFormat, architecture: Architecture) -> String {
    let processor = match architecture {
        Architecture::X86_64 => "x86_64".to_string(),
        Architecture::I386 => "x86".to_string(),
        Architecture::Aarch64 => "aarch64".to_string(),
        Architecture::Arm => "arm".to_string(),
        Architecture::Riscv64 => "riscv64".to_string(),
        other => format!("{other:?}").to_lowercase(),
    };
    let format = match format {
        BinaryFormat::Elf => "ELF, Linux and other Unix".to_string(),
        BinaryFormat::MachO => "Mach-O, macOS".to_string(),
        BinaryFormat::Pe => "PE, Windows".to_string(),
        other => format!("{other:?}"),
    };
    format!("{processor} ({format})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An ELF shared library header for `machine` (62: x86_64, 183:
    /// aarch64), with one loadable segment of `segment_bytes` at offset 0.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn elf_library(machine: u16, segment_bytes: u64) -> Vec<u8> {
        let mut header = vec![0u8; 64 + 56];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2; // 64-bit
        header[5] = 1; // little endian
        header[6] = 1; // version
        header[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        header[18..20].copy_from_slice(&machine.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        header[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        header[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        header[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        header[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        header[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        header[ph + 32..ph + 40].copy_from_slice(&segment_bytes.to_le_bytes()); // p_filesz
        header[ph + 40..ph + 48].copy_from_slice(&segment_bytes.to_le_bytes()); // p_memsz
        header
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write");
        file
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn a_complete_library_for_this_platform_passes() {
        let bytes = elf_library(62, 120);
        assert_eq!(check(file_with(&bytes).path(), 1 << 20), Ok(()));
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn a_library_for_another_processor_says_which() {
        let bytes = elf_library(183, 120);
        let error = check(file_with(&bytes).path(), 1 << 20).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "built for aarch64 (ELF, Linux and other Unix); this host is x86_64 (ELF, Linux and other Unix)"
        );
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn a_segment_past_the_end_is_a_file_still_being_written() {
        let bytes = elf_library(62, 4096);
        let error = check(file_with(&bytes).path(), 1 << 20).expect_err("refused");
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("a loadable segment"), "{error}");
    }

    #[test]
    fn junk_empty_and_huge_files_are_refused_from_the_header() {
        let junk = check(file_with(b"#!/bin/sh\necho hi\n").path(), 1 << 20).expect_err("junk");
        assert!(matches!(junk, OpenError::NotALibrary { .. }), "{junk}");
        assert!(!junk.is_transient());
        let empty = check(file_with(b"").path(), 1 << 20).expect_err("empty");
        assert_eq!(empty, OpenError::Empty);
        assert!(empty.is_transient());
        let big = file_with(b"");
        big.as_file().set_len(3 << 30).expect("a sparse 3 GiB file");
        let error = check(big.path(), 1 << 30).expect_err("too large");
        assert_eq!(
            error,
            OpenError::TooLarge {
                bytes: 3 << 30,
                limit: 1 << 30
            }
        );
    }
}
