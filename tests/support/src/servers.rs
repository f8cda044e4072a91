//! The servers some tests talk to for real: PostgreSQL and NATS with
//! JetStream, both on this machine.
//!
//! Every machine of the project (developers' and CI's) runs them on their
//! standard ports; the environment variables `AGENT_TEST_POSTGRES_URL` and
//! `AGENT_TEST_NATS_URL` point the tests elsewhere. A test asks for a server
//! with [`require`]: where the server cannot be reached it prints why and
//! the test returns early (skipped), except under `CI=true`, where a missing
//! server fails the test. Tests never share a name on a server: each makes
//! its own schema, stream or bucket with [`unique_name`] and removes it when
//! it is done.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The PostgreSQL server the tests use when `AGENT_TEST_POSTGRES_URL` is not
/// set: trust authentication, database `test`.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The NATS server (JetStream enabled) the tests use when
/// `AGENT_TEST_NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long a test waits to learn whether a server answers.
const REACH_TIMEOUT: Duration = Duration::from_secs(2);

/// A server tests may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL.
    Postgres,
    /// NATS with JetStream.
    Nats,
}

impl Server {
    /// The environment variable that overrides the server's URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Server::Postgres => "AGENT_TEST_POSTGRES_URL",
            Server::Nats => "AGENT_TEST_NATS_URL",
        }
    }

    /// The server's URL: the environment's, else the default.
    pub fn url(self) -> String {
        std::env::var(self.env_var()).unwrap_or_else(|_| {
            match self {
                Server::Postgres => DEFAULT_POSTGRES_URL,
                Server::Nats => DEFAULT_NATS_URL,
            }
            .to_string()
        })
    }

    fn name(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::Nats => "NATS",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Server::Postgres => 5432,
            Server::Nats => 4222,
        }
    }
}

/// Whether the tests run in CI (`CI=true`), where a missing server fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The server's URL when it answers. When it does not, prints that `test`
/// is skipped and why, and returns `None`; under `CI=true` panics instead.
pub fn require(server: Server, test: &str) -> Option<String> {
    let url = server.url();
    match reach(&url, server.default_port()) {
        Ok(()) => Some(url),
        Err(cause) => {
            let why = format!(
                "{} is not reachable at {url} ({cause}); set {} to point at one",
                server.name(),
                server.env_var()
            );
            if in_ci() {
                panic!("{test}: {why} (CI=true: a missing server fails the test)");
            }
            eprintln!("skipped {test}: {why}");
            None
        }
    }
}

/// Connects to the URL's host and port once.
fn reach(url: &str, default_port: u16) -> Result<(), String> {
    let (host, port) = host_and_port(url, default_port)?;
    let addresses = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} has no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, REACH_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}

/// The host and port of `scheme://[user[:password]@]host[:port][/path][?query]`.
fn host_and_port(url: &str, default_port: u16) -> Result<(String, u16), String> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("'{url}' is not a URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            let port = port
                .parse()
                .map_err(|_| format!("'{url}' has a bad port '{port}'"))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        _ => Ok((host_port.trim_matches(['[', ']']).to_string(), default_port)),
    }
}

/// A name no other test (in this process or another) uses at the same time:
/// `prefix`, then the process id, a counter and the time, in lowercase
/// letters, digits and `_` (valid as a schema, stream or bucket name).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_the_usual_urls() {
        assert_eq!(
            host_and_port("postgres://postgres@127.0.0.1:5432/test", 1),
            Ok(("127.0.0.1".into(), 5432))
        );
        assert_eq!(
            host_and_port("nats://localhost", 4222),
            Ok(("localhost".into(), 4222))
        );
        assert_eq!(
            host_and_port("postgres://u:p@[::1]:5433/db?sslmode=disable", 1),
            Ok(("::1".into(), 5433))
        );
        assert!(host_and_port("127.0.0.1:4222", 1).is_err());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
        assert!(unique_name("t")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn an_unreachable_server_is_an_error() {
        // Port 1 on loopback: nothing listens there.
        assert!(reach("nats://127.0.0.1:1", 4222).is_err());
    }
}
