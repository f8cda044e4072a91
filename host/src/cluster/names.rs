//! The names one agent uses on the server. Every host of an agent derives
//! the same names from the agent's name, and two agents never share one.

/// The subjects, stream, consumer and buckets of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The agent's name.
    pub agent: String,
    /// The stream holding the agent's inbound messages.
    pub inbox_stream: String,
    /// The subject front ends publish messages to.
    pub inbox_subject: String,
    /// The durable consumer every host takes messages from.
    pub consumer: String,
    /// The bucket of replies by message id.
    pub replies_bucket: String,
    /// The bucket of hosts' announcements, one key per host.
    pub hosts_bucket: String,
    /// The bucket of cluster-wide decisions (the accepted lock hashes).
    pub cluster_bucket: String,
    /// The subject plugin events cross hosts on.
    pub events_subject: String,
}

impl Names {
    /// The names of agent `agent` (a name [`crate::config::ClusterSettings`]
    /// accepted: letters, digits, `-`, `_`).
    pub fn new(agent: &str) -> Self {
        Self {
            agent: agent.to_string(),
            inbox_stream: format!("AGENT_{agent}_INBOX"),
            inbox_subject: format!("agent.{agent}.inbox"),
            consumer: "hosts".to_string(),
            replies_bucket: format!("AGENT_{agent}_REPLIES"),
            hosts_bucket: format!("AGENT_{agent}_HOSTS"),
            cluster_bucket: format!("AGENT_{agent}_CLUSTER"),
            events_subject: format!("agent.{agent}.events"),
        }
    }

    /// The subject the reply to the message with key `key` goes to (a
    /// key is [`message_key`] of its id).
    pub fn reply_subject(&self, key: &str) -> String {
        format!("agent.{}.reply.{key}", self.agent)
    }

    /// Every key-value bucket of the agent (with [`Names::inbox_stream`],
    /// all it keeps on the server).
    pub fn buckets(&self) -> [&str; 3] {
        [
            &self.replies_bucket,
            &self.hosts_bucket,
            &self.cluster_bucket,
        ]
    }

    /// The subject a host takes operators' requests on.
    pub fn control_subject(&self, host: &str) -> String {
        format!("agent.{}.control.{host}", self.agent)
    }
}

/// A message id as a subject token and a bucket key: ids are the client's
/// and may hold any character, so the key is their SHA-256 in hex (32
/// digits of it).
pub fn message_key(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_agents_never_share_a_name() {
        let a = Names::new("a");
        let b = Names::new("b");
        assert_ne!(a.inbox_stream, b.inbox_stream);
        assert_ne!(a.inbox_subject, b.inbox_subject);
        assert_ne!(a.replies_bucket, b.replies_bucket);
        assert_ne!(a.reply_subject("k"), b.reply_subject("k"));
    }

    #[test]
    fn a_message_key_is_a_subject_token() {
        let key = message_key("id with spaces.and.dots*>");
        assert_eq!(key.len(), 32);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(key, message_key("id with spaces.and.dots*>"));
        assert_ne!(key, message_key("another"));
    }
}
