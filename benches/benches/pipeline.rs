//! The per-message pipeline with N = 1, 10, 100 and 1000 loaded plugins,
//! each with 3 actions, 3 providers (cached, cached with
//! stale-while-revalidate, pushed), 2 evaluators and 2 services. One action
//! answers each message; every provider, validate and evaluator takes part.
//!
//! Reports the median and p95 latency per message and messages per second,
//! one message at a time, and the median of each phase as the reply's
//! timings give it. Targets: median at most 3 us at N = 1, 15 us at
//! N = 100 and 150 us at N = 1000.
//!
//! At N = 100 and 1000 a second row (`N+t`) loads the same shape with each
//! action declaring its `validate`'s word as a trigger, as the SDK
//! recommends: the host then asks only the one `validate` whose word the
//! message holds, and every evaluator still scores.
//!
//! Run: `cargo bench -p agent-host-benches --bench pipeline` (add `-- 100` to run
//! one size only). Sizes 250 and 500 run only when named (`-- 250 500`):
//! with 100 and 1000 they show where the cost per plugin turns from that of
//! instructions into that of memory, as a message's plugins outgrow a
//! core's cache. `AGENT_HOST_BENCH_REPEAT=30` sends 30 times as many
//! messages, for a profiler to see the message path rather than the load.

use agent_host::{HostOptions, InboundMessage, PluginHost};
use agent_host_benches::Phases;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1, 10, 100, 1000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    println!("pipeline per message (3 actions, 3 providers, 2 evaluators, 2 services per plugin):");
    println!(
        "{:>6} {:>12} {:>12} {:>14} {:>10}    median us: providers, validate, handler, evaluators",
        "N", "median", "p95", "messages/s", "loaded"
    );
    let mut medians = Vec::new();
    let runs = sizes.iter().flat_map(|&n| {
        let plain = (n, format!("bench-{n}"), format!("{n}"));
        let triggered = (n, format!("bench-triggers-{n}"), format!("{n}+t"));
        std::iter::once(plain).chain([100, 1000].contains(&n).then_some(triggered))
    });
    for (n, feature, label) in runs {
        let file = test_support::fixture(&feature);
        let dir = test_support::folder_with(&[file]);
        let host = PluginHost::new(HostOptions::default()).expect("host");
        let report = host.load_dir(dir.path()).expect("load");
        assert!(report.is_clean(), "{:?}", report.failures.first());
        assert_eq!(report.loaded.len(), n);
        let message = InboundMessage {
            id: "bench".into(),
            sender: "bench".into(),
            text: "bench: what is new today?".into(),
            ..InboundMessage::default()
        };
        let warmup = reply_check(&host, &message);
        assert_eq!(warmup.evaluations.len(), 2 * n, "{:?}", warmup.errors);
        let repeat: usize = std::env::var("AGENT_HOST_BENCH_REPEAT")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        let count = (200_000 / n).clamp(300, 5_000) * repeat;
        for _ in 0..count / 10 {
            host.handle_message(message.clone());
        }
        let mut times = Vec::with_capacity(count);
        let mut phases = Phases::default();
        let started = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            let reply = host.handle_message(message.clone());
            times.push(t.elapsed());
            phases.record(&reply);
            std::hint::black_box(reply);
        }
        let total = started.elapsed();
        times.sort();
        let median = percentile(&times, 0.5);
        if !label.ends_with('t') {
            medians.push((n, median));
        }
        let phase_medians = phases.medians();
        println!(
            "{label:>6} {:>9.1} us {:>9.1} us {:>14.0} {:>10}    {:>4} {:>4} {:>4} {:>4}",
            median.as_secs_f64() * 1e6,
            percentile(&times, 0.95).as_secs_f64() * 1e6,
            count as f64 / total.as_secs_f64(),
            report.loaded.len(),
            phase_medians[0],
            phase_medians[1],
            phase_medians[2],
            phase_medians[3],
        );
        host.shutdown();
    }
    let find = |n: usize| {
        medians
            .iter()
            .find(|(size, _)| *size == n)
            .map(|(_, m)| m.as_secs_f64())
    };
    if let (Some(hundred), Some(thousand)) = (find(100), find(1000)) {
        println!("ratio N=1000 / N=100: {:.2}", thousand / hundred);
    }
}

fn reply_check(host: &PluginHost, message: &InboundMessage) -> agent_host::Reply {
    let reply = host.handle_message(message.clone());
    assert!(reply.ok, "{reply:?}");
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    reply
}
