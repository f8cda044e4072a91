//! What loading a plugin folder produced: the plugins that loaded, and one
//! line for every one that did not.

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
}

/// A plugin (or file) that did not load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadFailure {
    /// The file in the plugin folder.
    pub file: PathBuf,
    /// The plugin's name, when it is known.
    pub plugin: Option<String>,
    /// Where it failed.
    pub stage: Stage,
    /// One line saying why.
    pub cause: String,
    /// The full diagnostic, when the cause condenses a long one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(plugin) = &self.plugin {
            write!(f, "plugin '{plugin}': ")?;
        }
        f.write_str(&self.cause)
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
