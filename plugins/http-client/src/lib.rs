//! `http-client`: plain HTTP/1.1 GET requests for other plugins.
//!
//! The plugin offers one service, `http-client`, with one method:
//!
//! * `get` takes `{"url": "http://...", "timeout_ms": 2000}` (`timeout_ms` is
//!   optional) and returns `{"status": 200, "body": "...", "headers": {...}}`.
//!
//! Any status the server answers, 404 and 500 included, is a successful call:
//! the caller reads `status`. A call fails with a [`agent_host_plugin_sdk::Error`] only
//! when no answer was had: a malformed or `https://` URL (this plugin is built
//! without TLS, so it works offline and links no crypto), a server that cannot
//! be reached, a timeout, or a body larger than 8 MiB.
//!
//! Config (`timeout_ms`, default 5000; `user_agent`, default
//! `agent-host-http-client/1.0`) is read when the service starts. A call's
//! timeout is also cut short by the deadline of the call that made it.
//!
//! Requests are made with [`ureq`] (blocking, no async runtime), which keeps a
//! small pool of idle connections between calls.

use agent_host_plugin_sdk::{json, Error, ErrorKind, Plugin, Result, Runtime, Service, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The service's name, as other plugins call it.
pub const SERVICE: &str = "http-client";

/// The timeout used when neither the call nor the config gives one.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// The `User-Agent` header sent when the config gives none.
pub const DEFAULT_USER_AGENT: &str = "agent-host-http-client/1.0";

/// The largest response body the service returns, in bytes.
pub const MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// The arguments of the `get` method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The `http://` URL to fetch.
    pub url: String,
    /// How long to wait for the whole exchange, in milliseconds; the
    /// configured `timeout_ms` when absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What the `get` method returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The HTTP status code, such as 200 or 404.
    pub status: u16,
    /// The response body, decoded as UTF-8 (invalid bytes become U+FFFD).
    pub body: String,
    /// The response headers, by lowercase name (repeated headers joined with `, `).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The settings read from the config when the service starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    timeout_ms: u64,
    user_agent: String,
}

impl Settings {
    fn from_config(rt: &Runtime<'_>) -> Result<Self> {
        let timeout_ms = match rt.config_value("timeout_ms")? {
            Value::Null => DEFAULT_TIMEOUT_MS,
            value => value.as_u64().filter(|&ms| ms > 0).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("config `timeout_ms` must be a positive integer, not {value}"),
                )
            })?,
        };
        let user_agent = match rt.config_value("user_agent")? {
            Value::Null => DEFAULT_USER_AGENT.to_string(),
            Value::String(agent) if !agent.trim().is_empty() => agent,
            value => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("config `user_agent` must be a non-empty string, not {value}"),
                ))
            }
        };
        Ok(Self {
            timeout_ms,
            user_agent,
        })
    }
}

/// A configured client: the settings and the agent that pools connections.
struct Client {
    settings: Settings,
    agent: ureq::Agent,
}

impl Client {
    fn new(settings: Settings) -> Self {
        let agent = ureq::Agent::config_builder()
            .user_agent(settings.user_agent.as_str())
            .max_redirects(5)
            // 404 and 500 are answers for the caller to read, not errors.
            .http_status_as_error(false)
            // As before the upgrade to ureq 3: no proxy from the environment.
            .proxy(None)
            .build()
            .new_agent();
        Self { settings, agent }
    }

    fn get(&self, request: &GetRequest, rt: &Runtime<'_>) -> Result<GetResponse> {
        check_url(&request.url)?;
        let timeout_ms = match request.timeout_ms {
            Some(0) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "http-client.get: `timeout_ms` must be greater than 0",
                ))
            }
            Some(ms) => ms,
            None => self.settings.timeout_ms,
        };
        let timeout = within_deadline(Duration::from_millis(timeout_ms), rt)?;
        let response = self
            .agent
            .get(&request.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|error| request_error(&request.url, timeout, error))?;
        read_response(&request.url, response)
    }
}

/// Rejects anything but an absolute `http://` URL, with a reason.
fn check_url(url: &str) -> Result<()> {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "cannot GET {url}: https is not supported (this http-client is built without TLS); \
                 use an http:// URL or a local TLS-terminating proxy"
            ),
        ));
    }
    if !lower.starts_with("http://") {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("cannot GET '{url}': not an absolute http:// URL"),
        ));
    }
    Ok(())
}

/// Shortens `timeout` so the request ends before the calling action's
/// deadline; fails at once if that deadline has passed.
fn within_deadline(timeout: Duration, rt: &Runtime<'_>) -> Result<Duration> {
    rt.check_cancelled()?;
    let Some(deadline) = rt.deadline() else {
        return Ok(timeout);
    };
    match deadline.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() => Ok(timeout.min(left)),
        _ => Err(Error::new(
            ErrorKind::Cancelled,
            "the call's deadline passed before the request was sent",
        )),
    }
}

/// The error of a GET that had no answer, with its kind and a message that
/// names the URL and the reason.
fn request_error(url: &str, timeout: Duration, error: ureq::Error) -> Error {
    use std::io::ErrorKind as Io;
    let timed_out = match &error {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(io.kind(), Io::TimedOut | Io::WouldBlock),
        _ => false,
    };
    if timed_out {
        return Error::new(
            ErrorKind::Cancelled,
            format!("GET {url} timed out after {} ms", timeout.as_millis()),
        );
    }
    let kind = match &error {
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => ErrorKind::InvalidInput,
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::ConnectProxyFailed(_) => ErrorKind::Unavailable,
        ureq::Error::Io(io) => match io.kind() {
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::AddrNotAvailable
            | Io::HostUnreachable
            | Io::NetworkUnreachable
            | Io::NetworkDown => ErrorKind::Unavailable,
            _ => ErrorKind::Failed,
        },
        _ => ErrorKind::Failed,
    };
    let what = match kind {
        ErrorKind::Unavailable => "the server cannot be reached",
        ErrorKind::InvalidInput => "the URL cannot be used",
        _ => "the request failed",
    };
    Error::new(kind, format!("GET {url}: {what}: {error}"))
}

fn read_response(url: &str, response: ureq::http::Response<ureq::Body>) -> Result<GetResponse> {
    let (head, body) = response.into_parts();
    let mut headers = BTreeMap::new();
    for name in head.headers.keys() {
        let values: Vec<String> = head
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        // Header names are lowercase already.
        headers.insert(name.as_str().to_string(), values.join(", "));
    }
    let mut bytes = Vec::new();
    body.into_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::msg(format!("GET {url}: reading the body failed: {e}")))?;
    if bytes.len() as u64 > MAX_BODY_BYTES {
        return Err(Error::msg(format!(
            "GET {url}: the body is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(GetResponse {
        status: head.status.as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    })
}

/// The service state: the client built from the config in `on_start`.
#[derive(Default)]
struct HttpService {
    client: Mutex<Option<Arc<Client>>>,
}

impl HttpService {
    fn client(&self, rt: &Runtime<'_>) -> Result<Arc<Client>> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(Client::new(Settings::from_config(rt)?));
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}

/// The JSON Schema of the plugin's config.
pub fn config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_TIMEOUT_MS,
                "description": "How long a request may take, in milliseconds, when the caller gives no timeout_ms."
            },
            "user_agent": {
                "type": "string",
                "minLength": 1,
                "default": DEFAULT_USER_AGENT,
                "description": "The User-Agent header sent with every request."
            }
        },
        "additionalProperties": false
    })
}

/// Builds the `http-client` plugin.
pub fn plugin() -> Plugin {
    Plugin::new("http-client", "1.0.0")
        // Reading its own config is a permission like any other.
        .permission("config:*")
        .description("Plain HTTP/1.1 GET requests for other plugins (http:// only, no TLS)")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .config_schema(config_schema())
        .default_config(json!({
            "timeout_ms": DEFAULT_TIMEOUT_MS,
            "user_agent": DEFAULT_USER_AGENT,
        }))
        .service(
            Service::new(SERVICE, HttpService::default())
                .description("get {url, timeout_ms?} -> {status, body, headers}; http:// URLs only")
                .on_start(|state: &HttpService, rt| {
                    let settings = Settings::from_config(rt)?;
                    rt.debug(format!(
                        "http-client ready: timeout {} ms, user agent '{}'",
                        settings.timeout_ms, settings.user_agent
                    ));
                    *state.client.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(Arc::new(Client::new(settings)));
                    Ok(())
                })
                .on_stop(|state: &HttpService, _rt| {
                    *state.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    Ok(())
                })
                .method("get", |state: &HttpService, request: GetRequest, rt| {
                    state.client(rt)?.get(&request, rt)
                }),
        )
}

agent_host_plugin_sdk::export_plugin!(plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;

    /// Serves one connection with `response` and sends back the request head.
    fn serve_once(response: &'static str) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let head = read_head(&mut stream);
            stream.write_all(response.as_bytes()).unwrap();
            stream.flush().unwrap();
            sender.send(head).unwrap();
        });
        (format!("http://{address}"), receiver)
    }

    fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[test]
    fn manifest_is_valid() {
        let manifest = plugin().manifest();
        manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        assert_eq!(manifest.services[0].name, "http-client");
        assert_eq!(manifest.services[0].methods, ["get"]);
        assert_eq!(manifest.default_config.unwrap()["timeout_ms"], 5000);
    }

    #[test]
    fn get_returns_status_body_and_headers() {
        let (base, requests) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello, world",
        );
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        let reply = loaded
            .call_service(
                "http-client",
                "get",
                json!({"url": format!("{base}/greeting?x=1")}),
            )
            .unwrap();
        assert_eq!(reply["status"], 200);
        assert_eq!(reply["body"], "hello, world");
        assert_eq!(reply["headers"]["content-type"], "text/plain");

        let head = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(head.starts_with("GET /greeting?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("user-agent: agent-host-http-client/1.0"),
            "{head}"
        );
    }

    #[test]
    fn configured_user_agent_is_sent() {
        let (base, requests) = serve_once("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let host = TestHost::new("http-client").with_config(json!({"user_agent": "probe/2"}));
        let loaded = host.load(plugin()).unwrap();
        let reply = loaded
            .call_service(
                "http-client",
                "get",
                json!({"url": base, "timeout_ms": 3000}),
            )
            .unwrap();
        assert_eq!(reply["status"], 204);
        assert_eq!(reply["body"], "");
        let head = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            head.to_ascii_lowercase().contains("user-agent: probe/2"),
            "{head}"
        );
    }

    #[test]
    fn error_statuses_are_answers_not_errors() {
        let (base, _requests) = serve_once(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nno such x",
        );
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        let reply = loaded
            .call_service("http-client", "get", json!({"url": format!("{base}/x")}))
            .unwrap();
        assert_eq!(reply["status"], 404);
        assert_eq!(reply["body"], "no such x");
    }

    #[test]
    fn https_is_refused_with_a_clear_error() {
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        let error = loaded
            .call_service("http-client", "get", json!({"url": "https://example.com/"}))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(
            error.message().contains("https is not supported"),
            "{error:?}"
        );
    }

    #[test]
    fn malformed_urls_and_arguments_are_invalid_input() {
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        for args in [
            json!({"url": "ftp://example.com/"}),
            json!({"url": "example.com"}),
            json!({"url": "http://"}),
            json!({"url": "http://127.0.0.1:1/", "timeout_ms": 0}),
            json!({"uri": "http://127.0.0.1/"}),
            json!("http://127.0.0.1/"),
        ] {
            let error = loaded
                .call_service("http-client", "get", args.clone())
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{args}: {error:?}");
        }
    }

    #[test]
    fn unreachable_server_is_unavailable() {
        // Bind, note the port, close: nothing listens there any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        let url = format!("http://127.0.0.1:{port}/");
        let error = loaded
            .call_service(
                "http-client",
                "get",
                json!({"url": url, "timeout_ms": 2000}),
            )
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
        assert!(error.message().contains(&url), "{error:?}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            // Accept and hold the connection without answering.
            let (stream, _) = listener.accept().unwrap();
            thread::sleep(Duration::from_millis(600));
            drop(stream);
        });
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        let error = loaded
            .call_service(
                "http-client",
                "get",
                json!({"url": format!("http://{address}/slow"), "timeout_ms": 150}),
            )
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Cancelled, "{error:?}");
        assert!(error.message().contains("timed out"), "{error:?}");
        server.join().unwrap();
    }

    #[test]
    fn bad_config_stops_the_service_from_starting() {
        let host = TestHost::new("http-client").with_config(json!({"timeout_ms": "soon"}));
        let error = host.load(plugin()).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(error.message().contains("timeout_ms"), "{error:?}");
    }
}
