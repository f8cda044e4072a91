//! Message rounds: a plugin whose calls cross to another process (a worker)
//! gets its whole part of a message, the `validate` of its actions and its
//! evaluators, sent when the validate phase starts, before any answer is
//! awaited; the parts of the plugins that share a worker go in one request
//! (`plugin::begin_rounds`). The requests to every worker thus go out
//! together and the workers answer side by side; the validate and
//! evaluators phases then read each answer from its plugin's round where
//! they would otherwise have made the call.

use super::run::{lock, MessageRun};
use crate::plugin::{begin_rounds, MessageRef, MessageRound, RoundDeadlines};
use crate::triggers::Matched;
use crate::watchdog::unix_ms_now;
use std::sync::Mutex;

/// The rounds of one message, by plugin index in the plan; empty when no
/// plugin of the plan is costly to call.
#[derive(Default)]
pub(crate) struct Rounds {
    by_plugin: Vec<Option<Mutex<Box<dyn MessageRound>>>>,
}

impl Rounds {
    /// Sends every costly plugin's part of the message.
    pub(super) fn begin(run: &MessageRun, view: MessageRef<'_>, matched: &Matched) -> Self {
        let plan = &run.plan;
        if plan.costly.is_empty() {
            return Self::default();
        }
        let settings = &run.core.settings;
        let now = unix_ms_now();
        let deadlines = RoundDeadlines {
            validate_ms: now + settings.validate_timeout_ms,
            evaluate_ms: now + settings.validate_timeout_ms + settings.evaluator_timeout_ms,
        };
        let mut by_plugin: Vec<Option<Mutex<Box<dyn MessageRound>>>> =
            (0..plan.plugins.len()).map(|_| None).collect();
        let mut asked = Vec::with_capacity(plan.costly.len());
        let mut asks = Vec::with_capacity(plan.costly.len());
        for &p in &plan.costly {
            let plugin = &plan.plugins[p];
            let actions = matched.actions(p).unwrap_or(&plugin.action_indices);
            let evaluators: &[u32] = if run.evaluate {
                &plugin.evaluator_indices
            } else {
                &[]
            };
            if actions.is_empty() && evaluators.is_empty() {
                continue;
            }
            asked.push(p);
            asks.push((&plugin.instance, actions, evaluators));
        }
        for (p, round) in asked.into_iter().zip(begin_rounds(&asks, view, deadlines)) {
            by_plugin[p] = round.map(Mutex::new);
        }
        Self { by_plugin }
    }

    /// Runs `read` on plugin `p`'s round, if it has one.
    pub(super) fn with<T>(
        &self,
        p: usize,
        read: impl FnOnce(&mut dyn MessageRound) -> T,
    ) -> Option<T> {
        let round = self.by_plugin.get(p)?.as_ref()?;
        Some(read(&mut **lock(round)))
    }
}
