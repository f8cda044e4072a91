//! Where a plugin runs, behind one seam.
//!
//! The registry and the pipeline reach a plugin only through a
//! [`PluginInstance`], whatever runs its code. An instance holds the
//! plugin's checked manifest and a [`Backend`]: some place that runs the
//! plugin and answers a [`Call`], the one description of the entry points
//! (`crate::call`). Each place implements [`Backend`] (the instance) and
//! [`PluginSource`] (an opened file: its manifests, and the creation of an
//! instance):
//!
//! * [`in_process`]: the plugin's library, loaded into this process; a call
//!   goes to the loader's in-process dispatch, a function call through the
//!   frozen FFI surface;
//! * `isolated` and `probed`: the plugin's library, loaded by a sandboxed
//!   worker process of its own (the isolation engine); a call crosses a
//!   socket as it is described, and the worker hands it to the same
//!   in-process dispatch; a crash, a hang or a leak ends the worker, never
//!   the host;
//! * `in_memory` (unit tests only): a plugin value built with the SDK and
//!   called directly, so the host's decisions can be tested in milliseconds
//!   without building or loading any library.
//!
//! A backend answers with the SDK's [`Failure`] (a kind and a message);
//! [`PluginInstance`] adds the plugin's name and the entry point, and checks
//! what came back (an evaluation's score, a provider's JSON), so every place
//! reports errors the same way. Where an instance runs is one value of it,
//! its [`Placement`]: in process, or in a [`Worker`] that also offers a
//! message's calls sent ahead in one request ([`MessageRound`]).

mod error;
#[cfg(test)]
pub(crate) mod in_memory;
pub(crate) mod in_process;
mod isolated;
mod placement;
pub(crate) mod probed;
mod shared;

pub use error::CallError;
pub(crate) use placement::{Placement, RoundAsk, Worker};
pub(crate) use shared::WorkerPlaces;

pub(crate) use crate::call::{Failure, MessageRef};

use crate::call::{Answer, Call};
use crate::prefetch::prefetch;
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::manifest::{Dependency, Manifest};
use agent_host_plugin_sdk::{ActionResult, ErrorKind, Evaluation, Host};
use semver::Version;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// One plugin instance, wherever it runs: it answers the calls of the
/// description. An implementation never panics into the host: plugin
/// panics come back as [`ErrorKind::Panicked`] failures.
pub(crate) trait Backend: Send + Sync {
    /// Runs `call`. `control` is the call's deadline and cancellation for
    /// the entry points that take one; without one, the host call this
    /// thread is in (a validate inside a message) decides.
    fn call(&self, call: Call<'_>, control: Option<&CallControl>) -> Result<Answer, Failure>;

    /// An action's `validate`, typed: [`Backend::call`] unless the place
    /// answers it without building an [`Answer`]. The in-process backend
    /// does: `validate` and `evaluate` are the calls of every message,
    /// and the general call measured 10 to 15 ns slower per call there.
    #[inline]
    fn validate(&self, action: u32, message: MessageRef<'_>) -> Result<bool, Failure> {
        self.call(Call::Validate { action, message }, None)?
            .accepted()
    }

    /// An evaluator's verdict on one message, typed, as
    /// [`Backend::validate`].
    #[inline]
    fn evaluate(
        &self,
        evaluator: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, Failure> {
        self.call(Call::Evaluate { evaluator, message }, Some(control))?
            .evaluated()
    }

    /// The `validate` of several actions on one message, each verdict
    /// through `answer`, in one call where the place can (in process: one
    /// crossing of the FFI; in a worker: one request).
    fn validate_each(
        &self,
        actions: &[u32],
        message: MessageRef<'_>,
        answer: &mut dyn FnMut(u32, Result<bool, Failure>),
    ) {
        let call = Call::ValidateEach {
            actions: Cow::Borrowed(actions),
            message,
        };
        spread(
            actions,
            self.call(call, None).and_then(Answer::validated),
            answer,
        );
    }

    /// The `get` of several providers for one message, as
    /// [`Backend::validate_each`].
    fn provide_each(
        &self,
        providers: &[u32],
        message: MessageRef<'_>,
        control: &CallControl,
        answer: &mut dyn FnMut(u32, Result<String, Failure>),
    ) {
        let call = Call::ProvideEach {
            providers: Cow::Borrowed(providers),
            message,
        };
        spread(
            providers,
            self.call(call, Some(control))
                .and_then(Answer::provided_each),
            answer,
        );
    }

    /// Asks for the first cache line the next call will read, without
    /// waiting for it (see `prefetch.rs`): in process, the plugin's own
    /// object. Nothing by default.
    #[inline]
    fn warm(&self) {}

    /// Where the instance runs: in this process (the default), or in a
    /// worker process it reports on.
    fn placement(&self) -> Placement<'_> {
        Placement::InProcess
    }
}

/// The deadlines of a message round, in milliseconds since the Unix epoch.
/// Only a worker reads them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundDeadlines {
    /// For the validates.
    pub validate_ms: u64,
    /// For the evaluators.
    pub evaluate_ms: u64,
}

/// A plugin's part of one message, sent ahead in one request per worker
/// ([`Worker::begin_messages`]). Each answer is read once, when its phase
/// asks; `cancelled` is asked while waiting, and a yes abandons the round.
pub(crate) trait MessageRound: Send {
    /// The validates' answers, in the order the actions were given;
    /// `None` when the worker died before it answered them, so that the
    /// caller asks again call by call (a validate has no effects), and the
    /// call waits for the worker that replaces it.
    fn validated(&mut self, cancelled: &dyn Fn() -> bool) -> Option<Vec<Result<bool, Failure>>>;
    /// The verdict of the evaluator at `position` in the order given;
    /// `None`, likewise, when the worker died before answering.
    fn evaluation(
        &mut self,
        position: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<Evaluation, Failure>>;
}

/// An opened plugin file (or, in tests, a set of plugin values): the
/// manifests of the plugins it holds, and the creation of an instance of
/// each. Creating runs plugin code (the plugin's constructor) but no hook.
pub(crate) trait PluginSource: Send + Sync {
    /// The file in the plugin folder.
    fn file(&self) -> &Path;
    /// One manifest per plugin, in export order; not yet validated.
    fn manifests(&self) -> &[Manifest];
    /// Bytes of the code image this source keeps mapped in the host.
    fn image_bytes(&self) -> u64;
    /// The SHA-256 of the bytes loaded (empty for a source that is no file).
    fn sha256(&self) -> &str;
    /// Tells `places` which plugins of this source are members of a named
    /// group, so that a group's worker opens every member's file (a source
    /// whose plugins run only in process has none).
    fn offer_to(&self, _places: &WorkerPlaces) {}

    /// Creates plugin number `index`, whose callbacks go to `host`.
    fn create(
        &self,
        index: u32,
        host: Box<dyn Host>,
        context: &CreateContext<'_>,
    ) -> Result<Box<dyn Backend>, Failure>;
}

/// Sends the parts of one message of the instances in `asks` (each with
/// the actions to validate and the evaluators to run) that run in
/// workers, ahead, in one request per worker process: instances that share
/// a worker share the request. One entry per ask, in order: its round, or
/// `None` for an instance in process, where each phase calls each entry
/// point when it comes to it.
pub(crate) fn begin_rounds(
    asks: &[(&PluginInstance, &[u32], &[u32])],
    message: MessageRef<'_>,
    deadlines: RoundDeadlines,
) -> Vec<Option<Box<dyn MessageRound>>> {
    let mut rounds: Vec<Option<Box<dyn MessageRound>>> = asks.iter().map(|_| None).collect();
    // The asks of each worker process, in order of first appearance.
    let mut by_process: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, (instance, ..)) in asks.iter().enumerate() {
        if let Placement::Worker(worker) = instance.placement() {
            let key = worker.process_key();
            match by_process.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => by_process.push((key, vec![i])),
            }
        }
    }
    for (_, members) in by_process {
        let parts: Vec<RoundAsk<'_>> = members
            .iter()
            .filter_map(|&i| match asks[i].0.placement() {
                Placement::Worker(worker) => Some(RoundAsk {
                    worker,
                    actions: asks[i].1,
                    evaluators: asks[i].2,
                }),
                Placement::InProcess => None,
            })
            .collect();
        let Some(first) = parts.first() else { continue };
        let started = first.worker.begin_messages(&parts, message, deadlines);
        for (&i, round) in members.iter().zip(started) {
            rounds[i] = Some(round);
        }
    }
    rounds
}

/// Tells the rest of the host about a plugin's life outside any call (a
/// worker that crashed, restarted or was quarantined): an event name and
/// its payload, emitted by the host.
pub(crate) type Announce = std::sync::Arc<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// What a place needs, besides the plugin's callbacks, to create an
/// instance. Only a worker reads it.
pub(crate) struct CreateContext<'a> {
    /// The permissions the plugin holds (requested and granted): a worker's
    /// sandbox is built from them.
    pub permissions: &'a [String],
    /// Where the place reports the plugin's life.
    pub announce: Announce,
    /// The deadline of each step of the plugin's life (`[host]
    /// lifecycle_timeout_ms`), for the steps a place runs by itself (a
    /// restarted worker's `on_load` and services).
    pub lifecycle_timeout: std::time::Duration,
    /// The permissions any plugin holds (requested and granted), by its
    /// manifest: a shared worker's sandbox is the union of its members'.
    pub grants: &'a (dyn Fn(&Manifest) -> Vec<String> + Sync),
    /// The host's shared workers, by file and by group.
    pub places: &'a WorkerPlaces,
}

/// How far along the chain of a plugin's pointers a warm-up asks
/// ([`PluginInstance::warm`]): each stage's lines must be in before the
/// next stage reads them, so the pipeline asks for each a few plugins
/// earlier than the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarmStage {
    /// The fields of the plugin's entries that hold its pointers.
    Fields,
    /// What those fields point to.
    Targets,
    /// The plugin's own object, behind its backend.
    Object,
}

/// A plugin instance: its checked manifest and where it came from, and the
/// calls into it, each naming the plugin and the entry point when it fails.
pub(crate) struct PluginInstance {
    /// The plugin's manifest.
    pub manifest: Manifest,
    /// The parsed version.
    pub version: Version,
    /// Its dependencies and optional dependencies, parsed once.
    pub dependencies: Vec<Dependency>,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Bytes of the code image this generation keeps mapped.
    pub image_bytes: u64,
    /// The SHA-256 of the bytes this generation was loaded from (empty for
    /// a plugin that came from no file).
    pub sha256: String,
    backend: Box<dyn Backend>,
}

/// What an instance is made of.
pub(crate) struct InstanceParts {
    /// The manifest, validated.
    pub manifest: Manifest,
    /// Its parsed version.
    pub version: Version,
    /// Its parsed dependencies.
    pub dependencies: Vec<Dependency>,
    /// The file it came from.
    pub file: PathBuf,
    /// Bytes of its code image.
    pub image_bytes: u64,
    /// The SHA-256 of the file's bytes it was loaded from.
    pub sha256: String,
}

impl PluginInstance {
    /// An instance calling into `backend`.
    pub(crate) fn new(parts: InstanceParts, backend: Box<dyn Backend>) -> Self {
        Self {
            manifest: parts.manifest,
            version: parts.version,
            dependencies: parts.dependencies,
            file: parts.file,
            image_bytes: parts.image_bytes,
            sha256: parts.sha256,
            backend,
        }
    }

    /// Asks for the lines a call of a message will read first (see
    /// `prefetch.rs`): `fields` for the instance's own field that points to
    /// its backend; otherwise the backend, whose pointer must already be
    /// in; `object` then the plugin's object, once the backend is in.
    #[inline]
    pub(crate) fn warm(&self, stage: WarmStage) {
        match stage {
            WarmStage::Fields => prefetch(&self.backend),
            WarmStage::Targets => prefetch(&*self.backend),
            WarmStage::Object => self.backend.warm(),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Where it runs: in this process, or in a worker process (whose
    /// state the value reports). The one source of truth about a live
    /// instance's placement.
    pub(crate) fn placement(&self) -> Placement<'_> {
        self.backend.placement()
    }

    /// Gives up on the instance: a step of its life missed its deadline
    /// while it was being started or stopped, and it will be dropped. A
    /// worker that runs it is restarted no more.
    pub(crate) fn give_up(&self) {
        if let Placement::Worker(worker) = self.placement() {
            worker.give_up();
        }
    }

    /// Whether a call costs about as much as a function call: the plugin
    /// runs in this process.
    #[inline]
    pub(crate) fn calls_are_cheap(&self) -> bool {
        matches!(self.placement(), Placement::InProcess)
    }

    /// The validates of a round, each error naming the plugin and action;
    /// `false`, with nothing answered, when the worker died before
    /// answering them (the caller then asks call by call).
    pub(crate) fn round_validated(
        &self,
        round: &mut dyn MessageRound,
        actions: &[u32],
        cancelled: &dyn Fn() -> bool,
        mut answer: impl FnMut(u32, Result<bool, CallError>),
    ) -> bool {
        let Some(outcomes) = round.validated(cancelled) else {
            return false;
        };
        for (&action, outcome) in actions.iter().zip(outcomes) {
            answer(action, outcome.map_err(|e| self.validate_error(action, e)));
        }
        true
    }

    /// One evaluation of a round, checked like [`PluginInstance::evaluate`];
    /// `None` when the worker died before answering (as
    /// [`PluginInstance::round_validated`]).
    pub(crate) fn round_evaluation(
        &self,
        round: &mut dyn MessageRound,
        position: usize,
        evaluator: u32,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<Evaluation, CallError>> {
        let outcome = round.evaluation(position, cancelled)?;
        Some(self.checked_evaluation(evaluator, outcome))
    }

    fn fail(&self, entry: impl Into<String>, failure: Failure) -> CallError {
        CallError {
            plugin: self.manifest.name.clone(),
            entry: entry.into(),
            kind: failure.kind(),
            message: failure.message().to_string(),
        }
    }

    fn invalid(&self, entry: String, message: String) -> CallError {
        self.host_error(entry, ErrorKind::InvalidInput, message)
    }

    /// An error the host reports for a call into this plugin (a deadline,
    /// a full bulkhead), naming the plugin and the entry point.
    pub(crate) fn host_error(
        &self,
        entry: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> CallError {
        CallError {
            plugin: self.manifest.name.clone(),
            entry: entry.into(),
            kind,
            message: message.into(),
        }
    }

    /// The error of a call the host abandoned at its deadline.
    pub(crate) fn timed_out(&self, entry: impl Into<String>, limit_ms: u64) -> CallError {
        self.host_error(
            entry,
            ErrorKind::Cancelled,
            format!("timed out after {limit_ms} ms (the host cancelled the call and went on without it)"),
        )
    }

    /// The error of a call refused because the plugin's bulkhead is full.
    pub(crate) fn refused(&self, entry: impl Into<String>, limit: usize) -> CallError {
        self.host_error(
            entry,
            ErrorKind::Unavailable,
            format!("refused: the plugin already has {limit} calls in flight (its limit)"),
        )
    }

    pub(crate) fn action_name(&self, action: u32) -> &str {
        self.manifest
            .actions
            .get(action as usize)
            .map_or("?", |a| a.name.as_str())
    }

    pub(crate) fn provider_name(&self, provider: u32) -> &str {
        self.manifest
            .providers
            .get(provider as usize)
            .map_or("?", |p| p.name.as_str())
    }

    pub(crate) fn evaluator_name(&self, evaluator: u32) -> &str {
        self.manifest
            .evaluators
            .get(evaluator as usize)
            .map_or("?", |e| e.name.as_str())
    }

    pub(crate) fn service_name(&self, service: u32) -> &str {
        self.manifest
            .services
            .get(service as usize)
            .map_or("?", |s| s.name.as_str())
    }

    /// Runs `on_load`.
    pub fn on_load(&self) -> Result<(), CallError> {
        self.backend
            .call(Call::OnLoad, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail("on_load", e))
    }

    /// Runs `on_unload`.
    pub fn on_unload(&self) -> Result<(), CallError> {
        self.backend
            .call(Call::OnUnload, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail("on_unload", e))
    }

    fn validate_error(&self, action: u32, failure: Failure) -> CallError {
        self.fail(
            format!("action '{}' validate", self.action_name(action)),
            failure,
        )
    }

    /// Runs an action's `validate`.
    #[inline]
    pub fn validate(&self, action: u32, message: MessageRef<'_>) -> Result<bool, CallError> {
        self.backend
            .validate(action, message)
            .map_err(|e| self.validate_error(action, e))
    }

    /// Runs the `validate` of several actions on one message, in one call
    /// (see [`Backend::validate_each`]), each answer through `answer`.
    #[inline]
    pub fn validate_actions(
        &self,
        actions: &[u32],
        message: MessageRef<'_>,
        mut answer: impl FnMut(u32, Result<bool, CallError>),
    ) {
        self.backend
            .validate_each(actions, message, &mut |action, outcome| {
                answer(action, outcome.map_err(|e| self.validate_error(action, e)))
            });
    }

    /// Runs an action's handler.
    pub fn handle(
        &self,
        action: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<ActionResult, CallError> {
        self.backend
            .call(Call::Handle { action, message }, Some(control))
            .and_then(Answer::handled)
            .map_err(|e| self.fail(format!("action '{}' handler", self.action_name(action)), e))
    }

    /// Runs a provider's `get`; returns its JSON value, checked.
    pub fn provide(
        &self,
        provider: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<String, CallError> {
        let outcome = self
            .backend
            .call(Call::Provide { provider, message }, Some(control))
            .and_then(Answer::text);
        self.checked_json(provider, outcome)
    }

    fn checked_json(
        &self,
        provider: u32,
        outcome: Result<String, Failure>,
    ) -> Result<String, CallError> {
        let entry = || format!("provider '{}' get", self.provider_name(provider));
        let json = outcome.map_err(|e| self.fail(entry(), e))?;
        if serde_json::from_str::<serde::de::IgnoredAny>(&json).is_ok() {
            Ok(json)
        } else {
            Err(self.invalid(entry(), "returned invalid JSON".into()))
        }
    }

    /// Runs the `get` of several providers for one message, in one call
    /// (see [`Backend::validate_each`]); each value is checked as
    /// [`PluginInstance::provide`] checks it.
    pub fn provide_each(
        &self,
        providers: &[u32],
        message: MessageRef<'_>,
        control: &CallControl,
        answer: &mut dyn FnMut(u32, Result<String, CallError>),
    ) {
        self.backend
            .provide_each(providers, message, control, &mut |provider, outcome| {
                answer(provider, self.checked_json(provider, outcome))
            });
    }

    /// Starts or ends a provider's subscription.
    pub fn set_subscribed(&self, provider: u32, subscribed: bool) -> Result<(), CallError> {
        let call = Call::SetSubscribed {
            provider,
            subscribed,
        };
        self.backend
            .call(call, None)
            .and_then(Answer::done)
            .map_err(|e| {
                self.fail(
                    format!("provider '{}' subscribe", self.provider_name(provider)),
                    e,
                )
            })
    }

    /// Runs one evaluator on one message. A score outside 0..=1 is the
    /// plugin's error. (In a worker, a plugin's evaluators are asked in
    /// one request, [`PluginInstance::round_evaluation`]; in process each
    /// is its own call, with its own deadline, so a call that hangs costs
    /// only its own verdict.)
    pub fn evaluate(
        &self,
        evaluator: u32,
        message: MessageRef<'_>,
        control: &CallControl,
    ) -> Result<Evaluation, CallError> {
        let outcome = self.backend.evaluate(evaluator, message, control);
        self.checked_evaluation(evaluator, outcome)
    }

    /// A verdict, checked: a score outside 0..=1 is the plugin's error.
    fn checked_evaluation(
        &self,
        evaluator: u32,
        outcome: Result<Evaluation, Failure>,
    ) -> Result<Evaluation, CallError> {
        let entry = || format!("evaluator '{}' evaluate", self.evaluator_name(evaluator));
        outcome
            .map_err(|e| self.fail(entry(), e))
            .and_then(|evaluation| self.checked(evaluation, entry))
    }

    /// Runs an evaluator on many messages; one result per message.
    pub fn evaluate_batch(
        &self,
        evaluator: u32,
        messages: &[MessageRef<'_>],
        control: &CallControl,
    ) -> Result<Vec<Evaluation>, CallError> {
        let entry = || {
            format!(
                "evaluator '{}' evaluate_batch",
                self.evaluator_name(evaluator)
            )
        };
        let call = Call::EvaluateBatch {
            evaluator,
            messages: Cow::Borrowed(messages),
        };
        let evaluations = self
            .backend
            .call(call, Some(control))
            .and_then(Answer::evaluated_batch)
            .map_err(|e| self.fail(entry(), e))?;
        if evaluations.len() != messages.len() {
            return Err(self.invalid(
                entry(),
                format!(
                    "returned {} results for {} messages",
                    evaluations.len(),
                    messages.len()
                ),
            ));
        }
        evaluations
            .into_iter()
            .map(|evaluation| self.checked(evaluation, entry))
            .collect()
    }

    fn checked(
        &self,
        evaluation: Evaluation,
        entry: impl Fn() -> String,
    ) -> Result<Evaluation, CallError> {
        if (0.0..=1.0).contains(&evaluation.score) {
            Ok(evaluation)
        } else {
            Err(self.invalid(
                entry(),
                format!("score {} is outside 0..1", evaluation.score),
            ))
        }
    }

    /// Starts a service.
    pub fn start_service(&self, service: u32) -> Result<(), CallError> {
        self.backend
            .call(Call::StartService { service }, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail(format!("service '{}' start", self.service_name(service)), e))
    }

    /// Stops a service.
    pub fn stop_service(&self, service: u32) -> Result<(), CallError> {
        self.backend
            .call(Call::StopService { service }, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail(format!("service '{}' stop", self.service_name(service)), e))
    }

    /// Calls a service method; returns its JSON result.
    pub fn call_service(
        &self,
        service: u32,
        method: &str,
        args_json: &str,
        control: &CallControl,
    ) -> Result<String, CallError> {
        let call = Call::ServiceMethod {
            service,
            method,
            args_json,
        };
        self.backend
            .call(call, Some(control))
            .and_then(Answer::text)
            .map_err(|e| {
                self.fail(
                    format!("service '{}' method '{method}'", self.service_name(service)),
                    e,
                )
            })
    }

    /// Delivers an event to one of the plugin's subscriptions.
    pub fn on_event(
        &self,
        subscription: u64,
        event: &str,
        payload_json: &str,
    ) -> Result<(), CallError> {
        let call = Call::OnEvent {
            subscription,
            event,
            payload_json,
        };
        self.backend
            .call(call, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail(format!("event handler for '{event}'"), e))
    }

    /// Fires one of the plugin's timers.
    pub fn on_timer(&self, timer: u64) -> Result<(), CallError> {
        self.backend
            .call(Call::OnTimer { timer }, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail(format!("timer {timer}"), e))
    }

    /// Exports the plugin's state as JSON.
    pub fn export_state(&self) -> Result<String, CallError> {
        self.backend
            .call(Call::ExportState, None)
            .and_then(Answer::text)
            .map_err(|e| self.fail("export_state", e))
    }

    /// Imports state exported by an earlier generation.
    pub fn import_state(&self, state_json: &str) -> Result<(), CallError> {
        self.backend
            .call(Call::ImportState { state_json }, None)
            .and_then(Answer::done)
            .map_err(|e| self.fail("import_state", e))
    }
}

/// Hands each of `indices` its answer from a batched call: the answer at
/// its position, or, when the call failed or answered a different number
/// of components, the call's error.
fn spread<T>(
    indices: &[u32],
    outcome: Result<Vec<Result<T, Failure>>, Failure>,
    answer: &mut dyn FnMut(u32, Result<T, Failure>),
) {
    let error = match outcome {
        Ok(answers) if answers.len() == indices.len() => {
            for (&index, outcome) in indices.iter().zip(answers) {
                answer(index, outcome);
            }
            return;
        }
        Ok(answers) => Failure::new(
            ErrorKind::Failed,
            format!(
                "protocol error: {} answers for {} components",
                answers.len(),
                indices.len()
            ),
        ),
        Err(error) => error,
    };
    for &index in indices {
        answer(index, Err(error.clone()));
    }
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("name", &self.manifest.name)
            .field("version", &self.version)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}
