//! Time to a ready agent with 1000 plugins, eager and lazy: from
//! `PluginHost::new` to `load_dir` returning, for the `bench-1000` fixture
//! (one library exporting 1000 plugins of the pipeline benchmark's shape: 3
//! actions, 3 providers, 2 evaluators, 2 services each). Eager starts every
//! plugin (create, `on_load`, 2000 services, 1000 provider subscriptions);
//! lazy (`lazy_plugins = ["bench-*"]`) checks them (copy, `dlopen`, ABI and
//! layout, manifests, triggers, dependencies) and starts none. Target for
//! lazy: at most 25 ms.
//!
//! Also timed: the first message after each load. The benchmark plugins'
//! actions declare no triggers, so after a lazy load that message starts
//! all 1000 plugins.
//!
//! A plain bench binary: every run maps a new copy of the library, never
//! unmapped, so the number of runs stays small. Prints the median and the
//! range over `RUNS` runs of each.
//!
//! Run: `cargo bench -p agent-host-benches --bench ready_time`

use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost};
use std::time::{Duration, Instant};

const RUNS: usize = 9;
const PLUGINS: usize = 1000;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:>7.2} ms  (min {:.2}, max {:.2})",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let file = test_support::fixture("bench-1000");
    let dir = test_support::folder_with(&[file]);
    println!("time to a ready agent with {PLUGINS} plugins, {RUNS} runs each:");
    for (mode, config) in [
        ("eager", ""),
        ("lazy", "[host]\nlazy_plugins = [\"bench-*\"]\n"),
    ] {
        let mut ready = Vec::with_capacity(RUNS);
        let mut first = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let config = AgentConfig::parse(config).expect("the bench's config parses");
            let started = Instant::now();
            let host = PluginHost::new(HostOptions {
                config,
                ..HostOptions::default()
            })
            .expect("a host");
            let report = host.load_dir(dir.path()).expect("the folder loads");
            ready.push(started.elapsed());
            assert!(report.is_clean(), "{:?}", report.failures.first());
            assert_eq!(report.loaded.len(), PLUGINS);

            let started = Instant::now();
            let reply = host.handle_message(InboundMessage {
                sender: "bench".into(),
                text: "bench".into(),
                ..InboundMessage::default()
            });
            first.push(started.elapsed());
            assert!(reply.ok, "{:?}", reply.errors.first());
            host.shutdown();
        }
        println!("  {mode:<5} ready:         {}", summary(ready));
        println!("  {mode:<5} first message: {}", summary(first));
    }
}
