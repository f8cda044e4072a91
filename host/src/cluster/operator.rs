//! The operator's side of a cluster: `agent-host cluster status`,
//! `accept-lock`, `retire-lock` and `reload --cluster` connect with the
//! `[cluster]` table of the agent's config, as a client that serves
//! nothing.

use super::status::ClusterStatus;
use super::{buckets, connection, locks, members, ClusterError, Names};
use crate::config::ClusterSettings;
use async_nats::jetstream::kv::Store;

/// A connection to an agent's cluster, as its operator.
pub struct Operator {
    /// The `[cluster]` table.
    pub settings: ClusterSettings,
    /// The agent's names.
    pub names: Names,
    /// The NATS connection.
    pub client: async_nats::Client,
    hosts: Store,
    cluster: Store,
}

impl Operator {
    /// Connects to the cluster `settings` describes.
    pub async fn connect(settings: &ClusterSettings) -> Result<Self, ClusterError> {
        let names = Names::new(&settings.agent);
        let me = format!("operator-{}", std::process::id());
        let client = connection::connect(settings, &me).await?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let hosts = buckets::hosts(&jetstream, &names, settings).await?;
        let cluster = buckets::cluster(&jetstream, &names, settings).await?;
        Ok(Self {
            settings: settings.clone(),
            names,
            client,
            hosts,
            cluster,
        })
    }

    /// The hosts and the accepted lock hashes now.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        members::read_status(&self.settings, &self.hosts, &self.cluster).await
    }

    /// Accepts `hash`: hosts with it take messages; whether it was new.
    pub async fn accept_lock(&self, hash: &str) -> Result<bool, ClusterError> {
        locks::accept(&self.cluster, &self.settings.url, hash).await
    }

    /// Retires `hash`: hosts with it stop taking messages at their next
    /// heartbeat; whether it was accepted.
    pub async fn retire_lock(&self, hash: &str) -> Result<bool, ClusterError> {
        locks::retire(&self.cluster, &self.settings.url, hash).await
    }
}
