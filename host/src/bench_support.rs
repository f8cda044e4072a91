//! Entry points for the benchmarks (the `agent-host-benches` package in
//! `benches/`), which time single steps that the public API only offers as
//! part of a bigger one. Not a public API: hidden from the docs, and free to
//! change with the code it measures.

use crate::load::library;
use crate::load::private_copy::{CopyGauges, ShadowDir};
use crate::load::OpenError;
use crate::permissions::Permissions;
use crate::plugin::{MessageRef, PluginSource};
use crate::registry::callbacks::PluginCallbacks;
use crate::registry::{LivePlugin, Registry};
use std::path::Path;
use std::sync::Arc;

/// Opens plugin files the way the loader does, one step at a time.
pub struct LoadProbe {
    registry: Arc<Registry>,
    shadow: ShadowDir,
    _runtime: tokio::runtime::Runtime,
}

impl LoadProbe {
    /// A probe with a registry and a private-copy folder of its own.
    pub fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Runtime::new()?;
        Ok(Self {
            registry: Registry::new(runtime.handle().clone(), Default::default()),
            shadow: ShadowDir::create(CopyGauges::default())?,
            _runtime: runtime,
        })
    }

    /// Private copy, `dlopen`, ABI and layout check, manifests, and the
    /// creation of the file's first plugin; returns that plugin's name.
    pub fn open_and_create(&self, file: &Path) -> Result<String, ProbeError> {
        let opened = library::open(
            file,
            &self.shadow,
            u64::MAX,
            &crate::trust::TrustPolicy::open(),
        )?;
        let name = opened
            .manifests()
            .first()
            .map(|m| m.name.clone())
            .ok_or(ProbeError::NoPlugin)?;
        let callbacks = PluginCallbacks::boxed(
            &name,
            self.registry.next_generation(),
            Permissions::default(),
            Arc::new(serde_json::json!({})),
            &self.registry,
        );
        let context = crate::plugin::CreateContext {
            permissions: &[],
            announce: self.registry.announcer(),
            lifecycle_timeout: std::time::Duration::from_millis(
                self.registry.settings.lifecycle_timeout_ms,
            ),
            grants: &|_| Vec::new(),
            places: &self.registry.worker_places,
        };
        opened
            .create(0, callbacks, &context)
            .map_err(|e| ProbeError::Create(e.message().to_string()))?;
        Ok(name)
    }
}

/// Why [`LoadProbe::open_and_create`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file could not be opened as a plugin library.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The library exports no plugin.
    #[error("the library exports no plugin")]
    NoPlugin,
    /// The plugin's constructor failed, with the plugin's own message.
    #[error("create: {0}")]
    Create(String),
}

/// Calls one loaded plugin's `validate` directly, as the pipeline does.
pub struct ValidateProbe {
    pub(crate) plugin: Arc<LivePlugin>,
}

impl ValidateProbe {
    /// Whether action `action` accepts the message (an error counts as no).
    #[inline]
    pub fn validate(&self, action: u32, id: &str, text: &str, context_json: &str) -> bool {
        let message = MessageRef {
            id,
            text,
            context_json,
        };
        matches!(self.plugin.instance.validate(action, message), Ok(true))
    }
}
