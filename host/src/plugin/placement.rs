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
    /// In a worker process, alone or shared with other instances.
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

    /// Which worker process runs the instance: instances with the same
    /// key share one, and [`Worker::begin_messages`] sends their parts of
    /// a message in one request.
    fn process_key(&self) -> usize;

    /// The instance's number in its worker, which its requests name.
    fn slot(&self) -> u32;

    /// Starts the parts of one message of instances that share this
    /// one's worker (each part's worker has this one's
    /// [`Worker::process_key`]) in one request: the `validate`s of each
    /// part's actions and its evaluators, whose answers the phases read
    /// later through the returned rounds, one per part in order.
    fn begin_messages(
        &self,
        parts: &[RoundAsk<'_>],
        message: MessageRef<'_>,
        deadlines: RoundDeadlines,
    ) -> Vec<Box<dyn MessageRound>>;
}

/// One instance's part of a message, sent to its worker.
pub(crate) struct RoundAsk<'a> {
    /// The instance's worker.
    pub worker: &'a dyn Worker,
    /// The actions to validate.
    pub actions: &'a [u32],
    /// The evaluators to run.
    pub evaluators: &'a [u32],
}
