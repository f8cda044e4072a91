//! `http-client`: HTTP/1.1 GET requests, over `http://` and `https://`, for
//! other plugins.
//!
//! The plugin offers one service, `http-client`, with one method:
//!
//! * `get` takes `{"url": "https://...", "timeout_ms": 2000}` (`timeout_ms` is
//!   optional) and returns `{"status": 200, "body": "...", "headers": {...}}`.
//!
//! Any status the server answers, 404 and 500 included, is a successful call:
//! the caller reads `status`. A call fails with a [`agent_host_plugin_sdk::Error`] only
//! when no answer was had: a malformed URL or one that is neither `http://`
//! nor `https://`, a server that cannot be reached, a timeout, an https
//! server whose certificate is not trusted, or a body larger than 8 MiB.
//!
//! # Config
//!
//! Read when the service starts:
//!
//! * `timeout_ms` (default 5000): the timeout of a call that gives none. A
//!   call's timeout is also cut short by the deadline of the call that made it.
//! * `user_agent` (default `agent-host-http-client/1.0`): the `User-Agent`
//!   header.
//! * `extra_ca_file` (default null: none): the path of a PEM file with one or
//!   more CA certificates that https servers may also be signed by, such as a
//!   company's or a test network's private CA. They are trusted in addition to
//!   the webpki roots (Mozilla's list, built in), not instead of them. A
//!   relative path is taken from the agent's working directory. A file that
//!   cannot be read or holds no usable certificate stops the service from
//!   starting, with a message that says why.
//!
//! For example, in the agent's config file:
//!
//! ```toml
//! [plugins.http-client]
//! extra_ca_file = "/etc/agent-host/internal-ca.pem"
//! ```
//!
//! # TLS
//!
//! https uses [rustls](https://crates.io/crates/rustls) with the `ring`
//! crypto provider, so the plugin needs no TLS library on the system and
//! builds with a C compiler alone. A server whose certificate chains to none
//! of the trusted roots is refused with an error that names the certificate
//! problem and points at `extra_ca_file`.
//!
//! Requests are made with [`ureq`] (blocking, no async runtime), which keeps a
//! small pool of idle connections between calls. Proxy settings in the
//! environment are not used.
//!
//! # Names and ports
//!
//! The plugin asks for `network:connect:*`; the operator grants the ports it
//! may use (`network:connect:443`, say), which an isolated worker's sandbox
//! enforces. Host names are resolved by the host (`Runtime::resolve`), which
//! answers only for a granted port: a sandboxed worker has no name
//! resolution of its own. An address in the URL needs no resolution.

use agent_host_plugin_sdk::{json, Error, ErrorKind, Plugin, Result, Runtime, Service, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
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
    /// The `http://` or `https://` URL to fetch.
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
    extra_ca_file: Option<PathBuf>,
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
            // ureq would panic on a User-Agent that is not a valid header value.
            Value::String(agent)
                if !agent.trim().is_empty()
                    && ureq::http::HeaderValue::from_str(&agent).is_ok() =>
            {
                agent
            }
            value => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "config `user_agent` must be a non-empty string without control \
                         characters, not {value}"
                    ),
                ))
            }
        };
        let extra_ca_file = match rt.config_value("extra_ca_file")? {
            Value::Null => None,
            Value::String(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
            value => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("config `extra_ca_file` must be a PEM file path or null, not {value}"),
                ))
            }
        };
        Ok(Self {
            timeout_ms,
            user_agent,
            extra_ca_file,
        })
    }
}

/// Reads the CA certificates of `extra_ca_file`: every `CERTIFICATE` in the
/// PEM file, each checked to be usable as a trust anchor.
fn read_extra_cas(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let invalid = |why: String| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("config `extra_ca_file` {}: {why}", path.display()),
        )
    };
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot be read: {e}")))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| invalid(format!("is not valid PEM: {e}")))? {
            ureq::tls::PemItem::Certificate(certificate) => certificates.push(certificate),
            // A private key or another section is not a CA: skip it.
            _ => continue,
        }
    }
    if certificates.is_empty() {
        return Err(invalid(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    let mut check = rustls::RootCertStore::empty();
    for (index, certificate) in certificates.iter().enumerate() {
        check
            .add(rustls::pki_types::CertificateDer::from(certificate.der()))
            .map_err(|e| invalid(format!("certificate {} is not a usable CA: {e}", index + 1)))?;
    }
    Ok(certificates)
}

/// The roots https servers are checked against: the webpki roots, plus the
/// CAs of `extra_ca_file` when there is one.
fn root_certs(settings: &Settings) -> Result<ureq::tls::RootCerts> {
    let Some(path) = &settings.extra_ca_file else {
        return Ok(ureq::tls::RootCerts::WebPki);
    };
    let extra = read_extra_cas(path)?;
    let webpki = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|root| ureq::tls::Certificate::from_der(root.as_ref()));
    Ok(webpki.chain(extra).into())
}

/// A configured client: the settings and the agent that pools connections.
struct Client {
    settings: Settings,
    agent: ureq::Agent,
}

impl Client {
    fn new(settings: Settings, resolver: HostResolver) -> Result<Self> {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(root_certs(&settings)?)
            .build();
        let agent = ureq::Agent::config_builder()
            .user_agent(settings.user_agent.as_str())
            .max_redirects(5)
            // 404 and 500 are answers for the caller to read, not errors.
            .http_status_as_error(false)
            // As before the upgrade to ureq 3: no proxy from the environment.
            .proxy(None)
            .tls_config(tls)
            .build();
        let agent = ureq::Agent::with_parts(
            agent,
            ureq::unversioned::transport::DefaultConnector::default(),
            resolver,
        );
        Ok(Self { settings, agent })
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

/// Resolves host names through the agent's host: the same call in process
/// and in a sandboxed worker, which has no name resolution of its own.
struct HostResolver {
    host: agent_host_plugin_sdk::RuntimeHandle,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostResolver")
    }
}

impl ureq::unversioned::resolver::Resolver for HostResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri
            .port_u16()
            .or_else(|| match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })
            .ok_or(ureq::Error::HostNotFound)?;
        // `[::1]` in a URL is `::1` as an address.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addresses = match literal.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
            Err(_) => self.host.runtime().resolve(host, port).map_err(|e| {
                let kind = match e.kind() {
                    ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
                    _ => std::io::ErrorKind::NotFound,
                };
                ureq::Error::Io(std::io::Error::new(kind, e.to_string()))
            })?,
        };
        let mut resolved = self.empty();
        for address in addresses {
            if resolved.try_push(address).is_err() {
                break;
            }
        }
        if resolved.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(resolved)
    }
}

/// Rejects anything but an absolute `http://` or `https://` URL, with a reason.
fn check_url(url: &str) -> Result<()> {
    let lower = url.trim_start().to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("cannot GET '{url}': not an absolute http:// or https:// URL"),
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

/// The TLS error under an I/O error, if that is what it is.
fn tls_cause(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The error of a GET that had no answer, with its kind and a message that
/// names the URL and the reason.
fn request_error(url: &str, timeout: Duration, error: ureq::Error) -> Error {
    use std::io::ErrorKind as Io;
    let tls = match &error {
        ureq::Error::Rustls(tls) => Some(tls),
        ureq::Error::Io(io) => tls_cause(io),
        _ => None,
    };
    if let Some(rustls::Error::InvalidCertificate(why)) = tls {
        let hint = if matches!(why, rustls::CertificateError::UnknownIssuer) {
            "; if a private CA signed it, set the config `extra_ca_file` to that CA's PEM file"
        } else {
            ""
        };
        return Error::msg(format!(
            "GET {url}: the server's TLS certificate is not trusted: {why}{hint}"
        ));
    }
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
        ureq::Error::Io(io) if tls.is_none() => match io.kind() {
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
        _ if tls.is_some() => "the TLS connection failed",
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
        let resolver = HostResolver { host: rt.handle() };
        let client = Arc::new(Client::new(Settings::from_config(rt)?, resolver)?);
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
            },
            "extra_ca_file": {
                "type": ["string", "null"],
                "minLength": 1,
                "default": null,
                "description": "Path of a PEM file with CA certificates that https servers are also trusted to be signed by, in addition to the webpki roots; null means none. A relative path is taken from the agent's working directory."
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
        // Any port a URL names; the operator grants the ones it may use.
        .permission("network:connect:*")
        .description("HTTP/1.1 GET requests for other plugins, over http:// and https:// (rustls)")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .config_schema(config_schema())
        .default_config(json!({
            "timeout_ms": DEFAULT_TIMEOUT_MS,
            "user_agent": DEFAULT_USER_AGENT,
            "extra_ca_file": null,
        }))
        .service(
            Service::new(SERVICE, HttpService::default())
                .description(
                    "get {url, timeout_ms?} -> {status, body, headers}; http:// or https:// URLs",
                )
                .on_start(|state: &HttpService, rt| {
                    let settings = Settings::from_config(rt)?;
                    let extra_ca = match &settings.extra_ca_file {
                        Some(path) => format!(", extra CAs from {}", path.display()),
                        None => String::new(),
                    };
                    rt.debug(format!(
                        "http-client ready: timeout {} ms, user agent '{}'{extra_ca}",
                        settings.timeout_ms, settings.user_agent
                    ));
                    *state.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(
                        Client::new(settings, HostResolver { host: rt.handle() })?,
                    ));
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
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// Serves one connection with `response` and sends back the request head.
    fn serve_once(response: &'static str) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let head = read_head(&mut stream).unwrap();
            stream.write_all(response.as_bytes()).unwrap();
            stream.flush().unwrap();
            sender.send(head).unwrap();
        });
        (format!("http://{address}"), receiver)
    }

    fn read_head(stream: &mut impl Read) -> std::io::Result<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    }

    /// A CA made at test time, and a server certificate it signed for
    /// 127.0.0.1, with the server's key.
    struct TestPki {
        ca_pem: String,
        server_chain: Vec<CertificateDer<'static>>,
        server_key: PrivateKeyDer<'static>,
    }

    fn test_pki() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "http-client test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
        }
    }

    /// Serves one TLS connection on 127.0.0.1 with the certificate of `pki`
    /// and `response`; sends back the request head, or why there was none.
    fn serve_tls_once(
        pki: &TestPki,
        response: &'static str,
    ) -> (String, mpsc::Receiver<std::io::Result<String>>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let serve = || -> std::io::Result<String> {
                let (tcp, _) = listener.accept()?;
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                let connection = rustls::ServerConnection::new(Arc::new(config))
                    .map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                // The handshake runs within the first read.
                let head = read_head(&mut tls)?;
                tls.write_all(response.as_bytes())?;
                tls.conn.send_close_notify();
                tls.flush()?;
                Ok(head)
            };
            let _ = sender.send(serve());
        });
        (format!("https://{address}"), receiver)
    }

    #[test]
    fn manifest_is_valid() {
        let manifest = plugin().manifest();
        manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        assert_eq!(manifest.services[0].name, "http-client");
        assert_eq!(manifest.services[0].methods, ["get"]);
        let defaults = manifest.default_config.unwrap();
        assert_eq!(defaults["timeout_ms"], 5000);
        assert_eq!(defaults["extra_ca_file"], Value::Null);
        assert!(config_schema()["properties"]["extra_ca_file"].is_object());
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
    fn https_works_with_the_extra_ca_and_fails_clearly_without_it() {
        let pki = test_pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret";

        // With the test CA trusted, the GET goes through TLS to the server.
        let (base, requests) = serve_tls_once(&pki, answer);
        let host = TestHost::new("http-client").with_config(json!({"extra_ca_file": ca_file}));
        let loaded = host.load(plugin()).unwrap();
        let reply = loaded
            .call_service(
                "http-client",
                "get",
                json!({"url": format!("{base}/private?x=1"), "timeout_ms": 5000}),
            )
            .unwrap();
        assert_eq!(reply["status"], 200, "{reply}");
        assert_eq!(reply["body"], "secret");
        assert_eq!(reply["headers"]["content-type"], "text/plain");
        let head = requests
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert!(head.starts_with("GET /private?x=1 HTTP/1.1\r\n"), "{head}");

        // Without it, the same server is refused during the handshake, with
        // an error that says why and what to configure...
        let (base, requests) = serve_tls_once(&pki, answer);
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        let url = format!("{base}/private");
        let error = loaded
            .call_service(
                "http-client",
                "get",
                json!({"url": url, "timeout_ms": 5000}),
            )
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Failed, "{error:?}");
        let message = error.message();
        assert!(message.contains(&url), "{message}");
        assert!(
            message.contains("TLS certificate is not trusted"),
            "{message}"
        );
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("`extra_ca_file`"), "{message}");
        // ...and the request never reached the server.
        let served = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(served.is_err(), "the server got a request: {served:?}");
    }

    #[test]
    fn an_unusable_extra_ca_file_stops_the_service_from_starting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("not-pem.pem");
        std::fs::write(&not_pem, "just some text\n").unwrap();
        let key_only = dir.path().join("key-only.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key_only, key.serialize_pem()).unwrap();
        for (path, why) in [
            (&missing, "cannot be read"),
            (&not_pem, "holds no PEM certificate"),
            (&key_only, "holds no PEM certificate"),
        ] {
            let host = TestHost::new("http-client").with_config(json!({"extra_ca_file": path}));
            let error = host.load(plugin()).err().unwrap();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error:?}");
            let message = error.message();
            assert!(message.contains("extra_ca_file"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(why), "{message}");
        }
    }

    #[test]
    fn malformed_urls_and_arguments_are_invalid_input() {
        let host = TestHost::new("http-client");
        let loaded = host.load(plugin()).unwrap();
        for args in [
            json!({"url": "ftp://example.com/"}),
            json!({"url": "example.com"}),
            json!({"url": "http://"}),
            json!({"url": "https://"}),
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

        for agent in ["", "probe\n2"] {
            let host = TestHost::new("http-client").with_config(json!({"user_agent": agent}));
            let error = host.load(plugin()).err().unwrap();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{agent:?}");
            assert!(error.message().contains("user_agent"), "{error:?}");
        }
    }
}
