//! The operator's cluster commands: `agent-host cluster status`,
//! `cluster accept-lock HASH`, `cluster retire-lock HASH`, and
//! `agent-host reload NAME --cluster`, each reading `[cluster]` from the
//! agent's config file and connecting to its NATS server.

use crate::cluster::control::{rolling_reload, RollStep};
use crate::cluster::Operator;
use crate::config::ClusterSettings;
use std::path::Path;
use std::process::ExitCode;

/// The fewest hex digits of a hash an operator may give.
const MIN_PREFIX: usize = 8;

/// Why a cluster command could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterCommandError {
    /// The config file could not be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config has no `[cluster]` table.
    #[error("{}: no [cluster] table, so there is no cluster to ask (cluster commands read the agent's config)", .0.display())]
    NotClustered(std::path::PathBuf),
    /// A lock hash is not a SHA-256 in hex, nor the start of one a host
    /// announces.
    #[error("'{0}' is not a lock hash: give the 64 hex digits `cluster status --json` shows, or the start of one a live host announces")]
    BadHash(String),
    /// The cluster could not be reached or read.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A rolling reload stopped.
    #[error(transparent)]
    Roll(#[from] crate::cluster::control::RollError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A cluster command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Print the hosts and accepted hashes.
    Status {
        /// As JSON.
        json: bool,
    },
    /// Accept a lock hash.
    AcceptLock(String),
    /// Retire a lock hash.
    RetireLock(String),
    /// Reload a plugin host by host.
    Reload {
        /// The plugin.
        plugin: String,
        /// Even a byte-identical file.
        force: bool,
    },
}

/// Runs `operation` against the cluster of the config at `config`.
pub fn run(config: &Path, operation: Operation) -> Result<ExitCode, ClusterCommandError> {
    let settings = crate::AgentConfig::load(config)?
        .cluster
        .ok_or_else(|| ClusterCommandError::NotClustered(config.to_path_buf()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterCommandError::Runtime)?;
    runtime.block_on(operate(&settings, operation))
}

async fn operate(
    settings: &ClusterSettings,
    operation: Operation,
) -> Result<ExitCode, ClusterCommandError> {
    let operator = Operator::connect(settings).await?;
    match operation {
        Operation::Status { json } => {
            let status = operator.status().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                print!("{}", status.text());
            }
        }
        Operation::AcceptLock(hash) => {
            let hash = full_hash(&operator, &hash).await?;
            if operator.accept_lock(&hash).await? {
                println!(
                    "accepted lock hash {hash}: hosts with it take messages from their next heartbeat"
                );
            } else {
                println!("lock hash {hash} was already accepted");
            }
        }
        Operation::RetireLock(hash) => {
            let hash = full_hash(&operator, &hash).await?;
            if operator.retire_lock(&hash).await? {
                println!(
                    "retired lock hash {hash}: hosts with it stop taking messages at their next heartbeat"
                );
            } else {
                println!("lock hash {hash} was not accepted; nothing changed");
            }
        }
        Operation::Reload { plugin, force } => {
            let steps =
                rolling_reload(&operator, &plugin, force, |step| print_step(&plugin, step)).await?;
            println!(
                "reloaded {plugin} on {} host(s), one at a time",
                steps.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per host a rolling reload is done with.
fn print_step(plugin: &str, step: &RollStep) {
    let answer = &step.answer;
    if answer.unchanged {
        println!(
            "{}: {plugin} not reloaded, its file is byte-identical (--force reloads it anyway); \
             healthy after {} ms",
            answer.host, step.took_ms
        );
    } else {
        println!(
            "{}: reloaded {plugin} {} -> {} (generation {}); healthy after {} ms",
            answer.host, answer.from_version, answer.to_version, answer.generation, step.took_ms
        );
    }
}

/// The full hash an operator means: 64 hex digits as given, or the one
/// announced hash (or accepted one) that starts with what was given.
async fn full_hash(operator: &Operator, given: &str) -> Result<String, ClusterCommandError> {
    let given = given.trim().to_ascii_lowercase();
    if crate::trust::digest::is_sha256_hex(&given) {
        return Ok(given);
    }
    let bad = || ClusterCommandError::BadHash(given.clone());
    if given.len() < MIN_PREFIX || !given.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let status = operator.status().await?;
    let mut known: Vec<&str> = status
        .hosts
        .iter()
        .map(|h| h.announcement.lock_hash.as_str())
        .chain(status.accepted_locks.iter().map(String::as_str))
        .filter(|hash| hash.starts_with(&given))
        .collect();
    known.sort_unstable();
    known.dedup();
    match known.as_slice() {
        [one] => Ok((*one).to_string()),
        _ => Err(bad()),
    }
}
