//! The `database` service's requests and answers, as typed values. A caller
//! sends and reads the same shapes as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One SQL statement and the values bound to its placeholders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// The SQL, with `$1`, `$2`... where the parameters go (on both dialects).
    pub sql: String,
    /// The values bound to `$1`, `$2`...: JSON null, booleans, integers,
    /// floats and strings. Absent binds nothing.
    #[serde(default)]
    pub params: Vec<Value>,
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// The statement with `value` bound to its next placeholder.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.params.push(value.into());
        self
    }
}

/// What `query` returns: the columns' names and the rows, each a list of
/// values in the columns' order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryResult {
    /// The result's column names, in order (empty when no row came back).
    pub columns: Vec<String>,
    /// The rows, each a list of JSON values in the columns' order.
    pub rows: Vec<Vec<Value>>,
}

/// What `execute` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecuteResult {
    /// How many rows the statement inserted, changed or deleted.
    pub rows_affected: u64,
}

/// The arguments of `transaction`: statements run in order, all committed
/// or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    /// The statements, run in order in one transaction.
    pub statements: Vec<Statement>,
}

/// What one statement of a transaction did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatementResult {
    /// How many rows it inserted, changed or deleted, as the database
    /// counts them (PostgreSQL also counts the rows a `SELECT` returned).
    pub rows_affected: u64,
    /// The rows it returned (a `SELECT`, a `RETURNING` clause); absent when
    /// it returned none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<Value>>>,
}

/// What `transaction` returns, once every statement ran and the
/// transaction committed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TransactionResult {
    /// One result per statement, in order.
    pub results: Vec<StatementResult>,
}

/// The SQL dialect the service speaks, as `dialect` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// SQLite, in a file or in memory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The dialect's name: `"sqlite"` or `"postgres"`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
