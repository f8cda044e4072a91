//! A plugin whose library is loaded into this process: a call goes to the
//! loader's in-process dispatch (`load/dispatch.rs`), a function call
//! through the frozen FFI surface, and the host's callbacks reach the
//! plugin as an FFI trait object (`load/ffi_host.rs`).
//!
//! What it protects against: a panic in plugin code (the SDK inside the
//! plugin turns it into an error value before it reaches the boundary).
//! What it cannot: an abort, a segfault, a stack overflow or a call that
//! never returns, which all happen inside this process.

use super::{Backend, CreateContext, Failure, MessageRef, PluginSource};
use crate::call::{Answer, Call};
use crate::load::dispatch::{self, dispatch};
use crate::load::library::OpenedLibrary;
use crate::prefetch::prefetch;
use agent_host_plugin_abi::{CallControl, PluginBox};
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::{Evaluation, Host};
use std::path::Path;

impl PluginSource for OpenedLibrary {
    fn file(&self) -> &Path {
        &self.file
    }

    fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn create(
        &self,
        index: u32,
        host: Box<dyn Host>,
        _context: &CreateContext<'_>,
    ) -> Result<Box<dyn Backend>, Failure> {
        let object = self.instantiate(index, host)?;
        Ok(Box::new(InProcess { object }))
    }
}

/// One plugin instance of a loaded library.
struct InProcess {
    object: PluginBox,
}

impl Backend for InProcess {
    #[inline]
    fn call(&self, call: Call<'_>, control: Option<&CallControl>) -> Result<Answer, Failure> {
        dispatch(&self.object, call, control)
    }

    #[inline]
    fn validate(&self, action: u32, message: MessageRef<'_>) -> Result<bool, Failure> {
        dispatch::validate(&self.object, action, message)
    }

    #[inline]
    fn evaluate(
        &self,
        evaluator: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, Failure> {
        dispatch::evaluate(&self.object, evaluator, message, control)
    }

    #[inline]
    fn warm(&self) {
        prefetch(self.object.obj.sabi_erased_ref().as_ptr());
    }

    #[inline]
    fn validate_each(
        &self,
        actions: &[u32],
        message: MessageRef<'_>,
        answer: &mut dyn FnMut(u32, Result<bool, Failure>),
    ) {
        dispatch::validate_each(&self.object, actions, message, answer)
    }

    fn provide_each(
        &self,
        providers: &[u32],
        message: MessageRef<'_>,
        control: &CallControl,
        answer: &mut dyn FnMut(u32, Result<String, Failure>),
    ) {
        dispatch::provide_each(&self.object, providers, message, control, answer)
    }
}
