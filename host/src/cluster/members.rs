//! Hosts announcing themselves (their lock hash, load and heartbeat), and
//! the gate that keeps a host whose plugins differ from the cluster's from
//! taking messages.

use super::{ClusterError, ClusterNode};
use crate::PluginHost;
use std::sync::Arc;

/// Starts announcing this host; opens the gate once its plugins match.
pub(super) async fn start(
    node: &Arc<ClusterNode>,
    _host: &Arc<PluginHost>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    // Not written yet: every host takes messages.
    node.taking_messages.send_replace(true);
    Ok(tokio::spawn(async {}))
}
