//! Row values as JSON: integers, floats, text, booleans and null (and JSON
//! columns as themselves on Postgres). Bytes are refused with an error that
//! says how to return them (encode them in SQL); so is any other type,
//! which the SQL can cast to text.

use crate::error::DatabaseError;
use serde_json::{Number, Value};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// The names of a row's columns, in order.
pub fn column_names<R: Row>(row: &R) -> Vec<String> {
    row.columns().iter().map(|c| c.name().to_string()).collect()
}

/// A float as JSON; NaN and the infinities, which JSON has no number for,
/// become their names as text.
pub fn float(value: f64) -> Value {
    Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number)
}

/// How a value of the named type comes back, or why it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// As null.
    Null,
    /// As `true` or `false`.
    Bool,
    /// As an integer.
    Integer,
    /// As a number with a fraction.
    Float,
    /// As a string.
    Text,
    /// As the JSON it holds.
    Json,
    /// Refused: bytes.
    Bytes,
    /// Refused: a type without a JSON form here.
    Unsupported,
}

/// How a Postgres value of type `name` (as the driver names it) maps.
pub fn postgres_mapping(name: &str) -> Mapping {
    match name {
        "VOID" => Mapping::Null,
        "BOOL" => Mapping::Bool,
        "INT2" | "INT4" | "INT8" | "OID" => Mapping::Integer,
        "FLOAT4" | "FLOAT8" => Mapping::Float,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "CITEXT" => Mapping::Text,
        "JSON" | "JSONB" => Mapping::Json,
        "BYTEA" => Mapping::Bytes,
        _ => Mapping::Unsupported,
    }
}

/// How a SQLite value maps: by the value's storage class (`value_type`),
/// except that an integer in a column declared `BOOLEAN` is a boolean.
pub fn sqlite_mapping(value_type: &str, declared: &str) -> Mapping {
    match value_type {
        "NULL" => Mapping::Null,
        "INTEGER" if declared.eq_ignore_ascii_case("BOOLEAN") => Mapping::Bool,
        "INTEGER" | "BOOLEAN" => Mapping::Integer,
        "REAL" => Mapping::Float,
        "TEXT" | "DATE" | "TIME" | "DATETIME" => Mapping::Text,
        "BLOB" => Mapping::Bytes,
        _ => Mapping::Unsupported,
    }
}

fn refused(index: usize, name: &str, mapping: Mapping, type_name: &str) -> DatabaseError {
    let reason = match mapping {
        Mapping::Bytes => format!(
            "holds bytes ({type_name}), which a JSON answer does not carry; \
             return them encoded (SQLite: hex(x); PostgreSQL: encode(x, 'base64'))"
        ),
        _ => format!("has type {type_name}, which has no JSON form here; cast it in SQL (to text, or to a number)"),
    };
    DatabaseError::Column {
        index,
        name: name.to_string(),
        reason,
    }
}

fn decode_error(index: usize, name: &str, error: sqlx::Error) -> DatabaseError {
    DatabaseError::Column {
        index,
        name: name.to_string(),
        reason: error.to_string(),
    }
}

/// A Postgres row's values.
pub fn postgres_row(row: &PgRow) -> Result<Vec<Value>, DatabaseError> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw = row
            .try_get_raw(index)
            .map_err(|e| decode_error(index, name, e))?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let type_name = column.type_info().name().to_string();
        let failed = |e| decode_error(index, name, e);
        let value = match postgres_mapping(&type_name) {
            Mapping::Null => Value::Null,
            Mapping::Bool => Value::Bool(row.try_get::<bool, _>(index).map_err(failed)?),
            Mapping::Integer => Value::from(match type_name.as_str() {
                "INT2" => i64::from(row.try_get::<i16, _>(index).map_err(failed)?),
                "INT4" => i64::from(row.try_get::<i32, _>(index).map_err(failed)?),
                "OID" => i64::from(
                    row.try_get::<sqlx::postgres::types::Oid, _>(index)
                        .map_err(failed)?
                        .0,
                ),
                _ => row.try_get::<i64, _>(index).map_err(failed)?,
            }),
            Mapping::Float => float(match type_name.as_str() {
                "FLOAT4" => f64::from(row.try_get::<f32, _>(index).map_err(failed)?),
                _ => row.try_get::<f64, _>(index).map_err(failed)?,
            }),
            Mapping::Text => {
                Value::String(row.try_get_unchecked::<String, _>(index).map_err(failed)?)
            }
            Mapping::Json => row.try_get::<Value, _>(index).map_err(failed)?,
            mapping @ (Mapping::Bytes | Mapping::Unsupported) => {
                return Err(refused(index, name, mapping, &type_name))
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// A SQLite row's values.
pub fn sqlite_row(row: &SqliteRow) -> Result<Vec<Value>, DatabaseError> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw = row
            .try_get_raw(index)
            .map_err(|e| decode_error(index, name, e))?;
        if raw.is_null() {
            // A NULL's type is the column's declared one: look no further.
            values.push(Value::Null);
            continue;
        }
        let value_type = raw.type_info().name().to_string();
        let failed = |e| decode_error(index, name, e);
        // The storage class was read above: the unchecked reads take the
        // value as that class, whatever the column was declared as.
        let value = match sqlite_mapping(&value_type, column.type_info().name()) {
            Mapping::Null => Value::Null,
            Mapping::Bool => {
                Value::Bool(row.try_get_unchecked::<i64, _>(index).map_err(failed)? != 0)
            }
            Mapping::Integer => {
                Value::from(row.try_get_unchecked::<i64, _>(index).map_err(failed)?)
            }
            Mapping::Float => float(row.try_get_unchecked::<f64, _>(index).map_err(failed)?),
            Mapping::Text | Mapping::Json => {
                Value::String(row.try_get_unchecked::<String, _>(index).map_err(failed)?)
            }
            mapping @ (Mapping::Bytes | Mapping::Unsupported) => {
                return Err(refused(index, name, mapping, &value_type))
            }
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_types_map_to_json_kinds() {
        assert_eq!(postgres_mapping("INT4"), Mapping::Integer);
        assert_eq!(postgres_mapping("INT8"), Mapping::Integer);
        assert_eq!(postgres_mapping("FLOAT8"), Mapping::Float);
        assert_eq!(postgres_mapping("BOOL"), Mapping::Bool);
        assert_eq!(postgres_mapping("VARCHAR"), Mapping::Text);
        assert_eq!(postgres_mapping("JSONB"), Mapping::Json);
        assert_eq!(postgres_mapping("BYTEA"), Mapping::Bytes);
        assert_eq!(postgres_mapping("TIMESTAMPTZ"), Mapping::Unsupported);
        assert_eq!(postgres_mapping("NUMERIC"), Mapping::Unsupported);
    }

    #[test]
    fn sqlite_values_map_by_storage_class() {
        assert_eq!(sqlite_mapping("INTEGER", ""), Mapping::Integer);
        assert_eq!(sqlite_mapping("INTEGER", "boolean"), Mapping::Bool);
        assert_eq!(sqlite_mapping("REAL", "INTEGER"), Mapping::Float);
        assert_eq!(sqlite_mapping("TEXT", "DATETIME"), Mapping::Text);
        assert_eq!(sqlite_mapping("NULL", "TEXT"), Mapping::Null);
        assert_eq!(sqlite_mapping("BLOB", ""), Mapping::Bytes);
    }

    #[test]
    fn refusals_say_what_to_do() {
        let error = refused(2, "avatar", Mapping::Bytes, "BYTEA");
        assert_eq!(error.kind(), agent_host_plugin_sdk::ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(
            text.starts_with("column 2 (`avatar`): holds bytes (BYTEA)"),
            "{text}"
        );
        assert!(text.contains("encode(x, 'base64')"), "{text}");
        let text = refused(0, "at", Mapping::Unsupported, "TIMESTAMPTZ").to_string();
        assert!(text.contains("cast it in SQL"), "{text}");
    }

    #[test]
    fn floats_json_cannot_hold_become_text() {
        assert_eq!(float(1.5), serde_json::json!(1.5));
        assert_eq!(float(f64::NAN), serde_json::json!("NaN"));
        assert_eq!(float(f64::INFINITY), serde_json::json!("inf"));
    }
}
