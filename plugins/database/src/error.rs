//! What can go wrong in the service, and the SDK error kind each becomes.

use agent_host_plugin_sdk::{Error, ErrorKind};

/// A failure of the `database` service, naming its cause.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// A config key holds a value the service cannot use.
    #[error("config `{key}`: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// Why its value is refused.
        reason: String,
    },
    /// The pool could not open its first connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, its password replaced by `***`.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The Postgres schema named by `schema` could not be created.
    #[error("cannot create schema `{schema}` on {url}: {source}")]
    Schema {
        /// The schema.
        schema: String,
        /// The URL, its password replaced by `***`.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A parameter cannot be bound.
    #[error("parameter ${number}: {reason}")]
    Parameter {
        /// The placeholder's number (`$1` is 1).
        number: usize,
        /// Why it cannot be bound.
        reason: String,
    },
    /// A column's value cannot be returned as JSON.
    #[error("column {index} (`{name}`): {reason}")]
    Column {
        /// The column's position, from 0.
        index: usize,
        /// The column's name.
        name: String,
        /// Why its value cannot be returned.
        reason: String,
    },
    /// The statement failed in the database (a syntax error, a constraint...).
    #[error("{0}")]
    Sql(#[source] sqlx::Error),
    /// No connection became free within `acquire_timeout_ms`.
    #[error("no connection was free within {ms} ms (max_connections {max_connections})")]
    PoolTimeout {
        /// The configured acquire timeout.
        ms: u64,
        /// The pool's size.
        max_connections: u32,
    },
    /// The statement or transaction ran past its time.
    #[error("the statement ran past its {ms} ms timeout")]
    StatementTimeout {
        /// The time it had.
        ms: u64,
    },
    /// One statement of a transaction failed; nothing was committed.
    #[error("statement {index} failed, the transaction was rolled back: {source}")]
    InTransaction {
        /// The statement's position in the request, from 0.
        index: usize,
        /// Its failure.
        #[source]
        source: Box<DatabaseError>,
    },
    /// The service is not running.
    #[error("the database pool is not open (the service is stopped)")]
    NotOpen,
}

impl DatabaseError {
    /// The SDK error kind a caller sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DatabaseError::Config { .. }
            | DatabaseError::Parameter { .. }
            | DatabaseError::Column { .. } => ErrorKind::InvalidInput,
            DatabaseError::Connect { .. }
            | DatabaseError::PoolTimeout { .. }
            | DatabaseError::NotOpen => ErrorKind::Unavailable,
            DatabaseError::StatementTimeout { .. } => ErrorKind::Cancelled,
            DatabaseError::Schema { .. } | DatabaseError::Sql(_) => ErrorKind::Failed,
            DatabaseError::InTransaction { source, .. } => source.kind(),
        }
    }

    /// The SDK error of a failed call to `method`, its message naming the
    /// method and the cause.
    pub fn into_sdk(self, method: &str) -> Error {
        Error::new(self.kind(), format!("database.{method}: {self}"))
    }
}
