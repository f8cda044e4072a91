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
//! Isolated (`default = "process"`): the 1000 plugins in their file's one
//! worker (target: at most 1 s), and, to compare with a worker per plugin
//! (`worker_per = "plugin"`), 100 plugins (`bench-100`) each way, the
//! start of 100 workers; and 100 distinct files (`numbered_files`: copies
//! of one build, each with a name of its own written into it), each
//! probed, then served by a worker of its own (target: ready in at most
//! 5 s).
//!
//! A plain bench binary: every run maps a new copy of the library, never
//! unmapped, so the number of runs stays small. Prints the median and the
//! range over `RUNS` runs of each.
//!
//! Run: `cargo bench -p agent-host-benches --bench ready_time`

use agent_host::{AgentConfig, HostOptions, InboundMessage, PluginHost};
use std::time::{Duration, Instant};

const RUNS: usize = 9;

const WORKER: &str = env!("CARGO_BIN_EXE_bench-worker");
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
    let hundred = test_support::folder_with(&[test_support::fixture("bench-100")]);
    let files = agent_host_benches::numbered_files(100);
    let worker = format!("[isolation]\nworker_program = \"{WORKER}\"\n");
    println!("time to a ready agent, {RUNS} runs each (fewer for workers per plugin):");
    let modes = [
        ("1000 eager", "".to_string(), &dir, PLUGINS, RUNS),
        (
            "1000 lazy",
            "[host]\nlazy_plugins = [\"bench-*\"]\n".to_string(),
            &dir,
            PLUGINS,
            RUNS,
        ),
        (
            "1000 isolated, per file",
            format!("{worker}default = \"process\"\n"),
            &dir,
            PLUGINS,
            RUNS,
        ),
        (
            "100 isolated, per file",
            format!("{worker}default = \"process\"\n"),
            &hundred,
            100,
            RUNS,
        ),
        (
            "100 isolated, per plugin",
            format!("{worker}default = \"process\"\nworker_per = \"plugin\"\n"),
            &hundred,
            100,
            3,
        ),
        (
            "100 isolated files",
            format!("{worker}default = \"process\"\n"),
            &files,
            100,
            3,
        ),
    ];
    for (mode, config, dir, plugins, runs) in modes {
        let mut ready = Vec::with_capacity(runs);
        let mut first = Vec::with_capacity(runs);
        for _ in 0..runs {
            let config = AgentConfig::parse(&config).expect("the bench's config parses");
            let started = Instant::now();
            let host = PluginHost::new(HostOptions {
                config,
                ..HostOptions::default()
            })
            .expect("a host");
            let report = host.load_dir(dir.path()).expect("the folder loads");
            ready.push(started.elapsed());
            assert!(report.is_clean(), "{:?}", report.failures.first());
            assert_eq!(report.loaded.len(), plugins);

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
        println!("  {mode:<25} ready:         {}", summary(ready));
        println!("  {mode:<25} first message: {}", summary(first));
    }
}
