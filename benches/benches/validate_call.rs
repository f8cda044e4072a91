//! One `validate` call through the SDK and the FFI boundary, against the same
//! check as a direct `#[inline(never)]` Rust call. Target: within 3 ns.
//!
//! Run: `cargo bench -p agent-host-benches --bench validate_call`

use agent_host::{HostOptions, PluginHost};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// The same body as the fixture plugin's `PING` action validate.
#[inline(never)]
fn direct_validate(text: &str) -> bool {
    text.starts_with("ping")
}

fn validate(c: &mut Criterion) {
    let dir = test_support::folder_with(&[test_support::fixture("")]);
    let host = PluginHost::new(HostOptions::default()).expect("host");
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    let probe = host.validate_probe("fixture").expect("fixture loaded");
    let text = String::from("ping please");
    let context = String::from("{}");
    let mut group = c.benchmark_group("validate");
    group.bench_function("direct inline(never) call", |b| {
        b.iter(|| direct_validate(black_box(text.as_str())))
    });
    group.bench_function("through the SDK and FFI", |b| {
        // Both benchmarks hand criterion a bool, as the pipeline consumes it.
        b.iter(|| probe.validate(0, "m1", black_box(text.as_str()), &context))
    });
    group.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
