//! Statement parameters: JSON values checked and turned into the values
//! bound to `$1`, `$2`... Parameters are always bound, never spliced into
//! the SQL.

use crate::error::DatabaseError;
use serde_json::Value;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArguments, PgTypeInfo};
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Postgres, Sqlite};

/// One parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text.
    Text(String),
}

impl Param {
    /// The parameter a JSON value binds as; `number` is its placeholder's
    /// (`$1` is 1), named in the error.
    pub fn from_json(number: usize, value: &Value) -> Result<Self, DatabaseError> {
        let refuse = |reason: String| DatabaseError::Parameter { number, reason };
        Ok(match value {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Param::Int(i),
                (None, Some(f)) if n.is_f64() => Param::Float(f),
                _ => return Err(refuse(format!("{n} does not fit a 64-bit signed integer"))),
            },
            Value::String(s) => Param::Text(s.clone()),
            Value::Array(_) => {
                return Err(refuse(
                    "an array cannot be bound; bind its items one by one (or as a JSON string)"
                        .into(),
                ))
            }
            Value::Object(_) => {
                return Err(refuse(
                    "an object cannot be bound; pass it as a JSON string".into(),
                ))
            }
        })
    }

    /// The parameters of a statement, in order.
    pub fn all(values: &[Value]) -> Result<Vec<Self>, DatabaseError> {
        values
            .iter()
            .enumerate()
            .map(|(index, value)| Param::from_json(index + 1, value))
            .collect()
    }

    /// The Postgres type the parameter is sent as; `unknown` for NULL, whose
    /// type the server infers from where it is used.
    fn postgres_type(&self) -> &'static str {
        match self {
            Param::Null => "unknown",
            Param::Bool(_) => "bool",
            Param::Int(_) => "int8",
            Param::Float(_) => "float8",
            Param::Text(_) => "text",
        }
    }
}

/// The SQL sent to Postgres for `sql` with `params`: the same statement,
/// prefixed by a comment naming the parameters' types when there are any.
///
/// The driver caches a prepared statement per connection by its text, with
/// the parameter types of its first use; the same SQL bound later with other
/// types (an integer where a float was) would be sent in the wrong binary
/// format. The comment makes each combination of types a statement of its own.
pub fn postgres_sql(sql: &str, params: &[Param]) -> String {
    if params.is_empty() {
        return sql.to_string();
    }
    let types: Vec<&str> = params.iter().map(Param::postgres_type).collect();
    format!("/* params: {} */ {sql}", types.join(","))
}

/// SQL NULL sent to Postgres with no type: the server infers it, as for a
/// `NULL` literal, so it fits a column of any type.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        // OID 705 is `unknown`: the server resolves the parameter's type from
        // its use, as it does for an unspecified (0) type.
        PgTypeInfo::with_oid(Oid(705))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// `query` with `params` bound, for Postgres.
pub fn bind_postgres(
    mut query: Query<'static, Postgres, PgArguments>,
    params: Vec<Param>,
) -> Query<'static, Postgres, PgArguments> {
    for param in params {
        query = match param {
            Param::Null => query.bind(UntypedNull),
            Param::Bool(b) => query.bind(b),
            Param::Int(i) => query.bind(i),
            Param::Float(f) => query.bind(f),
            Param::Text(s) => query.bind(s),
        };
    }
    query
}

/// `query` with `params` bound, for SQLite (booleans as 0 and 1).
pub fn bind_sqlite(
    mut query: Query<'static, Sqlite, SqliteArguments>,
    params: Vec<Param>,
) -> Query<'static, Sqlite, SqliteArguments> {
    for param in params {
        query = match param {
            Param::Null => query.bind(None::<i64>),
            Param::Bool(b) => query.bind(b),
            Param::Int(i) => query.bind(i),
            Param::Float(f) => query.bind(f),
            Param::Text(s) => query.bind(s),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_scalars_bind_as_themselves() {
        let params = Param::all(&[
            json!(null),
            json!(true),
            json!(-7),
            json!(i64::MAX),
            json!(1.5),
            json!("it's; DROP TABLE x"),
        ])
        .unwrap();
        assert_eq!(
            params,
            [
                Param::Null,
                Param::Bool(true),
                Param::Int(-7),
                Param::Int(i64::MAX),
                Param::Float(1.5),
                Param::Text("it's; DROP TABLE x".into()),
            ]
        );
    }

    #[test]
    fn other_values_are_refused_naming_the_placeholder() {
        for (value, expected) in [
            (json!([1, 2]), "parameter $2: an array"),
            (json!({"a": 1}), "parameter $2: an object"),
            (
                json!(u64::MAX),
                "parameter $2: 18446744073709551615 does not fit",
            ),
        ] {
            let error = Param::all(&[json!(1), value]).unwrap_err();
            assert!(error.to_string().starts_with(expected), "{error}");
            assert_eq!(error.kind(), agent_host_plugin_sdk::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn postgres_statements_are_keyed_by_their_parameter_types() {
        assert_eq!(postgres_sql("SELECT 1", &[]), "SELECT 1");
        let ints = postgres_sql("SELECT $1, $2", &[Param::Int(1), Param::Null]);
        let floats = postgres_sql("SELECT $1, $2", &[Param::Float(1.0), Param::Null]);
        assert_eq!(ints, "/* params: int8,unknown */ SELECT $1, $2");
        assert_ne!(ints, floats);
    }
}
