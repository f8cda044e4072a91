//! What the cluster tests share: hosts of one agent as `agent-host run
//! --listen` processes on the test's NATS server, each with its own config
//! file, and the removal of the agent's streams and buckets at the end.

use super::Agent;
use agent_host::cluster::Names;
use std::path::PathBuf;

/// Removes agent `agent`'s streams and buckets from the server at
/// `nats_url` (the ones that do not exist are skipped).
pub fn delete_agent(nats_url: &str, agent: &str) {
    let names = Names::new(agent);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to talk to NATS");
    runtime.block_on(async {
        let client = async_nats::connect(nats_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {nats_url}: {e}"));
        let jetstream = async_nats::jetstream::new(client);
        let _ = jetstream.delete_stream(&names.inbox_stream).await;
        for bucket in [
            &names.replies_bucket,
            &names.hosts_bucket,
            &names.cluster_bucket,
        ] {
            let _ = jetstream.delete_key_value(bucket).await;
        }
    });
}

/// Removes the agent's streams and buckets when dropped, so a failing test
/// leaves nothing behind either.
pub struct AgentOnServer {
    pub nats_url: String,
    pub agent: String,
}

impl Drop for AgentOnServer {
    fn drop(&mut self) {
        delete_agent(&self.nats_url, &self.agent);
    }
}

/// Starts host `host` of agent `agent` on `plugins`, with `cluster` (lines
/// of the `[cluster]` table besides `url`, `agent` and `host`) and `rest`
/// (more of the config file, after the table). Its log shows the cluster's
/// debug lines.
pub fn start_host(
    nats_url: &str,
    agent: &str,
    host: &str,
    plugins: &[PathBuf],
    cluster: &str,
    rest: &str,
) -> Agent {
    let config = format!(
        "[cluster]\nurl = \"{nats_url}\"\nagent = \"{agent}\"\nhost = \"{host}\"\n{cluster}\n{rest}"
    );
    Agent::launch(
        plugins,
        &config,
        false,
        &["--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info,agent_host::cluster=debug")],
    )
}
