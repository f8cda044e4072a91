//! Action triggers: which actions may concern a message, decided by the host
//! from the manifests alone, without calling a plugin.
//!
//! An action may declare keywords and a pattern (see the SDK's
//! `Triggers`). A keyword matches when the lowercased text contains the
//! lowercased keyword; the pattern is a regular expression searched in the
//! text as written. An action with triggers is asked (`validate`) only about
//! messages that match one of them; an action without triggers about every
//! message.
//!
//! [`PluginTriggers`] is one plugin's triggers, compiled once when its
//! manifest is checked (a pattern that does not compile fails the plugin).
//! [`TriggerIndex`] combines the triggers of many plugins (the serving plan's,
//! or the lazy plugins not started yet): one keyword automaton for all their
//! keywords, so a message is scanned once for keywords whatever the number
//! of plugins, then each pattern.

use crate::shared_cause::SharedCause;
use agent_host_plugin_sdk::manifest::Manifest;
use aho_corasick::AhoCorasick;
use regex::Regex;
use std::borrow::Cow;

/// One action's triggers, compiled.
#[derive(Debug, Clone)]
struct ActionTrigger {
    /// Lowercased keywords.
    keywords: Vec<String>,
    /// The compiled pattern.
    pattern: Option<Regex>,
}

/// One plugin's triggers, by action index; `None` for an action without
/// triggers (asked about every message).
#[derive(Debug, Clone, Default)]
pub(crate) struct PluginTriggers {
    actions: Vec<Option<ActionTrigger>>,
}

impl PluginTriggers {
    /// Compiles the triggers of every action of `manifest` (already
    /// validated). A pattern that does not compile is an error naming the
    /// action, the field and the cause.
    pub(crate) fn compile(manifest: &Manifest) -> Result<Self, PatternError> {
        let mut actions = Vec::with_capacity(manifest.actions.len());
        for (index, action) in manifest.actions.iter().enumerate() {
            let Some(triggers) = &action.triggers else {
                actions.push(None);
                continue;
            };
            let pattern = match &triggers.pattern {
                None => None,
                Some(pattern) => Some(Regex::new(pattern).map_err(|e| PatternError {
                    index,
                    action: action.name.clone(),
                    source: SharedCause::from(e),
                })?),
            };
            actions.push(Some(ActionTrigger {
                keywords: triggers.keywords.iter().map(|k| k.to_lowercase()).collect(),
                pattern,
            }));
        }
        Ok(Self { actions })
    }

    /// Whether some action declares triggers.
    pub(crate) fn any(&self) -> bool {
        self.actions.iter().any(Option::is_some)
    }
}

/// An action's pattern that does not compile: a manifest error, naming the
/// field and the action, with the regular expression's error as its cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "manifest field `actions[{index}].triggers.pattern`: action '{action}': the pattern does not compile: {}",
    one_line(&.source.to_string())
)]
pub struct PatternError {
    /// The action's index in the manifest.
    pub index: usize,
    /// The action's name.
    pub action: String,
    /// Why the pattern does not compile.
    #[source]
    pub source: SharedCause<regex::Error>,
}

/// The regex crate reports a syntax error over several lines, with a caret
/// under the offending character; the load report wants one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How one plugin of an index takes part.
#[derive(Debug, Clone)]
enum Slot {
    /// No action declares triggers: every action is asked.
    Untriggered {
        /// Whether it has actions at all.
        has_actions: bool,
    },
    /// Each action (by index) and the target that stands for its triggers
    /// (`None`: the action has none and is always asked).
    Triggered(Vec<(u32, Option<u32>)>),
}

/// The triggers of several plugins, combined for one scan per message.
/// Plugins are addressed by their position (slot) in the list the index
/// was built from.
#[derive(Debug, Default)]
pub(crate) struct TriggerIndex {
    slots: Vec<Slot>,
    /// Every keyword, lowercased; match `i` stands for target `keyword_targets[i]`.
    keywords: Option<AhoCorasick>,
    keyword_targets: Vec<u32>,
    /// Every pattern, with its target.
    patterns: Vec<(Regex, u32)>,
    /// Triggered actions in all (each one target).
    targets: usize,
}

/// Which triggered actions of an index a message matches, by target.
#[derive(Debug, Default)]
pub(crate) struct Hits(Vec<bool>);

impl Hits {
    fn hit(&self, target: Option<u32>) -> bool {
        target.is_none_or(|t| self.0.get(t as usize).copied().unwrap_or(false))
    }
}

/// For one message, the actions of each plugin of an index to ask.
#[derive(Debug, Default)]
pub(crate) struct Matched {
    asked: Vec<u32>,
    /// Per slot, the range of `asked` for a plugin with triggers; `None`
    /// (or no entry) for a plugin without: all its actions.
    spans: Vec<Option<(usize, usize)>>,
}

impl Matched {
    /// The actions of the plugin in `slot` to ask, in index order; `None`
    /// when it declares no triggers and every action is asked.
    pub(crate) fn actions(&self, slot: usize) -> Option<&[u32]> {
        let (start, end) = (*self.spans.get(slot)?)?;
        self.asked.get(start..end)
    }
}

impl TriggerIndex {
    /// An index over `plugins`, one slot each, in order.
    pub(crate) fn new<'a>(plugins: impl IntoIterator<Item = &'a PluginTriggers>) -> Self {
        let mut slots = Vec::new();
        let mut keywords = Vec::new();
        let mut keyword_targets = Vec::new();
        let mut patterns = Vec::new();
        let mut targets = 0u32;
        for plugin in plugins {
            if !plugin.any() {
                slots.push(Slot::Untriggered {
                    has_actions: !plugin.actions.is_empty(),
                });
                continue;
            }
            let mut actions = Vec::with_capacity(plugin.actions.len());
            for (index, trigger) in plugin.actions.iter().enumerate() {
                let target = trigger.as_ref().map(|trigger| {
                    let target = targets;
                    targets += 1;
                    for keyword in &trigger.keywords {
                        keywords.push(keyword.clone());
                        keyword_targets.push(target);
                    }
                    if let Some(pattern) = &trigger.pattern {
                        patterns.push((pattern.clone(), target));
                    }
                    target
                });
                actions.push((index as u32, target));
            }
            slots.push(Slot::Triggered(actions));
        }
        let keywords = if keywords.is_empty() {
            None
        } else {
            match AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&keywords)
            {
                Ok(automaton) => Some(automaton),
                Err(error) => {
                    // Only a pattern set too large for the automaton's ids
                    // gets here; asking every action is always correct.
                    tracing::warn!("action keywords not indexed, every action is asked: {error}");
                    return Self {
                        slots: plugins_untriggered(&slots),
                        ..Self::default()
                    };
                }
            }
        };
        Self {
            slots,
            keywords,
            keyword_targets,
            patterns,
            targets: targets as usize,
        }
    }

    /// Which triggered actions `text` matches. Costs nothing when no plugin
    /// declares triggers.
    pub(crate) fn hits(&self, text: &str) -> Hits {
        if self.targets == 0 {
            return Hits::default();
        }
        let mut hits = vec![false; self.targets];
        if let Some(automaton) = &self.keywords {
            // The automaton ignores ASCII case; other text is lowercased first.
            let haystack = if text.is_ascii() {
                Cow::Borrowed(text)
            } else {
                Cow::Owned(text.to_lowercase())
            };
            for found in automaton.find_overlapping_iter(haystack.as_ref()) {
                if let Some(&target) = self.keyword_targets.get(found.pattern().as_usize()) {
                    hits[target as usize] = true;
                }
            }
        }
        for (pattern, target) in &self.patterns {
            let target = *target as usize;
            if !hits[target] && pattern.is_match(text) {
                hits[target] = true;
            }
        }
        Hits(hits)
    }

    /// For `text`, the actions of each plugin to ask.
    pub(crate) fn matching(&self, text: &str) -> Matched {
        if self.targets == 0 {
            return Matched::default();
        }
        let hits = self.hits(text);
        let mut matched = Matched {
            asked: Vec::new(),
            spans: Vec::with_capacity(self.slots.len()),
        };
        for slot in &self.slots {
            match slot {
                Slot::Untriggered { .. } => matched.spans.push(None),
                Slot::Triggered(actions) => {
                    let start = matched.asked.len();
                    matched.asked.extend(
                        actions
                            .iter()
                            .filter(|(_, target)| hits.hit(*target))
                            .map(|(index, _)| *index),
                    );
                    matched.spans.push(Some((start, matched.asked.len())));
                }
            }
        }
        matched
    }

    /// Whether some action of the plugin in `slot` is to be asked about a
    /// message with these `hits`: an action without triggers always is.
    pub(crate) fn wants(&self, slot: usize, hits: &Hits) -> bool {
        match self.slots.get(slot) {
            None => false,
            Some(Slot::Untriggered { has_actions }) => *has_actions,
            Some(Slot::Triggered(actions)) => actions.iter().any(|(_, target)| hits.hit(*target)),
        }
    }
}

/// The same slots with every trigger dropped.
fn plugins_untriggered(slots: &[Slot]) -> Vec<Slot> {
    slots
        .iter()
        .map(|slot| match slot {
            Slot::Untriggered { has_actions } => Slot::Untriggered {
                has_actions: *has_actions,
            },
            Slot::Triggered(actions) => Slot::Untriggered {
                has_actions: !actions.is_empty(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::{Action, ActionResult, Plugin};

    fn action(name: &str) -> Action {
        Action::new(name)
            .validate(|_| true)
            .handler(|_, _| Ok(ActionResult::default()))
    }

    fn compiled(plugin: Plugin) -> PluginTriggers {
        PluginTriggers::compile(&plugin.manifest()).expect("compiles")
    }

    fn asked(index: &TriggerIndex, text: &str, slot: usize) -> Option<Vec<u32>> {
        index.matching(text).actions(slot).map(<[u32]>::to_vec)
    }

    #[test]
    fn keywords_match_case_insensitive_substrings() {
        let weather = compiled(
            Plugin::new("weather", "1.0.0")
                .action(action("GET").keywords(["Weather", "forecast"]))
                .action(action("RAIN").keywords(["rain"]))
                .action(action("ÉTÉ").keywords(["ÉTÉ"])),
        );
        let index = TriggerIndex::new([&weather]);
        assert_eq!(asked(&index, "WEATHER in Paris?", 0), Some(vec![0]));
        assert_eq!(
            asked(&index, "is it raining", 0),
            Some(vec![1]),
            "a substring"
        );
        assert_eq!(asked(&index, "the forecast: rain", 0), Some(vec![0, 1]));
        assert_eq!(
            asked(&index, "un été chaud", 0),
            Some(vec![2]),
            "Unicode case"
        );
        assert_eq!(asked(&index, "hello", 0), Some(vec![]));
    }

    #[test]
    fn a_pattern_is_searched_as_written_and_either_trigger_is_enough() {
        let p = compiled(
            Plugin::new("p", "1.0.0")
                .action(action("ANCHORED").pattern(r"^remind me\b"))
                .action(action("BOTH").keywords(["note"]).pattern(r"(?i)\btodo\b")),
        );
        let index = TriggerIndex::new([&p]);
        assert_eq!(asked(&index, "remind me at 5", 0), Some(vec![0]));
        assert_eq!(
            asked(&index, "please remind me", 0),
            Some(vec![]),
            "anchored"
        );
        assert_eq!(asked(&index, "Remind me", 0), Some(vec![]), "case kept");
        assert_eq!(asked(&index, "a TODO", 0), Some(vec![1]));
        assert_eq!(asked(&index, "a Note", 0), Some(vec![1]));
    }

    #[test]
    fn actions_without_triggers_are_always_asked() {
        let mixed = compiled(
            Plugin::new("mixed", "1.0.0")
                .action(action("ALWAYS"))
                .action(action("SOMETIMES").keywords(["x"])),
        );
        let plain = compiled(Plugin::new("plain", "1.0.0").action(action("A")));
        let index = TriggerIndex::new([&plain, &mixed]);
        assert_eq!(asked(&index, "nothing", 0), None, "every action");
        assert_eq!(asked(&index, "nothing", 1), Some(vec![0]));
        assert_eq!(asked(&index, "x", 1), Some(vec![0, 1]));

        let untriggered = TriggerIndex::new([&plain]);
        assert_eq!(untriggered.targets, 0);
        assert_eq!(asked(&untriggered, "anything", 0), None);
    }

    #[test]
    fn wants_says_whether_a_plugin_has_anything_to_ask() {
        let keyworded =
            compiled(Plugin::new("k", "1.0.0").action(action("K").keywords(["weather"])));
        let plain = compiled(Plugin::new("plain", "1.0.0").action(action("A")));
        let no_actions = compiled(Plugin::new("none", "1.0.0"));
        let index = TriggerIndex::new([&keyworded, &plain, &no_actions]);
        let hits = index.hits("hello");
        assert!(!index.wants(0, &hits));
        assert!(index.wants(1, &hits), "an action without triggers");
        assert!(!index.wants(2, &hits), "nothing to ask");
        assert!(index.wants(0, &index.hits("weather?")));
        assert!(!index.wants(3, &hits), "no such slot");
    }

    #[test]
    fn a_pattern_that_does_not_compile_names_the_action_and_the_field() {
        let manifest = Plugin::new("p", "1.0.0")
            .action(action("FINE"))
            .action(action("BROKEN").pattern("(unclosed"))
            .manifest();
        let error = PluginTriggers::compile(&manifest).expect_err("refused");
        assert_eq!((error.index, error.action.as_str()), (1, "BROKEN"));
        assert!(
            error.to_string().starts_with(
                "manifest field `actions[1].triggers.pattern`: action 'BROKEN': \
                 the pattern does not compile: "
            ),
            "{error}"
        );
        assert!(!error.to_string().contains('\n'), "{error}");
        let cause = std::error::Error::source(&error).expect("the regex error");
        assert!(cause.downcast_ref::<SharedCause<regex::Error>>().is_some());
    }
}
