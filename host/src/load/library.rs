//! Opening one plugin file: private copy, `dlopen`, ABI checks, manifests.
//!
//! Each file is opened with `lib_header_from_path(..).init_root_module()`
//! rather than `RootModule::load_from*`, which would keep one library per
//! root-module type for the whole process (DESIGN fact 1).

use crate::load::private_copy::ShadowDir;
use agent_host_plugin_abi::abi_stable::library::{lib_header_from_path, LibraryError};
use agent_host_plugin_abi::PluginModuleRef;
use agent_host_plugin_sdk::manifest::Manifest;
use std::path::{Path, PathBuf};

/// A plugin library that passed every check and whose manifests were read.
pub struct OpenedLibrary {
    /// The file in the plugin folder.
    pub file: PathBuf,
    /// The library's root module.
    pub module: PluginModuleRef,
    /// One manifest per plugin the library exports, in export order.
    pub manifests: Vec<Manifest>,
    /// Size of the loaded image on disk, an estimate of what stays mapped.
    pub image_bytes: u64,
}

/// Why a file could not be opened as a plugin library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    /// One readable line.
    pub cause: String,
    /// The full diagnostic where there is one (abi_stable layout reports run
    /// to thousands of lines), shown with `--verbose`.
    pub detail: Option<String>,
}

impl OpenError {
    fn new(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            detail: None,
        }
    }
}

/// The ABI major version this host accepts.
pub fn host_abi_major() -> u64 {
    major_of(agent_host_plugin_abi::ABI_VERSION).unwrap_or(0)
}

fn major_of(version: &str) -> Option<u64> {
    version.split('.').next()?.trim().parse().ok()
}

/// Opens `file` from a fresh private copy and checks it.
pub fn open(file: &Path, shadow: &ShadowDir) -> Result<OpenedLibrary, OpenError> {
    let copy = shadow
        .copy(file)
        .map_err(|e| OpenError::new(format!("cannot make a private copy: {e}")))?;
    let image_bytes = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
    check_complete(&copy)?;
    let header = lib_header_from_path(&copy).map_err(|e| describe(&e))?;

    let plugin_version = header.version_strings().version;
    let plugin_major = major_of(plugin_version.as_str());
    if plugin_major != Some(host_abi_major()) {
        return Err(OpenError::new(format!(
            "built against plugin ABI {}, but this host speaks plugin ABI {}.x: rebuild the plugin against this host's agent-host-plugin-sdk",
            plugin_version.as_str(),
            host_abi_major()
        )));
    }
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| describe(&e))?;

    let json = (module.manifests())()
        .into_result()
        .map_err(|e| OpenError::new(format!("manifest: {}", e.message)))?;
    let manifests: Vec<Manifest> = serde_json::from_str(json.as_str())
        .map_err(|e| OpenError::new(format!("manifest is not valid: {e}")))?;
    if manifests.is_empty() {
        return Err(OpenError::new("the library exports no plugin"));
    }
    Ok(OpenedLibrary {
        file: file.to_path_buf(),
        module,
        manifests,
        image_bytes,
    })
}

/// Refuses an ELF file that is shorter than its own headers say: a build
/// caught half-written. `dlopen` would map its segments past the end of the
/// file, and the first touch of those pages kills the process with SIGBUS.
/// Other formats are left to `dlopen`.
fn check_complete(path: &Path) -> Result<(), OpenError> {
    use std::io::Read;
    let cannot_read =
        |e: std::io::Error| OpenError::new(format!("cannot read the private copy: {e}"));
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    let len = file.metadata().map_err(cannot_read)?.len();
    // The ELF and program headers sit at the start of the file.
    let mut bytes = Vec::new();
    file.by_ref()
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    let incomplete = |what: &str| {
        OpenError::new(format!(
            "the file is incomplete ({what} lies past its end at {len} bytes): a build still writing it? it will be retried"
        ))
    };
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Ok(());
    }
    let is_64 = match bytes.get(4) {
        Some(2) => true,
        Some(1) => false,
        _ => return Err(incomplete("the ELF header")),
    };
    let little = bytes.get(5) == Some(&1);
    let read = |offset: u64, size: usize| -> Option<u64> {
        let start = usize::try_from(offset).ok()?;
        let field = bytes.get(start..start.checked_add(size)?)?;
        let mut value = 0u64;
        for (i, byte) in field.iter().enumerate() {
            let shift = if little { 8 * i } else { 8 * (size - 1 - i) };
            value |= u64::from(*byte) << shift;
        }
        Some(value)
    };
    let word = if is_64 { 8 } else { 4 };
    let (phoff_at, shoff_at, sizes_at) = if is_64 {
        (0x20, 0x28, 0x36)
    } else {
        (0x1c, 0x20, 0x2a)
    };
    let header = || -> Option<(u64, u64, u64, u64, u64, u64)> {
        Some((
            read(phoff_at, word)?,
            read(shoff_at, word)?,
            read(sizes_at, 2)?,
            read(sizes_at + 2, 2)?,
            read(sizes_at + 4, 2)?,
            read(sizes_at + 6, 2)?,
        ))
    };
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) =
        header().ok_or_else(|| incomplete("the ELF header"))?;
    if phoff + phentsize * phnum > len {
        return Err(incomplete("the program header table"));
    }
    if shoff + shentsize * shnum > len {
        return Err(incomplete("the section header table"));
    }
    for index in 0..phnum {
        let entry = phoff + index * phentsize;
        let (offset_at, filesz_at) = if is_64 {
            (entry + 8, entry + 32)
        } else {
            (entry + 4, entry + 16)
        };
        let kind = read(entry, 4).ok_or_else(|| incomplete("a program header"))?;
        let offset = read(offset_at, word).ok_or_else(|| incomplete("a program header"))?;
        let filesz = read(filesz_at, word).ok_or_else(|| incomplete("a program header"))?;
        const PT_LOAD: u64 = 1;
        if kind == PT_LOAD && offset.saturating_add(filesz) > len {
            return Err(incomplete("a loadable segment"));
        }
    }
    Ok(())
}

/// Turns an `abi_stable` loading error into one line (DESIGN fact 6).
fn describe(error: &LibraryError) -> OpenError {
    match error {
        LibraryError::OpenError { err, .. } => OpenError::new(format!(
            "not a loadable library: {}",
            last_clause(&err.to_string())
        )),
        LibraryError::GetSymbolError { .. } => OpenError::new(
            "not an agent-host plugin: it exports no plugin module (build it with agent_host_plugin_sdk::export_plugin!)",
        ),
        LibraryError::InvalidAbiHeader(header) => OpenError::new(format!(
            "built with an incompatible abi_stable ({header:?}): rebuild the plugin against this host's agent-host-plugin-sdk"
        )),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => OpenError::new(format!(
            "built against plugin ABI {actual_version}, but this host speaks plugin ABI {expected_version}: rebuild the plugin"
        )),
        LibraryError::AbiInstability(report) => {
            let full = report.to_string();
            OpenError {
                cause: format!(
                    "incompatible plugin ABI layout ({}): rebuild the plugin against this host's agent-host-plugin-sdk; -v shows the full report",
                    first_mismatch(&full)
                ),
                detail: Some(full),
            }
        }
        LibraryError::Many(errors) => match errors.first() {
            Some(first) => describe(first),
            None => OpenError::new("the library failed an unnamed check"),
        },
        other => {
            let full = other.to_string();
            OpenError {
                cause: format!("rejected by the ABI check: {}", first_line(&full)),
                detail: Some(full),
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(text)
}

/// `dlopen` messages start with the path, which the report already names.
fn last_clause(text: &str) -> String {
    let line = first_line(text);
    line.rsplit(": ").next().unwrap_or(line).trim().to_string()
}

/// Picks the first mismatch out of abi_stable's layout report: the type
/// whose layout differs, what differs, and the expected and found values.
fn first_mismatch(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let type_name = lines
        .iter()
        .rposition(|l| *l == "Layout of expected type:")
        .and_then(|i| lines[i..].iter().find_map(|l| l.strip_prefix("type:")))
        .map(str::trim);
    let error = lines.iter().position(|l| l.starts_with("Error:")).map(|i| {
        let what = lines[i].trim_start_matches("Error:").trim();
        let value_after = |label: &str| {
            lines[i..]
                .iter()
                .position(|l| *l == label)
                .and_then(|j| lines[i + j + 1..].iter().find(|l| !l.is_empty()))
                .copied()
        };
        match (value_after("Expected:"), value_after("Found:")) {
            (Some(expected), Some(found)) => format!("{what}: expected {expected}, found {found}"),
            _ => what.to_string(),
        }
    });
    let summary = match (type_name, error) {
        (Some(name), Some(error)) => format!("{name}: {error}"),
        (None, Some(error)) => error,
        (Some(name), None) => format!("{name} differs"),
        (None, None) => first_line(report).to_string(),
    };
    const MAX: usize = 200;
    if summary.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| summary.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}...", &summary[..cut])
    } else {
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_parse() {
        assert_eq!(major_of("1.0.0"), Some(1));
        assert_eq!(major_of("2.3.4"), Some(2));
        assert_eq!(major_of("x"), None);
        assert_eq!(host_abi_major(), 1);
    }

    #[test]
    fn the_layout_report_condenses_to_type_and_difference() {
        let report = "Compared <this>:\n  type:PrefixRef\n2 error(s)inside:\n  field_name:0\n\
Layout of expected type:\n    --- Type Layout ---\n    type:MessageView<'a>\n    size:48\n\
Error:incompatible type size\nExpected:\n    48\nFound:\n    56\n";
        assert_eq!(
            first_mismatch(report),
            "MessageView<'a>: incompatible type size: expected 48, found 56"
        );
    }

    #[test]
    fn open_errors_lose_the_path_prefix() {
        assert_eq!(
            last_clause("/tmp/x.so: file too short"),
            "file too short".to_string()
        );
    }
}
