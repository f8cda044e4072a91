//! The plugin manifest: what a plugin is, what it needs and what it offers.
//! (One file of about 950 lines, half of them tests: the type, its
//! validation and the reading of manifests written by other SDK versions
//! share every field and are checked together.)
//!
//! The SDK builds it from a [`crate::Plugin`]; it crosses the boundary as a
//! JSON array (one manifest per plugin in the library). The host reads that
//! array with [`parse_manifests`] into this same type and calls
//! [`Manifest::validate`] on each manifest. Unknown fields are rejected, so
//! that a manifest from a newer SDK that this host does not understand, or a
//! typo in a hand-written one, is an error rather than a silent omission;
//! [`parse_manifests`] names the plugin, the fields and both SDK versions.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

/// Everything the host needs to know about a plugin before running any of its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique kebab-case name, such as `http-client`.
    pub name: String,
    /// Semantic version, such as `1.2.0`.
    pub version: String,
    /// One line saying what the plugin does.
    #[serde(default)]
    pub description: String,
    /// Who wrote it.
    #[serde(default)]
    pub author: String,
    /// SPDX license identifier.
    #[serde(default)]
    pub license: String,
    /// Plugins that must be loaded first: `name` or `name@<semver requirement>`.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Plugins loaded first when they are present; the plugin loads without them.
    #[serde(default)]
    pub optional_dependencies: Vec<String>,
    /// Permissions the plugin asks for (see the plugin guide); the operator grants them.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// JSON Schema of the plugin's config.
    #[serde(default)]
    pub config_schema: Option<Value>,
    /// Config used where the operator's config says nothing.
    #[serde(default)]
    pub default_config: Option<Value>,
    /// The plugin's actions, in index order.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    /// The plugin's providers, in index order.
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
    /// The plugin's evaluators, in index order.
    #[serde(default)]
    pub evaluators: Vec<EvaluatorSpec>,
    /// The plugin's services, in index order.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Whether the plugin exports and imports state across hot reloads.
    #[serde(default)]
    pub state_hooks: bool,
    /// Event patterns the plugin subscribes to (exact names, or a prefix
    /// ending in `*`), declared so that the host can start a lazy plugin
    /// when a matching event is emitted, without running its code first.
    /// Left out of the JSON when empty, so a plugin that declares none reads
    /// the same to hosts that predate the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribes_to: Vec<String>,
    /// The version of `agent-host-plugin-sdk` the plugin was built with
    /// ([`crate::SDK_VERSION`] of the SDK it compiled against).
    #[serde(default)]
    pub sdk_version: String,
}

/// An example exchange, for documentation and for action selection by a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// What the user says.
    pub input: String,
    /// What the agent answers.
    pub output: String,
}

/// At most `max_requests` calls within any `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed per window.
    pub max_requests: u32,
    /// The window's length in milliseconds.
    pub window_ms: u64,
}

/// Describes one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Name, unique within the plugin, such as `GET_WEATHER`.
    pub name: String,
    /// What the action does.
    #[serde(default)]
    pub description: String,
    /// Example exchanges.
    #[serde(default)]
    pub examples: Vec<Example>,
    /// Among valid actions the highest priority runs.
    #[serde(default)]
    pub priority: i32,
    /// Handler timeout in milliseconds; the host's default when absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Rate limit, if any.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Permissions the message's sender must hold.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Cheap conditions the host checks itself before it asks `validate`;
    /// `None`: `validate` is asked about every message. Left out of the
    /// JSON when `None`, so an action without triggers reads the same to
    /// hosts that predate the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    /// Whether the handler may run twice for one message without harm:
    /// if its worker process dies while it runs, the host runs it again on
    /// the worker that replaces it, within the message's deadline. Left out
    /// of the JSON when `false`, so an action that does not say so reads
    /// the same to hosts that predate the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
}

/// When an action may apply, as the host can tell without running plugin
/// code: the host asks the action's `validate` only about messages that
/// match one of the keywords or the pattern (either is enough).
///
/// * a **keyword** matches when the message text, lowercased, contains the
///   keyword, lowercased (Unicode lowercase, `str::to_lowercase`): a
///   case-insensitive substring, not a whole word (`rain` matches
///   "Raining?");
/// * the **pattern** is a regular expression in the syntax of the Rust
///   `regex` crate, searched anywhere in the text as written (anchor it with
///   `^`/`$`, ignore case with `(?i)`); the host rejects a plugin whose
///   pattern does not compile.
///
/// Triggers only narrow which messages reach `validate`; `validate` still
/// decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// Case-insensitive substrings, any of which lets a message through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// A regular expression that lets a message through when it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// How the host caches a provider's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a value stays fresh, in milliseconds.
    pub ttl_ms: u64,
    /// Serve a stale value at once and refresh it in the background.
    #[serde(default)]
    pub stale_while_revalidate: bool,
}

/// Describes one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Name, unique within the plugin; the key of its value in the state.
    pub name: String,
    /// What the provider supplies.
    #[serde(default)]
    pub description: String,
    /// Caching, if any.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Whether the provider can push fresh values.
    #[serde(default)]
    pub subscribable: bool,
    /// How long one `get` may take, in milliseconds; the host's
    /// `provider_timeout_ms` when absent. A `get` that takes longer is
    /// left out of the message's state (its cached value, if any, is
    /// served marked stale).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Describes one evaluator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorSpec {
    /// Name, unique within the plugin.
    pub name: String,
    /// What the evaluator scores.
    #[serde(default)]
    pub description: String,
    /// Whether the evaluator has its own batch implementation.
    #[serde(default)]
    pub batch: bool,
}

/// Describes one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Name, unique across all loaded plugins, such as `weather`.
    pub name: String,
    /// What the service offers.
    #[serde(default)]
    pub description: String,
    /// The methods other plugins may call.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// A parsed dependency: a plugin name and the versions that satisfy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The plugin depended on.
    pub name: String,
    /// The versions accepted (`*` when the manifest gave none).
    pub requirement: VersionReq,
    /// Whether the dependency is optional.
    pub optional: bool,
}

impl Dependency {
    /// Parses `name` or `name@requirement`, such as `http-client@^1.2`. The
    /// requirement uses Cargo's semver syntax (`^1.2`, `>=1, <3`, `=1.0.4`);
    /// without one any version is accepted.
    ///
    /// ```
    /// use agent_host_plugin_sdk::manifest::Dependency;
    ///
    /// let dep = Dependency::parse("http-client@^1.2", false).unwrap();
    /// assert_eq!(dep.name, "http-client");
    /// assert!(dep.requirement.matches(&"1.4.0".parse().unwrap()));
    /// assert!(!dep.requirement.matches(&"2.0.0".parse().unwrap()));
    /// assert_eq!(dep.to_string(), "http-client@^1.2");
    ///
    /// let any = Dependency::parse("geolocation", true).unwrap();
    /// assert!(any.optional);
    /// assert_eq!(any.to_string(), "geolocation");
    ///
    /// assert!(Dependency::parse("geolocation@^one", false).is_err());
    /// assert!(Dependency::parse("Geolocation", false).is_err());
    /// ```
    pub fn parse(text: &str, optional: bool) -> Result<Self, String> {
        let (name, requirement) = match text.split_once('@') {
            Some((name, req)) => {
                let requirement = VersionReq::parse(req.trim())
                    .map_err(|e| format!("invalid version requirement '{req}': {e}"))?;
                (name.trim(), requirement)
            }
            None => (text.trim(), VersionReq::STAR),
        };
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            requirement,
            optional,
        })
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirement == VersionReq::STAR {
            f.write_str(&self.name)
        } else {
            write!(f, "{}@{}", self.name, self.requirement)
        }
    }
}

/// A manifest that failed validation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The offending field, such as `version` or `dependencies[1]`.
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "manifest field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ManifestError {}

/// What validation derives from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidManifest {
    /// The parsed version.
    pub version: Version,
    /// Required dependencies followed by optional ones.
    pub dependencies: Vec<Dependency>,
}

/// Checks a plugin or dependency name: kebab-case ASCII, 1 to 64
/// characters, starting with a letter. (Component names follow a looser
/// rule: letters, digits, `_`, `-`, `.`, `:`, starting with a letter.)
///
/// ```
/// use agent_host_plugin_sdk::manifest::check_name;
///
/// assert!(check_name("http-client").is_ok());
/// assert!(check_name("http_client").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid plugin name (kebab-case: lowercase letters, digits and single dashes, starting with a letter, at most 64 characters)"
        ))
    }
}

fn check_component_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid component name (letters, digits, '_', '-', '.', ':', starting with a letter, at most 64 characters)"
        ))
    }
}

fn unique<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ManifestError> {
    let mut seen = HashSet::new();
    for (index, name) in names.enumerate() {
        let field = format!("{kind}[{index}].name");
        check_component_name(name).map_err(|reason| ManifestError {
            field: field.clone(),
            reason,
        })?;
        if !seen.insert(name) {
            return Err(ManifestError {
                field,
                reason: format!("'{name}' is used by two {kind}"),
            });
        }
    }
    Ok(())
}

/// Checks an action's triggers: at least one keyword or a pattern, no
/// empty keyword, no empty pattern. (Whether the pattern compiles is the
/// host's check: the SDK does not carry a regular expression engine.)
fn check_triggers(triggers: &Triggers, field: &str) -> Result<(), ManifestError> {
    let err = |field: String, reason: &str| ManifestError {
        field,
        reason: reason.to_string(),
    };
    if triggers.keywords.is_empty() && triggers.pattern.is_none() {
        return Err(err(
            field.to_string(),
            "declares neither keywords nor a pattern (leave triggers out to have validate asked about every message)",
        ));
    }
    if let Some(index) = triggers.keywords.iter().position(|k| k.trim().is_empty()) {
        return Err(err(
            format!("{field}.keywords[{index}]"),
            "a keyword must not be empty",
        ));
    }
    if triggers.pattern.as_deref() == Some("") {
        return Err(err(
            format!("{field}.pattern"),
            "the pattern must not be empty",
        ));
    }
    Ok(())
}

impl Manifest {
    /// Checks every field and parses version and dependencies: the name
    /// (kebab-case), the version (semver), each dependency (no duplicates, not
    /// on itself), each permission (not empty, no spaces), the config schema
    /// and default config (JSON objects), component names (unique per kind),
    /// action limits (rate limit and timeout greater than 0), action
    /// triggers (a keyword or a pattern, none empty) and event patterns
    /// (not empty, no spaces). The host
    /// runs it on every manifest it loads; the first problem is the error.
    ///
    /// ```
    /// use agent_host_plugin_sdk::{Action, ActionResult, Plugin};
    ///
    /// let valid = Plugin::new("weather", "1.2.0")
    ///     .dependency("geolocation@^1")
    ///     .optional_dependency("http-client")
    ///     .manifest()
    ///     .validate()
    ///     .unwrap();
    /// assert_eq!(valid.version.to_string(), "1.2.0");
    /// assert_eq!(valid.dependencies[0].name, "geolocation");
    /// assert!(valid.dependencies[1].optional);
    ///
    /// let error = Plugin::new("weather", "1.x").manifest().validate().unwrap_err();
    /// assert_eq!(error.field, "version");
    ///
    /// let error = Plugin::new("Weather", "1.0.0").manifest().validate().unwrap_err();
    /// assert_eq!(error.field, "name");
    ///
    /// let twice = |name: &str| {
    ///     Action::new(name)
    ///         .validate(|_| false)
    ///         .handler(|_, _| Ok(ActionResult::default()))
    /// };
    /// let error = Plugin::new("weather", "1.0.0")
    ///     .action(twice("GET"))
    ///     .action(twice("GET"))
    ///     .manifest()
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(error.to_string(), "manifest field `actions[1].name`: 'GET' is used by two actions");
    /// ```
    pub fn validate(&self) -> Result<ValidManifest, ManifestError> {
        let err = |field: &str, reason: String| ManifestError {
            field: field.to_string(),
            reason,
        };
        self.check_sizes()?;
        check_name(&self.name).map_err(|r| err("name", r))?;
        let version = Version::parse(&self.version).map_err(|e| {
            err(
                "version",
                format!("'{}' is not a semantic version: {e}", self.version),
            )
        })?;
        let mut dependencies = Vec::new();
        let mut seen = HashSet::new();
        for (field, list, optional) in [
            ("dependencies", &self.dependencies, false),
            ("optional_dependencies", &self.optional_dependencies, true),
        ] {
            for (index, text) in list.iter().enumerate() {
                let field = format!("{field}[{index}]");
                let dependency = Dependency::parse(text, optional).map_err(|r| err(&field, r))?;
                if dependency.name == self.name {
                    return Err(err(&field, "a plugin cannot depend on itself".into()));
                }
                if !seen.insert(dependency.name.clone()) {
                    return Err(err(
                        &field,
                        format!("'{}' is listed twice", dependency.name),
                    ));
                }
                dependencies.push(dependency);
            }
        }
        for (index, permission) in self.permissions.iter().enumerate() {
            if permission.is_empty() || permission.chars().any(char::is_whitespace) {
                return Err(err(
                    &format!("permissions[{index}]"),
                    format!("'{permission}' is not a permission (no spaces, not empty)"),
                ));
            }
        }
        if let Some(schema) = &self.config_schema {
            if !schema.is_object() {
                return Err(err("config_schema", "must be a JSON object".into()));
            }
        }
        if let Some(config) = &self.default_config {
            if !config.is_object() {
                return Err(err("default_config", "must be a JSON object".into()));
            }
        }
        unique("actions", self.actions.iter().map(|a| a.name.as_str()))?;
        unique("providers", self.providers.iter().map(|p| p.name.as_str()))?;
        unique(
            "evaluators",
            self.evaluators.iter().map(|e| e.name.as_str()),
        )?;
        unique("services", self.services.iter().map(|s| s.name.as_str()))?;
        for (index, action) in self.actions.iter().enumerate() {
            if let Some(limit) = action.rate_limit {
                if limit.max_requests == 0 || limit.window_ms == 0 {
                    return Err(err(
                        &format!("actions[{index}].rate_limit"),
                        "max_requests and window_ms must be greater than 0".into(),
                    ));
                }
            }
            if action.timeout_ms == Some(0) {
                return Err(err(
                    &format!("actions[{index}].timeout_ms"),
                    "must be greater than 0".into(),
                ));
            }
            if let Some(triggers) = &action.triggers {
                check_triggers(triggers, &format!("actions[{index}].triggers"))?;
            }
        }
        for (index, pattern) in self.subscribes_to.iter().enumerate() {
            if pattern.is_empty() || pattern.chars().any(char::is_whitespace) {
                return Err(err(
                    &format!("subscribes_to[{index}]"),
                    format!("'{pattern}' is not an event pattern (no spaces, not empty)"),
                ));
            }
        }
        for (index, provider) in self.providers.iter().enumerate() {
            if provider.timeout_ms == Some(0) {
                return Err(err(
                    &format!("providers[{index}].timeout_ms"),
                    "must be greater than 0".into(),
                ));
            }
        }
        Ok(ValidManifest {
            version,
            dependencies,
        })
    }
}

/// What one manifest may hold: enough for any real plugin, small enough
/// that a manifest cannot fill the host's memory or an operator's terminal.
pub mod limits {
    /// Bytes of a short text: the version, author, license, a dependency, a
    /// permission, a component's name, an event pattern, a trigger.
    pub const TEXT: usize = 256;
    /// Bytes of a description (the plugin's, or a component's).
    pub const DESCRIPTION: usize = 4096;
    /// Entries of any list (components, permissions, examples, ...).
    pub const ITEMS: usize = 1024;
    /// Bytes of `config_schema` or `default_config`, as JSON, and of one
    /// action's examples together.
    pub const JSON: usize = 256 * 1024;
    /// Bytes of all the manifests of one library, as JSON.
    pub const MANIFESTS: usize = 32 * 1024 * 1024;
}

impl Manifest {
    /// Checks every field against [`limits`], naming the first over its limit.
    fn check_sizes(&self) -> Result<(), ManifestError> {
        let over = |field: String, what: &str, size: usize, limit: usize| ManifestError {
            field,
            reason: format!("{size} {what}, over the limit of {limit}"),
        };
        let text = |field: &str, value: &str, limit: usize| {
            if value.len() > limit {
                return Err(over(field.to_string(), "bytes", value.len(), limit));
            }
            Ok(())
        };
        let list = |field: &str, len: usize| {
            if len > limits::ITEMS {
                return Err(over(field.to_string(), "entries", len, limits::ITEMS));
            }
            Ok(())
        };
        let texts = |field: &str, values: &[String]| {
            list(field, values.len())?;
            for (index, value) in values.iter().enumerate() {
                text(&format!("{field}[{index}]"), value, limits::TEXT)?;
            }
            Ok(())
        };
        let json = |field: &str, value: &Option<Value>| {
            let size = value.as_ref().map_or(0, |v| v.to_string().len());
            if size > limits::JSON {
                return Err(over(field.to_string(), "bytes of JSON", size, limits::JSON));
            }
            Ok(())
        };
        text("name", &self.name, limits::TEXT)?;
        text("version", &self.version, limits::TEXT)?;
        text("author", &self.author, limits::TEXT)?;
        text("license", &self.license, limits::TEXT)?;
        text("description", &self.description, limits::DESCRIPTION)?;
        texts("dependencies", &self.dependencies)?;
        texts("optional_dependencies", &self.optional_dependencies)?;
        texts("permissions", &self.permissions)?;
        texts("subscribes_to", &self.subscribes_to)?;
        json("config_schema", &self.config_schema)?;
        json("default_config", &self.default_config)?;
        list("actions", self.actions.len())?;
        for (index, action) in self.actions.iter().enumerate() {
            let field = |name: &str| format!("actions[{index}].{name}");
            text(&field("name"), &action.name, limits::TEXT)?;
            text(
                &field("description"),
                &action.description,
                limits::DESCRIPTION,
            )?;
            texts(&field("permissions"), &action.permissions)?;
            list(&field("examples"), action.examples.len())?;
            let examples = serde_json::to_string(&action.examples).map_or(0, |j| j.len());
            if examples > limits::JSON {
                return Err(over(
                    field("examples"),
                    "bytes of JSON",
                    examples,
                    limits::JSON,
                ));
            }
            if let Some(triggers) = &action.triggers {
                let size = serde_json::to_string(triggers).map_or(0, |j| j.len());
                if size > limits::JSON {
                    return Err(over(field("triggers"), "bytes of JSON", size, limits::JSON));
                }
            }
        }
        list("providers", self.providers.len())?;
        for (index, provider) in self.providers.iter().enumerate() {
            text(
                &format!("providers[{index}].name"),
                &provider.name,
                limits::TEXT,
            )?;
            text(
                &format!("providers[{index}].description"),
                &provider.description,
                limits::DESCRIPTION,
            )?;
        }
        list("evaluators", self.evaluators.len())?;
        for (index, evaluator) in self.evaluators.iter().enumerate() {
            text(
                &format!("evaluators[{index}].name"),
                &evaluator.name,
                limits::TEXT,
            )?;
            text(
                &format!("evaluators[{index}].description"),
                &evaluator.description,
                limits::DESCRIPTION,
            )?;
        }
        list("services", self.services.len())?;
        for (index, service) in self.services.iter().enumerate() {
            text(
                &format!("services[{index}].name"),
                &service.name,
                limits::TEXT,
            )?;
            text(
                &format!("services[{index}].description"),
                &service.description,
                limits::DESCRIPTION,
            )?;
            texts(&format!("services[{index}].methods"), &service.methods)?;
        }
        Ok(())
    }
}

/// Why a library's manifests could not be read: see [`parse_manifests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestsError {
    /// A manifest has fields that this SDK, and so the host built with it,
    /// does not know: the plugin was most likely built with a newer SDK.
    UnknownFields(UnknownFields),
    /// The text is not a JSON array of manifests (malformed JSON, a missing
    /// required field, a field of the wrong type).
    Invalid(String),
}

impl fmt::Display for ManifestsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFields(unknown) => unknown.fmt(f),
            Self::Invalid(reason) => write!(f, "manifest is not valid: {reason}"),
        }
    }
}

impl std::error::Error for ManifestsError {}

/// A manifest with fields this SDK does not know, and who wrote it.
///
/// Its [`Display`](fmt::Display) is one line naming the plugin, the fields
/// and both SDK versions, and saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFields {
    /// The plugin's name as its manifest gives it (or `manifest N` when the
    /// manifest at index N has no name).
    pub plugin: String,
    /// The unknown fields as paths, such as `retries` or `actions[0].cost`:
    /// the manifest's own first, then those of its components in index
    /// order, each object's in alphabetical order.
    pub fields: Vec<String>,
    /// The manifest's `sdk_version`: the SDK the plugin was built with
    /// (empty when the manifest does not say).
    pub plugin_sdk_version: String,
    /// This SDK's version, [`crate::SDK_VERSION`]: the one the host speaks.
    pub host_sdk_version: String,
}

impl UnknownFields {
    /// Whether the plugin says it was built with an SDK newer than this one
    /// (or says nothing usable), so that a newer host may know the fields.
    pub fn plugin_sdk_is_newer(&self) -> bool {
        match (
            Version::parse(&self.plugin_sdk_version),
            Version::parse(&self.host_sdk_version),
        ) {
            (Ok(plugin), Ok(host)) => plugin > host,
            _ => true,
        }
    }
}

/// The Cargo requirement that selects versions compatible with `version`:
/// `0.1` for 0.1.x, `1` for 1.x.
fn compatible_requirement(version: &str) -> String {
    match Version::parse(version) {
        Ok(v) if v.major > 0 => v.major.to_string(),
        Ok(v) if v.minor > 0 => format!("0.{}", v.minor),
        Ok(v) => format!("0.0.{}", v.patch),
        Err(_) => version.to_string(),
    }
}

impl fmt::Display for UnknownFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let built_with = if self.plugin_sdk_version.is_empty() {
            "an agent-host-plugin-sdk that does not record its version".to_string()
        } else {
            format!("agent-host-plugin-sdk {}", self.plugin_sdk_version)
        };
        write!(
            f,
            "plugin '{}' was built with {built_with}, whose manifest has fields this host (agent-host-plugin-sdk {}) does not know: {}; ",
            self.plugin,
            self.host_sdk_version,
            self.fields.join(", ")
        )?;
        let against = compatible_requirement(&self.host_sdk_version);
        if self.plugin_sdk_is_newer() {
            write!(
                f,
                "upgrade the host or rebuild the plugin against {against}"
            )
        } else {
            write!(f, "rebuild the plugin against {against}")
        }
    }
}

impl std::error::Error for UnknownFields {}

/// Reads a plugin library's manifests: the JSON array its `manifests` entry
/// point returns, one manifest per plugin.
///
/// Before anything else it looks for fields this SDK does not know, at every
/// level of each manifest (`foo`, `actions[0].bar`, `providers[1].cache.baz`).
/// The first manifest that has some is refused with
/// [`ManifestsError::UnknownFields`], naming the plugin, its fields, the SDK
/// version that built the plugin and the one this host speaks. Anything
/// else that does not fit is [`ManifestsError::Invalid`]. It does not run
/// [`Manifest::validate`].
///
/// ```
/// use agent_host_plugin_sdk::manifest::{parse_manifests, ManifestsError};
/// use agent_host_plugin_sdk::{json, Plugin, SDK_VERSION};
///
/// let ours = json!([Plugin::new("weather", "1.0.0").manifest()]).to_string();
/// assert_eq!(parse_manifests(&ours).unwrap()[0].name, "weather");
///
/// let newer = json!([{
///     "name": "weather",
///     "version": "1.0.0",
///     "sdk_version": "9.0.0",
///     "retries": 3,
///     "actions": [{"name": "GET", "cost": 2}]
/// }]);
/// let Err(ManifestsError::UnknownFields(unknown)) = parse_manifests(&newer.to_string()) else {
///     panic!("unknown fields are refused");
/// };
/// assert_eq!(unknown.plugin, "weather");
/// assert_eq!(unknown.fields, ["retries", "actions[0].cost"]);
/// assert_eq!(unknown.plugin_sdk_version, "9.0.0");
/// assert_eq!(unknown.host_sdk_version, SDK_VERSION);
/// assert!(unknown.to_string().contains("upgrade the host or rebuild the plugin"));
///
/// assert!(matches!(parse_manifests("{}"), Err(ManifestsError::Invalid(_))));
/// ```
pub fn parse_manifests(json: &str) -> Result<Vec<Manifest>, ManifestsError> {
    if json.len() > limits::MANIFESTS {
        return Err(ManifestsError::Invalid(format!(
            "the manifests are {} bytes, over the limit of {}",
            json.len(),
            limits::MANIFESTS
        )));
    }
    // Every type refuses unknown fields, so a manifest that parses straight
    // into them has none: that is the common case, and the fast one. Only a
    // manifest that does not is read again, to say which fields and why.
    if let Ok(manifests) = serde_json::from_str::<Vec<Manifest>>(json) {
        return Ok(manifests);
    }
    let value: Value =
        serde_json::from_str(json).map_err(|e| ManifestsError::Invalid(e.to_string()))?;
    let Value::Array(items) = &value else {
        return Err(ManifestsError::Invalid(
            "expected a JSON array of manifests".into(),
        ));
    };
    for (index, item) in items.iter().enumerate() {
        let Value::Object(manifest) = item else {
            continue; // not an object: the typed parse below says so
        };
        let mut fields = Vec::new();
        unknown_manifest_fields(manifest, &mut fields);
        if !fields.is_empty() {
            let text = |key: &str| manifest.get(key).and_then(Value::as_str);
            return Err(ManifestsError::UnknownFields(UnknownFields {
                plugin: text("name").map_or_else(|| format!("manifest {index}"), str::to_string),
                fields,
                plugin_sdk_version: text("sdk_version").unwrap_or_default().to_string(),
                host_sdk_version: crate::SDK_VERSION.to_string(),
            }));
        }
    }
    serde_json::from_value(value).map_err(|e| ManifestsError::Invalid(e.to_string()))
}

/// The objects in the array at `object[key]`, each with its path
/// (`prefix` + `key[i]`).
fn objects<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Vec<(String, &'a Map<String, Value>)> {
    let Some(items) = object.get(key).and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| Some((format!("{prefix}{key}[{i}]"), item.as_object()?)))
        .collect()
}

/// The object at `object[key]`, if it is one.
fn nested<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    object.get(key)?.as_object()
}

/// Appends to `out` the fields of `manifest`, at every level, that the
/// manifest types do not declare.
fn unknown_manifest_fields(manifest: &Map<String, Value>, out: &mut Vec<String>) {
    unknown_fields_of::<Manifest>(manifest, "", out);
    for (path, action) in objects(manifest, "actions", "") {
        unknown_fields_of::<ActionSpec>(action, &path, out);
        for (example_path, example) in objects(action, "examples", &format!("{path}.")) {
            unknown_fields_of::<Example>(example, &example_path, out);
        }
        if let Some(limit) = nested(action, "rate_limit") {
            unknown_fields_of::<RateLimit>(limit, &format!("{path}.rate_limit"), out);
        }
        if let Some(triggers) = nested(action, "triggers") {
            unknown_fields_of::<Triggers>(triggers, &format!("{path}.triggers"), out);
        }
    }
    for (path, provider) in objects(manifest, "providers", "") {
        unknown_fields_of::<ProviderSpec>(provider, &path, out);
        if let Some(cache) = nested(provider, "cache") {
            unknown_fields_of::<CacheConfig>(cache, &format!("{path}.cache"), out);
        }
    }
    for (path, evaluator) in objects(manifest, "evaluators", "") {
        unknown_fields_of::<EvaluatorSpec>(evaluator, &path, out);
    }
    for (path, service) in objects(manifest, "services", "") {
        unknown_fields_of::<ServiceSpec>(service, &path, out);
    }
}

/// Appends to `out` the keys of `object` that `T` does not declare, as
/// `path.key` (or `key` at the top), in alphabetical order.
fn unknown_fields_of<'de, T: Deserialize<'de>>(
    object: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let known = declared_fields::<T>();
    let mut unknown: Vec<&String> = object
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .collect();
    unknown.sort();
    out.extend(unknown.into_iter().map(|key| {
        if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        }
    }));
}

/// The field names that `T`'s derived `Deserialize` declares, read from the
/// derive itself so that they never drift from the struct.
fn declared_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    /// Stops deserialization once the field list is known.
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field list read")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    /// A deserializer that only records the fields a struct asks for.
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, version: &str) -> Manifest {
        serde_json::from_value(serde_json::json!({"name": name, "version": version}))
            .expect("minimal manifest parses")
    }

    #[test]
    fn names_must_be_kebab_case() {
        for good in ["weather", "http-client", "a1", "x-2-y"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Weather", "http_client", "-a", "a-", "a--b", "1a", "wé"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dependencies_parse_with_and_without_requirement() {
        let dep = Dependency::parse("http-client@^1.2", false).expect("parses");
        assert_eq!(dep.name, "http-client");
        assert!(dep.requirement.matches(&Version::new(1, 3, 0)));
        assert!(!dep.requirement.matches(&Version::new(2, 0, 0)));
        assert_eq!(
            Dependency::parse("geo", true).expect("parses").requirement,
            VersionReq::STAR
        );
        assert!(Dependency::parse("geo@^x", false).is_err());
        assert!(Dependency::parse("Geo", false).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let error = manifest("ok", "1.x").validate().expect_err("bad semver");
        assert_eq!(error.field, "version");
        let mut m = manifest("ok", "1.0.0");
        m.dependencies = vec!["a".into(), "b@>=x".into()];
        assert_eq!(m.validate().expect_err("bad req").field, "dependencies[1]");
        let mut m = manifest("ok", "1.0.0");
        m.dependencies = vec!["ok".into()];
        assert!(m.validate().is_err(), "self-dependency");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let parsed: Result<Manifest, _> = serde_json::from_value(
            serde_json::json!({"name": "a", "version": "1.0.0", "dependencies_typo": []}),
        );
        assert!(parsed.is_err());
    }

    #[test]
    fn declared_fields_are_the_serialized_fields() {
        fn keys(value: impl Serialize) -> Vec<String> {
            let mut keys: Vec<String> = serde_json::to_value(value)
                .expect("serializes")
                .as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        }
        fn declared<'de, T: Deserialize<'de>>() -> Vec<String> {
            let mut fields: Vec<String> = declared_fields::<T>()
                .iter()
                .map(ToString::to_string)
                .collect();
            fields.sort();
            fields
        }
        // Fields left out of the JSON while empty are set here.
        let action: ActionSpec = serde_json::from_value(serde_json::json!({
            "name": "A",
            "triggers": {"keywords": ["a"]},
            "idempotent": true
        }))
        .expect("minimal action");
        let mut full = manifest("a", "1.0.0");
        full.subscribes_to = vec!["x".into()];
        let provider: ProviderSpec =
            serde_json::from_value(serde_json::json!({"name": "p"})).expect("minimal provider");
        let evaluator: EvaluatorSpec =
            serde_json::from_value(serde_json::json!({"name": "e"})).expect("minimal evaluator");
        let service: ServiceSpec =
            serde_json::from_value(serde_json::json!({"name": "s"})).expect("minimal service");
        assert_eq!(declared::<Manifest>(), keys(full));
        assert_eq!(
            declared::<Triggers>(),
            keys(Triggers {
                keywords: vec!["k".into()],
                pattern: Some("p".into())
            })
        );
        assert_eq!(declared::<ActionSpec>(), keys(action));
        assert_eq!(declared::<ProviderSpec>(), keys(provider));
        assert_eq!(declared::<EvaluatorSpec>(), keys(evaluator));
        assert_eq!(declared::<ServiceSpec>(), keys(service));
        assert_eq!(
            declared::<Example>(),
            keys(Example {
                input: String::new(),
                output: String::new()
            })
        );
        assert_eq!(
            declared::<RateLimit>(),
            keys(RateLimit {
                max_requests: 1,
                window_ms: 1
            })
        );
        assert_eq!(
            declared::<CacheConfig>(),
            keys(CacheConfig {
                ttl_ms: 1,
                stale_while_revalidate: false
            })
        );
    }

    #[test]
    fn an_action_not_marked_idempotent_reads_as_before() {
        let plain: ActionSpec =
            serde_json::from_value(serde_json::json!({"name": "A"})).expect("minimal action");
        assert!(!plain.idempotent);
        let json = serde_json::to_value(&plain).expect("serializes");
        assert!(json.get("idempotent").is_none(), "{json}");
        let marked = ActionSpec {
            idempotent: true,
            ..plain
        };
        let json = serde_json::to_value(&marked).expect("serializes");
        assert_eq!(json["idempotent"], serde_json::json!(true));
        let back: ActionSpec = serde_json::from_value(json).expect("reads back");
        assert!(back.idempotent);
    }

    #[test]
    fn triggers_and_event_patterns_are_checked() {
        let with = |triggers: serde_json::Value| {
            serde_json::from_value::<Manifest>(serde_json::json!({
                "name": "p", "version": "1.0.0",
                "actions": [{"name": "A"}, {"name": "B", "triggers": triggers}]
            }))
            .expect("parses")
            .validate()
        };
        assert!(with(serde_json::json!({"keywords": ["rain"]})).is_ok());
        assert!(with(serde_json::json!({"pattern": "^hi"})).is_ok());
        let error = with(serde_json::json!({})).expect_err("nothing declared");
        assert_eq!(error.field, "actions[1].triggers");
        let error = with(serde_json::json!({"keywords": ["a", " "]})).expect_err("blank");
        assert_eq!(error.field, "actions[1].triggers.keywords[1]");
        let error = with(serde_json::json!({"pattern": ""})).expect_err("empty");
        assert_eq!(error.field, "actions[1].triggers.pattern");

        let mut m = manifest("p", "1.0.0");
        m.subscribes_to = vec!["weather:*".into(), "a b".into()];
        assert_eq!(m.validate().expect_err("space").field, "subscribes_to[1]");
    }

    #[test]
    fn a_manifest_without_the_newer_fields_serializes_as_before() {
        let plain = crate::Plugin::new("p", "1.0.0").action(
            crate::Action::new("A")
                .validate(|_| true)
                .handler(|_, _| Ok(crate::ActionResult::default())),
        );
        let json = serde_json::to_value(plain.manifest()).expect("serializes");
        assert!(json.get("subscribes_to").is_none(), "{json}");
        assert!(json["actions"][0].get("triggers").is_none(), "{json}");
    }

    #[test]
    fn manifests_this_sdk_writes_parse() {
        let plugin = crate::Plugin::new("weather", "1.2.0")
            .permission("config:*")
            .subscribes_to("geo:*")
            .action(
                crate::Action::new("GET")
                    .example("weather?", "sunny")
                    .keywords(["weather", "forecast"])
                    .pattern(r"(?i)\brain\b")
                    .rate_limit(1, std::time::Duration::from_secs(1))
                    .validate(|_| true)
                    .handler(|_, _| Ok(crate::ActionResult::default())),
            )
            .provider(
                crate::Provider::new("home")
                    .cache(std::time::Duration::from_secs(60), true)
                    .get(|_, _| Ok(1)),
            );
        let json = serde_json::to_string(&[plugin.manifest(), manifest("geo", "1.0.0")])
            .expect("serializes");
        let parsed = parse_manifests(&json).expect("parses");
        assert_eq!(parsed, vec![plugin.manifest(), manifest("geo", "1.0.0")]);
        assert_eq!(parsed[0].sdk_version, crate::SDK_VERSION);
    }

    #[test]
    fn a_newer_sdks_fields_are_named_with_both_versions() {
        let json = serde_json::json!([
            {"name": "fine", "version": "1.0.0"},
            {
                "name": "x",
                "version": "1.0.0",
                "sdk_version": "0.3.0",
                "foo": 1,
                "actions": [
                    {"name": "A", "examples": [{"input": "i", "output": "o", "lang": "en"}]},
                    {"name": "B", "rate_limit": {"max_requests": 1, "window_ms": 1, "burst": 2}},
                    {"name": "C", "triggers": {"keywords": ["c"], "stem": true}}
                ],
                "providers": [{"name": "p", "cache": {"ttl_ms": 1, "jitter_ms": 5}, "push": true}],
                "evaluators": [{"name": "e", "model": "m"}],
                "services": [{"name": "s", "version": "2"}],
                "bar": true
            }
        ]);
        let error = parse_manifests(&json.to_string()).expect_err("refused");
        let ManifestsError::UnknownFields(unknown) = &error else {
            panic!("not an unknown-fields error: {error}");
        };
        assert_eq!(unknown.plugin, "x");
        assert_eq!(
            unknown.fields,
            [
                "bar",
                "foo",
                "actions[0].examples[0].lang",
                "actions[1].rate_limit.burst",
                "actions[2].triggers.stem",
                "providers[0].push",
                "providers[0].cache.jitter_ms",
                "evaluators[0].model",
                "services[0].version",
            ]
        );
        assert_eq!(unknown.plugin_sdk_version, "0.3.0");
        assert_eq!(unknown.host_sdk_version, crate::SDK_VERSION);

        let host = UnknownFields {
            plugin: "x".into(),
            fields: vec!["foo".into(), "bar".into()],
            plugin_sdk_version: "0.3.0".into(),
            host_sdk_version: "0.1.0".into(),
        };
        assert_eq!(
            ManifestsError::UnknownFields(host).to_string(),
            "plugin 'x' was built with agent-host-plugin-sdk 0.3.0, whose manifest has fields this host (agent-host-plugin-sdk 0.1.0) does not know: foo, bar; upgrade the host or rebuild the plugin against 0.1"
        );
    }

    #[test]
    fn unknown_fields_from_an_older_or_unnamed_sdk_only_ask_for_a_rebuild() {
        let older = UnknownFields {
            plugin: "x".into(),
            fields: vec!["typo".into()],
            plugin_sdk_version: "1.0.0".into(),
            host_sdk_version: "1.4.2".into(),
        };
        assert!(!older.plugin_sdk_is_newer());
        assert_eq!(
            older.to_string(),
            "plugin 'x' was built with agent-host-plugin-sdk 1.0.0, whose manifest has fields this host (agent-host-plugin-sdk 1.4.2) does not know: typo; rebuild the plugin against 1"
        );

        let json = serde_json::json!([{"version": "1.0.0", "extra": 1}]);
        let Err(ManifestsError::UnknownFields(unnamed)) = parse_manifests(&json.to_string()) else {
            panic!("refused");
        };
        assert_eq!(unnamed.plugin, "manifest 0");
        assert_eq!(unnamed.plugin_sdk_version, "");
        let line = unnamed.to_string();
        assert!(
            line.contains("built with an agent-host-plugin-sdk that does not record its version"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn anything_else_that_does_not_fit_is_invalid() {
        for bad in [
            "not json",
            "{}",
            r#"[{"version": "1.0.0"}]"#,
            r#"[{"name": 1, "version": "1.0.0"}]"#,
            r#"[3]"#,
        ] {
            let error = parse_manifests(bad).expect_err(bad);
            assert!(
                matches!(error, ManifestsError::Invalid(_)),
                "{bad}: {error}"
            );
            assert!(error.to_string().starts_with("manifest is not valid: "));
        }
        assert_eq!(parse_manifests("[]").expect("an empty array parses"), []);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    fn manifest(extra: Value) -> Manifest {
        let mut value = serde_json::json!({"name": "big", "version": "1.0.0"});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).expect("a manifest")
    }

    #[test]
    fn a_field_over_its_limit_is_refused_by_name() {
        let huge = "x".repeat(10 * 1024 * 1024);
        let error = manifest(serde_json::json!({"description": huge}))
            .validate()
            .expect_err("too long");
        assert_eq!(error.field, "description");
        assert_eq!(error.reason, "10485760 bytes, over the limit of 4096");
        let many: Vec<String> = (0..2000).map(|i| format!("service:s{i}")).collect();
        let error = manifest(serde_json::json!({"permissions": many}))
            .validate()
            .expect_err("too many");
        assert_eq!(error.field, "permissions");
        assert!(error.reason.starts_with("2000 entries"), "{}", error.reason);
        let error = manifest(serde_json::json!({"permissions": ["p".repeat(300)]}))
            .validate()
            .expect_err("a long permission");
        assert_eq!(error.field, "permissions[0]");
        manifest(serde_json::json!({"description": "fine"}))
            .validate()
            .expect("within every limit");
    }

    #[test]
    fn oversized_manifests_are_refused_before_they_are_parsed() {
        let text = " ".repeat(limits::MANIFESTS + 1);
        let error = parse_manifests(&text).expect_err("too big");
        assert!(error.to_string().contains("over the limit"), "{error}");
    }
}
