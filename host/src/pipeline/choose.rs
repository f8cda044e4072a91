//! Steps 2 and 3: every action's `validate`, then the highest priority.

use crate::plugin::MessageRef;
use crate::registry::{LivePlugin, Registry};
use std::sync::Arc;

/// The highest-priority action whose `validate` accepts the message: each
/// plugin answers for all its actions at once.
pub(super) fn choose_action<'p>(
    core: &Registry,
    plugins: &'p [Arc<LivePlugin>],
    view: MessageRef<'_>,
    errors: &mut Vec<String>,
) -> Option<(&'p Arc<LivePlugin>, u32)> {
    let mut chosen: Option<(i32, &Arc<LivePlugin>, u32)> = None;
    for plugin in plugins {
        let actions = &plugin.instance.manifest.actions;
        plugin
            .instance
            .validate_each(
                &plugin.action_indices,
                view,
                &mut |index, outcome| match outcome {
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
                },
            );
    }
    chosen.map(|(_, plugin, index)| (plugin, index))
}
