//! The operator's `[trust]` table: which plugin files the host may load.
//!
//! ```toml
//! [trust]
//! lock = "plugins.lock"                   # load only files pinned here (`agent-host lock`)
//! public_keys = ["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"]
//! public_key_files = ["keys/release.pub"] # minisign .pub files
//! ```
//!
//! Relative paths are relative to the config file's folder. With a lock, a
//! file whose SHA-256 is not pinned is refused; with keys, a file without a
//! valid `.minisig` signature by one of them is refused. Both may be set.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The `[trust]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSettings {
    /// The lock file, if plugin files must be pinned.
    pub lock: Option<PathBuf>,
    /// Trusted minisign public keys, in base64 (`RWQ...`).
    pub public_keys: Vec<String>,
    /// Trusted minisign public key files (`.pub`).
    pub public_key_files: Vec<PathBuf>,
}

impl TrustSettings {
    /// Whether any check is configured.
    pub fn is_configured(&self) -> bool {
        self.lock.is_some() || !self.public_keys.is_empty() || !self.public_key_files.is_empty()
    }

    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(lock) = self.lock.as_mut() {
            resolve(lock);
        }
        self.public_key_files.iter_mut().for_each(resolve);
    }
}
