//! Opening the agent's key-value buckets of members: the hosts'
//! announcements and the cluster's decisions. Each is created by the
//! first host or operator that needs it.

use super::{ClusterError, Names};
use crate::config::ClusterSettings;
use async_nats::jetstream::kv::{Config, Store};
use async_nats::jetstream::Context;
use std::time::Duration;

/// How many heartbeat timeouts an announcement outlives its host's last
/// heartbeat before the server forgets it.
const ANNOUNCEMENT_LIFETIMES: u32 = 3;

/// The hosts bucket: one key per host, forgotten a few `host_timeout_ms`
/// after its last heartbeat.
pub(crate) async fn hosts(
    jetstream: &Context,
    names: &Names,
    settings: &ClusterSettings,
) -> Result<Store, ClusterError> {
    open_or_create(
        jetstream,
        settings,
        Config {
            bucket: names.hosts_bucket.clone(),
            description: format!("agent {}: the hosts' heartbeats", names.agent),
            history: 1,
            max_age: Duration::from_millis(settings.host_timeout_ms) * ANNOUNCEMENT_LIFETIMES,
            ..Config::default()
        },
    )
    .await
}

/// The cluster bucket: the decisions operators make (the key `locks`).
pub(crate) async fn cluster(
    jetstream: &Context,
    names: &Names,
    settings: &ClusterSettings,
) -> Result<Store, ClusterError> {
    open_or_create(
        jetstream,
        settings,
        Config {
            bucket: names.cluster_bucket.clone(),
            description: format!("agent {}: the accepted lock hashes", names.agent),
            history: 5,
            ..Config::default()
        },
    )
    .await
}

/// Opens a bucket, creating it when it is missing (two hosts creating it
/// at once both end with the one bucket).
async fn open_or_create(
    jetstream: &Context,
    settings: &ClusterSettings,
    config: Config,
) -> Result<Store, ClusterError> {
    if let Ok(store) = jetstream.get_key_value(config.bucket.clone()).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    match jetstream.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => jetstream
            .get_key_value(bucket.clone())
            .await
            .map_err(|_| ClusterError::Setup {
                url: settings.url.clone(),
                what: format!("the key-value bucket {bucket}"),
                cause: create.to_string(),
            }),
    }
}
