//! Why a plugin did not load: the file could not be opened, or a step of
//! the plugin's entry into service failed. The file and the plugin are
//! named once, by [`LoadFailure`](super::report::LoadFailure); the error
//! says what is wrong and what to do.

use super::check::ManifestCheckError;
use crate::config::ConfigError;
use crate::dependencies::Unresolved;
use crate::load::OpenError;
use crate::plugin::CallError;
use crate::registry::ServiceStartError;
use std::fmt;
use std::path::PathBuf;

/// Why a plugin (or a whole file) did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The file could not be opened.
    Open(OpenError),
    /// The manifest failed validation.
    Manifest(ManifestCheckError),
    /// Several files hold a plugin of this name; none of them loads.
    Duplicate {
        /// Every file that holds it.
        files: Vec<PathBuf>,
    },
    /// A plugin of this name is already loaded from another file.
    AlreadyLoaded {
        /// The file the loaded plugin came from.
        from: PathBuf,
    },
    /// A dependency is missing, unmet, cyclic or failed.
    Dependencies(Unresolved),
    /// Its config is invalid.
    Config(ConfigError),
    /// The plugin's constructor failed.
    Create(String),
    /// `on_load` failed.
    OnLoad(CallError),
    /// A service failed to register or start.
    StartService {
        /// The service.
        service: String,
        /// Why.
        cause: ServiceStartError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open(error) => error.fmt(f),
            LoadError::Manifest(error) => error.fmt(f),
            LoadError::Duplicate { files } => {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                write!(
                    f,
                    "duplicate plugin name (found in {}): none of them is loaded; remove all but one",
                    files.join(", ")
                )
            }
            LoadError::AlreadyLoaded { from } => write!(
                f,
                "duplicate plugin name: it is already loaded from {}",
                from.display()
            ),
            LoadError::Dependencies(unresolved) => unresolved.fmt(f),
            LoadError::Config(error) => error.fmt(f),
            LoadError::Create(cause) => write!(f, "create: {cause}"),
            LoadError::OnLoad(error) => write!(f, "on_load: {}", error.message),
            LoadError::StartService { service, cause } => {
                write!(f, "service '{service}' failed to start: {cause}")
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Open(error) => Some(error),
            LoadError::Manifest(error) => Some(error),
            LoadError::Config(error) => Some(error),
            LoadError::OnLoad(error) => Some(error),
            LoadError::StartService { cause, .. } => Some(cause),
            _ => None,
        }
    }
}
