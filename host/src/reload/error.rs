//! Why a hot reload was refused. The running generation keeps serving in
//! every case.

use crate::config::ConfigError;
use crate::dependencies::Misfit;
use crate::lifecycle::check::ManifestCheckError;
use crate::load::OpenError;
use crate::plugin::CallError;
use crate::registry::ServiceStartError;
use std::fmt;

/// Why a new build of a plugin was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// No plugin of that name is loaded.
    NotLoaded,
    /// The new build's file could not be opened.
    Open(OpenError),
    /// The new build holds no plugin of that name.
    NotInBuild {
        /// The plugins it holds.
        found: Vec<String>,
    },
    /// The new build's manifest failed validation.
    Manifest(ManifestCheckError),
    /// The new build does not fit among the loaded plugins.
    Dependencies(Misfit),
    /// The plugin's config is invalid for the new build.
    Config(ConfigError),
    /// The new build's constructor failed.
    Create(String),
    /// Calls were still in flight when the drain timeout passed.
    Drain {
        /// How many.
        in_flight: usize,
        /// The drain timeout in milliseconds.
        timeout_ms: u64,
    },
    /// The old generation could not export its state.
    ExportState(CallError),
    /// The new generation could not import the old one's state.
    ImportState(CallError),
    /// The new generation's `on_load` failed.
    OnLoad(CallError),
    /// A service of the new generation failed to start.
    StartService {
        /// The service.
        service: String,
        /// Why.
        cause: ServiceStartError,
    },
    /// The new build would take the library images the plugin keeps
    /// mapped in the host past `host.mapped_bytes_limit`.
    MappedLimit {
        /// The plugin.
        plugin: String,
        /// The bytes its earlier builds keep mapped.
        mapped: u64,
        /// The limit.
        limit: u64,
    },
}

impl ReloadError {
    /// Whether trying again later may succeed: the file is being written.
    pub fn is_transient(&self) -> bool {
        matches!(self, ReloadError::Open(error) if error.is_transient())
    }
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NotLoaded => f.write_str("no plugin of that name is loaded"),
            ReloadError::Open(error) => error.fmt(f),
            ReloadError::NotInBuild { found } => write!(
                f,
                "the new build holds no plugin of that name (it holds: {})",
                found.join(", ")
            ),
            ReloadError::Manifest(error) => error.fmt(f),
            ReloadError::Dependencies(misfit) => misfit.fmt(f),
            ReloadError::Config(error) => error.fmt(f),
            ReloadError::Create(cause) => write!(f, "create: {cause}"),
            ReloadError::Drain {
                in_flight,
                timeout_ms,
            } => write!(
                f,
                "{in_flight} call(s) still in flight after the {timeout_ms} ms drain timeout"
            ),
            ReloadError::ExportState(error) => write!(f, "export_state: {}", error.message),
            ReloadError::ImportState(error) => write!(f, "import_state: {}", error.message),
            ReloadError::OnLoad(error) => write!(f, "on_load: {}", error.message),
            ReloadError::StartService { service, cause } => {
                write!(f, "service '{service}' failed to start: {cause}")
            }
            ReloadError::MappedLimit {
                plugin,
                mapped,
                limit,
            } => write!(
                f,
                "its earlier builds keep {mapped} bytes mapped in the host, and this one would pass host.mapped_bytes_limit ({limit} bytes): an in-process library is never unmapped; restart the host, or run the plugin isolated ([isolation] process = [\"{plugin}\"]), whose reloads give their memory back"
            ),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Open(error) => Some(error),
            ReloadError::Manifest(error) => Some(error),
            ReloadError::Dependencies(error) => Some(error),
            ReloadError::Config(error) => Some(error),
            ReloadError::ExportState(error)
            | ReloadError::ImportState(error)
            | ReloadError::OnLoad(error) => Some(error),
            ReloadError::StartService { cause, .. } => Some(cause),
            _ => None,
        }
    }
}
