//! Integration tests on real plugin files (built by `test-support`) loaded
//! into a real host, in one test binary (one link of the host instead of one
//! per file). The helpers shared by these modules are the crate's library,
//! `agent_host_tests`. No test needs a process of its own: the one
//! process-wide setting, the tracing subscriber that `notes` installs to read
//! the plugin log, collects every module's plugin lines, and `notes` reads
//! only the lines naming its own database URL.

mod database;
mod deadlines;
mod examples;
mod failure_isolation;
mod hardening;
mod hot_reload;
mod lazy;
mod lifecycle;
mod middleware;
mod notes;
mod panic_safety;
mod runtime;
mod schema_defaults;
mod service_errors;
mod state_budget;
mod trust;
mod watch;
mod weather_online;
