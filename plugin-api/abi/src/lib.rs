//! The binary contract between `agent-host` and its plugins.
//!
//! This crate is for one thing: the `#[repr(C)]` types and function tables that
//! cross the boundary between the host and a plugin's dynamic library, checked
//! by `abi_stable` when the library is loaded.
//!
//! It must never grow behaviour, convenience or anything that evolves with the
//! product, and never change what it has published: its types are frozen,
//! its function tables only grow at their end, by the rule below, and this
//! crate's version changes only with its layout. Anything else extensible
//! travels as data (JSON text) or as a string-keyed call
//! ([`PluginApi::invoke`], [`HostApi::invoke`]).
//!
//! Plugin authors never use this crate directly; they use
//! `agent-host-plugin-sdk`.
//!
//! # Compatibility rule: the ABI grows by minor versions
//!
//! [`ABI_VERSION`] is this crate's version, written into every plugin's
//! library header. A host of ABI `M.n` loads a plugin built against `M.k`:
//!
//! * **`k <= n`, an older or equal minor.** The host checks the layouts in
//!   the direction that fits an older library: the plugin's layout is the
//!   expected one, the host's may extend it. Entry points added after
//!   `M.k` are absent from the plugin's function tables; the host calls
//!   their default bodies, written here, which behave as `M.k` did (the
//!   batched entries of 1.1 call the per-entry ones in a loop).
//! * **`k > n`, a newer minor.** `abi_stable`'s own check (the library may
//!   extend the host's layout) admits it, and the plugin runs without what
//!   the host lacks: the host never calls the entries added after `M.n`,
//!   and a plugin's call to a host callback added after `M.n` runs that
//!   callback's default body, which answers [`codes::NOT_FOUND`].
//! * **Another major**: refused, with both versions named.
//!
//! What a minor version may add: methods at the end of [`PluginApi`] and
//! [`HostApi`] (after the last one, each with a default body that behaves
//! as the versions before it did), fields at the end of [`PluginModule`]
//! (read as `Option`s), codes in [`codes`], requests in [`requests`], keys
//! in the JSON this crate's values carry. What needs a major version:
//! removing, renaming, reordering or retyping anything, adding a field to a
//! `#[repr(C)]` struct that is not a prefix type ([`MessageView`],
//! [`EvaluationView`], [`FfiError`], [`CallControl`]), or a method without
//! a default body. A major version rejects every older plugin with one
//! readable line telling the operator to rebuild it.
//!
//! Versions: 1.0 (the first release), 1.1 (batched entries:
//! [`PluginApi::validate_each`], [`PluginApi::evaluate_each`],
//! [`PluginApi::provide_each`]).

// `#[sabi_trait]` expands to impls nested in consts, which this lint flags.
#![allow(non_local_definitions)]
#![warn(missing_docs)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RSliceMut, RStr, RString, RVec},
    StableAbi,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use abi_stable;

/// The version of this ABI, as written into every plugin's library header.
#[cfg(not(agent_host_abi_fixture = "newer_minor"))]
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of this ABI, as written into every plugin's library header:
/// a minor version no host has yet, for the host's tests of a plugin built
/// against a newer minor. Only a build with
/// `--cfg agent_host_abi_fixture="newer_minor"` in its rustflags has it
/// (test support passes that flag for one fixture plugin only). Its tables
/// are this version's (`#[sabi_trait]` takes no `cfg` on a method), which a
/// newer minor's extend.
#[cfg(agent_host_abi_fixture = "newer_minor")]
pub const ABI_VERSION: &str = "1.99.0";

/// Error codes carried by [`FfiError::code`].
///
/// Codes are plain numbers rather than an enum so that a new code never
/// changes the layout; an unknown code is treated as [`codes::FAILED`].
pub mod codes {
    /// The plugin (or host) reported an ordinary failure.
    pub const FAILED: u32 = 1;
    /// Plugin code panicked; the SDK caught the panic at the boundary.
    pub const PANICKED: u32 = 2;
    /// A permission check refused the call.
    pub const PERMISSION_DENIED: u32 = 3;
    /// A named thing (service, method, component, config key) does not exist.
    pub const NOT_FOUND: u32 = 4;
    /// The input could not be understood (malformed JSON, wrong arguments).
    pub const INVALID_INPUT: u32 = 5;
    /// The call was cancelled or its deadline passed.
    pub const CANCELLED: u32 = 6;
    /// The target exists but cannot serve now (stopped service, quarantined plugin).
    pub const UNAVAILABLE: u32 = 7;
}

/// The string-keyed requests a host answers through [`HostApi::invoke`]
/// (features added after the layout froze).
pub mod requests {
    /// The call into the plugin that the calling thread is in, for entry
    /// points whose signature carries no [`CallControl`](crate::CallControl)
    /// (event handlers, timers): the answer is
    /// `{"deadline_unix_ms": N, "cancelled": B}`, or `null` outside one.
    pub const CURRENT_CALL: &str = "call:current";
    /// Who emitted the event whose handler the calling thread runs: the
    /// answer is a plugin's name or `host` as a JSON string, or `null`
    /// outside an event handler.
    pub const EVENT_SOURCE: &str = "event:source";
    /// Name resolution by the host, for a plugin that may connect to a
    /// port (a sandboxed one has none of its own): the payload is
    /// `{"host": "example.org", "port": 443}`, the answer a JSON array of
    /// socket addresses (`["93.184.215.14:443", "[2606:2800::1]:443"]`).
    pub const RESOLVE: &str = "net:resolve";
}

/// An error crossing the boundary: a code from [`codes`] and a human message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct FfiError {
    /// One of [`codes`].
    pub code: u32,
    /// One line that says what went wrong.
    pub message: RString,
}

impl FfiError {
    /// Builds an error from a code and a message.
    pub fn new(code: u32, message: impl Into<RString>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The result type of every fallible call across the boundary.
pub type FfiResult<T> = RResult<T, FfiError>;

/// One message as a plugin sees it, borrowed from the host for one call.
///
/// `context_json` holds everything besides the text as one JSON object
/// (sender, the sender's permissions, metadata, the composed state), so new
/// context never changes this layout and the plugin parses it only if it
/// looks at it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct MessageView<'a> {
    /// The message id, unique per message.
    pub id: RStr<'a>,
    /// The message text.
    pub text: RStr<'a>,
    /// A JSON object with the rest of the message's context.
    pub context_json: RStr<'a>,
    /// A deliberately foreign field, for the host's rejection tests: only a
    /// build with `--cfg agent_host_abi_fixture="foreign_layout"` in its
    /// rustflags has it; the test support crate passes that flag for one
    /// fixture plugin only. No Cargo feature can turn it on.
    #[cfg(agent_host_abi_fixture = "foreign_layout")]
    pub fixture_foreign_field: u64,
}

/// An evaluator's verdict, as plain fields so that the hot path of scoring
/// every message parses no JSON for score and verdict.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct EvaluationView {
    /// Confidence from 0 to 1 (the host rejects anything else).
    pub score: f64,
    /// Whether the message passed.
    pub passed: bool,
    /// Extra facts as JSON; empty for none.
    pub metadata_json: RString,
}

/// Per-call control shared by the host and the plugin: a cancellation flag
/// the host raises on timeout, and the call's deadline.
#[repr(C)]
#[derive(StableAbi, Debug, Default)]
pub struct CallControl {
    cancelled: AtomicBool,
    deadline_unix_ms: AtomicU64,
}

impl CallControl {
    /// A control with the given deadline (milliseconds since the Unix epoch;
    /// 0 means none).
    pub fn with_deadline(deadline_unix_ms: u64) -> Self {
        Self {
            cancelled: AtomicBool::new(false),
            deadline_unix_ms: AtomicU64::new(deadline_unix_ms),
        }
    }
    /// Marks the call as cancelled; the plugin sees it on its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }
    /// Whether the host has cancelled the call.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
    /// The deadline in milliseconds since the Unix epoch, 0 for none.
    pub fn deadline_unix_ms(&self) -> u64 {
        self.deadline_unix_ms.load(Ordering::Acquire)
    }
}

/// Callbacks the host gives each plugin instance. Implemented by the host.
///
/// Every call is checked against the calling plugin's permissions by the host.
/// Every implementation must catch its own panics: a panic escaping a method
/// here ends the process.
#[sabi_trait]
pub trait HostApi: Send + Sync {
    /// Writes a log line into the host's log, tagged with the plugin's name.
    /// `level`: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    fn log(&self, level: u8, message: RStr<'_>);

    /// Reads the plugin's config: the whole object as JSON when `key` is
    /// empty, otherwise the JSON value at that top-level key.
    fn config(&self, key: RStr<'_>) -> FfiResult<RString>;

    /// Calls `method` on another plugin's service with JSON arguments; returns
    /// the JSON result.
    fn call_service(
        &self,
        service: RStr<'_>,
        method: RStr<'_>,
        args_json: RStr<'_>,
    ) -> FfiResult<RString>;

    /// Emits an event on the host's bus.
    fn emit(&self, event: RStr<'_>, payload_json: RStr<'_>) -> FfiResult<()>;

    /// Subscribes this plugin to an event; deliveries arrive through
    /// [`PluginApi::on_event`] with the returned subscription id.
    fn subscribe(&self, event: RStr<'_>) -> FfiResult<u64>;

    /// Ends a subscription made with [`HostApi::subscribe`].
    fn unsubscribe(&self, subscription: u64) -> FfiResult<()>;

    /// Pushes a fresh value for one of this plugin's providers (by index) into
    /// the host's cache.
    fn push_provider_value(&self, provider: u32, value_json: RStr<'_>) -> FfiResult<()>;

    /// Asks the host to call [`PluginApi::on_timer`] with `timer` after
    /// `after_ms`, then every `every_ms` if it is not 0. Setting an existing
    /// timer id replaces it.
    fn set_timer(&self, timer: u64, after_ms: u64, every_ms: u64) -> FfiResult<()>;

    /// Cancels a timer set with [`HostApi::set_timer`].
    fn clear_timer(&self, timer: u64) -> FfiResult<()>;

    /// A string-keyed call for host features added after this layout froze.
    /// A host that does not know `request` answers [`codes::NOT_FOUND`].
    #[sabi(last_prefix_field)]
    fn invoke(&self, request: RStr<'_>, payload_json: RStr<'_>) -> FfiResult<RString>;
}

/// The host's callbacks as an owned, type-erased object.
pub type HostBox = HostApi_TO<'static, RBox<()>>;

/// One plugin instance as the host sees it. Implemented by the SDK.
///
/// Components are addressed by their index in the plugin's manifest. Every
/// implementation must catch its own panics and return them as
/// [`codes::PANICKED`] errors.
#[sabi_trait]
pub trait PluginApi: Send + Sync {
    /// Runs the plugin's `on_load` hook.
    fn on_load(&self) -> FfiResult<()>;

    /// Runs the plugin's `on_unload` hook.
    fn on_unload(&self) -> FfiResult<()>;

    /// Asks action `action` whether it accepts the message.
    fn validate(&self, action: u32, message: &MessageView<'_>) -> FfiResult<bool>;

    /// Runs action `action`'s handler; returns its result as JSON.
    fn handle(
        &self,
        action: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<RString>;

    /// Runs provider `provider`'s `get`; returns the value as JSON.
    fn provide(
        &self,
        provider: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<RString>;

    /// Starts (`true`) or ends (`false`) provider `provider`'s subscription;
    /// fresh values come back through [`HostApi::push_provider_value`].
    fn set_subscribed(&self, provider: u32, subscribed: bool) -> FfiResult<()>;

    /// Runs evaluator `evaluator` on one message.
    fn evaluate(
        &self,
        evaluator: u32,
        message: &MessageView<'_>,
        control: &CallControl,
    ) -> FfiResult<EvaluationView>;

    /// Runs evaluator `evaluator` on many messages; one result per message,
    /// in order.
    fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: RSlice<'_, MessageView<'_>>,
        control: &CallControl,
    ) -> FfiResult<RVec<EvaluationView>>;

    /// Starts service `service`.
    fn start_service(&self, service: u32) -> FfiResult<()>;

    /// Stops service `service`.
    fn stop_service(&self, service: u32) -> FfiResult<()>;

    /// Calls `method` on service `service` with JSON arguments.
    fn call_service(
        &self,
        service: u32,
        method: RStr<'_>,
        args_json: RStr<'_>,
        control: &CallControl,
    ) -> FfiResult<RString>;

    /// Delivers an event for a subscription made with [`HostApi::subscribe`].
    fn on_event(&self, subscription: u64, event: RStr<'_>, payload_json: RStr<'_>)
        -> FfiResult<()>;

    /// Fires a timer set with [`HostApi::set_timer`].
    fn on_timer(&self, timer: u64) -> FfiResult<()>;

    /// Exports the plugin's state as JSON, for a new generation to import.
    fn export_state(&self) -> FfiResult<RString>;

    /// Imports state exported by an earlier generation.
    fn import_state(&self, state_json: RStr<'_>) -> FfiResult<()>;

    /// A string-keyed call for plugin features added after this layout froze.
    /// A plugin that does not know `request` answers [`codes::NOT_FOUND`].
    #[sabi(last_prefix_field)]
    fn invoke(&self, request: RStr<'_>, payload_json: RStr<'_>) -> FfiResult<RString>;

    // ABI 1.1: the batched entries. Each is optional in a plugin's table:
    // a plugin built against 1.0 lacks it, and the host then runs the
    // default body below, which makes the 1.0 calls one by one. The host
    // fills every slot with a value that owns no memory (`ROk` of `false`,
    // of an empty string, of a verdict with empty metadata), so a plugin
    // may overwrite a slot without dropping what was there.

    /// Since 1.1. Asks each action of `actions` whether it accepts the
    /// message, in one call: writes the verdict on `actions[i]` into
    /// `verdicts[i]` (the host gives as many slots as actions). A panic in
    /// one action's `validate` is that action's error only.
    fn validate_each(
        &self,
        actions: RSlice<'_, u32>,
        message: &MessageView<'_>,
        verdicts: RSliceMut<'_, FfiResult<bool>>,
    ) {
        let mut verdicts = verdicts;
        for (verdict, &action) in verdicts.iter_mut().zip(actions.iter()) {
            *verdict = self.validate(action, message);
        }
    }

    /// Since 1.1. Runs each evaluator of `evaluators` on the message, in one
    /// call: writes the verdict of `evaluators[i]` into `verdicts[i]`.
    fn evaluate_each(
        &self,
        evaluators: RSlice<'_, u32>,
        message: &MessageView<'_>,
        control: &CallControl,
        verdicts: RSliceMut<'_, FfiResult<EvaluationView>>,
    ) {
        let mut verdicts = verdicts;
        for (verdict, &evaluator) in verdicts.iter_mut().zip(evaluators.iter()) {
            *verdict = self.evaluate(evaluator, message, control);
        }
    }

    /// Since 1.1. Runs the `get` of each provider of `providers` for the
    /// message, in one call: writes the JSON value of `providers[i]` into
    /// `values[i]`.
    fn provide_each(
        &self,
        providers: RSlice<'_, u32>,
        message: &MessageView<'_>,
        control: &CallControl,
        values: RSliceMut<'_, FfiResult<RString>>,
    ) {
        let mut values = values;
        for (value, &provider) in values.iter_mut().zip(providers.iter()) {
            *value = self.provide(provider, message, control);
        }
    }
}

/// A plugin instance as an owned, type-erased object.
pub type PluginBox = PluginApi_TO<'static, RBox<()>>;

/// The root module every plugin library exports.
///
/// One library may export several plugins: `manifests` returns a JSON array
/// with one manifest per plugin, and `create` builds the plugin at an index of
/// that array.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Returns the JSON array of the library's plugin manifests.
    pub manifests: extern "C" fn() -> FfiResult<RString>,

    /// Creates plugin number `index`, handing it its host callbacks.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(index: u32, host: HostBox) -> FfiResult<PluginBox>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "agent_host_plugin";
    const NAME: &'static str = "agent-host plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

/// The exported symbol name under which `abi_stable` looks for a library's
/// header. Written out because `macro_rules!` cannot compute it; a test checks
/// it against `abi_stable`'s own mangling.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// The exported symbol in which a plugin library records its panic
/// strategy: [`PANIC_STRATEGY`], as the library was built.
pub const PANIC_STRATEGY_SYMBOL: &str = "agent_host_panic_strategy";

/// What [`PANIC_STRATEGY`] holds in a library built with `panic = "unwind"`.
pub const PANICS_UNWIND: [u8; 8] = *b"unwind\0\0";

/// What [`PANIC_STRATEGY`] holds in a library built with `panic = "abort"`.
pub const PANICS_ABORT: [u8; 8] = *b"abort\0\0\0";

/// How the library that links this crate handles a panic, exported under
/// [`PANIC_STRATEGY_SYMBOL`] so that the host reads it from the file
/// before it runs any of the library's code. A library built with
/// `panic = "abort"` cannot catch a panic at the boundary, so its first
/// panic would end the host: the host runs such a library only in a worker
/// process.
///
/// Cargo builds every crate of one library with the same panic strategy,
/// so this value is the library's own, however its export was written.
#[allow(unsafe_code)] // `export_name` defines a symbol; nothing else is unsafe here.
#[export_name = "agent_host_panic_strategy"]
pub static PANIC_STRATEGY: [u8; 8] = if cfg!(panic = "unwind") {
    PANICS_UNWIND
} else {
    PANICS_ABORT
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_module_symbol_matches_abi_stable_mangling() {
        assert_eq!(
            ROOT_MODULE_SYMBOL,
            abi_stable_shared::mangled_root_module_loader_name()
        );
    }

    #[test]
    fn call_control_reports_cancellation() {
        let control = CallControl::with_deadline(42);
        assert!(!control.is_cancelled());
        control.cancel();
        assert!(control.is_cancelled());
        assert_eq!(control.deadline_unix_ms(), 42);
    }
}
