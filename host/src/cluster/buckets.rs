//! Opening the agent's key-value buckets: the replies kept by message id,
//! the hosts' announcements and the cluster's decisions. Each is created by
//! the first host or operator that needs it.

use super::{ClusterError, Names};
use crate::config::ClusterSettings;
use async_nats::jetstream::kv::{Config, Store};
use async_nats::jetstream::{stream, Context};
use std::time::Duration;

/// How many heartbeat timeouts an announcement outlives its host's last
/// heartbeat before the server forgets it.
const ANNOUNCEMENT_LIFETIMES: u32 = 3;

/// The replies bucket: one reply per message key, kept
/// `reply_retention_s`.
pub(crate) async fn replies(
    jetstream: &Context,
    names: &Names,
    settings: &ClusterSettings,
) -> Result<Store, ClusterError> {
    open_or_create(
        jetstream,
        settings,
        Config {
            bucket: names.replies_bucket.clone(),
            description: format!("agent {}: the replies by message id", names.agent),
            history: 1,
            max_age: Duration::from_secs(settings.reply_retention_s),
            ..Config::default()
        },
    )
    .await
}

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
///
/// The bucket's stream is created as the client's `create_key_value`
/// would make it, but without its first step, reading the account's
/// limits: NATS 2.9 answers that request without fields this client
/// expects.
async fn open_or_create(
    jetstream: &Context,
    settings: &ClusterSettings,
    config: Config,
) -> Result<Store, ClusterError> {
    if let Ok(store) = jetstream.get_key_value(config.bucket.clone()).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    let stream = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(config.description),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: config.history.max(1),
        max_bytes: -1,
        max_age: config.max_age,
        max_message_size: -1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..stream::Config::default()
    };
    let created = jetstream.get_or_create_stream(stream).await;
    match jetstream.get_key_value(bucket.clone()).await {
        Ok(store) => Ok(store),
        Err(open) => Err(ClusterError::Setup {
            url: settings.url.clone(),
            what: format!("the key-value bucket {bucket}"),
            cause: match created {
                Err(create) => create.to_string(),
                Ok(_) => open.to_string(),
            },
        }),
    }
}
