//! Load time per plugin: private copy + `dlopen` + ABI and layout check +
//! manifest + create, for the stripped release example plugins. Target: at
//! most 1 ms per plugin.
//!
//! A plain bench binary rather than criterion: every load maps a new copy
//! that is never unmapped (abi_stable libraries stay loaded until the process
//! exits), so the number of loads must stay bounded. Prints the median and p95 over `LOADS` loads of each plugin.
//!
//! Run: `cargo bench -p agent-host-benches --bench load_time`

use agent_host::bench_support::LoadProbe;
use std::time::{Duration, Instant};

const LOADS: usize = 60;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let probe = LoadProbe::new().expect("a registry and a private-copy folder");
    let files = test_support::examples();
    println!(
        "load time per plugin (copy + dlopen + ABI check + manifest + create), {LOADS} loads each:"
    );
    let mut all = Vec::new();
    for file in &files {
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let mut times = Vec::with_capacity(LOADS);
        for _ in 0..LOADS {
            let started = Instant::now();
            let name = probe
                .open_and_create(file)
                .expect("the example plugin loads");
            times.push(started.elapsed());
            std::hint::black_box(name);
        }
        times.sort();
        println!(
            "  {:<40} {:>8} KiB  median {:>7.3} ms  p95 {:>7.3} ms",
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size / 1024,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "  all plugins: median {:.3} ms, p95 {:.3} ms (target: at most 1 ms)",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.95).as_secs_f64() * 1e3
    );
}
