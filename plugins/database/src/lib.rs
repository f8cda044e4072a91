//! `database`: one shared pool of SQL connections, SQLite or PostgreSQL,
//! offered to other plugins as the `database` service.
//!
//! It is a plugin, not part of the host, so that the driver and the
//! credentials live in one place that the operator grants (`service:database`),
//! places (in process or in a worker), versions and reloads like any other,
//! and an agent without a database carries no driver. It must never splice a
//! caller's value into SQL: every value is bound to a `$N` placeholder. It
//! never writes a URL's password into a message or a log line.
//!
//! # Methods
//!
//! JSON in, JSON out (the typed forms are in [`api`]):
//!
//! * `query {sql, params?}` -> `{columns: [..], rows: [[..], ..]}`: the rows
//!   a statement returns (`columns` is empty when no row came back);
//! * `execute {sql, params?}` -> `{rows_affected}`;
//! * `transaction {statements: [{sql, params?}, ..]}` ->
//!   `{results: [{rows_affected, rows?}, ..]}`: the statements run in order
//!   in one transaction, committed when all succeed; at the first failure
//!   the transaction is rolled back (nothing of it stays) and the error
//!   names the statement's index, from 0;
//! * `dialect` -> `"sqlite"` or `"postgres"`, for callers whose DDL differs.
//!
//! Placeholders are `$1`, `$2`... on both dialects. JSON null, booleans,
//! integers (64-bit signed), floats and strings bind as such; an array, an
//! object or a larger integer is refused with an error naming the
//! placeholder. On PostgreSQL a string binds as `text` and an integer as
//! `int8` (cast in the SQL, `$1::timestamptz`, where a column wants another
//! type); null takes the type its place in the statement needs. On SQLite a
//! boolean binds as 1 or 0.
//!
//! Row values come back as JSON integers, floats, strings, booleans and
//! null; on PostgreSQL a `json`/`jsonb` column comes back as its JSON, and
//! on SQLite an integer in a column declared `BOOLEAN` as a boolean. Bytes
//! (`BLOB`, `bytea`) are refused with an error that says to encode them in
//! the SQL (`hex(x)`, `encode(x, 'base64')`); so is a type with no JSON form
//! here (a timestamp, a `numeric`), which the SQL can cast to text.
//!
//! Errors name the method and the cause: a bad parameter or a value that
//! cannot be returned is `InvalidInput`; the database's own error (SQL
//! syntax, a constraint) is `Failed`; no free connection within
//! `acquire_timeout_ms`, or a stopped service, is `Unavailable`; a statement
//! past `statement_timeout_ms` (or past the calling call's deadline) is
//! `Cancelled`.
//!
//! # Config
//!
//! * `url`: `sqlite://PATH` (relative to the host's working directory,
//!   created when missing), `sqlite::memory:` or `postgres://USER:PASSWORD@HOST:PORT/DB`;
//!   default [`DEFAULT_URL`]. Give a URL with a password as `{ env = "VAR" }`.
//! * `max_connections` (default 8): the pool's size.
//! * `acquire_timeout_ms` (default 5000): how long a call waits for a free
//!   connection (and the pool for the server at start).
//! * `statement_timeout_ms` (default 10000): how long one `query` or
//!   `execute`, or one whole `transaction`, may run; on PostgreSQL also the
//!   server's `statement_timeout`.
//! * `schema` (PostgreSQL only): created when missing and made the
//!   `search_path` of every connection, so two agents (or two tests) on one
//!   database never see each other's tables.
//!
//! The pool opens when the service starts (a server that cannot be reached
//! fails the start, naming the URL without its password) and closes when it
//! stops, so a hot reload closes the old pool before the new one opens.
//!
//! # Runtime
//!
//! Plugin calls are synchronous: the service owns a small tokio runtime
//! (two threads) and blocks the caller's thread on each statement. The
//! runtime is this library's own (its tokio is linked into the plugin file),
//! so it never meets the host's.

pub mod api;
pub mod error;
mod params;
mod pool;
mod service;
pub mod settings;
mod values;

pub use api::{
    Dialect, ExecuteResult, QueryResult, Statement, StatementResult, TransactionRequest,
    TransactionResult,
};
pub use error::DatabaseError;
pub use service::DatabaseService;
pub use settings::{
    DEFAULT_ACQUIRE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_STATEMENT_TIMEOUT_MS, DEFAULT_URL,
};

use agent_host_plugin_sdk::{json, Plugin, Service, Value};

/// The service's name, as other plugins call it (with the permission
/// `service:database`).
pub const SERVICE: &str = "database";

/// The JSON Schema of the plugin's config.
pub fn config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "minLength": 1,
                "default": DEFAULT_URL,
                "description": "sqlite://PATH (relative to the host's working directory), sqlite::memory: or postgres://USER:PASSWORD@HOST:PORT/DB; give a password through { env = \"VAR\" }."
            },
            "max_connections": {
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_MAX_CONNECTIONS,
                "description": "The pool's size."
            },
            "acquire_timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_ACQUIRE_TIMEOUT_MS,
                "description": "How long a call waits for a free connection, in milliseconds."
            },
            "statement_timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_STATEMENT_TIMEOUT_MS,
                "description": "How long a statement, or a whole transaction, may run, in milliseconds."
            },
            "schema": {
                "type": "string",
                "pattern": "^[a-z_][a-z0-9_]{0,62}$",
                "description": "PostgreSQL only: the schema every connection works in, created when missing."
            }
        },
        "additionalProperties": false
    })
}

/// Builds the `database` plugin.
pub fn plugin() -> Plugin {
    Plugin::new("database", "1.0.0")
        .description("A shared SQL connection pool (SQLite or PostgreSQL) for other plugins")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        // Reading its own config is a permission like any other.
        .permission("config:*")
        // The ports of the database servers it may reach, as the operator
        // grants them (`network:connect:5432`); enforced in a worker.
        .permission("network:connect:*")
        .config_schema(config_schema())
        .service(
            Service::new(SERVICE, DatabaseService::default())
                .description(
                    "query {sql, params?} -> {columns, rows}; execute {sql, params?} -> \
                     {rows_affected}; transaction {statements: [{sql, params?}]} -> \
                     {results: [{rows_affected, rows?}]}; dialect -> \"sqlite\"|\"postgres\"",
                )
                .on_start(DatabaseService::start)
                .on_stop(DatabaseService::stop)
                .method("query", DatabaseService::query)
                .method("execute", DatabaseService::execute)
                .method("transaction", DatabaseService::transaction)
                .method("dialect", DatabaseService::dialect),
        )
}

agent_host_plugin_sdk::export_plugin!(plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;
    use agent_host_plugin_sdk::ErrorKind;

    fn memory_host() -> TestHost {
        TestHost::new("database").with_config(json!({"url": "sqlite::memory:"}))
    }

    #[test]
    fn manifest_is_valid() {
        let manifest = plugin().manifest();
        manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        assert_eq!(
            manifest.services[0].methods,
            ["query", "execute", "transaction", "dialect"]
        );
    }

    #[test]
    fn statements_bind_their_parameters_and_rows_come_back_as_json() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        let call = |method: &str, args: Value| loaded.call_service(SERVICE, method, args);
        assert_eq!(call("dialect", Value::Null).unwrap(), json!("sqlite"));
        call(
            "execute",
            json!({"sql": "CREATE TABLE t (n INTEGER, x REAL, s TEXT, b BOOLEAN)"}),
        )
        .unwrap();
        let inserted = call(
            "execute",
            json!({"sql": "INSERT INTO t VALUES ($1, $2, $3, $4), ($5, NULL, $6, $7)",
                   "params": [1, 2.5, "it's", true, 2, "x'); DROP TABLE t; --", false]}),
        )
        .unwrap();
        assert_eq!(inserted, json!({"rows_affected": 2}));
        let rows = call(
            "query",
            json!({"sql": "SELECT n, x, s, b FROM t WHERE n >= $1 ORDER BY n", "params": [1]}),
        )
        .unwrap();
        assert_eq!(
            rows,
            json!({"columns": ["n", "x", "s", "b"],
                   "rows": [[1, 2.5, "it's", true], [2, null, "x'); DROP TABLE t; --", false]]})
        );
        let error = call("query", json!({"sql": "SELECT x'00ff'"})).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error:?}");
        assert!(error.message().contains("hex(x)"), "{error:?}");
        let error = call("query", json!({"sql": "SELECT $1", "params": [[1]]})).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(
            error.message().starts_with(
                "plugin 'database': service 'database' method 'query': database.query: parameter $1"
            ),
            "{error:?}"
        );
        let error = call("execute", json!({"sql": "INSERT INTO nowhere VALUES (1)"})).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Failed);
        assert!(
            error.message().contains("no such table: nowhere"),
            "{error:?}"
        );
    }

    #[test]
    fn a_transaction_commits_all_or_nothing() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        let call = |method: &str, args: Value| loaded.call_service(SERVICE, method, args);
        call(
            "execute",
            json!({"sql": "CREATE TABLE t (n INTEGER PRIMARY KEY)"}),
        )
        .unwrap();
        let done = call(
            "transaction",
            json!({"statements": [
                {"sql": "INSERT INTO t VALUES ($1)", "params": [1]},
                {"sql": "SELECT count(*) AS c FROM t"},
            ]}),
        )
        .unwrap();
        assert_eq!(
            done,
            json!({"results": [{"rows_affected": 1}, {"rows_affected": 0, "rows": [[1]]}]})
        );
        let error = call(
            "transaction",
            json!({"statements": [
                {"sql": "INSERT INTO t VALUES ($1)", "params": [2]},
                {"sql": "INSERT INTO t VALUES ($1)", "params": [1]},
            ]}),
        )
        .unwrap_err();
        assert!(
            error
                .message()
                .starts_with("plugin 'database': service 'database' method 'transaction': database.transaction: statement 1 failed"),
            "{error:?}"
        );
        let count = call("query", json!({"sql": "SELECT count(*) FROM t"})).unwrap();
        assert_eq!(count["rows"], json!([[1]]));
    }

    #[test]
    fn a_slow_statement_times_out_and_a_stopped_pool_is_unavailable() {
        let host = TestHost::new("database")
            .with_config(json!({"url": "sqlite::memory:", "statement_timeout_ms": 50}));
        let loaded = host.load(plugin()).unwrap();
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                    SELECT count(*) FROM c";
        let error = loaded
            .call_service(SERVICE, "query", json!({"sql": slow}))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Cancelled, "{error:?}");
        assert!(error.message().contains("50 ms timeout"), "{error:?}");

        let service = loaded.plugin().service_named(SERVICE).unwrap();
        service.stop(&host.runtime()).unwrap();
        let error = loaded
            .call_service(SERVICE, "query", json!({"sql": "SELECT 1"}))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn a_file_database_is_created_and_a_bad_config_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sqlite3");
        let url = format!("sqlite://{}", path.display());
        let host = TestHost::new("database").with_config(json!({"url": url}));
        let loaded = host.load(plugin()).unwrap();
        loaded
            .call_service(
                SERVICE,
                "execute",
                json!({"sql": "CREATE TABLE t (n INTEGER)"}),
            )
            .unwrap();
        loaded.unload().unwrap();
        assert!(path.exists());
        assert!(host
            .logs()
            .iter()
            .any(|(_, line)| line.starts_with("database pool closed: sqlite://")));

        let host = TestHost::new("database").with_config(json!({"url": "mysql://u:pw@h/db"}));
        let error = host.load(plugin()).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(error.message().contains("config `url`"), "{error:?}");
        assert!(!error.message().contains("pw"), "{error:?}");
    }
}
