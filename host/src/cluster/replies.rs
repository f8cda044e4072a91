//! Replies kept by message id in a key-value bucket, so that a retried or
//! redelivered id gets the first reply and its actions do not run again.
//!
//! The bucket (`names.replies_bucket`) keeps one value per key (history 1),
//! the key being [`message_key`](super::names::message_key) of the id, for
//! `reply_retention_s`: a reply older than that is gone, and a retry of its
//! id runs the message again.

use super::{ClusterError, ClusterNode};
use crate::pipeline::Reply;
use async_nats::jetstream::kv;
use std::time::Duration;

/// Why a reply could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReplyStoreError {
    /// The server did not answer the read.
    #[error("cannot read the reply of key {key} from bucket {bucket}: {cause}")]
    Read {
        /// The bucket.
        bucket: String,
        /// The message key.
        key: String,
        /// The client's error.
        #[source]
        cause: kv::EntryError,
    },
    /// The value under the key is no reply (written by something else).
    #[error("the value of key {key} in bucket {bucket} is no reply: {cause}")]
    NotAReply {
        /// The bucket.
        bucket: String,
        /// The message key.
        key: String,
        /// Why it does not read as a reply.
        #[source]
        cause: serde_json::Error,
    },
    /// The server did not take the write.
    #[error("cannot keep the reply of key {key} in bucket {bucket}: {cause}")]
    Write {
        /// The bucket.
        bucket: String,
        /// The message key.
        key: String,
        /// The client's error.
        #[source]
        cause: kv::PutError,
    },
}

/// The agent's replies bucket.
#[derive(Clone)]
pub(super) struct Replies {
    store: kv::Store,
    bucket: String,
}

impl Replies {
    /// Creates the bucket, or opens it and sets its retention to this
    /// host's `reply_retention_s` (every host of an agent should give the
    /// same).
    pub(super) async fn open(node: &ClusterNode) -> Result<Self, ClusterError> {
        let bucket = node.names.replies_bucket.clone();
        let max_age = Duration::from_secs(node.settings.reply_retention_s);
        let store = open_bucket(node, &bucket, max_age).await?;
        Ok(Self { store, bucket })
    }

    /// The reply kept under `key`, if any.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Reply>, ReplyStoreError> {
        let value = self
            .store
            .get(key)
            .await
            .map_err(|cause| ReplyStoreError::Read {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                cause,
            })?;
        value
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|cause| ReplyStoreError::NotAReply {
                    bucket: self.bucket.clone(),
                    key: key.to_string(),
                    cause,
                })
            })
            .transpose()
    }

    /// Keeps `reply` (as JSON, `payload`) under `key`.
    pub(super) async fn put(
        &self,
        key: &str,
        payload: tokio_util::bytes::Bytes,
    ) -> Result<(), ReplyStoreError> {
        self.store
            .put(key, payload)
            .await
            .map(|_| ())
            .map_err(|cause| ReplyStoreError::Write {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                cause,
            })
    }
}

/// Creates (or updates) the key-value bucket `bucket` with one value per
/// key kept `max_age`, file storage, and opens it.
///
/// The bucket's stream is made here, as the key-value convention has it
/// (`KV_<bucket>`, subjects `$KV.<bucket>.>`, rollups allowed, deletes
/// denied, direct gets), rather than by the client's own bucket creation,
/// which reads the account's API level, a field NATS 2.9 does not send.
pub(super) async fn open_bucket(
    node: &ClusterNode,
    bucket: &str,
    max_age: Duration,
) -> Result<kv::Store, ClusterError> {
    use async_nats::jetstream::stream;
    let setup = |cause: String| ClusterError::Setup {
        url: node.settings.url.clone(),
        what: format!("the bucket {bucket}"),
        cause,
    };
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(format!("bucket {bucket} of agent {}", node.names.agent)),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..stream::Config::default()
    };
    if let Err(first) = node.jetstream.create_or_update_stream(config).await {
        // Two hosts starting at once may race to create it: the loser
        // opens the winner's below.
        tracing::debug!("creating the bucket {bucket}: {first}");
    }
    node.jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| setup(e.to_string()))
}
