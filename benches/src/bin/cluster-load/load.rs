//! Clients sending messages to the hosts' HTTP APIs, as a real client
//! would: each message has an id of its own, and a client that loses its
//! connection sends the same id again to another host.

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many times a client sends one id before it gives up.
const MAX_ATTEMPTS: u32 = 20;

/// How long a client waits for one reply.
const REPLY_WAIT: Duration = Duration::from_secs(60);

/// Why a request got no reply.
#[derive(Debug)]
pub enum PostError {
    /// No connection, or it was lost: the client tries another host.
    Transport(String),
    /// The host answered with an error status.
    Status(u16, String),
}

/// An HTTP client that keeps its connections alive between requests, as
/// a client sending many messages does.
pub fn http_client(wait: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(wait))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Posts one message and reads its reply.
pub fn post(agent: &ureq::Agent, address: SocketAddr, message: &Value) -> Result<Value, PostError> {
    let mut response = agent
        .post(format!("http://{address}/v1/messages"))
        .send_json(message)
        .map_err(|e| PostError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| PostError::Transport(e.to_string()))?;
    if status != 200 {
        return Err(PostError::Status(status, body));
    }
    serde_json::from_str(&body).map_err(|e| PostError::Status(status, format!("{e}: {body}")))
}

/// What happened to one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its id.
    pub id: String,
    /// When it was first sent, since the load began.
    pub sent: Duration,
    /// When its reply came, since the load began.
    pub answered: Duration,
    /// How many times it was sent.
    pub attempts: u32,
    /// Whether an action answered it without error.
    pub ok: bool,
    /// The host that ran it, as the reply says.
    pub host: Option<String>,
    /// What went wrong, when no reply came or an error status did.
    pub error: Option<String>,
}

/// One load: which hosts, how many clients and messages, and what each
/// message says.
pub struct Load<'a> {
    /// The hosts' addresses; clients spread their messages over them.
    pub hosts: Vec<SocketAddr>,
    /// Hosts known dead: clients no longer try them (a client marks a host
    /// that refuses its connection).
    pub dead: &'a [AtomicBool],
    /// How many clients send at once.
    pub clients: usize,
    /// How many messages in all.
    pub messages: usize,
    /// A prefix making this run's ids its own.
    pub run: String,
    /// The text of message `id`.
    pub text: fn(&str) -> String,
    /// Counts the replies, for whoever waits on the load's progress.
    pub answered: &'a AtomicUsize,
    /// Whether a client sends an id again to another host after an error
    /// status (a host shutting down says 503); a lost connection is always
    /// retried.
    pub retry_statuses: bool,
}

impl Load<'_> {
    /// Runs the load; returns every message's outcome, its times counted
    /// from `start`.
    pub fn run(&self, start: Instant) -> Vec<Outcome> {
        std::thread::scope(|scope| {
            let clients: Vec<_> = (0..self.clients)
                .map(|client| scope.spawn(move || self.client(client, start)))
                .collect();
            clients
                .into_iter()
                .flat_map(|client| client.join().unwrap_or_default())
                .collect()
        })
    }

    /// One client's messages, one after the other.
    fn client(&self, client: usize, start: Instant) -> Vec<Outcome> {
        let http = http_client(REPLY_WAIT);
        let mine = (client..self.messages).step_by(self.clients);
        let mut outcomes = Vec::new();
        for (k, number) in mine.enumerate() {
            let id = format!("{}-{number}", self.run);
            let message = serde_json::json!({
                "id": id,
                "sender": format!("client{client}"),
                "text": (self.text)(&id),
            });
            let sent = start.elapsed();
            let mut target = (client + k) % self.hosts.len();
            let mut attempts = 0;
            let mut outcome = Outcome {
                id: id.clone(),
                sent,
                answered: sent,
                attempts: 0,
                ok: false,
                host: None,
                error: None,
            };
            while attempts < MAX_ATTEMPTS {
                while self.dead[target].load(Ordering::Relaxed) {
                    target = (target + 1) % self.hosts.len();
                }
                attempts += 1;
                match post(&http, self.hosts[target], &message) {
                    Ok(reply) => {
                        outcome.ok = reply["ok"].as_bool() == Some(true);
                        outcome.host = reply["host"].as_str().map(str::to_string);
                        outcome.error = (!outcome.ok).then(|| reply.to_string());
                        break;
                    }
                    Err(PostError::Status(status, body)) => {
                        outcome.error = Some(format!("HTTP {status}: {body}"));
                        if !self.retry_statuses {
                            break;
                        }
                    }
                    Err(PostError::Transport(cause)) => {
                        // A host that refuses connections is down: this
                        // client stops trying it, as a client with a
                        // health check would.
                        if cause.contains("refused") {
                            self.dead[target].store(true, Ordering::Relaxed);
                        }
                        outcome.error = Some(cause);
                    }
                }
                target = (target + 1) % self.hosts.len();
                std::thread::sleep(Duration::from_millis(20));
            }
            if outcome.ok {
                outcome.error = None;
            }
            outcome.attempts = attempts;
            outcome.answered = start.elapsed();
            self.answered.fetch_add(1, Ordering::Relaxed);
            outcomes.push(outcome);
        }
        outcomes
    }
}
