//! Steps 2 and 3: the `validate` of every action whose triggers match,
//! then the highest priority.

use crate::pipeline::plan::ServingPlan;
use crate::plugin::MessageRef;
use crate::registry::{LivePlugin, Registry};
use std::sync::Arc;

/// The highest-priority action whose `validate` accepts the message: each
/// plugin answers for all its asked actions at once. An action whose
/// triggers do not match the message is not asked.
pub(super) fn choose_action<'p>(
    core: &Registry,
    plan: &'p ServingPlan,
    view: MessageRef<'_>,
    errors: &mut Vec<String>,
) -> Option<(&'p Arc<LivePlugin>, u32)> {
    let matched = plan.triggers.matching(view.text);
    let mut chosen: Option<(i32, &Arc<LivePlugin>, u32)> = None;
    for (slot, plugin) in plan.plugins.iter().enumerate() {
        let asked = matched.actions(slot).unwrap_or(&plugin.action_indices);
        if asked.is_empty() {
            continue;
        }
        let actions = &plugin.instance.manifest.actions;
        plugin
            .instance
            .validate_each(asked, view, &mut |index, outcome| match outcome {
                Ok(true) => {
                    let priority = actions[index as usize].priority;
                    if chosen.as_ref().is_none_or(|(best, _, _)| priority > *best) {
                        chosen = Some((priority, plugin, index));
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    core.record_error(plugin, &error);
                    errors.push(error.to_string());
                }
            });
    }
    chosen.map(|(_, plugin, index)| (plugin, index))
}
