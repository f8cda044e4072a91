//! Opening one plugin file: header checks, private copy, `dlopen`, ABI
//! checks, manifests.
//!
//! `libloading` opens the library (with the flags in [`crate::sys`]), and
//! `abi_stable` checks what it found: its ABI header, then the full layout
//! of the plugin interface. The root module is taken from each library's own
//! header, never through `RootModule::load_from*`, which keeps one library
//! per root-module type for the whole process and would hand the second
//! plugin file the first one's module.

use super::{image, OpenError};
use crate::load::private_copy::{ShadowCopy, ShadowDir};
use crate::regular_file;
use crate::sys;
use crate::trust::TrustPolicy;
use agent_host_plugin_abi::abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility_with_globals, CheckingGlobals,
};
use agent_host_plugin_abi::abi_stable::library::{AbiHeaderRef, LibHeader, LibraryError};
use agent_host_plugin_abi::abi_stable::StableAbi;
use agent_host_plugin_abi::{PluginModuleRef, ROOT_MODULE_SYMBOL};
use agent_host_plugin_sdk::manifest::{parse_manifests, Manifest, ManifestsError};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The SHA-256 of the loaded bytes (empty when the copy was made by
    /// another process: a worker's).
    pub sha256: String,
}

/// A private copy the trust policy admitted. Clones share the copy, which
/// is removed from disk when the last of them is dropped (a library mapped
/// from it stays mapped).
#[derive(Debug, Clone)]
pub struct PrivateCopy {
    /// The copy's path, in the host's private folder.
    pub path: PathBuf,
    /// The SHA-256 of its bytes.
    pub sha256: String,
    copy: Arc<ShadowCopy>,
}

impl PrivateCopy {
    /// The copy's file, open read-only; valid while this value or a clone
    /// of it lives. Its mode lets another user read it through this
    /// descriptor (`/proc/self/fd/N`), never by its path, which is in a
    /// folder only the host's user can open.
    pub fn file(&self) -> &std::fs::File {
        self.copy.file()
    }
}

/// The ABI major version this host accepts.
pub fn host_abi_major() -> u64 {
    major_of(agent_host_plugin_abi::ABI_VERSION).unwrap_or(0)
}

/// The ABI minor version this host speaks: it loads plugins built against
/// any minor version of its major (see `agent-host-plugin-abi`).
pub fn host_abi_minor() -> u64 {
    minor_of(agent_host_plugin_abi::ABI_VERSION).unwrap_or(0)
}

fn major_of(version: &str) -> Option<u64> {
    version.split('.').next()?.trim().parse().ok()
}

fn minor_of(version: &str) -> Option<u64> {
    version.split('.').nth(1)?.trim().parse().ok()
}

/// Opens `file` from a fresh private copy and checks it. The file's
/// headers are checked before it is read whole (so a huge or foreign file
/// is never copied), its bytes by the trust policy, and the copy's headers
/// again before it is mapped. The copy is removed once mapped (or refused):
/// the mapping does not need the file.
pub fn open(
    file: &Path,
    shadow: &ShadowDir,
    max_bytes: u64,
    trust: &TrustPolicy,
) -> Result<OpenedLibrary, OpenError> {
    let copy = private_copy(file, shadow, max_bytes, trust)?;
    open_in_host(file, &copy, max_bytes)
    // The copy is dropped here: removed from disk, unless a clone lives.
}

/// Opens `copy`, the private copy of `file`, in the host and checks it;
/// the library's SHA-256 is the copy's.
pub fn open_in_host(
    file: &Path,
    copy: &PrivateCopy,
    max_bytes: u64,
) -> Result<OpenedLibrary, OpenError> {
    // The path is in a folder only this user can open: nobody else can
    // have put another file there; checked all the same, since a wrong
    // file here would be mapped unchecked.
    if !sys::is_same_file(copy.file(), &copy.path) {
        return Err(OpenError::CopyReplaced {
            copy: copy.path.clone(),
        });
    }
    let mut library = open_copy(file, &copy.path, max_bytes, RunsIn::Host)?;
    library.sha256 = copy.sha256.clone();
    Ok(library)
}

/// Which process a library's code is opened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsIn {
    /// The host's own: a library built with `panic = "abort"` is refused
    /// before it is mapped, since its first panic would end the host.
    Host,
    /// A worker process of its own, where a panic ends only the worker.
    Worker,
}

/// Checks `file`'s headers, reads it once into memory, has `trust` check
/// those bytes, and writes them to a fresh private copy: the bytes checked
/// are the bytes written, in a folder only this process's user can open,
/// to a file nobody can write, so a file swapped after the check cannot
/// slip through. Nothing is mapped or run. `file` must be a regular file:
/// it is opened without blocking and never read past `max_bytes`.
pub fn private_copy(
    file: &Path,
    shadow: &ShadowDir,
    max_bytes: u64,
    trust: &TrustPolicy,
) -> Result<PrivateCopy, OpenError> {
    let io = |doing: &'static str| {
        move |e: std::io::Error| OpenError::Io {
            doing,
            cause: e.into(),
        }
    };
    let mut source = regular_file::open(file).map_err(io("cannot read the file"))?;
    image::check_open(&source, max_bytes)?;
    let bytes = source
        .seek(SeekFrom::Start(0))
        .and_then(|_| regular_file::read_open(&mut source, max_bytes))
        .map_err(io("cannot read the file"))?;
    drop(source);
    let sha256 = trust.admit(file, &bytes).map_err(OpenError::Refused)?;
    let copy = shadow
        .write_copy(file, &bytes)
        .map_err(io("cannot make a private copy"))?;
    Ok(PrivateCopy {
        path: copy.path().to_path_buf(),
        sha256,
        copy: Arc::new(copy),
    })
}

/// Opens `copy`, a private copy of `file` made by the host, and checks it.
/// A worker process opens its plugin this way: the host made the copy, and
/// the worker's sandbox lets it read nothing else.
pub fn open_copy(
    file: &Path,
    copy: &Path,
    max_bytes: u64,
    runs_in: RunsIn,
) -> Result<OpenedLibrary, OpenError> {
    match runs_in {
        RunsIn::Host => {
            if image::check_with_panic_strategy(copy, max_bytes)? == image::PanicStrategy::Abort {
                return Err(OpenError::AbortsOnPanic);
            }
        }
        RunsIn::Worker => image::check(copy, max_bytes)?,
    }
    let image_bytes = std::fs::metadata(copy).map(|m| m.len()).unwrap_or(0);
    let library = sys::open_library(copy).map_err(|error| OpenError::Dlopen {
        reason: last_clause(&error.to_string()),
    })?;
    let symbol = format!("{ROOT_MODULE_SYMBOL}\0");
    // SAFETY: the symbol is the one `export_plugin!` defines: a `LibHeader`
    // static that starts with its `AbiHeader`, which is what an
    // `AbiHeaderRef` points to (abi_stable reads the symbol the same way).
    // The library is never unloaded (it is leaked below), so the `'static`
    // references in the header stay valid.
    let header: Option<AbiHeaderRef> = unsafe {
        library
            .get::<AbiHeaderRef>(symbol.as_bytes())
            .ok()
            .map(|symbol| *symbol)
    };
    // Plugin code, and the values it made, stay in use as long as the host
    // runs: libraries are never unloaded.
    std::mem::forget(library);
    let header = header
        .ok_or(OpenError::NotAPlugin)?
        .upgrade()
        .map_err(|e| describe(&e))?;

    let plugin_version = header.version_strings().version;
    let plugin_major = major_of(plugin_version.as_str());
    if plugin_major != Some(host_abi_major()) {
        return Err(OpenError::AbiVersion {
            plugin: plugin_version.as_str().to_string(),
            host: host_abi_major(),
        });
    }
    let abi_minor = minor_of(plugin_version.as_str()).unwrap_or(0);
    let module = if abi_minor < host_abi_minor() {
        take_older_module(header)?
    } else {
        // The same minor or a newer one: `abi_stable`'s own check, in which
        // the library may extend the host's layout; the host never calls
        // what it does not know.
        header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| describe(&e))?
    };
    if abi_minor > host_abi_minor() {
        tracing::warn!(
            file = %file.display(),
            "built against plugin ABI {plugin_version}, newer than this host's {}: it runs without the entry points added after {}.{} (this host does not know them, and its plugins' calls to newer host callbacks answer 'not found')",
            agent_host_plugin_abi::ABI_VERSION,
            host_abi_major(),
            host_abi_minor(),
        );
    }

    let json = (module.manifests())()
        .into_result()
        .map_err(|e| OpenError::Manifest {
            cause: e.message.into_string(),
        })?;
    let manifests = parse_manifests(json.as_str()).map_err(|error| match error {
        ManifestsError::UnknownFields(unknown) => OpenError::NewerManifest(unknown),
        ManifestsError::Invalid(cause) => OpenError::Manifest {
            cause: format!("not valid: {cause}"),
        },
    })?;
    if manifests.is_empty() {
        return Err(OpenError::NoPlugins);
    }
    Ok(OpenedLibrary {
        file: file.to_path_buf(),
        module,
        manifests,
        image_bytes,
        sha256: String::new(),
    })
}

/// The root module of a library built against an older ABI minor version
/// than this host's. `abi_stable`'s own check takes the loader's
/// layout as the expected one and refuses a library whose function tables
/// are shorter, which is what an older plugin's are: here the library's
/// layout is the expected one and the host's must extend it (the same
/// check, the other way round). Then the module is taken without the
/// check in the other direction. Entries the library lacks are absent
/// from its tables, and the host's calls of them run their default bodies.
fn take_older_module(header: &LibHeader) -> Result<PluginModuleRef, OpenError> {
    let library_layout = header.layout().ok_or_else(|| OpenError::Rejected {
        first_line: "the library carries no layout to check".into(),
        report: String::new(),
    })?;
    // Checked with globals of its own: `abi_stable` records every prefix
    // type it checks in process-wide tables, in which the shorter tables of
    // an older library, checked in this direction, would then stand against
    // every library of the host's own minor version.
    check_layout_compatibility_with_globals(
        library_layout,
        <PluginModuleRef as StableAbi>::LAYOUT,
        &CheckingGlobals::new(),
    )
    .map_err(|errors| {
        let report = errors.to_string();
        OpenError::Layout {
            first_mismatch: first_mismatch(&report),
            report,
        }
    })?;
    // SAFETY: the check above proved the host's layout of the root module,
    // and of every type reachable from it, compatible with the library's:
    // equal up to the library's last field, the host's possibly longer.
    // Fields past the library's end are read through prefix-type accessors,
    // which consult the library's own field count and never read them. The
    // version check still runs inside.
    unsafe { header.init_root_module_with_unchecked_layout::<PluginModuleRef>() }
        .map_err(|e| describe(&e))
}

/// Turns an `abi_stable` loading error into one value with one readable
/// line (its layout reports run to thousands of lines; they are kept as the
/// error's detail).
fn describe(error: &LibraryError) -> OpenError {
    match error {
        LibraryError::OpenError { err, .. } => OpenError::Dlopen {
            reason: last_clause(&err.to_string()),
        },
        LibraryError::GetSymbolError { .. } => OpenError::NotAPlugin,
        LibraryError::InvalidAbiHeader(header) => OpenError::AbiStable {
            header: format!("{header:?}"),
        },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => OpenError::AbiVersion {
            plugin: actual_version.to_string(),
            host: expected_version.major.into(),
        },
        LibraryError::AbiInstability(report) => {
            let report = report.to_string();
            OpenError::Layout {
                first_mismatch: first_mismatch(&report),
                report,
            }
        }
        LibraryError::Many(errors) => match errors.first() {
            Some(first) => describe(first),
            None => OpenError::Rejected {
                first_line: "the library failed an unnamed check".into(),
                report: String::new(),
            },
        },
        other => {
            let report = other.to_string();
            OpenError::Rejected {
                first_line: first_line(&report).to_string(),
                report,
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
        assert_eq!(minor_of("1.1.0"), Some(1));
        assert_eq!(minor_of("1"), None);
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
