//! What the cluster tests share: a host of an agent's cluster as an
//! `agent-host run --listen` child process, the operator's commands, and
//! removing an agent's streams and buckets from the server at the end.

use super::{Agent, WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `[cluster]` table of host `host` of `agent`, with fast heartbeats
/// and `extra` lines appended to the config.
pub fn cluster_config(nats_url: &str, agent: &str, host: &str, extra: &str) -> String {
    host_config(
        nats_url,
        agent,
        host,
        "heartbeat_ms = 200\nhost_timeout_ms = 2000\n",
        extra,
    )
}

/// Starts host `host` of `agent` on `plugins` and waits until it serves
/// in the cluster.
pub fn start_host(
    nats_url: &str,
    agent: &str,
    host: &str,
    plugins: &[PathBuf],
    extra: &str,
) -> Agent {
    let agent_process = Agent::launch(
        plugins,
        &cluster_config(nats_url, agent, host, extra),
        false,
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    agent_process.wait_for_log(&format!("as host '{host}'"));
    agent_process
}

/// The config file a host runs with.
pub fn config_of(agent: &Agent) -> PathBuf {
    agent.plugins_dir().join("agent.toml")
}

/// Runs `agent-host` with `args` and `--config config`.
pub fn operator(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run agent-host")
}

/// `agent-host cluster status --json`, read.
pub fn cluster_status(config: &Path) -> Value {
    let output = operator(config, &["cluster", "status", "--json"]);
    assert!(
        output.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The host named `host` in a status.
pub fn host_in<'a>(status: &'a Value, host: &str) -> Option<&'a Value> {
    status["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host"] == host)
}

/// Polls the status until `ready` holds of it; the status then.
pub fn wait_for_status(config: &Path, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = cluster_status(config);
        if ready(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes every stream and bucket of `agent` from the server (those
/// missing are skipped).
pub fn delete_agent(nats_url: &str, agent: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let Ok(client) = async_nats::connect(nats_url).await else {
            return;
        };
        let jetstream = async_nats::jetstream::new(client);
        let names = agent_host::cluster::Names::new(agent);
        let _ = jetstream.delete_stream(&names.inbox_stream).await;
        for bucket in names.buckets() {
            let _ = jetstream.delete_key_value(bucket).await;
        }
    });
}

/// Whether the server holds none of `agent`'s buckets of members.
pub fn agent_gone(nats_url: &str, agent: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = async_nats::connect(nats_url).await.expect("connect");
        let jetstream = async_nats::jetstream::new(client);
        let names = agent_host::cluster::Names::new(agent);
        for bucket in [&names.hosts_bucket, &names.cluster_bucket] {
            if jetstream.get_key_value(bucket).await.is_ok() {
                return false;
            }
        }
        true
    })
}

/// Removes the agent's streams and buckets when dropped, so a failing test
/// leaves nothing behind either.
pub struct AgentOnServer {
    pub nats_url: String,
    pub agent: String,
}

impl AgentOnServer {
    /// An agent of its own for this test, named from `prefix`, on the
    /// server at `nats_url`.
    pub fn new(nats_url: &str, prefix: &str) -> Self {
        Self {
            nats_url: nats_url.to_string(),
            agent: test_support::servers::unique_name(prefix),
        }
    }
}

impl Drop for AgentOnServer {
    fn drop(&mut self) {
        delete_agent(&self.nats_url, &self.agent);
    }
}

/// The config of host `host` of agent `agent`: `cluster` (lines of the
/// `[cluster]` table besides `url`, `agent` and `host`), then `rest` (more
/// of the config file, after the table).
fn host_config(nats_url: &str, agent: &str, host: &str, cluster: &str, rest: &str) -> String {
    format!(
        "[cluster]\nurl = \"{nats_url}\"\nagent = \"{agent}\"\nhost = \"{host}\"\n{cluster}\n{rest}"
    )
}

/// Starts host `host` of agent `agent` on `plugins` without waiting for
/// it to join, with `cluster` (lines of the `[cluster]` table besides
/// `url`, `agent` and `host`) and `rest` (more of the config file, after
/// the table). Its log shows the cluster's debug lines.
pub fn launch_host(
    nats_url: &str,
    agent: &str,
    host: &str,
    plugins: &[PathBuf],
    cluster: &str,
    rest: &str,
) -> Agent {
    launch(
        &host_config(nats_url, agent, host, cluster, rest),
        plugins,
        false,
    )
}

/// As [`launch_host`], with the host's stdin and stdout piped (JSON
/// lines, [`Agent::lines`]) besides its HTTP API.
pub fn launch_piped_host(
    nats_url: &str,
    agent: &str,
    host: &str,
    plugins: &[PathBuf],
    cluster: &str,
    rest: &str,
) -> Agent {
    launch(
        &host_config(nats_url, agent, host, cluster, rest),
        plugins,
        true,
    )
}

/// A host on `plugins` with `config`, listening on a port of its own, its
/// stdin and stdout piped when `piped`.
fn launch(config: &str, plugins: &[PathBuf], piped: bool) -> Agent {
    Agent::launch(
        plugins,
        config,
        piped,
        &["--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info,agent_host::cluster=debug")],
    )
}
