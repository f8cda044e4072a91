//! One agent on several hosts, through NATS JetStream: the front ends of
//! every host publish their messages to the agent's stream, every host
//! takes them from one shared consumer, and the reply goes back to the
//! front end that took the request.
//!
//! The parts, each in its file:
//! - [`names`]: the subjects, stream, consumer and buckets of one agent;
//! - `connection.rs`: connecting with the configured credentials;
//! - `route.rs`: a front end's message to the stream, its reply back;
//! - `consumer.rs`: the shared consumer feeding this host's pipeline;
//! - `replies.rs`: replies kept by message id, for retried ids;
//! - `members.rs`: heartbeats, lock hashes, and the gate that keeps a host
//!   whose plugins differ from taking messages (`buckets.rs` opens the
//!   buckets, `locks.rs` keeps the accepted lock hashes);
//! - `events.rs`: plugin events crossing hosts;
//! - [`control`]: requests from operators to one host (a rolling reload);
//! - [`operator`]: the operator's connection (`agent-host cluster ...`);
//! - [`status`]: what `/v1/cluster` and `agent-host cluster status` show.
//!
//! Without a `[cluster]` table none of this runs and no server is needed.
//!
//! This module must never acknowledge a message before its reply is
//! published, nor let a host whose plugins differ from the cluster's take
//! messages unless the operator said so.

mod buckets;
mod connection;
mod consumer;
pub mod control;
mod events;
mod locks;
mod members;
pub mod names;
pub mod operator;
mod replies;
mod route;
pub mod status;

pub use connection::ConnectError;
pub use names::Names;
pub use operator::Operator;

use crate::config::ClusterSettings;
use crate::PluginHost;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// This host's place in the cluster: its settings, names, the server
/// connection, and whether it takes messages.
pub struct ClusterNode {
    /// The `[cluster]` table.
    pub settings: ClusterSettings,
    /// This host's name in the cluster.
    pub host_name: String,
    /// The agent's subjects, stream and buckets.
    pub names: Names,
    /// The NATS connection.
    pub client: async_nats::Client,
    /// JetStream over that connection.
    pub jetstream: async_nats::jetstream::Context,
    /// The address this host's HTTP API is bound to, when it serves one:
    /// announced to the other hosts and the operators.
    pub http_address: Option<SocketAddr>,
    /// Whether this host takes messages from the shared consumer: false
    /// until its plugins are known to match the cluster's.
    pub taking_messages: watch::Sender<bool>,
}

impl ClusterNode {
    /// Subscribes to `subject` on this host's connection.
    pub(crate) async fn subscribe(
        &self,
        subject: &str,
    ) -> Result<async_nats::Subscriber, ClusterError> {
        self.client
            .subscribe(subject.to_string())
            .await
            .map_err(|cause| ClusterError::Setup {
                url: self.settings.url.clone(),
                what: format!("a subscription to {subject}"),
                cause: cause.to_string(),
            })
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The server could not be reached or refused the credentials.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// JetStream refused to create or open one of the agent's streams,
    /// consumers or buckets.
    #[error("NATS JetStream at {url}: cannot set up {what}: {cause}")]
    Setup {
        /// The server.
        url: String,
        /// The stream, consumer or bucket.
        what: String,
        /// The server's or client's error.
        cause: String,
    },
    /// Reading or writing a key of one of the agent's buckets failed.
    #[error("NATS JetStream at {url}: {what}: {cause}")]
    Store {
        /// The server.
        url: String,
        /// What was read or written.
        what: String,
        /// The server's or client's error.
        cause: String,
    },
}

/// Cluster mode while it runs: its node and the tasks serving it.
pub struct Cluster {
    node: Arc<ClusterNode>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    consumer: consumer::Consumer,
}

impl Cluster {
    /// This host's node.
    pub fn node(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    /// Stops taking messages, waits for the ones in flight to be answered
    /// and acknowledged (at most the host's `shutdown_grace_ms`), stops
    /// announcing this host, and ends the tasks.
    pub async fn stop(self) {
        self.node.taking_messages.send_replace(false);
        self.consumer.stop().await;
        for task in self.tasks {
            task.abort();
        }
        members::leave(&self.node).await;
        // Whatever is buffered (a last reply, a last event) goes out.
        let _ = self.node.client.flush().await;
    }
}

/// This host connected to the cluster's server, not serving in it yet:
/// `agent-host run` connects before it loads any plugin, so a server that
/// cannot be reached fails the start at once.
pub struct Connected {
    settings: ClusterSettings,
    host_name: String,
    client: async_nats::Client,
}

impl Connected {
    /// This host's name in the cluster.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }
}

/// Connects this host to the cluster's server with the configured
/// credentials, under its name (`[cluster] host`, else the machine's name
/// and the process id).
pub async fn connect(settings: &ClusterSettings) -> Result<Connected, ClusterError> {
    let host_name = settings
        .host
        .clone()
        .unwrap_or_else(connection::default_host_name);
    let client = connection::connect(settings, &host_name).await?;
    Ok(Connected {
        settings: settings.clone(),
        host_name,
        client,
    })
}

/// Starts serving this host's part of the cluster once its plugins are
/// loaded: its announcements (with `http_address`, where its HTTP API
/// listens, when it serves one), the events it relays, operators'
/// requests, and the shared consumer (once its plugins match), and sends
/// the front ends' messages through the cluster.
pub async fn start(
    host: Arc<PluginHost>,
    connected: Connected,
    http_address: Option<SocketAddr>,
) -> Result<Cluster, ClusterError> {
    let Connected {
        settings,
        host_name,
        client,
    } = connected;
    let names = Names::new(&settings.agent);
    let jetstream = async_nats::jetstream::new(client.clone());
    let (taking_messages, _) = watch::channel(false);
    let node = Arc::new(ClusterNode {
        settings,
        host_name,
        names,
        client,
        jetstream,
        http_address,
        taking_messages,
    });
    let mut tasks = Vec::new();
    tasks.push(members::start(&node, &host).await?);
    tasks.push(events::start(&node, &host).await?);
    tasks.push(control::start(&node, &host).await?);
    let consumer = consumer::start(&node, &host).await?;
    route::install(&node, &host).await?;
    Ok(Cluster {
        node,
        tasks,
        consumer,
    })
}
