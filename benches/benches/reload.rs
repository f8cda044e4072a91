//! Hot reload costs, on the stripped release `counter` fixture:
//!
//! * the reload itself: from the (debounced) file event to the new
//!   generation serving, i.e. open + check + create + quiesce + state
//!   hand-over + swap, over 200 reloads; and how long calls were held;
//! * resident memory growth over those 200 reloads (every generation stays
//!   mapped);
//! * the whole rename-to-serving latency with the default debounce, through
//!   the real file watcher.
//!
//! Run: `cargo bench -p agent-host-benches --bench reload`

use agent_host::{HostOptions, PluginHost};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELOADS: usize = 200;
const WATCHED: usize = 15;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn replace(target: &Path, build: &Path) {
    let temp = target.with_extension("staging");
    std::fs::copy(build, &temp).expect("copy");
    std::fs::rename(&temp, target).expect("rename");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
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
    let host = Arc::new(PluginHost::new(HostOptions::default()).expect("host"));
    assert!(host.load_dir(dir.path()).expect("load").is_clean());
    let image = std::fs::metadata(&file).expect("size").len();

    let rss_before = rss_bytes();
    let mut totals = Vec::with_capacity(RELOADS);
    let mut paused = Vec::with_capacity(RELOADS);
    for i in 0..RELOADS {
        replace(&file, &builds[i % 2]);
        let done = host.reload("counter").expect("reload");
        totals.push(Duration::from_micros(done.total_us));
        paused.push(Duration::from_micros(done.paused_us));
    }
    let rss_after = rss_bytes();
    totals.sort();
    paused.sort();
    println!(
        "reload (event to new generation serving), {RELOADS} reloads of a {} KiB stripped plugin:",
        image / 1024
    );
    println!(
        "  median {:.3} ms, p95 {:.3} ms (target: median at most 10 ms)",
        ms(percentile(&totals, 0.5)),
        ms(percentile(&totals, 0.95))
    );
    println!(
        "  calls held while swapping: median {:.3} ms, p95 {:.3} ms",
        ms(percentile(&paused, 0.5)),
        ms(percentile(&paused, 0.95))
    );
    let mapped = host.status("counter").expect("status").mapped;
    println!(
        "  resident memory: {:.1} MiB -> {:.1} MiB, +{:.0} KiB per reload; {} generations mapped, {:.1} MiB of images",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 / RELOADS as f64,
        mapped.generations,
        mapped.bytes as f64 / 1048576.0
    );

    let watch = host
        .watch(dir.path(), agent_host::DEFAULT_DEBOUNCE)
        .expect("watch");
    let mut latencies = Vec::with_capacity(WATCHED);
    for i in 0..WATCHED {
        let before = host.status("counter").expect("status").generation;
        let started = Instant::now();
        replace(&file, &builds[i % 2]);
        while host.status("counter").expect("status").generation == before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the watcher never reloaded"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(watch);
    latencies.sort();
    println!(
        "rename to serving through the watcher (debounce {} ms), {WATCHED} renames: median {:.1} ms, p95 {:.1} ms",
        agent_host::DEFAULT_DEBOUNCE.as_millis(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95))
    );
}
