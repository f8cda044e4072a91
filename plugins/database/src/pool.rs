//! The connection pool of one backend, and statements run on it. Async:
//! the service runs these on its own small tokio runtime.

use crate::api::{Dialect, Statement};
use crate::error::DatabaseError;
use crate::params::{bind_postgres, bind_sqlite, postgres_sql, Param};
use crate::settings::Settings;
use crate::values::{column_names, postgres_row, sqlite_row};
use futures_util::stream::BoxStream;
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult};
use sqlx::{AssertSqlSafe, Either, Executor, PgPool, Postgres, Sqlite, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// What one statement did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The columns of the rows it returned (empty when it returned none).
    pub columns: Vec<String>,
    /// The rows it returned.
    pub rows: Vec<Vec<Value>>,
    /// How many rows it inserted, changed or deleted.
    pub rows_affected: u64,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open pool.
#[derive(Debug, Clone)]
pub struct Pool {
    backend: Backend,
    acquire_timeout_ms: u64,
    max_connections: u32,
}

impl Pool {
    /// Opens the pool `settings` describe, with one connection made now, so
    /// that a database that cannot be reached fails here; on Postgres,
    /// creates the schema when one is configured.
    pub async fn open(settings: &Settings) -> Result<Self, DatabaseError> {
        let url = settings.redacted_url();
        let connect_error = |source| DatabaseError::Connect {
            url: url.clone(),
            source,
        };
        let backend = match settings.dialect() {
            Dialect::Sqlite => {
                let in_memory =
                    settings.url.contains(":memory:") || settings.url.contains("mode=memory");
                let mut options = SqliteConnectOptions::from_str(&settings.url)
                    .map_err(connect_error)?
                    .create_if_missing(true);
                let mut pool = SqlitePoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.acquire_timeout);
                if in_memory {
                    // An in-memory database lives as long as one connection
                    // to it: keep one open for the pool's life.
                    pool = pool
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                } else {
                    options = options.journal_mode(SqliteJournalMode::Wal);
                }
                Backend::Sqlite(pool.connect_with(options).await.map_err(connect_error)?)
            }
            Dialect::Postgres => {
                let statement_ms = settings.statement_timeout.as_millis().to_string();
                let mut options = PgConnectOptions::from_str(&settings.url)
                    .map_err(connect_error)?
                    .options([("statement_timeout", statement_ms)]);
                if let Some(schema) = &settings.schema {
                    options = options.options([("search_path", schema.as_str())]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                if let Some(schema) = &settings.schema {
                    create_schema(&pool, schema)
                        .await
                        .map_err(|source| DatabaseError::Schema {
                            schema: schema.clone(),
                            url: url.clone(),
                            source,
                        })?;
                }
                Backend::Postgres(pool)
            }
        };
        Ok(Self {
            backend,
            acquire_timeout_ms: u64::try_from(settings.acquire_timeout.as_millis())
                .unwrap_or(u64::MAX),
            max_connections: settings.max_connections,
        })
    }

    /// The dialect the pool speaks.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Closes every connection, waiting for those in use to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// Runs one statement on a connection of the pool.
    pub async fn run(&self, statement: &Statement) -> Result<Outcome, DatabaseError> {
        let params = Param::all(&statement.params)?;
        match &self.backend {
            Backend::Sqlite(pool) => run_sqlite(pool, &statement.sql, params).await,
            Backend::Postgres(pool) => run_postgres(pool, &statement.sql, params).await,
        }
        .map_err(|e| self.explain(e))
    }

    /// Runs `statements` in order in one transaction: commits when all
    /// succeed, rolls back at the first failure, which names its index.
    pub async fn transaction(
        &self,
        statements: &[Statement],
    ) -> Result<Vec<Outcome>, DatabaseError> {
        let all_params = statements
            .iter()
            .enumerate()
            .map(|(index, statement)| {
                Param::all(&statement.params).map_err(|e| DatabaseError::InTransaction {
                    index,
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut outcomes = Vec::with_capacity(statements.len());
        macro_rules! in_transaction {
            ($pool:expr, $run:ident) => {{
                let mut transaction = $pool
                    .begin()
                    .await
                    .map_err(|e| self.explain(DatabaseError::Sql(e)))?;
                for (index, (statement, params)) in statements.iter().zip(all_params).enumerate() {
                    match $run(&mut *transaction, &statement.sql, params).await {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(error) => {
                            // Nothing of the transaction stays; a failed
                            // rollback only closes the connection.
                            let _ = transaction.rollback().await;
                            return Err(DatabaseError::InTransaction {
                                index,
                                source: Box::new(self.explain(error)),
                            });
                        }
                    }
                }
                transaction
                    .commit()
                    .await
                    .map_err(|e| self.explain(DatabaseError::Sql(e)))?;
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => in_transaction!(pool, run_sqlite),
            Backend::Postgres(pool) => in_transaction!(pool, run_postgres),
        }
        Ok(outcomes)
    }

    /// A driver error said in the service's terms.
    fn explain(&self, error: DatabaseError) -> DatabaseError {
        match error {
            DatabaseError::Sql(sqlx::Error::PoolTimedOut) => DatabaseError::PoolTimeout {
                ms: self.acquire_timeout_ms,
                max_connections: self.max_connections,
            },
            DatabaseError::Sql(sqlx::Error::PoolClosed) => DatabaseError::NotOpen,
            other => other,
        }
    }
}

/// `CREATE SCHEMA IF NOT EXISTS`, retried once: two hosts creating the same
/// schema at the same moment make one of them fail on a unique index.
async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    // `schema` is checked to be lowercase letters, digits and `_` only
    // (`Settings`), so it is a plain identifier in the SQL.
    let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    match pool.execute(AssertSqlSafe(sql.clone())).await {
        Ok(_) => Ok(()),
        Err(_) => pool.execute(AssertSqlSafe(sql)).await.map(|_| ()),
    }
}

async fn run_postgres<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    sql: &str,
    params: Vec<Param>,
) -> Result<Outcome, DatabaseError> {
    let query = bind_postgres(
        sqlx::query(AssertSqlSafe(postgres_sql(sql, &params))),
        params,
    );
    collect::<Postgres>(
        executor.fetch_many(query),
        PgQueryResult::rows_affected,
        postgres_row,
    )
    .await
}

async fn run_sqlite<'c>(
    executor: impl Executor<'c, Database = Sqlite>,
    sql: &str,
    params: Vec<Param>,
) -> Result<Outcome, DatabaseError> {
    let query = bind_sqlite(sqlx::query(AssertSqlSafe(sql.to_string())), params);
    collect::<Sqlite>(
        executor.fetch_many(query),
        SqliteQueryResult::rows_affected,
        sqlite_row,
    )
    .await
}

/// What a statement's execution yields, step by step: a result (rows
/// affected) or a row.
type Steps<'e, DB> = BoxStream<
    'e,
    Result<Either<<DB as sqlx::Database>::QueryResult, <DB as sqlx::Database>::Row>, sqlx::Error>,
>;

/// The steps of one statement (its results and its rows) as an
/// [`Outcome`]: the rows affected added up, each row as `row_values` reads
/// it, the columns named by the first row.
async fn collect<DB: sqlx::Database>(
    mut steps: Steps<'_, DB>,
    rows_affected: fn(&DB::QueryResult) -> u64,
    row_values: fn(&DB::Row) -> Result<Vec<Value>, DatabaseError>,
) -> Result<Outcome, DatabaseError> {
    let mut outcome = Outcome::default();
    while let Some(step) = steps.try_next().await.map_err(DatabaseError::Sql)? {
        match step {
            Either::Left(done) => outcome.rows_affected += rows_affected(&done),
            Either::Right(row) => {
                if outcome.rows.is_empty() {
                    outcome.columns = column_names(&row);
                }
                outcome.rows.push(row_values(&row)?);
            }
        }
    }
    Ok(outcome)
}

/// How long a call may run: the statement timeout, cut short by the
/// deadline of the call that asked.
pub fn time_limit(
    statement_timeout: Duration,
    deadline: Option<std::time::SystemTime>,
) -> Duration {
    match deadline.map(|d| d.duration_since(std::time::SystemTime::now())) {
        Some(Ok(left)) => left.min(statement_timeout),
        Some(Err(_)) => Duration::ZERO,
        None => statement_timeout,
    }
}
