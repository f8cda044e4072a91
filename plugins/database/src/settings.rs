//! The plugin's config, read when the service starts.

use crate::api::Dialect;
use crate::error::DatabaseError;
use agent_host_plugin_sdk::{Runtime, Value};
use std::time::Duration;

/// The database used when the config names none: SQLite in memory, so that
/// nothing is written where the operator did not ask (the shipped
/// `agent.toml` names a file).
pub const DEFAULT_URL: &str = "sqlite::memory:";

/// The pool's size when the config gives none.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// How long a call waits for a free connection when the config says nothing.
pub const DEFAULT_ACQUIRE_TIMEOUT_MS: u64 = 5_000;

/// How long a statement (or a whole transaction) may run when the config
/// says nothing.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 10_000;

/// The longest Postgres identifier, in bytes.
const MAX_SCHEMA_BYTES: usize = 63;

/// The service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://...`.
    pub url: String,
    /// The pool's size.
    pub max_connections: u32,
    /// How long a call waits for a free connection.
    pub acquire_timeout: Duration,
    /// How long a statement or a transaction may run.
    pub statement_timeout: Duration,
    /// The Postgres schema every connection works in (its `search_path`).
    pub schema: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_string(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_millis(DEFAULT_ACQUIRE_TIMEOUT_MS),
            statement_timeout: Duration::from_millis(DEFAULT_STATEMENT_TIMEOUT_MS),
            schema: None,
        }
    }
}

impl Settings {
    /// Reads the settings from the plugin's config.
    pub fn from_config(rt: &Runtime<'_>) -> Result<Self, DatabaseError> {
        let read = |key: &'static str| {
            rt.config_value(key).map_err(|e| DatabaseError::Config {
                key,
                reason: e.message().to_string(),
            })
        };
        Self::from_values(
            read("url")?,
            read("max_connections")?,
            read("acquire_timeout_ms")?,
            read("statement_timeout_ms")?,
            read("schema")?,
        )
    }

    /// The settings from the config's values (`Null` where a key is absent).
    pub fn from_values(
        url: Value,
        max_connections: Value,
        acquire_timeout_ms: Value,
        statement_timeout_ms: Value,
        schema: Value,
    ) -> Result<Self, DatabaseError> {
        let defaults = Settings::default();
        let url = match url {
            Value::Null => defaults.url,
            Value::String(url) if !url.trim().is_empty() => url.trim().to_string(),
            other => {
                return Err(config(
                    "url",
                    format!("must be a database URL, not {other}"),
                ))
            }
        };
        let dialect = dialect_of(&url)?;
        let max_connections = match max_connections {
            Value::Null => defaults.max_connections,
            value => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    config(
                        "max_connections",
                        format!("must be a positive integer, not {value}"),
                    )
                })?,
        };
        let acquire_timeout = positive_ms(
            "acquire_timeout_ms",
            acquire_timeout_ms,
            defaults.acquire_timeout,
        )?;
        let statement_timeout = positive_ms(
            "statement_timeout_ms",
            statement_timeout_ms,
            defaults.statement_timeout,
        )?;
        let schema = match schema {
            Value::Null => None,
            Value::String(schema) => {
                check_schema(&schema)?;
                if dialect != Dialect::Postgres {
                    return Err(config(
                        "schema",
                        "applies to PostgreSQL only; a SQLite database has none",
                    ));
                }
                Some(schema)
            }
            other => {
                return Err(config(
                    "schema",
                    format!("must be a schema name, not {other}"),
                ))
            }
        };
        Ok(Self {
            url,
            max_connections,
            acquire_timeout,
            statement_timeout,
            schema,
        })
    }

    /// The dialect of the configured URL.
    pub fn dialect(&self) -> Dialect {
        // `from_values` refused any other URL.
        dialect_of(&self.url).unwrap_or(Dialect::Sqlite)
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

fn config(key: &'static str, reason: impl Into<String>) -> DatabaseError {
    DatabaseError::Config {
        key,
        reason: reason.into(),
    }
}

fn positive_ms(
    key: &'static str,
    value: Value,
    default: Duration,
) -> Result<Duration, DatabaseError> {
    match value {
        Value::Null => Ok(default),
        value => value
            .as_u64()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                config(
                    key,
                    format!("must be a positive number of milliseconds, not {value}"),
                )
            }),
    }
}

/// The dialect a URL speaks: `sqlite:` or `postgres://` / `postgresql://`.
pub fn dialect_of(url: &str) -> Result<Dialect, DatabaseError> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(config(
            "url",
            format!(
                "'{}' is neither sqlite://PATH, sqlite::memory: nor postgres://...",
                redact_url(url)
            ),
        ))
    }
}

/// A schema name: lowercase ASCII letters, digits and `_`, not starting with
/// a digit, at most 63 bytes, so it needs no quoting anywhere.
fn check_schema(schema: &str) -> Result<(), DatabaseError> {
    let well_formed = !schema.is_empty()
        && schema.len() <= MAX_SCHEMA_BYTES
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if well_formed {
        Ok(())
    } else {
        Err(config(
            "schema",
            format!("'{schema}' must be 1 to {MAX_SCHEMA_BYTES} lowercase letters, digits and _, not starting with a digit"),
        ))
    }
}

/// `url` with the password of its user info (`user:password@`) and of a
/// `password=` query parameter replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::json;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact_url("postgres://app:s3cr%40t@db.example:5432/agent?sslmode=require"),
            "postgres://app:***@db.example:5432/agent?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/agent?password=hunter2&application_name=x"),
            "postgres://app@db/agent?password=***&application_name=x"
        );
        assert_eq!(redact_url("postgres://db/agent"), "postgres://db/agent");
        assert_eq!(
            redact_url("sqlite://agent.sqlite3"),
            "sqlite://agent.sqlite3"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn defaults_and_refusals() {
        let null = || Value::Null;
        let settings = Settings::from_values(null(), null(), null(), null(), null()).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.dialect(), Dialect::Sqlite);

        let settings = Settings::from_values(
            json!("postgres://u:p@h/db"),
            json!(2),
            json!(100),
            json!(200),
            json!("tenant_1"),
        )
        .unwrap();
        assert_eq!(settings.dialect(), Dialect::Postgres);
        assert_eq!(settings.max_connections, 2);
        assert_eq!(settings.statement_timeout, Duration::from_millis(200));
        assert_eq!(settings.schema.as_deref(), Some("tenant_1"));

        for (values, key) in [
            (
                [json!("mysql://u:pw@h/db"), null(), null(), null(), null()],
                "url",
            ),
            ([json!(7), null(), null(), null(), null()], "url"),
            (
                [null(), json!(0), null(), null(), null()],
                "max_connections",
            ),
            (
                [null(), null(), json!(-1), null(), null()],
                "acquire_timeout_ms",
            ),
            (
                [null(), null(), null(), json!("10"), null()],
                "statement_timeout_ms",
            ),
            ([null(), null(), null(), null(), json!("x")], "schema"),
            (
                [
                    json!("postgres://h/db"),
                    null(),
                    null(),
                    null(),
                    json!("Bad-Name"),
                ],
                "schema",
            ),
            (
                [
                    json!("postgres://h/db"),
                    null(),
                    null(),
                    null(),
                    json!("1st"),
                ],
                "schema",
            ),
        ] {
            let [url, max, acquire, statement, schema] = values;
            let error = Settings::from_values(url, max, acquire, statement, schema).unwrap_err();
            assert!(
                matches!(&error, DatabaseError::Config { key: k, .. } if *k == key),
                "{error}"
            );
            assert!(!error.to_string().contains("pw"), "{error}");
        }
    }
}
