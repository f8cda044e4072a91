//! The `database` service: the pool opened when the service starts and
//! closed when it stops, and the methods that run statements on it.

use crate::api::{
    Dialect, ExecuteResult, QueryResult, Statement, StatementResult, TransactionRequest,
    TransactionResult,
};
use crate::error::DatabaseError;
use crate::pool::{time_limit, Outcome, Pool};
use crate::settings::Settings;
use agent_host_plugin_sdk::{Result, Runtime, Value};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The threads of the service's tokio runtime: the pool's background work
/// and the I/O of the statements the callers' threads wait on.
const RUNTIME_THREADS: usize = 2;

/// An open pool, the runtime it runs on, and what it was opened with.
struct Open {
    runtime: Arc<tokio::runtime::Runtime>,
    pool: Pool,
    settings: Settings,
}

/// The service's state: the open pool, while the service runs.
#[derive(Default)]
pub struct DatabaseService {
    open: Mutex<Option<Open>>,
}

impl DatabaseService {
    fn lock(&self) -> MutexGuard<'_, Option<Open>> {
        // The guarded value is replaced whole; a panic leaves no half-made state.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the pool the config describes.
    pub fn start(&self, rt: &Runtime<'_>) -> Result<()> {
        let settings = Settings::from_config(rt).map_err(|e| e.into_sdk("start"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("database-pool")
            .enable_all()
            .build()
            .map_err(|e| {
                agent_host_plugin_sdk::Error::msg(format!(
                    "database.start: cannot start its runtime: {e}"
                ))
            })?;
        let pool = runtime
            .block_on(Pool::open(&settings))
            .map_err(|e| e.into_sdk("start"))?;
        rt.info(format!(
            "database pool open: {} at {} (max_connections {})",
            pool.dialect(),
            settings.redacted_url(),
            settings.max_connections
        ));
        let previous = self.lock().replace(Open {
            runtime: Arc::new(runtime),
            pool,
            settings,
        });
        if let Some(previous) = previous {
            close(previous, rt);
        }
        Ok(())
    }

    /// Closes the pool.
    pub fn stop(&self, rt: &Runtime<'_>) -> Result<()> {
        let open = self.lock().take();
        if let Some(open) = open {
            close(open, rt);
        }
        Ok(())
    }

    /// Runs `work` on the open pool within the call's time limit.
    fn with_pool<T, F, W>(&self, method: &str, rt: &Runtime<'_>, work: W) -> Result<T>
    where
        W: FnOnce(Pool) -> F,
        F: Future<Output = std::result::Result<T, DatabaseError>>,
    {
        let (runtime, pool, timeout) = match self.lock().as_ref() {
            Some(open) => (
                Arc::clone(&open.runtime),
                open.pool.clone(),
                open.settings.statement_timeout,
            ),
            None => return Err(DatabaseError::NotOpen.into_sdk(method)),
        };
        let limit = time_limit(timeout, rt.deadline());
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        runtime
            .block_on(async move {
                tokio::time::timeout(limit, work(pool))
                    .await
                    .unwrap_or(Err(DatabaseError::StatementTimeout { ms }))
            })
            .map_err(|e| e.into_sdk(method))
    }

    /// `query {sql, params?}`: the rows a statement returns.
    pub fn query(&self, statement: Statement, rt: &Runtime<'_>) -> Result<QueryResult> {
        let outcome = self.with_pool(
            "query",
            rt,
            |pool| async move { pool.run(&statement).await },
        )?;
        Ok(QueryResult {
            columns: outcome.columns,
            rows: outcome.rows,
        })
    }

    /// `execute {sql, params?}`: how many rows a statement changed.
    pub fn execute(&self, statement: Statement, rt: &Runtime<'_>) -> Result<ExecuteResult> {
        let outcome = self.with_pool(
            "execute",
            rt,
            |pool| async move { pool.run(&statement).await },
        )?;
        Ok(ExecuteResult {
            rows_affected: outcome.rows_affected,
        })
    }

    /// `transaction {statements}`: all the statements, committed together.
    pub fn transaction(
        &self,
        request: TransactionRequest,
        rt: &Runtime<'_>,
    ) -> Result<TransactionResult> {
        let outcomes = self.with_pool("transaction", rt, |pool| async move {
            pool.transaction(&request.statements).await
        })?;
        Ok(TransactionResult {
            results: outcomes.into_iter().map(statement_result).collect(),
        })
    }

    /// `dialect`: `"sqlite"` or `"postgres"`.
    pub fn dialect(&self, _args: Value, _rt: &Runtime<'_>) -> Result<Dialect> {
        match self.lock().as_ref() {
            Some(open) => Ok(open.pool.dialect()),
            None => Err(DatabaseError::NotOpen.into_sdk("dialect")),
        }
    }
}

fn statement_result(outcome: Outcome) -> StatementResult {
    StatementResult {
        rows_affected: outcome.rows_affected,
        rows: (!outcome.rows.is_empty()).then_some(outcome.rows),
    }
}

/// How long closing waits for connections still in use.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn close(open: Open, rt: &Runtime<'_>) {
    let Open {
        runtime,
        pool,
        settings,
    } = open;
    let closed =
        runtime.block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, pool.close()).await });
    match closed {
        Ok(()) => rt.info(format!("database pool closed: {}", settings.redacted_url())),
        Err(_) => rt.warn(format!(
            "database pool {}: connections still in use after {} ms were dropped",
            settings.redacted_url(),
            CLOSE_TIMEOUT.as_millis()
        )),
    }
}
