//! Running a [`Call`] on a plugin whose library is loaded into this
//! process: each entry point of the description becomes the function call
//! of the same name through the frozen FFI surface
//! (`agent-host-plugin-abi`). The host's in-process plugins and a worker's
//! one plugin are both served here.
//!
//! What it protects against: a panic in plugin code (the SDK inside the
//! plugin turns it into an error value before it reaches the boundary).
//! What it cannot: an abort, a segfault, a stack overflow or a call that
//! never returns, which all happen inside this process.

use super::ffi_host::FfiCallbacks;
use super::library::OpenedLibrary;
use crate::call::{evaluation_from, Answer, Call, Failure, MessageRef};
use agent_host_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use agent_host_plugin_abi::abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr, RString};
use agent_host_plugin_abi::{
    CallControl, EvaluationView, FfiError, FfiResult, HostApi_TO, MessageView, PluginBox,
};
use agent_host_plugin_sdk::{ErrorKind, Evaluation, Host};

impl OpenedLibrary {
    /// Creates plugin number `index` of the library, whose callbacks go to
    /// `host`. Runs the plugin's constructor, no hook.
    pub(crate) fn instantiate(
        &self,
        index: u32,
        host: Box<dyn Host>,
    ) -> Result<PluginBox, Failure> {
        let callbacks = HostApi_TO::from_value(FfiCallbacks(host), TD_Opaque);
        (self.module.create())(index, callbacks)
            .into_result()
            .map_err(from_ffi)
    }
}

/// A plugin's error, read where it lies in the FFI result.
fn failure_of(error: &FfiError) -> Failure {
    Failure::new(ErrorKind::from_code(error.code), error.message.as_str())
}

fn from_ffi(error: FfiError) -> Failure {
    failure_of(&error)
}

fn view<'a>(message: MessageRef<'a>) -> MessageView<'a> {
    MessageView {
        id: message.id.into(),
        text: message.text.into(),
        context_json: message.context_json.into(),
    }
}

/// Runs `call` on `object`. `control` is the call's deadline and
/// cancellation, for the entry points that take one (none: no deadline).
#[inline]
pub(crate) fn dispatch(
    object: &PluginBox,
    call: Call<'_>,
    control: Option<&CallControl>,
) -> Result<Answer, Failure> {
    if let Call::Validate { action, message } = call {
        // The hot path first: a validate takes no control.
        return validate(object, action, message).map(Answer::Accepted);
    }
    let unbounded;
    let control = match control {
        Some(control) => control,
        None => {
            unbounded = CallControl::with_deadline(0);
            &unbounded
        }
    };
    match call {
        Call::Validate { action, message } => {
            validate(object, action, message).map(Answer::Accepted)
        }
        Call::Evaluate { evaluator, message } => {
            evaluate(object, evaluator, message, control).map(Answer::Evaluated)
        }
        Call::Provide { provider, message } => {
            provide(object, provider, message, control).map(Answer::Provided)
        }
        Call::ValidateEach { actions, message } => {
            let mut verdicts = Vec::with_capacity(actions.len());
            validate_each(object, &actions, message, &mut |_, verdict| {
                verdicts.push(verdict)
            });
            Ok(Answer::Validated(verdicts))
        }
        Call::ProvideEach { providers, message } => {
            let mut values = Vec::with_capacity(providers.len());
            provide_each(object, &providers, message, control, &mut |_, value| {
                values.push(value)
            });
            Ok(Answer::ProvidedEach(values))
        }
        Call::Handle { action, message } => {
            let json = object
                .handle(action, &view(message), control)
                .into_result()
                .map_err(from_ffi)?;
            serde_json::from_str(json.as_str())
                .map(|result| Answer::Handled(Box::new(result)))
                .map_err(|e| {
                    Failure::new(
                        ErrorKind::InvalidInput,
                        format!("returned invalid JSON: {e}"),
                    )
                })
        }
        Call::EvaluateBatch {
            evaluator,
            messages,
        } => {
            let views: Vec<MessageView<'_>> = messages.iter().map(|m| view(*m)).collect();
            object
                .evaluate_batch(evaluator, RSlice::from_slice(&views), control)
                .into_result()
                .map_err(from_ffi)?
                .into_iter()
                .map(|v| evaluation_from(v.score, v.passed, v.metadata_json.as_str()))
                .collect::<Result<_, _>>()
                .map(Answer::EvaluatedBatch)
        }
        Call::OnLoad => done(object.on_load()),
        Call::OnUnload => done(object.on_unload()),
        Call::SetSubscribed {
            provider,
            subscribed,
        } => done(object.set_subscribed(provider, subscribed)),
        Call::StartService { service } => done(object.start_service(service)),
        Call::StopService { service } => done(object.stop_service(service)),
        Call::ServiceMethod {
            service,
            method,
            args_json,
        } => text(object.call_service(
            service,
            RStr::from_str(method),
            RStr::from_str(args_json),
            control,
        )),
        Call::OnEvent {
            subscription,
            event,
            payload_json,
        } => done(object.on_event(
            subscription,
            RStr::from_str(event),
            RStr::from_str(payload_json),
        )),
        Call::OnTimer { timer } => done(object.on_timer(timer)),
        Call::ExportState => text(object.export_state()),
        Call::ImportState { state_json } => done(object.import_state(RStr::from_str(state_json))),
    }
}

/// An action's `validate` on `object` (the hot path of every message,
/// also reached without a [`Call`]).
#[inline]
pub(crate) fn validate(
    object: &PluginBox,
    action: u32,
    message: MessageRef<'_>,
) -> Result<bool, Failure> {
    accepted(&object.validate(action, &view(message)))
}

/// A `validate`'s answer, read where it lies in the FFI result.
#[inline]
fn accepted(outcome: &FfiResult<bool>) -> Result<bool, Failure> {
    match outcome {
        RResult::ROk(accepted) => Ok(*accepted),
        RResult::RErr(error) => Err(failure_of(error)),
    }
}

/// An evaluator's verdict on `object` (also reached without a [`Call`]).
#[inline]
pub(crate) fn evaluate(
    object: &PluginBox,
    evaluator: u32,
    message: MessageRef<'_>,
    control: &CallControl,
) -> Result<Evaluation, Failure> {
    // Read in place: moving the verdict out of the FFI result first cost a
    // store-forwarding stall per move on the hot path.
    verdict(&object.evaluate(evaluator, &view(message), control))
}

/// An evaluator's verdict, read where it lies in the FFI result.
#[inline]
fn verdict(outcome: &FfiResult<EvaluationView>) -> Result<Evaluation, Failure> {
    match outcome {
        RResult::ROk(verdict) => evaluation_from(
            verdict.score,
            verdict.passed,
            verdict.metadata_json.as_str(),
        ),
        RResult::RErr(error) => Err(failure_of(error)),
    }
}

/// The `validate` of each of `actions`, in one crossing (ABI 1.1's
/// batched entry; a plugin built against 1.0 gets one call per action from
/// the entry's default body), each verdict through `answer`.
#[inline]
pub(crate) fn validate_each(
    object: &PluginBox,
    actions: &[u32],
    message: MessageRef<'_>,
    answer: &mut dyn FnMut(u32, Result<bool, Failure>),
) {
    let unset = || RResult::ROk(false);
    let fill = |verdicts: &mut [FfiResult<bool>]| {
        object.validate_each(
            RSlice::from_slice(actions),
            &view(message),
            RSliceMut::from_mut_slice(verdicts),
        );
        for (&action, outcome) in actions.iter().zip(verdicts.iter()) {
            answer(action, accepted(outcome));
        }
    };
    with_slots(actions.len(), unset, fill, drop);
}

/// The verdict of each of `evaluators`, in one crossing (as
/// [`validate_each`]).
#[inline]
pub(crate) fn evaluate_each(
    object: &PluginBox,
    evaluators: &[u32],
    message: MessageRef<'_>,
    control: &CallControl,
    answer: &mut dyn FnMut(u32, Result<Evaluation, Failure>),
) {
    let unset = || {
        RResult::ROk(EvaluationView {
            score: 0.0,
            passed: false,
            metadata_json: RString::new(),
        })
    };
    let fill = |verdicts: &mut [FfiResult<EvaluationView>]| {
        object.evaluate_each(
            RSlice::from_slice(evaluators),
            &view(message),
            control,
            RSliceMut::from_mut_slice(verdicts),
        );
        for (&evaluator, outcome) in evaluators.iter().zip(verdicts.iter()) {
            answer(evaluator, verdict(outcome));
        }
    };
    let release = |verdict: FfiResult<EvaluationView>| match verdict {
        RResult::ROk(verdict) => release_text(verdict.metadata_json),
        RResult::RErr(error) => drop(error),
    };
    with_slots(evaluators.len(), unset, fill, release);
}

/// The JSON value of each of `providers`, in one crossing (as
/// [`validate_each`]).
pub(crate) fn provide_each(
    object: &PluginBox,
    providers: &[u32],
    message: MessageRef<'_>,
    control: &CallControl,
    answer: &mut dyn FnMut(u32, Result<String, Failure>),
) {
    let unset = || RResult::ROk(RString::new());
    let fill = |values: &mut [FfiResult<RString>]| {
        object.provide_each(
            RSlice::from_slice(providers),
            &view(message),
            control,
            RSliceMut::from_mut_slice(values),
        );
        for (&provider, value) in providers.iter().zip(values.iter_mut()) {
            let value = std::mem::replace(value, RResult::ROk(RString::new()));
            answer(
                provider,
                value
                    .into_result()
                    .map(RString::into_string)
                    .map_err(from_ffi),
            );
        }
    };
    let release = |value: FfiResult<RString>| match value {
        RResult::ROk(text) => release_text(text),
        RResult::RErr(error) => drop(error),
    };
    with_slots(providers.len(), unset, fill, release);
}

/// Runs `f` on `count` slots, each first set to `unset()`: on the stack for
/// the few components a plugin usually has, else on the heap. A batched
/// entry writes its answers there; the host owns them before and after,
/// and hands each to `release` at the end.
#[inline(always)]
fn with_slots<T>(
    count: usize,
    unset: impl Fn() -> T,
    f: impl FnOnce(&mut [T]),
    release: impl Fn(T),
) {
    const ON_STACK: usize = 4;
    if count <= ON_STACK {
        let mut slots: [T; ON_STACK] = [unset(), unset(), unset(), unset()];
        f(&mut slots[..count]);
        slots.into_iter().for_each(release);
    } else {
        let mut slots: Vec<T> = (0..count).map(|_| unset()).collect();
        f(&mut slots);
        slots.into_iter().for_each(release);
    }
}

/// Lets go of a slot that holds a string: an empty one owns no memory and
/// is forgotten, which spares the call through the string's function
/// table that dropping it makes; any other is dropped.
#[inline(always)]
fn release_text(text: RString) {
    if text.capacity() == 0 {
        std::mem::forget(text);
    }
}

fn provide(
    object: &PluginBox,
    provider: u32,
    message: MessageRef<'_>,
    control: &CallControl,
) -> Result<String, Failure> {
    object
        .provide(provider, &view(message), control)
        .into_result()
        .map(RString::into_string)
        .map_err(from_ffi)
}

fn done(outcome: RResult<(), FfiError>) -> Result<Answer, Failure> {
    outcome
        .into_result()
        .map(|()| Answer::Done)
        .map_err(from_ffi)
}

fn text(outcome: RResult<RString, FfiError>) -> Result<Answer, Failure> {
    outcome
        .into_result()
        .map(|text| Answer::Text(text.into_string()))
        .map_err(from_ffi)
}
