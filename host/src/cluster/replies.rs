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
    /// Opens the bucket, creating it with this host's `reply_retention_s`
    /// when it is missing (every host of an agent should give the same).
    pub(super) async fn open(node: &ClusterNode) -> Result<Self, ClusterError> {
        let store = super::buckets::replies(&node.jetstream, &node.names, &node.settings).await?;
        Ok(Self {
            store,
            bucket: node.names.replies_bucket.clone(),
        })
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
