//! Operators' requests to one host of the cluster (a reload, as a step of
//! a rolling reload), on the host's control subject.

use super::{ClusterError, ClusterNode};
use crate::PluginHost;
use std::sync::Arc;

/// Starts answering requests on this host's control subject.
pub(super) async fn start(
    _node: &Arc<ClusterNode>,
    _host: &Arc<PluginHost>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    Ok(tokio::spawn(async {}))
}
