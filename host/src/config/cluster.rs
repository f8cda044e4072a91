//! The operator's `[cluster]` table: one agent served by several hosts
//! through NATS JetStream. Without the table the agent is one process, as
//! before, and needs no server.
//!
//! ```toml
//! [cluster]
//! url = "nats://127.0.0.1:4222"    # the NATS server (JetStream enabled)
//! agent = "support-bot"             # the agent's name: hosts of one agent share its messages
//! host = "web-1"                    # this host's name (default: the machine's name and the process id)
//! token_env = "AGENT_NATS_TOKEN"    # credentials from the environment: a token, or
//! # user = "agent"                  # a user with
//! # password_env = "AGENT_NATS_PASSWORD"   # a password from the environment, or
//! # credentials_file = "agent.creds"       # a NATS credentials file (relative to the config)
//! ack_wait_ms = 30000               # a message not acknowledged by then goes to another host
//! max_in_flight = 32                # messages one host runs at once
//! reply_timeout_ms = 120000         # how long a front end waits for a message's reply
//! reply_retention_s = 86400         # how long a reply is kept for a retried id
//! heartbeat_ms = 1000               # how often a host says it is alive
//! host_timeout_ms = 5000            # a host silent this long is gone
//! accept_lock_mismatch = false      # take messages even when this host's plugins differ
//! ```

use serde::Deserialize;
use std::path::PathBuf;

/// The `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The NATS server's URL (`nats://host:port`), JetStream enabled.
    pub url: String,
    /// The agent's name: every host of one agent gives the same. Letters,
    /// digits, `-` and `_`.
    pub agent: String,
    /// This host's name, unique in the cluster; by default the machine's
    /// name and the process id. Letters, digits, `-` and `_`.
    #[serde(default)]
    pub host: Option<String>,
    /// The environment variable holding a token for the server.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A user name for the server (with `password_env`).
    #[serde(default)]
    pub user: Option<String>,
    /// The environment variable holding `user`'s password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A NATS credentials file (JWT and seed), relative to the config file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// How long a host has to acknowledge a message before it is delivered
    /// to another host, in ms. A host working on a message longer than this
    /// tells the server it is still at it.
    #[serde(default = "defaults::ack_wait_ms")]
    pub ack_wait_ms: u64,
    /// How many messages one host runs at once.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// How long a front end waits for the reply to a message, in ms.
    #[serde(default = "defaults::reply_timeout_ms")]
    pub reply_timeout_ms: u64,
    /// How long a reply is kept, so that a retried id gets it, in seconds.
    #[serde(default = "defaults::reply_retention_s")]
    pub reply_retention_s: u64,
    /// How often a host announces itself, in ms.
    #[serde(default = "defaults::heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A host whose last announcement is older than this is gone, in ms.
    #[serde(default = "defaults::host_timeout_ms")]
    pub host_timeout_ms: u64,
    /// Take messages even when this host's plugins (its lock hash) differ
    /// from the ones the cluster accepts.
    #[serde(default)]
    pub accept_lock_mismatch: bool,
}

mod defaults {
    pub(super) fn ack_wait_ms() -> u64 {
        30_000
    }
    pub(super) fn max_in_flight() -> usize {
        32
    }
    pub(super) fn reply_timeout_ms() -> u64 {
        120_000
    }
    pub(super) fn reply_retention_s() -> u64 {
        86_400
    }
    pub(super) fn heartbeat_ms() -> u64 {
        1_000
    }
    pub(super) fn host_timeout_ms() -> u64 {
        5_000
    }
}

/// A `[cluster]` value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSettingsError {
    /// A name holds a character NATS subjects or stream names cannot.
    #[error("[cluster] `{field}` = \"{value}\": use only letters, digits, '-' and '_'")]
    BadName {
        /// `agent` or `host`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A number that must be positive is zero.
    #[error("[cluster] `{0}` must be greater than 0")]
    Zero(&'static str),
    /// `user` without `password_env`, or the other way round.
    #[error("[cluster] `user` and `password_env` go together")]
    HalfAUser,
    /// More than one way of authenticating.
    #[error("[cluster] give one of `token_env`, `user` with `password_env`, `credentials_file`")]
    TwoCredentials,
    /// The host's timeout does not leave room for a missed heartbeat.
    #[error("[cluster] `host_timeout_ms` must be at least twice `heartbeat_ms`")]
    HostTimeoutTooShort,
}

/// Whether `name` can be part of a subject, a stream and a bucket name.
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ClusterSettings {
    /// Checks what the types cannot: names, positive numbers, one way of
    /// authenticating.
    pub fn validate(&self) -> Result<(), ClusterSettingsError> {
        if !is_cluster_name(&self.agent) {
            return Err(ClusterSettingsError::BadName {
                field: "agent",
                value: self.agent.clone(),
            });
        }
        if let Some(host) = &self.host {
            if !is_cluster_name(host) {
                return Err(ClusterSettingsError::BadName {
                    field: "host",
                    value: host.clone(),
                });
            }
        }
        for (field, value) in [
            ("ack_wait_ms", self.ack_wait_ms),
            ("max_in_flight", self.max_in_flight as u64),
            ("reply_timeout_ms", self.reply_timeout_ms),
            ("reply_retention_s", self.reply_retention_s),
            ("heartbeat_ms", self.heartbeat_ms),
        ] {
            if value == 0 {
                return Err(ClusterSettingsError::Zero(field));
            }
        }
        if self.host_timeout_ms < 2 * self.heartbeat_ms {
            return Err(ClusterSettingsError::HostTimeoutTooShort);
        }
        if self.user.is_some() != self.password_env.is_some() {
            return Err(ClusterSettingsError::HalfAUser);
        }
        let ways = [
            self.token_env.is_some(),
            self.user.is_some(),
            self.credentials_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(ClusterSettingsError::TwoCredentials);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterSettings {
        toml::from_str(text).expect("valid [cluster]")
    }

    #[test]
    fn defaults_and_a_minimal_table() {
        let settings = parse("url = \"nats://127.0.0.1:4222\"\nagent = \"bot\"\n");
        assert_eq!(settings.ack_wait_ms, 30_000);
        assert_eq!(settings.host, None);
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let bad = parse("url = \"nats://x\"\nagent = \"a.b\"\n");
        assert!(matches!(
            bad.validate(),
            Err(ClusterSettingsError::BadName { field: "agent", .. })
        ));
        let bad = parse("url = \"nats://x\"\nagent = \"a\"\nhost = \"h*\"\n");
        assert!(matches!(
            bad.validate(),
            Err(ClusterSettingsError::BadName { field: "host", .. })
        ));
        let bad = parse("url = \"nats://x\"\nagent = \"a\"\nack_wait_ms = 0\n");
        assert_eq!(
            bad.validate(),
            Err(ClusterSettingsError::Zero("ack_wait_ms"))
        );
        let bad = parse("url = \"nats://x\"\nagent = \"a\"\nuser = \"u\"\n");
        assert_eq!(bad.validate(), Err(ClusterSettingsError::HalfAUser));
        let bad = parse(
            "url = \"nats://x\"\nagent = \"a\"\ntoken_env = \"T\"\ncredentials_file = \"c\"\n",
        );
        assert_eq!(bad.validate(), Err(ClusterSettingsError::TwoCredentials));
        let bad = parse("url = \"nats://x\"\nagent = \"a\"\nheartbeat_ms = 3000\n");
        assert_eq!(
            bad.validate(),
            Err(ClusterSettingsError::HostTimeoutTooShort)
        );
        assert!(
            toml::from_str::<ClusterSettings>("url = \"x\"\nagent = \"a\"\nport = 1\n").is_err()
        );
    }
}
