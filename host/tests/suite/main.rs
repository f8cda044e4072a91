//! The host's integration tests: the `agent-host` binary and the library's
//! public API on real plugin files, in one test binary (one link of the
//! host instead of one per file). No test here needs a process of its own:
//! the ones that change process-wide state run `agent-host` as a child.

mod common;

mod abi_1_0;
mod auth;
mod cli;
mod cluster_front_ends;
mod cluster_members;
mod cluster_messages;
mod console;
mod database_pool;
mod faults;
mod hostile_worker;
mod http;
mod isolation;
mod isolation_groups;
mod lifecycle;
mod panic_strategy;
mod trust;
