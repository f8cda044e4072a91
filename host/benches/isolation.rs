//! What isolation costs, on real plugin files, in process and in workers:
//!
//! * one message through the pipeline benchmark's plugin (3 actions,
//!   3 providers, 2 evaluators, 2 services), in process and isolated, and
//!   through 10 such plugins, each isolated; medians;
//! * the `faulty` fixture: a reload of an isolated plugin (new worker
//!   serving), and from a crash (`abort()`) to serving again;
//! * resident memory of the host plus its workers over 200 reloads of the
//!   `counter` fixture, isolated and in process.
//!
//! Run: `cargo bench -p agent-host --bench isolation` (add `message`,
//! `restart` or `memory` to run one part).

use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn host(isolation: &str) -> PluginHost {
    let config = format!("[isolation]\nworker_program = \"{WORKER}\"\n{isolation}");
    PluginHost::new(HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    })
    .expect("host")
}

fn message(text: &str) -> InboundMessage {
    InboundMessage {
        id: "bench".into(),
        sender: "bench".into(),
        text: text.into(),
        ..InboundMessage::default()
    }
}

/// Median time per message with `fixture` loaded under `isolation`.
fn per_message(fixture: &str, isolation: &str, count: usize) -> Duration {
    let dir = test_support::folder_with(&[test_support::fixture(fixture)]);
    let host = host(isolation);
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures.first());
    let text = "bench: what is new today?";
    let warm = host.handle_message(message(text));
    assert!(warm.errors.is_empty(), "{:?}", warm.errors);
    for _ in 0..count / 10 {
        host.handle_message(message(text));
    }
    let times = (0..count)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(host.handle_message(message(text)));
            started.elapsed()
        })
        .collect();
    host.shutdown();
    median(times)
}

fn messages() {
    println!("one message, median of 5000:");
    let in_process = per_message("bench-1", "", 5000);
    let isolated = per_message("bench-1", "default = \"process\"", 5000);
    println!("  1 plugin in process:      {:>8.1} us", us(in_process));
    println!(
        "  1 plugin isolated:        {:>8.1} us (+{:.1} us)",
        us(isolated),
        us(isolated.saturating_sub(in_process))
    );
    let ten_in = per_message("bench-10", "", 3000);
    let ten = per_message("bench-10", "default = \"process\"", 3000);
    println!("  10 plugins in process:    {:>8.1} us", us(ten_in));
    println!("  10 plugins isolated:      {:>8.1} us", us(ten));
}

fn pid_of(host: &PluginHost, plugin: &str) -> Option<u32> {
    host.status(plugin)?.worker?.pid
}

fn restarts() {
    let dir = test_support::folder_with(&[test_support::fixture("isolated")]);
    // A window of 1 ms: every crash is a first crash, restarted after the
    // default backoff (10 ms) rather than a doubled one.
    let host = host("process = [\"faulty\"]\ncrash_window_ms = 1\n");
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures.first());
    let serving = |old: u32| {
        let started = Instant::now();
        loop {
            if let Some(pid) = pid_of(&host, "faulty").filter(|p| *p != old) {
                if host.handle_message(message("fault ping")).text == format!("pong from {pid}") {
                    return;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never served");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let mut reloads = Vec::new();
    for _ in 0..30 {
        let old = pid_of(&host, "faulty").expect("pid");
        let started = Instant::now();
        // The same file each time: a forced reload (a new worker).
        host.reload_as(
            "faulty",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        )
        .expect("reload");
        serving(old);
        reloads.push(started.elapsed());
    }
    let mut crashes = Vec::new();
    for _ in 0..30 {
        let old = pid_of(&host, "faulty").expect("pid");
        let started = Instant::now();
        let reply = host.handle_message(message("fault abort"));
        assert!(!reply.ok);
        serving(old);
        crashes.push(started.elapsed());
    }
    let mut loads = Vec::new();
    for _ in 0..10 {
        let fresh = self::host("process = [\"faulty\"]\n");
        let started = Instant::now();
        let report = fresh.load_dir(dir.path()).expect("load");
        assert!(report.is_clean());
        assert!(fresh.handle_message(message("fault ping")).ok);
        loads.push(started.elapsed());
        fresh.shutdown();
    }
    println!("isolated plugin `faulty`, medians (loads of 10, the rest of 30):");
    println!(
        "  load to serving (probe, worker start, on_load, first message): {:.1} ms",
        ms(median(loads))
    );
    println!(
        "  reload to serving:        {:>8.1} ms",
        ms(median(reloads))
    );
    println!(
        "  crash to serving again:   {:>8.1} ms",
        ms(median(crashes))
    );
    host.shutdown();
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Resident bytes of this process and its children (the workers).
fn rss_with_workers() -> u64 {
    let me = std::process::id();
    let children =
        std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
    let mut total = rss_of(me);
    // Workers are started by a thread of their own, so they are children of
    // that thread: look through every thread's list.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in list.split_whitespace().filter_map(|p| p.parse().ok()) {
                total += rss_of(pid);
            }
        }
    } else {
        for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
            total += rss_of(pid);
        }
    }
    total
}

fn replace(target: &Path, build: &Path) {
    let temp = target.with_extension("staging");
    std::fs::copy(build, &temp).expect("copy");
    std::fs::rename(&temp, target).expect("rename");
}

fn memory() {
    println!("resident memory of host + workers over 200 reloads of `counter`:");
    for (label, isolation) in [
        ("in process", ""),
        ("isolated", "process = [\"counter\"]\n"),
    ] {
        let builds = [
            test_support::fixture("counter-v2"),
            test_support::fixture("counter-v1"),
        ];
        let dir = test_support::folder_with(&[]);
        let file = test_support::add_as(
            dir.path(),
            &builds[1],
            &format!("counter.{}", test_support::EXT),
        );
        let host = Arc::new(host(isolation));
        let report = host.load_dir(dir.path()).expect("load");
        assert!(report.is_clean(), "{:?}", report.failures.first());
        for round in 0..10 {
            replace(&file, &builds[round % 2]);
            host.reload("counter").expect("reload");
        }
        std::thread::sleep(Duration::from_millis(600));
        let start = rss_with_workers();
        for round in 0..200 {
            replace(&file, &builds[round % 2]);
            host.reload("counter").expect("reload");
        }
        // Old workers are told to stop; give the last ones a moment.
        std::thread::sleep(Duration::from_millis(600));
        let end = rss_with_workers();
        println!(
            "  {label:<11} start {:>7.1} MiB, after 200 reloads {:>7.1} MiB ({:+.1} MiB)",
            start as f64 / 1048576.0,
            end as f64 / 1048576.0,
            (end as f64 - start as f64) / 1048576.0
        );
        host.shutdown();
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    if wants("message") {
        messages();
    }
    if wants("restart") {
        restarts();
    }
    if wants("memory") {
        memory();
    }
}
