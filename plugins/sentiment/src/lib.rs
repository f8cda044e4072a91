//! `sentiment`: scores how positive or negative messages are.
//!
//! The plugin offers
//!
//! * the `sentiment` evaluator, which scores a message with a small built-in
//!   lexicon (see [`analyze`]): the evaluation's `score` is the strength of the
//!   sentiment (0 to 1), `passed` is false for text more negative than the
//!   configured `negative_threshold` (default -0.5), and `metadata` holds
//!   `{"sentiment": "positive" | "neutral" | "negative", "raw": -1.0..1.0}`.
//!   Its batch form scores many messages in one call;
//! * the `sentiment` service, whose `stats` method returns
//!   `{"evaluated": n, "actions_completed": m}`: how many messages the
//!   evaluator scored and how many `action:completed` events the plugin has
//!   seen since it was loaded.

use agent_host_plugin_sdk::{
    json, Error, ErrorKind, Evaluation, Evaluator, Message, Plugin, Result, Runtime, Service, Value,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The evaluator's and the service's name.
pub const NAME: &str = "sentiment";

/// The `negative_threshold` used when the config gives none.
pub const DEFAULT_NEGATIVE_THRESHOLD: f64 = -0.5;

/// A raw score at least this far from 0 is positive or negative, not neutral.
pub const NEUTRAL_BAND: f64 = 0.05;

/// Words that carry sentiment, with their strength from -4 to 4.
static LEXICON: &[(&str, f64)] = &[
    // Positive.
    ("good", 1.9),
    ("great", 3.1),
    ("excellent", 3.2),
    ("amazing", 2.8),
    ("awesome", 3.1),
    ("wonderful", 2.7),
    ("fantastic", 2.6),
    ("brilliant", 2.8),
    ("perfect", 2.7),
    ("best", 3.2),
    ("better", 1.9),
    ("nice", 1.8),
    ("fine", 0.8),
    ("ok", 0.9),
    ("okay", 0.9),
    ("love", 3.2),
    ("loved", 2.9),
    ("like", 1.5),
    ("liked", 1.8),
    ("enjoy", 2.2),
    ("enjoyed", 2.3),
    ("happy", 2.7),
    ("glad", 2.0),
    ("pleased", 1.9),
    ("delighted", 2.9),
    ("thanks", 1.9),
    ("thank", 1.5),
    ("helpful", 1.8),
    ("useful", 1.9),
    ("easy", 1.9),
    ("fast", 1.0),
    ("beautiful", 2.9),
    ("fun", 2.3),
    ("cool", 1.3),
    ("sunny", 1.0),
    ("works", 1.0),
    ("recommend", 1.5),
    ("impressive", 2.4),
    ("success", 2.7),
    ("win", 2.8),
    ("yes", 0.9),
    ("calm", 1.3),
    ("safe", 1.9),
    ("correct", 1.5),
    ("superb", 3.1),
    // Negative.
    ("bad", -2.5),
    ("terrible", -3.1),
    ("awful", -3.1),
    ("horrible", -2.9),
    ("worst", -3.1),
    ("worse", -2.1),
    ("poor", -2.1),
    ("hate", -2.7),
    ("hated", -3.2),
    ("dislike", -1.6),
    ("sad", -2.1),
    ("angry", -2.3),
    ("annoyed", -1.6),
    ("annoying", -1.7),
    ("upset", -1.6),
    ("disappointed", -1.9),
    ("disappointing", -2.2),
    ("frustrated", -2.4),
    ("frustrating", -1.9),
    ("useless", -1.8),
    ("broken", -1.9),
    ("bug", -1.2),
    ("buggy", -1.8),
    ("crash", -1.7),
    ("crashed", -1.8),
    ("fail", -2.5),
    ("failed", -2.3),
    ("failure", -2.3),
    ("error", -1.7),
    ("wrong", -2.1),
    ("slow", -1.0),
    ("ugly", -2.3),
    ("boring", -1.3),
    ("problem", -1.7),
    ("difficult", -1.5),
    ("stupid", -2.4),
    ("sorry", -0.3),
    ("no", -1.2),
    ("never", -0.5),
    ("worried", -1.2),
    ("scared", -1.9),
    ("painful", -2.4),
    ("miserable", -2.2),
    ("rain", -0.4),
    ("cold", -0.3),
    ("dangerous", -2.1),
];

/// Words that flip the sentiment of a lexicon word up to three words after them.
static NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "hardly",
    "barely", "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent",
    "wont", "wouldnt", "shouldnt", "couldnt", "aint",
];

/// Words that strengthen the lexicon word right after them.
static INTENSIFIERS: &[&str] = &[
    "very",
    "really",
    "extremely",
    "so",
    "incredibly",
    "super",
    "absolutely",
    "totally",
    "completely",
    "truly",
];

/// Words that weaken the lexicon word right after them.
static DAMPENERS: &[&str] = &[
    "slightly", "somewhat", "fairly", "little", "kinda", "rather",
];

/// How a negation scales a word (flipped and softened: "not good" is less
/// negative than "bad").
const NEGATION_FACTOR: f64 = -0.74;
/// How much an intensifier strengthens the next word.
const INTENSIFIER_FACTOR: f64 = 1.3;
/// How much a dampener weakens the next word.
const DAMPENER_FACTOR: f64 = 0.7;
/// Normalisation constant: `raw = sum / sqrt(sum² + ALPHA)`.
const ALPHA: f64 = 15.0;

/// The sentiment of a text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// From -1 (very negative) to 1 (very positive).
    pub raw: f64,
    /// `positive`, `neutral` or `negative`.
    pub sentiment: &'static str,
    /// How many words of the text are in the lexicon.
    pub matched: usize,
}

fn is_negation(word: &str) -> bool {
    NEGATIONS.contains(&word) || word.ends_with("n't")
}

fn strength(word: &str) -> Option<f64> {
    LEXICON
        .iter()
        .find(|(entry, _)| *entry == word)
        .map(|(_, value)| *value)
}

/// The lowercase words of `text`; apostrophes stay inside words ("don't").
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\u{2019}', '\u{2018}'], "'")
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|word| word.trim_matches('\''))
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

/// Scores `text` with the lexicon.
///
/// Each lexicon word adds its strength, multiplied by 1.3 after an
/// intensifier ("very good"), by 0.7 after a dampener ("slightly bad"), and
/// by -0.74 when a negation ("not", "never", any "...n't") comes up to three
/// words before it ("not very good", "don't like"). A negation word that is
/// itself in the lexicon ("no", "never") counts only when nothing follows it
/// to negate. The sum is squashed into -1..1 with `sum / sqrt(sum² + 15)`,
/// as VADER does; within ±0.05 the text is neutral.
pub fn analyze(text: &str) -> Analysis {
    let words = words(text);
    let mut sum = 0.0;
    let mut matched = 0;
    for (index, word) in words.iter().enumerate() {
        let Some(mut value) = strength(word) else {
            continue;
        };
        if is_negation(word) {
            let negates_something = words
                .iter()
                .skip(index + 1)
                .take(3)
                .any(|next| strength(next).is_some() && !is_negation(next));
            if negates_something {
                continue;
            }
        }
        let before = &words[index.saturating_sub(3)..index];
        if let Some(previous) = before.last() {
            if INTENSIFIERS.contains(&previous.as_str()) {
                value *= INTENSIFIER_FACTOR;
            } else if DAMPENERS.contains(&previous.as_str()) {
                value *= DAMPENER_FACTOR;
            }
        }
        if before.iter().any(|w| is_negation(w)) {
            value *= NEGATION_FACTOR;
        }
        sum += value;
        matched += 1;
    }
    let raw = if sum == 0.0 {
        0.0
    } else {
        (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0)
    };
    let sentiment = if raw >= NEUTRAL_BAND {
        "positive"
    } else if raw <= -NEUTRAL_BAND {
        "negative"
    } else {
        "neutral"
    };
    Analysis {
        raw,
        sentiment,
        matched,
    }
}

/// The evaluation of `text` against `threshold`: passed while the raw score
/// is above the threshold.
pub fn evaluation(text: &str, threshold: f64) -> Evaluation {
    let analysis = analyze(text);
    Evaluation::new(analysis.raw.abs().min(1.0), analysis.raw > threshold).with_metadata(json!({
        "sentiment": analysis.sentiment,
        "raw": analysis.raw,
    }))
}

/// The configured `negative_threshold`.
fn threshold(rt: &Runtime<'_>) -> Result<f64> {
    match rt.config_value("negative_threshold")? {
        Value::Null => Ok(DEFAULT_NEGATIVE_THRESHOLD),
        other => other
            .as_f64()
            .filter(|t| (-1.0..=1.0).contains(t))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "config `negative_threshold` must be a number from -1 to 1, not {other}"
                    ),
                )
            }),
    }
}

/// Counters shared by the evaluator, the event handler and the service.
#[derive(Debug, Default)]
pub struct Stats {
    evaluated: AtomicU64,
    actions_completed: AtomicU64,
}

/// What the service's `stats` method returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Messages the evaluator scored.
    pub evaluated: u64,
    /// `action:completed` events seen.
    pub actions_completed: u64,
}

impl Stats {
    /// The counters' current values.
    pub fn report(&self) -> StatsReport {
        StatsReport {
            evaluated: self.evaluated.load(Ordering::Relaxed),
            actions_completed: self.actions_completed.load(Ordering::Relaxed),
        }
    }

    fn count_evaluated(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.evaluated.fetch_add(n, Ordering::Relaxed);
    }
}

/// The JSON Schema of the plugin's config.
pub fn config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "negative_threshold": {
                "type": "number",
                "minimum": -1,
                "maximum": 1,
                "default": DEFAULT_NEGATIVE_THRESHOLD,
                "description": "A message whose raw sentiment (-1..1) is at or below this fails the evaluation."
            }
        },
        "additionalProperties": false
    })
}

/// Builds the `sentiment` plugin.
pub fn plugin() -> Plugin {
    let stats = Arc::new(Stats::default());
    let for_evaluate = Arc::clone(&stats);
    let for_batch = Arc::clone(&stats);
    let for_events = Arc::clone(&stats);
    Plugin::new("sentiment", "1.0.0")
        // Reading its own config is a permission like any other.
        .permission("config:*")
        .description("Scores the sentiment of messages with a built-in lexicon")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .config_schema(config_schema())
        .default_config(json!({ "negative_threshold": DEFAULT_NEGATIVE_THRESHOLD }))
        .on_load(move |rt| {
            let stats = Arc::clone(&for_events);
            rt.on("action:completed", move |event, rt| {
                let n = stats.actions_completed.fetch_add(1, Ordering::Relaxed) + 1;
                let action = event
                    .payload
                    .get("action")
                    .and_then(Value::as_str)
                    .unwrap_or("an action");
                rt.debug(format!("{action} completed ({n} so far)"));
                Ok(())
            })?;
            Ok(())
        })
        .evaluator(
            Evaluator::new(NAME)
                .description(
                    "Lexicon sentiment: score = strength 0..1, fails below negative_threshold, \
                     metadata {sentiment, raw}",
                )
                .evaluate(move |message, rt| {
                    let threshold = threshold(rt)?;
                    for_evaluate.count_evaluated(1);
                    Ok(evaluation(message.text(), threshold))
                })
                .evaluate_batch(move |messages: &[Message<'_>], rt| {
                    let threshold = threshold(rt)?;
                    for_batch.count_evaluated(messages.len());
                    Ok(messages
                        .iter()
                        .map(|message| evaluation(message.text(), threshold))
                        .collect())
                }),
        )
        .service(
            Service::new(NAME, stats)
                .description("stats -> {evaluated, actions_completed}")
                .method(
                    "stats",
                    |stats: &Arc<Stats>, (): (), _rt| Ok(stats.report()),
                ),
        )
}

agent_host_plugin_sdk::export_plugin!(plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;

    fn raw(text: &str) -> f64 {
        analyze(text).raw
    }

    #[test]
    fn manifest_is_valid() {
        let manifest = plugin().manifest();
        manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        assert!(manifest.evaluators[0].batch);
        assert_eq!(manifest.services[0].methods, ["stats"]);
    }

    #[test]
    fn lexicon_words_are_lowercase_and_unique() {
        for (index, (word, value)) in LEXICON.iter().enumerate() {
            assert_eq!(*word, word.to_lowercase());
            assert!((-4.0..=4.0).contains(value) && *value != 0.0, "{word}");
            assert!(
                LEXICON[index + 1..].iter().all(|(other, _)| other != word),
                "{word} twice"
            );
        }
    }

    #[test]
    fn polarity_and_labels() {
        assert_eq!(analyze("This is great, thanks!").sentiment, "positive");
        assert_eq!(analyze("This is terrible").sentiment, "negative");
        assert_eq!(analyze("The meeting is at noon").sentiment, "neutral");
        assert_eq!(analyze("").raw, 0.0);
        assert_eq!(analyze("").matched, 0);
        assert!(raw("I LOVE it") > 0.5);
        assert!(raw("awful, broken, useless and slow") < -0.8);
    }

    #[test]
    fn negation_flips_and_softens() {
        assert!(raw("not good") < 0.0);
        assert!(raw("not good") > raw("bad"));
        assert!(raw("this isn't bad at all") > 0.0);
        assert!(raw("I don’t like it") < 0.0, "typographic apostrophe");
        assert!(raw("never been happy") < 0.0);
        assert!(raw("not very good") < 0.0);
        // A negation on its own still counts as a (weak) negative word.
        assert!(raw("no") < 0.0);
        assert!(raw("no problem") > 0.0);
    }

    #[test]
    fn intensifiers_and_dampeners() {
        assert!(raw("very good") > raw("good"));
        assert!(raw("slightly bad") > raw("bad"));
        assert!(raw("good") > raw("slightly good"));
    }

    #[test]
    fn evaluations_have_the_documented_shape() {
        let good = evaluation("what a wonderful day", DEFAULT_NEGATIVE_THRESHOLD);
        assert!(good.passed);
        assert!(good.score > 0.0 && good.score <= 1.0);
        assert_eq!(good.metadata["sentiment"], "positive");
        assert!((good.metadata["raw"].as_f64().unwrap() - good.score).abs() < 1e-12);

        let bad = evaluation("this is the worst, I hate it", DEFAULT_NEGATIVE_THRESHOLD);
        assert!(!bad.passed);
        assert_eq!(bad.metadata["sentiment"], "negative");
        assert!(bad.metadata["raw"].as_f64().unwrap() <= -0.5);
        assert!((0.0..=1.0).contains(&bad.score));

        let mild = evaluation("slow", DEFAULT_NEGATIVE_THRESHOLD);
        assert!(mild.passed, "mildly negative text passes");
        let neutral = evaluation("ok then", 0.9);
        assert!(!neutral.passed, "a high threshold fails neutral text");
    }

    #[test]
    fn evaluator_runs_through_the_host() {
        let host = TestHost::new("sentiment");
        let loaded = host.load(plugin()).unwrap();
        let evaluation = loaded
            .evaluate("sentiment", "I am very happy with this")
            .unwrap();
        assert!(evaluation.passed);
        assert_eq!(evaluation.metadata["sentiment"], "positive");

        let batch = loaded
            .evaluate_batch("sentiment", &["great", "terrible, awful", "hello"])
            .unwrap();
        let labels: Vec<&str> = batch
            .iter()
            .map(|e| e.metadata["sentiment"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["positive", "negative", "neutral"]);
        assert_eq!(
            batch.iter().map(|e| e.passed).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert!(loaded.evaluate_batch("sentiment", &[]).unwrap().is_empty());

        let stats = loaded
            .call_service("sentiment", "stats", json!(null))
            .unwrap();
        assert_eq!(stats, json!({"evaluated": 4, "actions_completed": 0}));
    }

    #[test]
    fn threshold_comes_from_the_config() {
        let host = TestHost::new("sentiment").with_config(json!({"negative_threshold": -0.1}));
        let loaded = host.load(plugin()).unwrap();
        assert!(!loaded.evaluate("sentiment", "it is slow").unwrap().passed);

        let host = TestHost::new("sentiment").with_config(json!({"negative_threshold": "low"}));
        let loaded = host.load(plugin()).unwrap();
        let error = loaded.evaluate("sentiment", "fine").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(error.message().contains("negative_threshold"));
        assert!(loaded.evaluate_batch("sentiment", &["fine"]).is_err());
    }

    #[test]
    fn completed_actions_are_counted() {
        let host = TestHost::new("sentiment");
        let loaded = host.load(plugin()).unwrap();
        assert_eq!(host.deliver("action:completed", json!({})).unwrap(), 1);
        assert_eq!(
            host.deliver("action:completed", json!({"action": "GET_WEATHER"}))
                .unwrap(),
            1
        );
        assert_eq!(host.deliver("action:failed", json!({})).unwrap(), 0);
        let stats = loaded
            .call_service("sentiment", "stats", Value::Null)
            .unwrap();
        assert_eq!(stats["actions_completed"], 2);
        assert_eq!(stats["evaluated"], 0);
        assert!(host.logs().iter().any(|(level, line)| *level
            == agent_host_plugin_sdk::Level::Debug
            && line == "GET_WEATHER completed (2 so far)"));
    }
}
