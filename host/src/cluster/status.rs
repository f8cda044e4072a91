//! What `GET /v1/cluster` and `agent-host cluster status` show: the hosts
//! of the agent, their lock hash, load and last heartbeat, and the lock
//! hashes the cluster accepts.

use serde::{Deserialize, Serialize};

/// What one host puts in the hosts bucket at each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The host's name in the cluster.
    pub host: String,
    /// The SHA-256 of its `[trust]` lock file, else of its plugins' lines
    /// (`name@version sha256`, sorted).
    pub lock_hash: String,
    /// Its plugins, `name@version`, sorted.
    pub plugins: Vec<String>,
    /// Entries into plugin code in flight (messages, events, timers).
    pub in_flight: u64,
    /// Messages answered since it started.
    pub handled: u64,
    /// When it started serving in the cluster, in unix ms.
    pub started_unix_ms: u64,
    /// When it put this announcement, in unix ms.
    pub heartbeat_unix_ms: u64,
    /// Whether it takes messages from the shared consumer.
    pub taking_messages: bool,
    /// Why it takes none, when it takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_taking_because: Option<String>,
    /// The address its HTTP API is bound to (`ip:port`, as bound: a host
    /// listening on every interface announces `0.0.0.0:port`), when it
    /// serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_address: Option<String>,
}

/// One host as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// What it announced last.
    #[serde(flatten)]
    pub announcement: Announcement,
    /// How long ago its last heartbeat was, in ms.
    pub heartbeat_age_ms: u64,
    /// Whether its lock hash is one the cluster accepts.
    pub lock_accepted: bool,
    /// Whether it is alive: its last heartbeat is younger than
    /// `host_timeout_ms`.
    pub alive: bool,
}

/// The cluster of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The agent's name.
    pub agent: String,
    /// The lock hashes whose hosts take messages.
    pub accepted_locks: Vec<String>,
    /// The hosts, by name.
    pub hosts: Vec<HostStatus>,
}

/// How many hex digits of a lock hash the text status shows.
pub const SHORT_HASH: usize = 12;

/// The first [`SHORT_HASH`] digits of a hash.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..SHORT_HASH).unwrap_or(hash)
}

impl ClusterStatus {
    /// The status from what the buckets hold, seen at `now_unix_ms`: a
    /// host silent for `host_timeout_ms` or more is not alive.
    pub fn of(
        agent: &str,
        accepted_locks: Vec<String>,
        mut announcements: Vec<Announcement>,
        now_unix_ms: u64,
        host_timeout_ms: u64,
    ) -> Self {
        announcements.sort_by(|a, b| a.host.cmp(&b.host));
        let hosts = announcements
            .into_iter()
            .map(|announcement| {
                let heartbeat_age_ms = now_unix_ms.saturating_sub(announcement.heartbeat_unix_ms);
                HostStatus {
                    lock_accepted: accepted_locks.contains(&announcement.lock_hash),
                    alive: heartbeat_age_ms < host_timeout_ms,
                    heartbeat_age_ms,
                    announcement,
                }
            })
            .collect();
        Self {
            agent: agent.to_string(),
            accepted_locks,
            hosts,
        }
    }

    /// The hosts alive now.
    pub fn alive(&self) -> impl Iterator<Item = &HostStatus> {
        self.hosts.iter().filter(|host| host.alive)
    }

    /// The status as the operator reads it: one line per host, then the
    /// accepted hashes.
    pub fn text(&self) -> String {
        let mut out = format!("agent {}: {} host(s)\n", self.agent, self.hosts.len());
        out.push_str(&format!(
            "{:<24} {:<13} {:>7} {:>9} {:>9} {:>10}  taking messages\n",
            "HOST", "LOCK", "PLUGINS", "IN FLIGHT", "HANDLED", "HEARTBEAT"
        ));
        for host in &self.hosts {
            let a = &host.announcement;
            let taking = if !host.alive {
                "no: silent, gone".to_string()
            } else if a.taking_messages {
                if host.lock_accepted {
                    "yes".to_string()
                } else {
                    "yes (lock not accepted, accept_lock_mismatch)".to_string()
                }
            } else {
                format!(
                    "no: {}",
                    a.not_taking_because.as_deref().unwrap_or("not yet")
                )
            };
            out.push_str(&format!(
                "{:<24} {:<13} {:>7} {:>9} {:>9} {:>8}ms  {taking}\n",
                a.host,
                short_hash(&a.lock_hash),
                a.plugins.len(),
                a.in_flight,
                a.handled,
                host.heartbeat_age_ms,
            ));
        }
        out.push_str("accepted lock hashes:\n");
        if self.accepted_locks.is_empty() {
            out.push_str("  (none yet: the first host to start accepts its own)\n");
        }
        for hash in &self.accepted_locks {
            out.push_str(&format!("  {hash}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(host: &str, hash: &str, heartbeat: u64) -> Announcement {
        Announcement {
            host: host.into(),
            lock_hash: hash.into(),
            plugins: vec!["a@1.0.0".into()],
            in_flight: 0,
            handled: 3,
            started_unix_ms: 0,
            heartbeat_unix_ms: heartbeat,
            taking_messages: true,
            not_taking_because: None,
            http_address: None,
        }
    }

    #[test]
    fn hosts_are_sorted_aged_and_checked_against_the_accepted_hashes() {
        let status = ClusterStatus::of(
            "bot",
            vec!["aaaa".into()],
            vec![
                announcement("web-2", "bbbb", 9_000),
                announcement("web-1", "aaaa", 9_500),
            ],
            10_000,
            5_000,
        );
        let names: Vec<&str> = status
            .hosts
            .iter()
            .map(|h| h.announcement.host.as_str())
            .collect();
        assert_eq!(names, ["web-1", "web-2"]);
        assert!(status.hosts[0].lock_accepted);
        assert!(!status.hosts[1].lock_accepted);
        assert_eq!(status.hosts[1].heartbeat_age_ms, 1_000);
        let gone = ClusterStatus::of(
            "bot",
            vec![],
            vec![announcement("x", "a", 1)],
            10_000,
            5_000,
        );
        assert!(!gone.hosts[0].alive);
        assert_eq!(gone.alive().count(), 0);
    }

    #[test]
    fn the_json_form_reads_back() {
        let status = ClusterStatus::of(
            "bot",
            vec!["a".into()],
            vec![announcement("h", "a", 1)],
            2,
            5,
        );
        let json = serde_json::to_string(&status).expect("serializes");
        let back: ClusterStatus = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, status);
        assert!(status.text().contains("h "));
        assert_eq!(short_hash("0123456789abcdef"), "0123456789ab");
    }
}
