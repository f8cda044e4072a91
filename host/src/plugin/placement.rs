//! Where a live instance runs, as one value: in this process, or in a
//! worker process, reached through a handle that reports on it.

use super::{MessageRef, MessageRound, RoundDeadlines};
use crate::worker_status::WorkerStatus;

/// Where a live instance runs. The one source of truth about placement
/// once an instance exists (the config says where the next one goes).
#[derive(Clone, Copy)]
pub(crate) enum Placement<'a> {
    /// In the host's process: a call is a function call.
    InProcess,
    /// In a worker process of its own.
    Worker(&'a dyn Worker),
}

impl Placement<'_> {
    /// The worker's state, when the instance runs in one.
    pub(crate) fn worker_status(&self) -> Option<WorkerStatus> {
        match self {
            Placement::InProcess => None,
            Placement::Worker(worker) => Some(worker.status()),
        }
    }

    /// Whether the instance runs in the host's process.
    pub(crate) fn is_in_process(&self) -> bool {
        matches!(self, Placement::InProcess)
    }
}

/// What only an instance in a worker process offers besides its calls.
pub(crate) trait Worker: Send + Sync {
    /// The worker's state: pid, restarts, quarantine, protections.
    fn status(&self) -> WorkerStatus;

    /// The host gives up on the instance (a step of its life missed its
    /// deadline while it was being started or stopped, and it will be
    /// dropped): its worker is restarted no more.
    fn give_up(&self);

    /// Starts the plugin's part of one message in one request: the
    /// `validate` of `actions` and the `evaluators`, whose answers the
    /// phases read later through the returned round.
    fn begin_message(
        &self,
        actions: &[u32],
        evaluators: &[u32],
        message: MessageRef<'_>,
        deadlines: RoundDeadlines,
    ) -> Box<dyn MessageRound>;
}
