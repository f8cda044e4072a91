//! The operator's config file (TOML): host settings, each plugin's config,
//! the permissions granted to each plugin, and the permissions of senders.
//!
//! ```toml
//! [host]
//! action_timeout_ms = 30000      # default handler timeout
//! quarantine_after_panics = 3    # panics within the window that quarantine a plugin
//! quarantine_window_ms = 60000
//! max_plugin_bytes = 536870912   # larger plugin files are refused unread
//! mapped_bytes_warning = 268435456 # warn when a plugin's reloads keep this much mapped
//! mapped_bytes_limit = 0          # refuse in-process reloads past this much (0: no limit)
//! shutdown_grace_ms = 10000      # on Ctrl-C or SIGTERM, how long calls in flight may finish
//! validate_timeout_ms = 1000     # deadlines of the other calls into plugins
//! provider_timeout_ms = 5000     # (a provider may set its own in its manifest)
//! state_budget_ms = 100          # the longest a message waits for its state's providers (0: no budget)
//! evaluator_timeout_ms = 2000
//! service_timeout_ms = 10000     # a service call made inside another call gets what is left of it
//! event_timeout_ms = 5000
//! timer_timeout_ms = 30000
//! lifecycle_timeout_ms = 10000   # on_load, on_unload, service start and stop, state export and import
//! max_calls_in_flight = 32       # per plugin; calls beyond it are refused at once
//! lazy_plugins = ["notes", "bench-*"]  # checked at load, started when first needed
//! http_header_timeout_ms = 10000 # an HTTP client that sends no complete headers by then is disconnected
//! http_idle_timeout_ms = 60000   # an HTTP connection idle between requests is closed after this
//! http_max_connections = 1024    # HTTP connections beyond it are answered 503
//! http_max_connections_per_address = 64  # of them, from one client address
//! http_body_timeout_ms = 10000   # a request body not all there by then is answered 408
//! trust_claimed_permissions = false  # development only: honour the permissions a message claims
//!
//! [plugins.weather]              # merged over the plugin's default config,
//! base_url = "http://127.0.0.1:8080"   # then validated against its JSON Schema
//! api_key = { env = "WEATHER_API_KEY" } # a secret, read from the environment
//!
//! [grants]                       # what each plugin may do (of what it requested)
//! weather = ["service:http-client", "service:geolocation", "event:emit:weather:*", "config:*"]
//!
//! [senders]                      # what each sender may do
//! alice = ["data:analyze"]
//! ops = ["data:analyze", "notes:write"]
//!
//! [[api.tokens]]                 # who may use the HTTP API (see below)
//! name = "ops"                   # names the token in logs and errors
//! sender = "ops"                 # the sender its messages come from
//! roles = ["chat", "admin"]      # chat: send messages; admin: plugins, reload, events, metrics
//! sha256 = "<64 hex digits>"     # the token's SHA-256 (printf %s "$TOKEN" | sha256sum)
//!
//! [[api.tokens]]
//! name = "bot"
//! sender = "alice"
//! roles = ["chat"]
//! env = "AGENT_TOKEN_BOT"        # or: the token itself is in this environment variable
//!
//! [trust]                        # which plugin files may load (see `trust/settings.rs`)
//! lock = "plugins.lock"          # only files pinned by `agent-host lock`
//! public_keys = ["RWQ..."]       # only files with a valid .minisig by one of these keys
//! public_key_files = ["release.pub"]
//! ```
//!
//! Without a `[grants]` table every plugin gets what it requested (a
//! development default, logged as a warning). Without `[trust]`, any
//! library file in the plugin folder loads; paths in it are relative to the
//! config file's folder.
//!
//! A sender's permissions are those `[senders]` gives it; a sender it does
//! not list, or any sender when there is no `[senders]`, has none. The
//! `permissions` a message claims (a stdin line, an HTTP body) are ignored,
//! unless `[host] trust_claimed_permissions = true` (a development switch,
//! off by default, warned about at start): then a sender `[senders]` does
//! not list holds what its message claims.
//!
//! With `[[api.tokens]]`, every HTTP request but `GET /healthz` needs
//! `Authorization: Bearer <token>` (401 without a valid one, 403 without
//! the route's role), and a message's sender is the token's `sender`. A
//! token is never written in the file: an entry that holds one (`token`,
//! `secret`), or whose `sha256` is not 64 hex digits, is refused with an
//! error naming the entry; an `env` variable that is not set stops
//! `agent-host run` with an error naming the entry and the variable.
//! Without tokens, `agent-host run --listen` serves on a loopback address
//! only, unless given `--allow-unauthenticated`.

mod api;
pub(crate) mod cluster;
pub(crate) mod isolation;
mod zeros;

pub use api::{ApiSettings, ApiToken, Role, TokenSource};
pub use cluster::{ClusterSettings, ClusterSettingsError};

use crate::permissions::{matches, Permissions};
use crate::shared_cause::SharedCause;
use agent_host_plugin_sdk::manifest::Manifest;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Host-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// Handler timeout for actions that set none, in milliseconds.
    pub action_timeout_ms: u64,
    /// How many panics within the window quarantine a plugin.
    pub quarantine_after_panics: u32,
    /// The quarantine window in milliseconds.
    pub quarantine_window_ms: u64,
    /// How long a hot reload waits for calls in flight to finish before it
    /// gives up, in milliseconds.
    pub reload_drain_timeout_ms: u64,
    /// Warn when the library images a plugin keeps mapped (every generation
    /// stays mapped) exceed this many bytes.
    pub mapped_bytes_warning: u64,
    /// Refuse an in-process reload that would take the library images a
    /// plugin keeps mapped past this many bytes; 0 (the default) sets no
    /// limit.
    pub mapped_bytes_limit: u64,
    /// Refuse plugin files larger than this many bytes, from their size
    /// alone (they are not copied).
    pub max_plugin_bytes: u64,
    /// On shutdown (Ctrl-C, SIGTERM, [`PluginHost::shutdown`]), how long
    /// the calls in flight may take to finish, in milliseconds, before the
    /// plugins stop anyway (calls still running are named in the log).
    ///
    /// [`PluginHost::shutdown`]: crate::PluginHost::shutdown
    pub shutdown_grace_ms: u64,
    /// Deadline of a plugin's `validate` calls for one message, in
    /// milliseconds.
    pub validate_timeout_ms: u64,
    /// Deadline of a provider's `get` for providers that set none in their
    /// manifest, in milliseconds.
    pub provider_timeout_ms: u64,
    /// The longest a message's state waits for providers, in milliseconds,
    /// all of them together. A provider still answering then is left out
    /// of this message's state (its cached value served, marked stale, if
    /// it has one); its call goes on within its own deadline and its value,
    /// when it comes, is cached for later messages. Meanwhile later
    /// messages do not ask it again. 0 sets no budget: a message waits for
    /// each provider up to its own deadline.
    pub state_budget_ms: u64,
    /// Deadline of one evaluator on one message, in milliseconds.
    pub evaluator_timeout_ms: u64,
    /// Deadline of a service call made outside any other call (a service
    /// call made inside a handler, provider or event handler gets at most
    /// what is left of its caller's deadline), in milliseconds.
    pub service_timeout_ms: u64,
    /// Deadline of one event handler, in milliseconds.
    pub event_timeout_ms: u64,
    /// Deadline of one timer handler, in milliseconds.
    pub timer_timeout_ms: u64,
    /// Deadline of each step of a plugin's life, in milliseconds: its
    /// `on_load` and `on_unload`, the start and stop of each of its
    /// services, and the export and import of its state on a reload. A
    /// plugin that misses it fails to start (or to stop, or to reload) and
    /// the host goes on without it. Zero is refused.
    #[serde(deserialize_with = "lifecycle_timeout")]
    pub lifecycle_timeout_ms: u64,
    /// How many calls may be in flight into one plugin at once (its
    /// bulkhead); a call beyond it is refused at once with an error that
    /// says so. Calls abandoned at their deadline count until they return.
    pub max_calls_in_flight: usize,
    /// After this many failures or timeouts in a row, a provider is backed
    /// off: not asked for a while (one second, doubling on each further
    /// failure up to [`HostSettings::provider_backoff_max_ms`]), its last
    /// value served, marked stale, if it has one.
    pub provider_backoff_after: u32,
    /// The longest a provider stays backed off, in milliseconds.
    pub provider_backoff_max_ms: u64,
    /// Plugins started only when first needed (a name, or a prefix ending
    /// in `*`): checked at load like the others (file, ABI, manifest,
    /// dependencies), then started by the first message one of their
    /// actions' triggers matches (any message, for an action without
    /// triggers), the first call to one of their services, or the first
    /// event matching a pattern their manifest subscribes to. A lazy
    /// plugin another plugin depends on starts before that plugin does.
    pub lazy_plugins: Vec<String>,
    /// How long an HTTP client may take to send a request's headers, in
    /// milliseconds: from the moment it connects, or from the first byte of
    /// a later request on the same connection. A client slower than that
    /// (one that connects and sends nothing, or half a request) is
    /// disconnected.
    pub http_header_timeout_ms: u64,
    /// How long an HTTP connection may stay open with no request on it
    /// between two requests, in milliseconds, before the server closes it.
    pub http_idle_timeout_ms: u64,
    /// The most HTTP connections open at once (0 counts as 1). A connection
    /// beyond it is answered `503 Service Unavailable` and closed.
    pub http_max_connections: usize,
    /// The most HTTP connections open at once from one client IP address
    /// (0 counts as 1), so that one address cannot take every connection.
    /// A connection beyond it is answered `503 Service Unavailable` and
    /// closed, while other addresses are still served.
    pub http_max_connections_per_address: usize,
    /// How long a request's body may take to arrive in full, in
    /// milliseconds, from the moment its headers are in. A body slower than
    /// that is answered `408 Request Timeout` and its connection closed.
    pub http_body_timeout_ms: u64,
    /// Development only: a message's sender that `[senders]` does not list
    /// holds the `permissions` the message claims. Off by default (claims
    /// are ignored); the host warns at start when it is on.
    pub trust_claimed_permissions: bool,
}

impl HostSettings {
    /// Whether the operator made the plugin `name` lazy.
    pub fn is_lazy(&self, name: &str) -> bool {
        self.lazy_plugins
            .iter()
            .any(|pattern| matches(pattern, name))
    }
}

/// Reads `[host] lifecycle_timeout_ms`, refusing zero: a step of a
/// plugin's life with no time at all could never succeed.
fn lifecycle_timeout<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let millis = u64::deserialize(deserializer)?;
    if millis == 0 {
        return Err(serde::de::Error::custom(
            "[host] lifecycle_timeout_ms must be at least 1: it is the deadline of on_load, \
             on_unload, service start and stop and state export and import, and zero would \
             fail every plugin",
        ));
    }
    Ok(millis)
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            action_timeout_ms: 30_000,
            quarantine_after_panics: 3,
            quarantine_window_ms: 60_000,
            reload_drain_timeout_ms: 5_000,
            mapped_bytes_warning: 256 * 1024 * 1024,
            mapped_bytes_limit: 0,
            max_plugin_bytes: 512 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            validate_timeout_ms: 1_000,
            provider_timeout_ms: 5_000,
            state_budget_ms: 100,
            evaluator_timeout_ms: 2_000,
            service_timeout_ms: 10_000,
            event_timeout_ms: 5_000,
            timer_timeout_ms: 30_000,
            lifecycle_timeout_ms: 10_000,
            max_calls_in_flight: 32,
            provider_backoff_after: 3,
            provider_backoff_max_ms: 60_000,
            lazy_plugins: Vec::new(),
            http_header_timeout_ms: 10_000,
            http_idle_timeout_ms: 60_000,
            http_max_connections: 1024,
            http_max_connections_per_address: 64,
            http_body_timeout_ms: 10_000,
            trust_claimed_permissions: false,
        }
    }
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Host settings.
    #[serde(default)]
    pub host: HostSettings,
    /// Each plugin's config, by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Value>,
    /// Permissions granted to each plugin; `None` grants what was requested.
    #[serde(default)]
    pub grants: Option<BTreeMap<String, Vec<String>>>,
    /// Permissions of each sender; a sender not listed has none.
    #[serde(default)]
    pub senders: Option<BTreeMap<String, Vec<String>>>,
    /// Who may use the HTTP API: its tokens and their roles.
    #[serde(default)]
    pub api: ApiSettings,
    /// Which plugins run in sandboxed worker processes, and their limits.
    #[serde(default)]
    pub isolation: isolation::IsolationSettings,
    /// Which plugin files may load: the lock file, trusted signing keys.
    #[serde(default)]
    pub trust: crate::trust::TrustSettings,
    /// One agent on several hosts through NATS JetStream; `None` (no
    /// `[cluster]` table): one process.
    #[serde(default)]
    pub cluster: Option<cluster::ClusterSettings>,
}

/// A config problem. Errors about one plugin's config name the field, not
/// the plugin: the load report's line names the plugin once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: {cause}", file.display())]
    Read {
        /// The file.
        file: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        cause: SharedCause<std::io::Error>,
    },
    /// The config text is not valid TOML, or has unknown keys.
    #[error("{}", parse_message(file.as_deref(), cause.get()))]
    Parse {
        /// The file, when the text came from one.
        file: Option<std::path::PathBuf>,
        /// The parser's error (printed on one line).
        #[source]
        cause: SharedCause<toml::de::Error>,
    },
    /// A value of zero that makes no sense (a deadline of no time).
    #[error("{}{field} = 0: {cause}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Zero {
        /// The file, when the text came from one.
        file: Option<std::path::PathBuf>,
        /// The field, with its table (`[host] action_timeout_ms`).
        field: String,
        /// Why zero cannot work.
        cause: String,
    },
    /// A plugin's config section is not a table.
    #[error("its config section must be a table")]
    NotATable,
    /// A `{ env = "NAME" }` secret names an unset environment variable.
    #[error("config field `{field}` wants the environment variable {variable}, which is not set")]
    MissingSecret {
        /// The field, as a JSON pointer such as `/api_key`.
        field: String,
        /// The variable.
        variable: String,
    },
    /// The plugin's own config schema is not a valid JSON Schema.
    #[error("its config schema is invalid: {cause}")]
    InvalidSchema {
        /// Why.
        #[source]
        cause: SharedCause<jsonschema::ValidationError<'static>>,
    },
    /// The `[cluster]` table cannot work.
    #[error(transparent)]
    Cluster(#[from] ClusterSettingsError),
    /// The `[isolation.groups]` table cannot work.
    #[error(transparent)]
    Groups(#[from] crate::config::isolation::GroupError),
    /// A config value does not match the plugin's schema.
    #[error("config field `{field}`: {cause}")]
    Invalid {
        /// The field, as a JSON pointer (`/` for the whole config).
        field: String,
        /// What is wrong with it.
        #[source]
        cause: SharedCause<jsonschema::ValidationError<'static>>,
    },
}

/// The TOML parser's message (several lines, with a caret) on one line.
pub(crate) fn toml_one_line(error: &toml::de::Error) -> String {
    error.to_string().trim().replace('\n', " ")
}

/// [`ConfigError::Parse`]'s line: the file, when there is one, and the
/// parser's message.
fn parse_message(file: Option<&Path>, cause: &toml::de::Error) -> String {
    match file {
        Some(file) => format!("{}: {}", file.display(), toml_one_line(cause)),
        None => toml_one_line(cause),
    }
}

impl AgentConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            cause: e.into(),
        })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { cause, .. } => ConfigError::Parse {
                file: Some(path.to_path_buf()),
                cause,
            },
            ConfigError::Zero { field, cause, .. } => ConfigError::Zero {
                file: Some(path.to_path_buf()),
                field,
                cause,
            },
            other => other,
        })?;
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.trust.resolve_paths(folder);
        if let Some(cluster) = &mut config.cluster {
            cluster.credentials_file = cluster.credentials_file.take().map(|f| folder.join(f));
        }
        Ok(config)
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: None,
            cause: e.into(),
        })?;
        if let Some(cluster) = &config.cluster {
            cluster.validate()?;
        }
        config.isolation.validate()?;
        if let Some(zero) = config.refused_zero() {
            return Err(ConfigError::Zero {
                file: None,
                field: zero.field.to_string(),
                cause: zero.cause.to_string(),
            });
        }
        Ok(config)
    }

    /// The permissions a plugin gets: those it requested that the operator
    /// granted (all it requested when there is no `[grants]` table), and
    /// the requests granted nothing of. A grant may also narrow a request:
    /// a plugin that asks for `network:*` and is granted
    /// `network:connect:443` holds `network:connect:443` only.
    pub fn effective_permissions(&self, manifest: &Manifest) -> (Permissions, Vec<String>) {
        let requested = &manifest.permissions;
        match &self.grants {
            None => (Permissions::new(requested.iter().cloned()), Vec::new()),
            Some(grants) => {
                let granted = grants
                    .get(&manifest.name)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let mut kept = Vec::new();
                let mut denied = Vec::new();
                for request in requested {
                    if granted.iter().any(|g| matches(g, request)) {
                        kept.push(request.clone());
                        continue;
                    }
                    let narrowed: Vec<&String> =
                        granted.iter().filter(|g| matches(request, g)).collect();
                    if narrowed.is_empty() {
                        denied.push(request.clone());
                    }
                    kept.extend(narrowed.into_iter().cloned());
                }
                kept.dedup();
                (Permissions::new(kept), denied)
            }
        }
    }

    /// What the config says about plugins that are not there: each
    /// `[plugins.NAME]` section, `[grants]` entry and
    /// `[isolation.plugins.NAME]` section whose NAME is not in `known`, as
    /// one line naming it and the nearest known name. Such a section is
    /// ignored, most often because of a typing mistake.
    pub fn unknown_plugins(&self, known: &[String]) -> Vec<String> {
        let nearest = |name: &str| {
            known
                .iter()
                .map(|k| (strsim::levenshtein(name, k), k))
                .min()
                .filter(|(distance, _)| *distance <= name.len().max(3) / 2)
                .map_or_else(String::new, |(_, k)| format!(" (did you mean '{k}'?)"))
        };
        let mut lines = Vec::new();
        let mut check = |place: &str, name: &str| {
            if !known.iter().any(|k| k == name) {
                lines.push(format!(
                    "config {place} names no plugin in the folder{}; it is ignored",
                    nearest(name)
                ));
            }
        };
        for name in self.plugins.keys() {
            check(&format!("[plugins.{name}]"), name);
        }
        for name in self.grants.iter().flat_map(|g| g.keys()) {
            check(&format!("[grants] {name}"), name);
        }
        for name in self.isolation.plugins.keys() {
            check(&format!("[isolation.plugins.{name}]"), name);
        }
        for (group, members) in &self.isolation.groups {
            for name in members {
                check(&format!("[isolation.groups] {group}: entry '{name}'"), name);
            }
        }
        lines
    }

    /// The permissions of a message from `sender` that claims `claimed`:
    /// those `[senders]` gives the sender; for a sender it does not list,
    /// the claim when `trust_claimed_permissions` is on, else none.
    pub fn sender_permissions(&self, sender: &str, claimed: Vec<String>) -> Vec<String> {
        match self.senders.as_ref().and_then(|s| s.get(sender)) {
            Some(assigned) => assigned.clone(),
            None if self.host.trust_claimed_permissions => claimed,
            None => Vec::new(),
        }
    }
}

/// Replaces every `{ env = "NAME" }` table in `value` by the variable's value.
fn resolve_secrets(value: &mut Value, path: &str) -> Result<(), ConfigError> {
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(var)) = map.get("env") {
                    let secret = std::env::var(var).map_err(|_| ConfigError::MissingSecret {
                        field: path.to_string(),
                        variable: var.clone(),
                    })?;
                    *value = Value::String(secret);
                    return Ok(());
                }
            }
            for (key, inner) in map.iter_mut() {
                resolve_secrets(inner, &format!("{path}/{key}"))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, inner) in items.iter_mut().enumerate() {
                resolve_secrets(inner, &format!("{path}/{index}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The config a plugin runs with: the operator's values (secrets resolved)
/// merged over the plugin's defaults, the schema's `default`s filled in for
/// the keys still missing
/// ([`agent_host_plugin_sdk::schema_defaults::fill_defaults`]), validated
/// against its JSON Schema.
pub fn effective_config(
    manifest: &Manifest,
    operator: Option<&Value>,
) -> Result<Value, ConfigError> {
    let mut config = match &manifest.default_config {
        Some(Value::Object(defaults)) => defaults.clone(),
        _ => serde_json::Map::new(),
    };
    match operator {
        None => {}
        Some(Value::Object(overrides)) => {
            for (key, value) in overrides {
                let mut value = value.clone();
                resolve_secrets(&mut value, &format!("/{key}"))?;
                config.insert(key.clone(), value);
            }
        }
        Some(_) => return Err(ConfigError::NotATable),
    }
    if let Some(schema) = &manifest.config_schema {
        agent_host_plugin_sdk::schema_defaults::fill_defaults(schema, &mut config);
    }
    let config = Value::Object(config);
    if let Some(schema) = &manifest.config_schema {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| ConfigError::InvalidSchema { cause: e.into() })?;
        let first_error = validator.iter_errors(&config).next().map(|error| {
            let field = error.instance_path().to_string();
            let field = if field.is_empty() {
                "/".to_string()
            } else {
                field
            };
            ConfigError::Invalid {
                field,
                cause: error.to_owned().into(),
            }
        });
        if let Some(error) = first_error {
            return Err(error);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(schema: Value, defaults: Value) -> Manifest {
        serde_json::from_value(json!({
            "name": "weather", "version": "1.0.0",
            "config_schema": schema, "default_config": defaults,
            "permissions": ["service:http-client", "event:emit:weather:*", "config:*"],
        }))
        .expect("manifest")
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "units": {"type": "string", "enum": ["metric", "imperial"]},
                "api_key": {"type": "string"},
            },
            "required": ["api_key"],
        })
    }

    #[test]
    fn the_lifecycle_deadline_has_a_default_and_zero_is_refused_by_name() {
        assert_eq!(AgentConfig::default().host.lifecycle_timeout_ms, 10_000);
        let set = AgentConfig::parse("[host]\nlifecycle_timeout_ms = 2500\n").expect("valid");
        assert_eq!(set.host.lifecycle_timeout_ms, 2500);
        let zero = AgentConfig::parse("[host]\nlifecycle_timeout_ms = 0\n")
            .expect_err("zero is refused")
            .to_string();
        assert!(
            zero.contains("[host] lifecycle_timeout_ms must be at least 1"),
            "{zero}"
        );
    }

    #[test]
    fn operator_values_merge_over_defaults_and_validate() {
        let m = manifest(schema(), json!({"units": "metric"}));
        let config = effective_config(&m, Some(&json!({"api_key": "k"}))).expect("valid");
        assert_eq!(config, json!({"units": "metric", "api_key": "k"}));
    }

    #[test]
    fn a_schema_violation_names_the_plugin_and_the_field() {
        let m = manifest(schema(), json!({"units": "metric"}));
        let error = effective_config(&m, Some(&json!({"api_key": "k", "units": "kelvin"})))
            .expect_err("invalid");
        assert!(
            matches!(&error, ConfigError::Invalid { field, .. } if field == "/units"),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("config field `/units`: "),
            "{error}"
        );
        let error = effective_config(&m, None).expect_err("missing required");
        assert!(error.to_string().contains("api_key"), "{error}");
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let m = manifest(schema(), json!({}));
        std::env::set_var("AGENT_HOST_TEST_SECRET_1", "s3cret");
        let config = effective_config(
            &m,
            Some(&json!({"api_key": {"env": "AGENT_HOST_TEST_SECRET_1"}})),
        )
        .expect("valid");
        assert_eq!(config["api_key"], "s3cret");
        let error = effective_config(
            &m,
            Some(&json!({"api_key": {"env": "AGENT_HOST_TEST_UNSET_VAR"}})),
        )
        .expect_err("unset");
        assert_eq!(
            error,
            ConfigError::MissingSecret {
                field: "/api_key".into(),
                variable: "AGENT_HOST_TEST_UNSET_VAR".into(),
            }
        );
    }

    #[test]
    fn grants_narrow_what_was_requested() {
        let m = manifest(schema(), json!({}));
        let config = AgentConfig::parse("[grants]\nweather = [\"service:*\", \"config:*\"]\n")
            .expect("parses");
        let (held, denied) = config.effective_permissions(&m);
        assert!(held.allows("service:http-client"));
        assert!(!held.allows("event:emit:weather:updated"));
        assert_eq!(denied, vec!["event:emit:weather:*".to_string()]);
        let open = AgentConfig::default().effective_permissions(&m).0;
        assert!(open.allows("event:emit:weather:updated"));
    }

    #[test]
    fn a_grant_can_narrow_a_wildcard_request() {
        let mut m = manifest(schema(), json!({}));
        m.permissions = vec!["network:*".into(), "filesystem:*".into()];
        let config = AgentConfig::parse(
            "[grants]\nweather = [\"network:connect:8080\", \"filesystem:read:/srv/maps\"]\n",
        )
        .expect("parses");
        let (held, denied) = config.effective_permissions(&m);
        assert_eq!(
            held.patterns(),
            ["network:connect:8080", "filesystem:read:/srv/maps"]
        );
        assert!(!held.allows("network:connect:9090"));
        assert!(denied.is_empty());
    }

    #[test]
    fn claimed_permissions_count_only_with_the_switch_and_never_over_senders() {
        let claim = || vec!["data:secret".to_string()];
        let none = AgentConfig::default();
        assert!(none.sender_permissions("mallory", claim()).is_empty());
        let listed = AgentConfig::parse("[senders]\nalice = [\"data:analyze\"]\n").expect("parses");
        assert_eq!(
            listed.sender_permissions("alice", claim()),
            ["data:analyze"]
        );
        assert!(listed.sender_permissions("mallory", claim()).is_empty());
        let trusting = AgentConfig::parse(
            "[host]\ntrust_claimed_permissions = true\n[senders]\nalice = [\"data:analyze\"]\n",
        )
        .expect("parses");
        assert_eq!(
            trusting.sender_permissions("alice", claim()),
            ["data:analyze"]
        );
        assert_eq!(
            trusting.sender_permissions("mallory", claim()),
            ["data:secret"]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(AgentConfig::parse("[hots]\n").is_err());
        assert!(AgentConfig::parse("[host]\naction_timeout = 5\n").is_err());
        let parsed = AgentConfig::parse(
            "[host]\naction_timeout_ms = 5\n[plugins.weather]\nunits = \"metric\"\n",
        )
        .expect("parses");
        assert_eq!(parsed.host.action_timeout_ms, 5);
        assert_eq!(parsed.host.shutdown_grace_ms, 10_000, "the default");
        assert_eq!(parsed.host.http_body_timeout_ms, 10_000, "the default");
        assert_eq!(parsed.host.http_max_connections_per_address, 64);
        let grace = AgentConfig::parse("[host]\nshutdown_grace_ms = 250\n").expect("parses");
        assert_eq!(grace.host.shutdown_grace_ms, 250);
        let lazy = AgentConfig::parse("[host]\nlazy_plugins = [\"notes\", \"bench-*\"]\n")
            .expect("parses");
        assert!(lazy.host.is_lazy("notes") && lazy.host.is_lazy("bench-7"));
        assert!(!lazy.host.is_lazy("note") && !parsed.host.is_lazy("notes"));
        assert_eq!(parsed.plugins["weather"]["units"], "metric");
    }
}
