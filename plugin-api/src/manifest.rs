//! The plugin manifest: what a plugin is, what it needs and what it offers.
//!
//! The SDK builds it from a [`crate::Plugin`]; it crosses the boundary as JSON
//! and the host parses it back into this same type and calls
//! [`Manifest::validate`]. Unknown fields are rejected so that a typo in a
//! hand-written manifest, or a manifest from a newer SDK that this host does
//! not understand, is an error rather than a silent omission.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// The version of `plugin-api` the plugin was built with.
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

impl Manifest {
    /// Checks every field and parses version and dependencies: the name
    /// (kebab-case), the version (semver), each dependency (no duplicates, not
    /// on itself), each permission (not empty, no spaces), the config schema
    /// and default config (JSON objects), component names (unique per kind)
    /// and action limits (rate limit and timeout greater than 0). The host
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
        }
        Ok(ValidManifest {
            version,
            dependencies,
        })
    }
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
}
