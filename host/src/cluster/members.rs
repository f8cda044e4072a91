//! Hosts announcing themselves (their lock hash, load and heartbeat), and
//! the gate that keeps a host whose plugins differ from the cluster's from
//! taking messages.
//!
//! Every `heartbeat_ms` this host works out its lock hash again (a reload
//! changes it), reads the accepted hashes (creating the list with its own
//! hash when it is the first host), opens or closes its gate, and puts its
//! [`Announcement`] under its name in the hosts bucket. The bucket forgets
//! a host a few `host_timeout_ms` after its last heartbeat; a host that
//! stops deletes its key itself.

use super::status::{short_hash, Announcement, ClusterStatus};
use super::{buckets, locks, ClusterError, ClusterNode};
use crate::host::ClusterReport;
use crate::watchdog::unix_ms_now;
use crate::PluginHost;
use async_nats::jetstream::kv::Store;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The largest lock file read for its hash.
const MAX_LOCK_BYTES: u64 = 16 * 1024 * 1024;

/// This host's lock hash and its plugins (`name@version`, sorted): the
/// SHA-256 of the `[trust]` lock file when there is one, else of the
/// sorted lines `name@version sha256` of the loaded plugins.
pub(crate) fn lock_hash(host: &PluginHost) -> (String, Vec<String>) {
    let statuses = host.statuses();
    let mut plugins: Vec<String> = statuses
        .iter()
        .map(|s| format!("{}@{}", s.name, s.version))
        .collect();
    plugins.sort();
    if let Some(file) = host.trust_lock_file() {
        match crate::regular_file::read(file, MAX_LOCK_BYTES) {
            Ok(bytes) => return (crate::trust::digest::sha256_hex(&bytes), plugins),
            Err(error) => tracing::warn!(
                file = %file.display(),
                "cannot read the [trust] lock file for the cluster's lock hash ({error}); \
                 hashing the loaded plugins instead"
            ),
        }
    }
    let mut lines: Vec<String> = statuses
        .iter()
        .map(|s| format!("{}@{} {}", s.name, s.version, s.sha256))
        .collect();
    lines.sort();
    let text = lines.join("\n");
    (crate::trust::digest::sha256_hex(text.as_bytes()), plugins)
}

/// Every announcement in the hosts bucket (one that cannot be read is
/// skipped, with a warning).
pub(crate) async fn announcements(
    store: &Store,
    url: &str,
) -> Result<Vec<Announcement>, ClusterError> {
    let failure = |cause: String| ClusterError::Store {
        url: url.to_string(),
        what: format!("listing the hosts in bucket {}", store.name),
        cause,
    };
    let mut keys = store.keys().await.map_err(|e| failure(e.to_string()))?;
    let mut found = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| failure(e.to_string()))?;
        let Some(value) = store.get(&key).await.map_err(|e| failure(e.to_string()))? else {
            continue;
        };
        match serde_json::from_slice::<Announcement>(&value) {
            Ok(announcement) => found.push(announcement),
            Err(error) => tracing::warn!(
                key,
                bucket = store.name,
                "not a host's announcement, skipped: {error}"
            ),
        }
    }
    Ok(found)
}

/// The cluster's status now, read from its buckets.
pub(crate) async fn read_status(
    node_settings: &crate::config::ClusterSettings,
    hosts: &Store,
    cluster: &Store,
) -> Result<ClusterStatus, ClusterError> {
    let accepted = locks::accepted(cluster, &node_settings.url).await?;
    let found = announcements(hosts, &node_settings.url).await?;
    Ok(ClusterStatus::of(
        &node_settings.agent,
        accepted,
        found,
        unix_ms_now(),
        node_settings.host_timeout_ms,
    ))
}

/// What the last heartbeat saw of the cluster, for `GET /v1/cluster`.
struct LastSeen {
    agent: String,
    host_timeout_ms: u64,
    seen: Mutex<(Vec<String>, Vec<Announcement>)>,
}

impl ClusterReport for LastSeen {
    fn status(&self) -> serde_json::Value {
        let (accepted, found) = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let status = ClusterStatus::of(
            &self.agent,
            accepted,
            found,
            unix_ms_now(),
            self.host_timeout_ms,
        );
        serde_json::to_value(status).unwrap_or_default()
    }
}

/// Whether this host takes messages, and what the log last said of it.
struct Gate {
    open: Option<bool>,
    warned_for: Option<(String, Vec<String>)>,
}

/// Starts announcing this host; opens the gate once its plugins match.
pub(super) async fn start(
    node: &Arc<ClusterNode>,
    host: &Arc<PluginHost>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    let hosts = buckets::hosts(&node.jetstream, &node.names, &node.settings).await?;
    let cluster = buckets::cluster(&node.jetstream, &node.names, &node.settings).await?;
    let last_seen = Arc::new(LastSeen {
        agent: node.settings.agent.clone(),
        host_timeout_ms: node.settings.host_timeout_ms,
        seen: Mutex::new((Vec::new(), Vec::new())),
    });
    host.report_cluster_with(Arc::clone(&last_seen) as Arc<dyn ClusterReport>);
    let started = unix_ms_now();
    let mut gate = Gate {
        open: None,
        warned_for: None,
    };
    // The first heartbeat before `start` returns: the gate is decided
    // before the consumer starts.
    if let Err(error) =
        heartbeat(node, host, &hosts, &cluster, &last_seen, started, &mut gate).await
    {
        tracing::warn!("cluster heartbeat: {error}");
    }
    let (node, host) = (Arc::clone(node), Arc::clone(host));
    Ok(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(node.settings.heartbeat_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(error) = heartbeat(
                &node, &host, &hosts, &cluster, &last_seen, started, &mut gate,
            )
            .await
            {
                tracing::warn!("cluster heartbeat: {error}");
            }
        }
    }))
}

/// One heartbeat: the lock hash, the gate, the announcement, and what the
/// status route shows.
async fn heartbeat(
    node: &ClusterNode,
    host: &PluginHost,
    hosts: &Store,
    cluster: &Store,
    last_seen: &LastSeen,
    started: u64,
    gate: &mut Gate,
) -> Result<(), ClusterError> {
    let url = &node.settings.url;
    let (hash, plugins) = lock_hash(host);
    let accepted = locks::accepted_or_first(cluster, url, &hash).await?;
    let matches = accepted.contains(&hash);
    let open = (matches || node.settings.accept_lock_mismatch) && !host.is_shutting_down();
    decide(node, gate, open, matches, &hash, &accepted);
    let announcement = Announcement {
        host: node.host_name.clone(),
        lock_hash: hash.clone(),
        plugins,
        in_flight: host.entries_in_flight() as u64,
        handled: host.metrics().messages.get(),
        started_unix_ms: started,
        heartbeat_unix_ms: unix_ms_now(),
        taking_messages: open,
        not_taking_because: (!open).then(|| {
            if host.is_shutting_down() {
                "shutting down".to_string()
            } else {
                format!("lock hash {} not accepted", short_hash(&hash))
            }
        }),
        http_address: node.http_address.map(|address| address.to_string()),
    };
    let value = serde_json::to_vec(&announcement).unwrap_or_default();
    hosts
        .put(&node.host_name, value.into())
        .await
        .map_err(|cause| ClusterError::Store {
            url: url.clone(),
            what: format!(
                "announcing host {} in bucket {}",
                node.host_name, hosts.name
            ),
            cause: cause.to_string(),
        })?;
    let found = announcements(hosts, url).await?;
    *last_seen
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = (accepted, found);
    Ok(())
}

/// Opens or closes the gate, saying so once per change.
fn decide(
    node: &ClusterNode,
    gate: &mut Gate,
    open: bool,
    matches: bool,
    hash: &str,
    accepted: &[String],
) {
    if !matches {
        let state = (hash.to_string(), accepted.to_vec());
        if gate.warned_for.as_ref() != Some(&state) {
            let accepted_list = accepted.join(", ");
            if node.settings.accept_lock_mismatch {
                tracing::warn!(
                    "this host's lock hash {hash} is not among the cluster's accepted ones \
                     ({accepted_list}); taking messages anyway (accept_lock_mismatch = true)"
                );
            } else {
                tracing::warn!(
                    "this host's lock hash {hash} is not among the cluster's accepted ones \
                     ({accepted_list}): its plugins differ, so it takes no messages until \
                     `agent-host cluster accept-lock {hash} --config <agent.toml>` accepts them"
                );
            }
            gate.warned_for = Some(state);
        }
    } else {
        gate.warned_for = None;
    }
    if gate.open != Some(open) {
        if open && gate.open.is_some() {
            tracing::info!(lock = hash, "lock hash accepted: taking messages");
        }
        gate.open = Some(open);
        node.taking_messages.send_replace(open);
    }
}

/// Takes this host out of the hosts bucket (it stops).
pub(super) async fn leave(node: &ClusterNode) {
    let Ok(hosts) = node
        .jetstream
        .get_key_value(node.names.hosts_bucket.clone())
        .await
    else {
        return;
    };
    if let Err(error) = hosts.delete(&node.host_name).await {
        tracing::warn!(
            host = node.host_name,
            "cannot remove this host from bucket {}: {error}",
            hosts.name
        );
    }
}
