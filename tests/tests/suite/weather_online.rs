//! The weather example online: the real plugin files ask a real HTTP server
//! on the loopback interface through the real `http-client` plugin, and a
//! server that cannot be reached gives a failed reply that names the
//! http-client failure, while the host goes on serving.

use agent_host::{HostOptions, InboundMessage, PluginHost};
use agent_host_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tokyo's latitude as the `geolocation` plugin knows it.
const TOKYO_LAT: &str = "lat=35.6762";

/// The longest a fake server keeps running, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);

/// A tiny HTTP/1.1 weather API on 127.0.0.1: `GET /current?lat=..&lon=..&units=..`
/// answers `{"temperature": 21.5, "conditions": "sunny"}`; anything else is a
/// 404. One request per connection. It records every request target it sees
/// and stops when dropped (or after [`SERVER_LIFETIME`]).
struct FakeWeatherApi {
    port: u16,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeWeatherApi {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let targets = Arc::clone(&targets);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let deadline = Instant::now() + SERVER_LIFETIME;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // A broken connection only fails that request.
                            let _ = serve(stream, &targets);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Self {
            port,
            targets,
            stop,
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().expect("lock").clone()
    }
}

impl Drop for FakeWeatherApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request on `stream`.
fn serve(mut stream: TcpStream, targets: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default();
    let target = request_line.next().unwrap_or_default().to_string();
    targets.lock().expect("lock").push(target.clone());

    let is_current = target.strip_prefix("/current?").is_some_and(|query| {
        ["lat", "lon", "units"].iter().all(|key| {
            query
                .split('&')
                .any(|pair| pair.starts_with(&format!("{key}=")))
        })
    });
    let (status, body) = if method == "GET" && is_current {
        (
            "200 OK",
            json!({"temperature": 21.5, "conditions": "sunny"}).to_string(),
        )
    } else {
        ("404 Not Found", "not found".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn ask(text: &str) -> InboundMessage {
    InboundMessage {
        sender: "alice".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// A host with every example plugin loaded, the weather API at `base_url`.
fn host_with_weather_api(base_url: &str, plugins: &std::path::Path) -> PluginHost {
    let host = PluginHost::new(HostOptions {
        configs: [
            ("weather".to_string(), json!({ "base_url": base_url })),
            // Keep the notes example off the disk.
            ("database".to_string(), json!({ "url": "sqlite::memory:" })),
        ]
        .into(),
        ..Default::default()
    })
    .expect("host");
    let report = host.load_dir(plugins).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    host
}

#[test]
fn weather_comes_from_the_api_over_real_http() {
    let api = FakeWeatherApi::start();
    let plugins = folder_with(&examples());
    let host = host_with_weather_api(&api.base_url(), plugins.path());

    let reply = host.handle_message(ask("What's the weather in Tokyo?"));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        reply.action.as_ref().map(|a| a.action.as_str()),
        Some("GET_WEATHER")
    );
    assert!(reply.text.contains("21.5"), "{}", reply.text);
    assert!(reply.text.contains("sunny"), "{}", reply.text);
    assert!(reply.text.contains("Tokyo"), "{}", reply.text);
    assert_eq!(reply.data["source"], "api");
    assert_eq!(reply.data["temperature"], 21.5);
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);

    let targets = api.targets();
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with("/current?") && t.contains(TOKYO_LAT)),
        "the server saw no request for Tokyo: {targets:?}"
    );
    assert!(
        targets.iter().all(|t| t.starts_with("/current?")),
        "{targets:?}"
    );
    assert!(host.shutdown().is_empty());
}

#[test]
fn an_unreachable_api_fails_the_reply_and_the_host_keeps_serving() {
    // A port that was free a moment ago, and that nobody listens on now.
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("address").port()
    };
    let plugins = folder_with(&examples());
    let host = host_with_weather_api(&format!("http://127.0.0.1:{closed_port}"), plugins.path());

    let reply = host.handle_message(ask("What's the weather in Tokyo?"));
    assert!(!reply.ok, "{reply:?}");
    assert_eq!(
        reply.action.as_ref().map(|a| a.action.as_str()),
        Some("GET_WEATHER")
    );
    assert_eq!(reply.text, "Sorry, GET_WEATHER failed.");
    let handler_error = reply
        .errors
        .iter()
        .find(|e| e.contains("GET_WEATHER"))
        .unwrap_or_else(|| panic!("no error from the action: {:?}", reply.errors));
    assert!(handler_error.contains("http-client"), "{handler_error}");
    assert!(
        handler_error.contains(&format!("127.0.0.1:{closed_port}")),
        "{handler_error}"
    );
    assert!(
        handler_error.contains("cannot be reached"),
        "{handler_error}"
    );

    // The host keeps serving: the next question gets a full reply object,
    // evaluators still run, and other plugins still answer.
    let reply = host.handle_message(ask("Will it rain in Tokyo tomorrow?"));
    assert!(!reply.id.is_empty());
    assert_eq!(
        reply.action.as_ref().map(|a| a.action.as_str()),
        Some("GET_WEATHER")
    );
    assert!(!reply.ok, "{reply:?}");
    assert!(
        reply.errors.iter().any(|e| e.contains("http-client")),
        "{:?}",
        reply.errors
    );
    assert!(
        reply.evaluations.iter().any(|e| e.evaluator == "sentiment"),
        "{reply:?}"
    );
    let home = host
        .call_service("geolocation", "current", &Value::Null)
        .expect("geolocation still answers");
    assert!(home["name"].is_string(), "{home}");
    assert!(host.shutdown().is_empty());
}

/// A weather API that accepts connections and never answers: it holds
/// each connection open, unread, until dropped.
struct SilentApi {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentApi {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let deadline = Instant::now() + SERVER_LIFETIME;
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => held.push(stream),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_weather_api_that_never_answers_costs_a_message_at_most_the_state_budget() {
    // The default budget (100 ms), and what a reply may take beyond it on a
    // loaded machine; without the budget each message waited the
    // provider's deadline, 5 s.
    let within = Duration::from_millis(100 + 900);
    let api = SilentApi::start();
    let plugins = folder_with(&examples());
    let host = host_with_weather_api(&format!("http://127.0.0.1:{}", api.port), plugins.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut took = Vec::new();
    for n in 0..3 {
        let started = Instant::now();
        let reply = runtime.block_on(host.answer(ask("recall")));
        took.push(started.elapsed());
        assert!(
            took[n] < within,
            "message {n} waited {:?} for the silent weather API: {:?}",
            took[n],
            reply.errors
        );
        if n == 0 {
            assert!(
                reply.errors.iter().any(|e| e.contains("plugin 'weather'")
                    && e.contains("provider 'weather-context' get")
                    && e.contains("slower than the state budget")),
                "{:?}",
                reply.errors
            );
        }
    }
    println!("the first three messages with a silent weather API took {took:?}");
    drop(api);
    assert!(host.shutdown().is_empty());
}
