//! `cluster-load`: one agent on three hosts under load, on the real NATS
//! and PostgreSQL servers of this machine, measured from outside as its
//! clients see it.
//!
//! ```sh
//! cargo build --release -p agent-host && cargo xtask build-plugins
//! cargo run --release -p agent-host-benches --bin cluster-load -- kill
//! cargo run --release -p agent-host-benches --bin cluster-load -- reload
//! cargo run --release -p agent-host-benches --bin cluster-load -- overhead
//! ```
//!
//! - `kill`: 3 hosts, 4 clients send 10,000 messages in all that each store a
//!   note (`notes` on the `database` plugin, on PostgreSQL); one host is
//!   killed with SIGKILL halfway. Every message must be answered, none
//!   lost, none stored twice (the notes table holds one row per distinct
//!   id), and the messages the dead host held are answered within twice
//!   the ack deadline.
//! - `reload`: the same load while `agent-host reload notes --cluster`
//!   rolls a reload over the 3 hosts: every request must succeed.
//! - `overhead`: one client's messages one at a time on a single-process
//!   host, a 1-host cluster and a 3-host cluster (median and p99 per
//!   message), then 4 clients' throughput on each.
//!
//! Options: `--messages N`, `--clients N`, `--ack-wait-ms N`, `--binary
//! PATH` (default `target/release/agent-host`), `--plugins DIR` (default
//! `target/plugins`), `--keep` (leave the configs and logs). The servers are
//! `AGENT_TEST_NATS_URL` and `AGENT_TEST_POSTGRES_URL`, else this machine's.
//! The schema, streams and buckets of a run are its own, removed at the end.

mod hosts;
mod load;

use hosts::{Host, Setup};
use load::{Load, Outcome};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use test_support::servers::{unique_name, Server};

/// The options of a run.
struct Options {
    scenario: String,
    messages: usize,
    clients: usize,
    ack_wait_ms: u64,
    binary: PathBuf,
    plugins: PathBuf,
    keep: bool,
}

fn options() -> Result<Options, String> {
    let root = test_support::workspace_root();
    let mut options = Options {
        scenario: "kill".into(),
        messages: 10_000,
        clients: 4,
        ack_wait_ms: 5_000,
        binary: root.join("target/release/agent-host"),
        plugins: root.join("target/plugins"),
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--messages" => options.messages = value()?.parse().map_err(|e| format!("{e}"))?,
            "--clients" => options.clients = value()?.parse().map_err(|e| format!("{e}"))?,
            "--ack-wait-ms" => {
                options.ack_wait_ms = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--binary" => options.binary = value()?.into(),
            "--plugins" => options.plugins = value()?.into(),
            "--keep" => options.keep = true,
            "kill" | "reload" | "overhead" => options.scenario = arg,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.clients == 0 || options.messages == 0 {
        return Err("--clients and --messages must be positive".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("cluster-load: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let options = options()?;
    for server in [Server::Nats, Server::Postgres] {
        if test_support::servers::require(server, "cluster-load").is_none() {
            return Err("a server is missing".into());
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let setup = Setup {
        binary: options.binary.clone(),
        plugins: options.plugins.clone(),
        base_config: test_support::workspace_root().join("agent.toml"),
        nats_url: Server::Nats.url(),
        postgres_url: Server::Postgres.url(),
        agent: unique_name("load"),
        schema: unique_name("load"),
        ack_wait_ms: options.ack_wait_ms,
        dir: dir.path().to_path_buf(),
    };
    let result = match options.scenario.as_str() {
        "kill" => kill(&setup, &options),
        "reload" => reload(&setup, &options),
        _ => overhead(&setup, &options),
    };
    hosts::clean_up(&setup);
    if options.keep {
        let kept = dir.keep();
        println!("configs and logs kept in {}", kept.display());
    }
    result
}

/// Starts `count` hosts of the cluster and waits until each serves.
fn start_cluster(setup: &Setup, count: usize) -> Result<Vec<Host>, String> {
    let hosts = (1..=count)
        .map(|i| setup.start(&format!("h{i}"), true))
        .collect::<Result<Vec<_>, _>>()?;
    hosts::wait_until_serving(&hosts)?;
    Ok(hosts)
}

/// A message that stores a note, keyed by its id.
fn remember(id: &str) -> String {
    format!("remember load note {id}")
}

/// A message one bundled action answers without a server.
fn weather(_: &str) -> String {
    "what's the weather in Tokyo".to_string()
}

/// Runs `options`' load of notes on `hosts` and, once `1/part` of its
/// messages are answered, `midway`. Returns the outcomes, what `midway`
/// gave, when it began and how long the load took (both from the load's
/// start).
fn notes_load_with<T: Send>(
    hosts: &[std::net::SocketAddr],
    options: &Options,
    retry_statuses: bool,
    part: usize,
    midway: impl FnOnce() -> T + Send,
) -> (Vec<Outcome>, T, Duration, Duration) {
    let dead: Vec<AtomicBool> = hosts.iter().map(|_| AtomicBool::new(false)).collect();
    let answered = AtomicUsize::new(0);
    let load = Load {
        hosts: hosts.to_vec(),
        dead: &dead,
        clients: options.clients,
        messages: options.messages,
        run: unique_name("m"),
        text: remember,
        answered: &answered,
        retry_statuses,
    };
    let start = Instant::now();
    let (outcomes, given, began) = std::thread::scope(|scope| {
        let running = scope.spawn(|| load.run(start));
        while answered.load(Ordering::Relaxed) < options.messages / part && !running.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let began = start.elapsed();
        let given = midway();
        (running.join().unwrap_or_default(), given, began)
    });
    (outcomes, given, began, start.elapsed())
}

fn kill(setup: &Setup, options: &Options) -> Result<bool, String> {
    let mut hosts = start_cluster(setup, 3)?;
    let addresses: Vec<_> = hosts.iter().map(|h| h.address).collect();
    let (outcomes, (), killed_at, elapsed) =
        notes_load_with(&addresses, options, true, 2, || hosts[1].kill());
    let (rows, distinct) = hosts::count_notes(setup)?;
    let held: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent < killed_at && o.answered > killed_at)
        .collect();
    let worst_after_kill = held
        .iter()
        .map(|o| o.answered - killed_at)
        .max()
        .unwrap_or_default();
    let answered_ok = outcomes.iter().filter(|o| o.ok).count();
    let retried = outcomes.iter().filter(|o| o.attempts > 1).count();
    let limit = Duration::from_millis(2 * options.ack_wait_ms);
    println!("| kill -9 of 1 of 3 hosts under load | |");
    println!("|---|---|");
    println!("| messages sent (distinct ids) | {} |", options.messages);
    println!("| answered ok | {answered_ok} |");
    println!("| retried by a client (lost connection) | {retried} |");
    println!("| notes rows / distinct ids in the table | {rows} / {distinct} |");
    println!("| in flight at the kill | {} |", held.len());
    println!(
        "| slowest of them, answered after the kill | {} ms (limit 2 x ack wait = {} ms) |",
        worst_after_kill.as_millis(),
        limit.as_millis()
    );
    println!(
        "| throughput | {:.0} messages/s over {:.1} s |",
        options.messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    print_failures(&outcomes);
    Ok(answered_ok == options.messages
        && rows == options.messages as u64
        && distinct == rows
        && worst_after_kill <= limit)
}

fn reload(setup: &Setup, options: &Options) -> Result<bool, String> {
    let hosts = start_cluster(setup, 3)?;
    let addresses: Vec<_> = hosts.iter().map(|h| h.address).collect();
    let (outcomes, rolled, _, _) = notes_load_with(&addresses, options, false, 4, || {
        let began = Instant::now();
        let status = std::process::Command::new(&setup.binary)
            .args(["reload", "notes", "--cluster", "--force", "--config"])
            .arg(&hosts[0].config)
            .status();
        (status, began.elapsed())
    });
    let (status, took) = rolled;
    let rolled_ok = matches!(&status, Ok(s) if s.success());
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    println!("| rolling reload of notes over 3 hosts under load | |");
    println!("|---|---|");
    println!("| messages | {} |", options.messages);
    println!("| failed requests | {failed} |");
    println!(
        "| the roll | {} in {:.1} s |",
        if rolled_ok { "succeeded" } else { "FAILED" },
        took.as_secs_f64()
    );
    print_failures(&outcomes);
    Ok(rolled_ok && failed == 0)
}

fn overhead(setup: &Setup, options: &Options) -> Result<bool, String> {
    let sequential = options.messages.min(2_000);
    let mut rows = Vec::new();
    let single = setup.start("single", false)?;
    hosts::wait_until_serving(std::slice::from_ref(&single))?;
    rows.push(("single process", latencies(&[&single], 1, sequential)?));
    let single_throughput = throughput(&[&single], options.clients, options.messages)?;
    drop(single);
    let one = start_cluster(setup, 1)?;
    rows.push(("cluster, 1 host", latencies(&[&one[0]], 1, sequential)?));
    let one_throughput = throughput(&[&one[0]], options.clients, options.messages)?;
    drop(one);
    let three = start_cluster(setup, 3)?;
    let all: Vec<&Host> = three.iter().collect();
    rows.push(("cluster, 3 hosts", latencies(&all, 1, sequential)?));
    let three_throughput = throughput(&all, options.clients, options.messages)?;
    println!("| one client, one message at a time ({sequential} messages) | median | p99 |");
    println!("|---|---|---|");
    for (name, mut list) in rows {
        list.sort();
        println!(
            "| {name} | {} us | {} us |",
            percentile(&list, 50).as_micros(),
            percentile(&list, 99).as_micros()
        );
    }
    println!();
    println!(
        "| {} clients, {} messages | messages/s |",
        options.clients, options.messages
    );
    println!("|---|---|");
    println!("| single process | {single_throughput:.0} |");
    println!("| cluster, 1 host | {one_throughput:.0} |");
    println!("| cluster, 3 hosts | {three_throughput:.0} |");
    Ok(true)
}

/// The latency of each message of a load on `hosts`.
fn latencies(hosts: &[&Host], clients: usize, messages: usize) -> Result<Vec<Duration>, String> {
    let outcomes = simple_load(hosts, clients, messages)?;
    Ok(outcomes.iter().map(|o| o.answered - o.sent).collect())
}

/// Messages per second of a load on `hosts`.
fn throughput(hosts: &[&Host], clients: usize, messages: usize) -> Result<f64, String> {
    let start = Instant::now();
    simple_load(hosts, clients, messages)?;
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

/// Weather questions to `hosts`; an error when one is not answered.
fn simple_load(hosts: &[&Host], clients: usize, messages: usize) -> Result<Vec<Outcome>, String> {
    let dead: Vec<AtomicBool> = hosts.iter().map(|_| AtomicBool::new(false)).collect();
    let answered = AtomicUsize::new(0);
    let load = Load {
        hosts: hosts.iter().map(|h| h.address).collect(),
        dead: &dead,
        clients,
        messages,
        run: unique_name("m"),
        text: weather,
        answered: &answered,
        retry_statuses: false,
    };
    let outcomes = load.run(Instant::now());
    match outcomes.iter().find(|o| !o.ok) {
        Some(failed) => Err(format!("message {} failed: {:?}", failed.id, failed.error)),
        None => Ok(outcomes),
    }
}

/// The `p`th percentile of a sorted list.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Prints the first few messages that failed.
fn print_failures(outcomes: &[Outcome]) {
    for outcome in outcomes.iter().filter(|o| !o.ok).take(5) {
        println!(
            "failed: {} after {} attempts: {}",
            outcome.id,
            outcome.attempts,
            outcome.error.as_deref().unwrap_or("not ok")
        );
    }
}
