//! What isolation costs, on real plugin files, in process and in workers:
//!
//! * one message through the pipeline benchmark's plugin (3 actions,
//!   3 providers, 2 evaluators, 2 services), in process and isolated, and
//!   through 10 such plugins of one library: in process, and isolated with
//!   a worker per plugin, one for the file, and one for a named group
//!   (three alternated rounds, the median of their medians); medians, with
//!   the median of each phase as the reply's timings give it;
//! * the transport alone (`floor`, Unix): this program started 10 times as
//!   echo processes, each answering a 1.5 KB request on a socketpair with
//!   two 40-byte replies, read as the host reads a worker (non-blocking
//!   tries, yielding, for 100 us, then blocking): what 10 isolated plugins
//!   cost before any protocol or plugin work, on this machine;
//! * the `faulty` fixture: a reload of an isolated plugin (new worker
//!   serving), and from a crash (`abort()`) to serving again;
//! * resident memory of the host plus its workers over 200 reloads of the
//!   `counter` fixture, isolated and in process.
//!
//! Run: `cargo bench -p agent-host-benches --bench isolation` (add `message`,
//! `floor`, `restart` or `memory` to run one part).

use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost};
use agent_host_benches::Phases;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_bench-worker");

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

/// Median time per message with `fixture` loaded under `isolation`, and the
/// median of each phase (providers, validate, handler, evaluators) in us.
fn per_message(fixture: &str, isolation: &str, count: usize) -> (Duration, [u64; 4]) {
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
    let mut phases = Phases::default();
    let times = (0..count)
        .map(|_| {
            let started = Instant::now();
            let reply = std::hint::black_box(host.handle_message(message(text)));
            let elapsed = started.elapsed();
            phases.record(&reply);
            elapsed
        })
        .collect();
    host.shutdown();
    (median(times), phases.medians())
}

fn messages() {
    println!("one message, median of 5000 (phases: providers, validate, handler, evaluators):");
    let row = |label: &str, (median, medians): (Duration, [u64; 4]), extra: String| {
        let [providers, validate, handler, evaluators] = medians;
        println!(
            "  {label:<24} {:>8.1} us {extra:<13} phases {providers}, {validate}, {handler}, {evaluators} us",
            us(median)
        );
    };
    let in_process = per_message("bench-1", "", 5000);
    let isolated = per_message("bench-1", "default = \"process\"", 5000);
    let added = isolated.0.saturating_sub(in_process.0);
    row("1 plugin in process:", in_process, String::new());
    row(
        "1 plugin isolated:",
        isolated,
        format!("(+{:.1} us)", us(added)),
    );
    // 10 plugins of one library: in process, and isolated one worker per
    // plugin (as before workers were shared), in their file's one worker,
    // and in a named group's one worker; three alternated rounds, the
    // median of the three medians.
    let group = format!(
        "[isolation.groups]\nbench = [{}]",
        (0..10)
            .map(|i| format!("\"bench-{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let shapes = [
        ("10 plugins in process:", String::new()),
        (
            "10 isolated, per plugin:",
            "default = \"process\"\nworker_per = \"plugin\"".to_string(),
        ),
        (
            "10 isolated, per file:",
            "default = \"process\"".to_string(),
        ),
        ("10 isolated, one group:", group),
    ];
    let mut rounds: Vec<Vec<(Duration, [u64; 4])>> = shapes.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (i, (_, isolation)) in shapes.iter().enumerate() {
            rounds[i].push(per_message("bench-10", isolation, 3000));
        }
    }
    let middle = |mut runs: Vec<(Duration, [u64; 4])>| {
        runs.sort_by_key(|(median, _)| *median);
        runs[runs.len() / 2]
    };
    let results: Vec<(Duration, [u64; 4])> = rounds.into_iter().map(middle).collect();
    let base = results[0].0;
    for ((label, _), result) in shapes.iter().zip(&results) {
        let added = result.0.saturating_sub(base);
        let extra = if result.0 == base {
            String::new()
        } else {
            format!("(+{:.1} us)", us(added))
        };
        row(label, *result, extra);
    }
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
            // A new worker, and an answer from it (it sees itself as
            // process 2 of its own PID namespace, whatever its pid here).
            let replaced = pid_of(&host, "faulty").is_some_and(|pid| pid != old);
            if replaced
                && host
                    .handle_message(message("fault ping"))
                    .text
                    .starts_with("pong from ")
            {
                return;
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

/// Resident bytes of this process and every process under it: each
/// worker is a keeper, an init and the worker proper, one under the other,
/// and workers are children of whichever host thread started them.
fn rss_with_workers() -> u64 {
    rss_of_tree(std::process::id())
}

fn rss_of_tree(pid: u32) -> u64 {
    let mut total = rss_of(pid);
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in list.split_whitespace().filter_map(|p| p.parse().ok()) {
                total += rss_of_tree(child);
            }
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

/// The transport alone: echo processes on socketpairs, read the way the
/// host and its workers read each other, with no protocol and no plugin.
#[cfg(unix)]
mod floor {
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Set in the environment of an echo process.
    pub const ECHO: &str = "AGENT_HOST_BENCH_ECHO";
    const ECHOES: usize = 10;
    const REQUEST: usize = 1500;
    const REPLY: usize = 40;
    /// As long as the host's and the workers' reads try without waiting:
    /// a copy of `SPIN` in `host/src/isolation/wire/link/unix.rs`, which is
    /// private to the crate; change both together.
    const SPIN: Duration = Duration::from_micros(100);

    /// Fills `buffer` from `stream` as a worker link reads a frame: reads
    /// that do not wait, yielding in between, for up to `SPIN`, then
    /// blocking reads. `false` when the stream ends.
    fn read_full(stream: &mut UnixStream, buffer: &mut [u8]) -> bool {
        let started = Instant::now();
        let mut filled = 0;
        while filled < buffer.len() {
            let read = if started.elapsed() < SPIN {
                let flags = rustix::net::RecvFlags::DONTWAIT;
                match rustix::net::recv(&*stream, &mut buffer[filled..], flags) {
                    Ok((read, _)) => read,
                    Err(rustix::io::Errno::AGAIN) => {
                        std::thread::yield_now();
                        continue;
                    }
                    Err(_) => return false,
                }
            } else {
                match stream.read(&mut buffer[filled..]) {
                    Ok(read) => read,
                    Err(_) => return false,
                }
            };
            if read == 0 {
                return false;
            }
            filled += read;
        }
        true
    }

    /// An echo process: answers each request on its standard input (a
    /// socket) with two replies, until the stream ends.
    pub fn echo() {
        let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
            return;
        };
        let mut stream = UnixStream::from(fd);
        let mut request = [0u8; REQUEST];
        let reply = [1u8; REPLY];
        while read_full(&mut stream, &mut request) {
            for _ in 0..2 {
                if stream.write_all(&reply).is_err() {
                    return;
                }
            }
        }
    }

    /// Sends each round's request to every echo process, then reads their
    /// first replies and then their second, as a message reads its
    /// workers' validate and evaluator replies.
    pub fn run() {
        let program = std::env::current_exe().expect("this program");
        let mut echoes: Vec<_> = (0..ECHOES)
            .map(|_| {
                let (ours, theirs) = UnixStream::pair().expect("socketpair");
                let child = Command::new(&program)
                    .env(ECHO, "1")
                    .stdin(Stdio::from(OwnedFd::from(theirs)))
                    .spawn()
                    .expect("echo process");
                (child, ours)
            })
            .collect();
        let request = [7u8; REQUEST];
        let mut reply = [0u8; REPLY];
        let mut times = Vec::with_capacity(20_000);
        for round in 0..22_000 {
            let started = Instant::now();
            for (_, stream) in &mut echoes {
                stream.write_all(&request).expect("request");
            }
            for _ in 0..2 {
                for (_, stream) in &mut echoes {
                    assert!(read_full(stream, &mut reply), "an echo process ended");
                }
            }
            if round >= 2_000 {
                times.push(started.elapsed());
            }
        }
        for (mut child, stream) in echoes {
            drop(stream);
            let _ = child.wait();
        }
        println!(
            "the transport alone: {ECHOES} echo processes, {REQUEST}-byte request, 2 replies each: {:.1} us median of 20000",
            super::us(super::median(times))
        );
    }
}

fn main() {
    #[cfg(unix)]
    if std::env::var_os(floor::ECHO).is_some() {
        floor::echo();
        return;
    }
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
    #[cfg(unix)]
    if wants("floor") {
        floor::run();
    }
    if wants("restart") {
        restarts();
    }
    if wants("memory") {
        memory();
    }
}
