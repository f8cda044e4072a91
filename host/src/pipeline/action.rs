//! Steps 4 to 6: the sender's permissions, the rate limit, then the
//! handler with its timeout, events and metrics.

use super::context::OwnedMessage;
use super::{ActionRef, InboundMessage, Reply};
use crate::registry::{LivePlugin, Registry};
use agent_host_plugin_abi::CallControl;
use agent_host_plugin_sdk::ActionResult;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch at `time`.
fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unix_ms_after(timeout: Duration) -> u64 {
    // Rounded up, so the plugin never sees its deadline before the host
    // does; 0 (a clock before the epoch) stays "no deadline".
    match unix_ms(SystemTime::now() + timeout) {
        0 => 0,
        ms => ms.saturating_add(1),
    }
}

/// What running the handler came to.
enum Outcome {
    Completed(ActionResult),
    Failed(String),
    TimedOut(Duration),
}

/// Runs a handler on the blocking pool and waits at most `timeout`. On
/// timeout the call's control is cancelled (the plugin sees it) and the
/// host moves on; the call itself finishes, or not, on its own thread.
fn run_handler(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
    timeout: Duration,
) -> Outcome {
    let control = Arc::new(CallControl::with_deadline(unix_ms_after(timeout)));
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let (plugin_bg, control_bg) = (Arc::clone(plugin), Arc::clone(&control));
    let owned = OwnedMessage::of(message, context);
    // Entered here, not on the blocking thread: the call counts from the
    // moment it is handed over, and for as long as the plugin runs it, past
    // its timeout too.
    let call = plugin
        .in_flight
        .enter(crate::registry::inflight::Entry::Handler(index));
    core.runtime().spawn_blocking(move || {
        let _call = call;
        let view = owned.view();
        let _ = sender.send(plugin_bg.instance.handle(index, view, &control_bg));
    });
    match wait_briefly_then_block(&receiver, timeout) {
        Ok(Ok(result)) => Outcome::Completed(result),
        // The plugin saw the host's cancellation or its deadline and stopped:
        // that is the timeout. A `Cancelled` of its own (an upstream call
        // that was cancelled) is the plugin's error, with its message.
        Ok(Err(error))
            if error.kind == agent_host_plugin_sdk::ErrorKind::Cancelled
                && (control.is_cancelled() || deadline_passed(&control)) =>
        {
            Outcome::TimedOut(timeout)
        }
        Ok(Err(error)) => {
            core.record_error(plugin, &error);
            Outcome::Failed(error.to_string())
        }
        Err(_) => {
            control.cancel();
            Outcome::TimedOut(timeout)
        }
    }
}

/// Whether the wall clock has reached the control's deadline.
fn deadline_passed(control: &CallControl) -> bool {
    let deadline = control.deadline_unix_ms();
    deadline != 0 && unix_ms(SystemTime::now()) >= deadline
}

/// Waits for a handler's result: first spinning for a few microseconds (most
/// handlers answer in less than the cost of putting this thread to sleep
/// and waking it again), then blocking until the timeout.
fn wait_briefly_then_block<T>(
    receiver: &std::sync::mpsc::Receiver<T>,
    timeout: Duration,
) -> Result<T, std::sync::mpsc::RecvTimeoutError> {
    const SPIN: Duration = Duration::from_micros(50);
    let started = Instant::now();
    loop {
        match receiver.try_recv() {
            Ok(value) => return Ok(value),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        let waited = started.elapsed();
        if waited >= SPIN.min(timeout) {
            return receiver.recv_timeout(timeout.saturating_sub(waited));
        }
        std::hint::spin_loop();
    }
}

/// Checks permissions and the rate limit, then runs the action and fills the reply.
pub(super) fn run_action(
    core: &Registry,
    plugin: &Arc<LivePlugin>,
    index: u32,
    message: &InboundMessage,
    context: &str,
    reply: &mut Reply,
) {
    let spec = &plugin.instance.manifest.actions[index as usize];
    let counters = &plugin.action_metrics[index as usize];
    let (plugin_name, action) = (plugin.name(), spec.name.as_str());
    reply.action = Some(ActionRef {
        plugin: plugin_name.to_string(),
        action: action.to_string(),
    });
    let missing: Vec<&String> = spec
        .permissions
        .iter()
        .filter(|p| !message.permissions.contains(p))
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", ");
        reply.text = format!("You lack the permission {list} needed for {action}.");
        reply.errors.push(format!(
            "sender '{}' lacks {list} for action '{action}' of plugin '{plugin_name}'",
            message.sender
        ));
        counters.denied.inc();
        return;
    }
    if let Some(limit) = spec.rate_limit {
        if let Err(wait) = core
            .rate_limiter
            .try_acquire(plugin_name, action, limit, Instant::now())
        {
            reply.text = format!(
                "{action} is busy; try again in {:.1} s.",
                wait.as_secs_f64()
            );
            reply.errors.push(format!(
                "plugin '{plugin_name}': action '{action}' rate limit reached ({} per {} ms)",
                limit.max_requests, limit.window_ms
            ));
            counters.rate_limited.inc();
            return;
        }
    }

    let span = tracing::info_span!("action", plugin = plugin_name, action);
    let _entered = span.enter();
    let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(core.settings.action_timeout_ms));
    let started = Instant::now();
    core.emit_lazy(
        "host",
        "action:started",
        || json!({"plugin": plugin_name, "action": action, "message_id": message.id}),
    );
    let outcome = run_handler(core, plugin, index, message, context, timeout);
    let duration = started.elapsed();
    let duration_ms = duration.as_secs_f64() * 1000.0;
    let failure = match outcome {
        Outcome::Completed(result) => {
            reply.text = result.text;
            reply.data = result.data;
            reply.metadata = result.metadata;
            reply.ok = true;
            counters.completed.inc();
            counters.seconds.observe(duration.as_secs_f64());
            tracing::debug!(duration_ms, "action completed");
            core.emit_lazy("host", "action:completed", || {
                json!({"plugin": plugin_name, "action": action, "message_id": message.id, "duration_ms": duration_ms})
            });
            return;
        }
        Outcome::Failed(error) => {
            reply.text = format!("Sorry, {action} failed.");
            counters.failed.inc();
            counters.seconds.observe(duration.as_secs_f64());
            error
        }
        Outcome::TimedOut(timeout) => {
            reply.text = format!("Sorry, {action} took too long.");
            counters.timed_out.inc();
            counters.seconds.observe(duration.as_secs_f64());
            format!(
                "plugin '{plugin_name}': action '{action}' handler: timed out after {} ms (the call was cancelled)",
                timeout.as_millis()
            )
        }
    };
    tracing::warn!(duration_ms, "{failure}");
    core.emit_lazy("host", "action:failed", || {
        json!({"plugin": plugin_name, "action": action, "message_id": message.id, "duration_ms": duration_ms, "error": failure})
    });
    reply.errors.push(failure);
}
