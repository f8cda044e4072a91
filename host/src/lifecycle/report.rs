//! What loading a plugin folder produced: the plugins that loaded, and one
//! line for every one that did not.

use super::error::LoadError;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// The step at which a plugin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Copying, `dlopen`, ABI or layout check, reading the manifests.
    Open,
    /// The manifest failed validation.
    Manifest,
    /// Another file holds a plugin of the same name.
    Duplicate,
    /// A dependency is missing, unmet, cyclic or failed.
    Dependencies,
    /// The plugin's constructor failed.
    Create,
    /// Its config is invalid (schema, missing secret).
    Config,
    /// `on_load` failed.
    OnLoad,
    /// A service failed to register or start.
    StartService,
}

/// A plugin that loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadedPlugin {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its description.
    pub description: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Position in the load order (0 first).
    pub order: usize,
    /// Its dependencies as written in the manifest (optional ones marked `?`).
    pub dependencies: Vec<String>,
    /// Action names.
    pub actions: Vec<String>,
    /// Provider names.
    pub providers: Vec<String>,
    /// Evaluator names.
    pub evaluators: Vec<String>,
    /// Service names.
    pub services: Vec<String>,
    /// Bytes of library image it keeps mapped.
    pub image_bytes: u64,
    /// Whether it is lazy (`lazy_plugins`): checked, and started only when
    /// first needed, unless a plugin that depends on it started it.
    pub lazy: bool,
}

/// A plugin (or file) that did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// The file in the plugin folder.
    pub file: PathBuf,
    /// The plugin's name, when it is known.
    pub plugin: Option<String>,
    /// Why it did not load.
    pub error: Box<LoadError>,
}

impl LoadFailure {
    /// The step at which it failed.
    pub fn stage(&self) -> Stage {
        match &*self.error {
            LoadError::Open(_) => Stage::Open,
            LoadError::Manifest(_) => Stage::Manifest,
            LoadError::Duplicate { .. } | LoadError::AlreadyLoaded { .. } => Stage::Duplicate,
            LoadError::Dependencies(_) => Stage::Dependencies,
            LoadError::Config(_) => Stage::Config,
            LoadError::Create(_) => Stage::Create,
            LoadError::OnLoad(_) => Stage::OnLoad,
            LoadError::StartService { .. } => Stage::StartService,
        }
    }

    /// One line saying why, without the file and plugin names.
    pub fn cause(&self) -> String {
        self.error.to_string()
    }

    /// The full diagnostic, when the cause condenses a long one.
    pub fn detail(&self) -> Option<&str> {
        match &*self.error {
            LoadError::Open(error) => error.detail(),
            _ => None,
        }
    }
}

impl Serialize for LoadFailure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let detail = self.detail();
        let mut fields = serializer.serialize_struct("LoadFailure", 5)?;
        fields.serialize_field("file", &self.file)?;
        fields.serialize_field("plugin", &self.plugin)?;
        fields.serialize_field("stage", &self.stage())?;
        fields.serialize_field("cause", &self.cause())?;
        if let Some(detail) = detail {
            fields.serialize_field("detail", detail)?;
        } else {
            fields.skip_field("detail")?;
        }
        fields.end()
    }
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(plugin) = &self.plugin {
            write!(f, "plugin '{plugin}': ")?;
        }
        self.error.fmt(f)
    }
}

impl std::error::Error for LoadFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// The outcome of loading a folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// Plugins that loaded, in load order.
    pub loaded: Vec<LoadedPlugin>,
    /// Plugins and files that did not.
    pub failures: Vec<LoadFailure>,
    /// Things worth knowing that did not stop a plugin.
    pub warnings: Vec<String>,
    /// Config sections and grants for plugins that are not in the folder
    /// (`AgentConfig::unknown_plugins`): ignored when serving, a failure of
    /// `check`.
    pub unknown_config: Vec<String>,
}

impl LoadReport {
    /// Whether every file loaded.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure of a plugin by name, if it failed.
    pub fn failure_of(&self, plugin: &str) -> Option<&LoadFailure> {
        self.failures
            .iter()
            .find(|f| f.plugin.as_deref() == Some(plugin))
    }

    /// Whether a plugin of that name loaded.
    pub fn loaded(&self, plugin: &str) -> bool {
        self.loaded.iter().any(|p| p.name == plugin)
    }
}

/// An error during shutdown (a service that failed to stop, an `on_unload`
/// that failed): reported, never stopping the shutdown of the rest.
pub type ShutdownError = crate::plugin::CallError;
