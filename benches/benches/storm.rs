//! A fast request's latency over HTTP while a storm of requests hits a hung
//! plugin: the `laggard` fixture's `hang-handler` action sleeps 5 s and
//! ignores its cancellation; the `counter` fixture answers `count` at once.
//!
//! Measures the median and p99 of 300 `count` requests, one at a time on a
//! keep-alive connection, first on an idle agent, then right after 600
//! clients have each sent `hang-handler` at once (the plugin's bulkhead,
//! `max_calls_in_flight`, lets 32 of them in; the rest are refused at once),
//! while those calls are still stuck. Target: the storm median at most twice
//! the idle one.
//!
//! Run: `cargo bench -p agent-host-benches --bench storm`.

use agent_host::{HostOptions, PluginHost};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STORM: usize = 600;
const SAMPLES: usize = 300;

/// One keep-alive HTTP/1.1 connection that posts messages.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Posts `text` and returns the reply body.
    fn post(&mut self, text: &str) -> String {
        let body = format!("{{\"text\":\"{text}\"}}");
        let request = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send");
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("read a header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("a length");
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("read the body");
        String::from_utf8(body).expect("utf-8")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fast_requests(addr: SocketAddr) -> (Duration, Duration) {
    let mut client = Client::connect(addr);
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let reply = client.post("count");
        times.push(started.elapsed());
        assert!(reply.contains("\"ok\":true"), "{reply}");
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let files = [
        test_support::fixture("laggard"),
        test_support::fixture("counter-v1"),
    ];
    let dir = test_support::folder_with(&files);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = Arc::new(
        PluginHost::new(HostOptions {
            runtime: Some(runtime.handle().clone()),
            ..HostOptions::default()
        })
        .expect("host"),
    );
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures.first());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let served = Arc::clone(&host);
    runtime.spawn(async move {
        let _ = agent_host::http::serve(
            served,
            listener,
            agent_host::http::ApiAccess::open(),
            std::future::pending(),
        )
        .await;
    });

    // Warm up, then the idle figure.
    let _ = fast_requests(addr);
    let (idle_median, idle_p99) = fast_requests(addr);

    let storm: Vec<_> = (0..STORM)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                client.post("hang-handler")
            })
        })
        .collect();
    // Let the storm reach the agent: every request is in, answered (refused)
    // or stuck in the plugin.
    std::thread::sleep(Duration::from_millis(500));
    let (storm_median, storm_p99) = fast_requests(addr);
    let mut refused = 0;
    let mut answered = 0;
    for client in storm {
        let reply = client.join().expect("a storm client");
        if reply.contains("calls in flight (its limit)") {
            refused += 1;
        } else if reply.contains("woke up") {
            answered += 1;
        }
    }
    println!("a fast request over HTTP (keep-alive, one at a time), {SAMPLES} samples:");
    println!(
        "  idle:                      median {:>8.1} us, p99 {:>8.1} us",
        idle_median.as_secs_f64() * 1e6,
        idle_p99.as_secs_f64() * 1e6
    );
    println!(
        "  during a {STORM}-request storm: median {:>8.1} us, p99 {:>8.1} us ({:.2} times idle)",
        storm_median.as_secs_f64() * 1e6,
        storm_p99.as_secs_f64() * 1e6,
        storm_median.as_secs_f64() / idle_median.as_secs_f64()
    );
    println!(
        "  the storm: {answered} calls went in and finished after 5 s, {refused} were refused at once"
    );
    host.shutdown();
}
