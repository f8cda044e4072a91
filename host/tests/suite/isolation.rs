//! Isolated plugins on real plugin files: the `isolated` fixture holds two
//! plugins, `faulty` (run in a worker process by these configs) and
//! `neighbour` (in process). Every fault of `faulty` ends its worker, never
//! the host or `neighbour`; the call gets an error naming the plugin and the
//! cause, and the worker is restarted. Services and events cross between
//! the two places both ways.

use crate::common::wait_until;
use agent_host::testing::TestAgent;
use agent_host::{AgentConfig, HostOptions, InboundMessage, Reply};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_agent-host");

fn agent(extra: &str) -> TestAgent {
    let config =
        format!("[isolation]\nprocess = [\"faulty\"]\nworker_program = \"{WORKER}\"\n{extra}");
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&[test_support::fixture("isolated")], options).expect("stage");
    assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
    agent
}

fn say(agent: &TestAgent, text: &str) -> Reply {
    agent.host.handle_message(InboundMessage {
        text: text.into(),
        ..InboundMessage::default()
    })
}

/// The `counter` fixture's answer to `count` on `host`.
fn count(host: &agent_host::PluginHost) -> String {
    host.handle_message(InboundMessage {
        text: "count".into(),
        ..InboundMessage::default()
    })
    .text
}

fn worker_pid(agent: &TestAgent) -> Option<u32> {
    agent.host.status("faulty")?.worker?.pid
}

/// Waits until `faulty` serves from a worker other than `old`; its pid.
fn serving_again(agent: &TestAgent, old: u32) -> (u32, Duration) {
    let started = Instant::now();
    loop {
        if let Some(pid) = worker_pid(agent).filter(|pid| *pid != old) {
            let reply = say(agent, "fault ping");
            if reply.text.starts_with("pong from ") {
                return (pid, started.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "faulty never served again after its worker {old} died"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_isolated_plugin_runs_in_its_own_process_and_the_other_in_the_host() {
    let agent = agent("");
    let faulty = agent.host.status("faulty").expect("faulty");
    let neighbour = agent.host.status("neighbour").expect("neighbour");
    assert_eq!(faulty.placement.to_string(), "process");
    assert_eq!(neighbour.placement.to_string(), "in-process");
    assert!(neighbour.worker.is_none());
    let worker = faulty.worker.expect("a worker");
    let pid = worker.pid.expect("a worker pid");
    assert_ne!(pid, std::process::id());
    let reply = say(&agent, "fault ping");
    // In a PID namespace of its own the worker is process 2, after the
    // namespace's init.
    let seen_as = if worker.protections.pid_namespace {
        2
    } else {
        pid
    };
    assert_eq!(
        reply.text,
        format!("pong from {seen_as}"),
        "{:?}",
        reply.errors
    );
    let hello = agent
        .host
        .call_service("neighbour", "hello", &Value::Null)
        .expect("neighbour");
    assert_eq!(hello, json!(format!("hello from {}", std::process::id())));
}

#[test]
fn services_cross_from_the_host_to_the_worker_and_back() {
    let agent = agent("");
    // neighbour (in process) -> faulty (worker) -> neighbour (in process).
    let said = agent
        .host
        .call_service("neighbour", "round_trip", &Value::Null)
        .expect("round trip");
    assert_eq!(
        said,
        json!(format!("neighbour said: hello from {}", std::process::id()))
    );
}

#[test]
fn events_cross_both_ways() {
    let agent = agent("");
    // neighbour emits neighbour:ping; faulty (worker) hears it and emits
    // faulty:pong; neighbour hears that.
    agent
        .host
        .call_service("neighbour", "ping_faulty", &Value::Null)
        .expect("ping");
    let started = Instant::now();
    loop {
        let pongs = agent
            .host
            .call_service("neighbour", "pongs", &Value::Null)
            .expect("pongs");
        if pongs == json!(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no pong: {pongs}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Commits `fault` in the worker; returns the reply's errors and the time
/// until the plugin serves again.
fn commit(agent: &TestAgent, fault: &str) -> (String, Duration) {
    let old = worker_pid(agent).expect("a worker");
    let reply = say(agent, &format!("fault {fault}"));
    assert!(!reply.ok, "{fault}: {reply:?}");
    let errors = reply.errors.join("\n");
    assert!(errors.contains("plugin 'faulty'"), "{fault}: {errors}");
    let (_, took) = serving_again(agent, old);
    // The neighbour in the host never noticed.
    agent
        .host
        .call_service("neighbour", "hello", &Value::Null)
        .expect("neighbour still serves");
    (errors, took)
}

#[test]
fn every_fault_ends_the_worker_never_the_host() {
    let agent =
        agent("quarantine_after_crashes = 100\n[isolation.plugins.faulty]\nmemory_mb = 256\n");
    let mut table = Vec::new();
    for (fault, cause) in [
        ("abort", "signal 6 (SIGABRT)"),
        ("exit", "exited with code 3"),
        ("segv", "signal 11 (SIGSEGV)"),
        ("overflow", "signal"),
        ("alloc", "signal 6 (SIGABRT)"),
        ("loop", "timed out after 500 ms"),
    ] {
        let (errors, took) = commit(&agent, fault);
        assert!(
            errors.contains(cause),
            "{fault}: expected {cause:?} in {errors}"
        );
        table.push(format!("{fault}: serving again after {took:?}: {errors}"));
    }
    let status = agent
        .host
        .status("faulty")
        .and_then(|s| s.worker)
        .expect("worker");
    assert_eq!(status.restarts, 6, "{status:?}");
    assert!(status.last_crash.is_some());
    // A worker that keeps restarting degrades the host's health.
    let health = agent.host.health();
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(
        health.reasons.iter().any(
            |r| r.starts_with("plugin 'faulty' keeps restarting: its worker restarted 6 times")
        ),
        "{health:?}"
    );
    eprintln!("{}", table.join("\n"));
}

#[test]
fn a_plugin_that_keeps_crashing_is_quarantined_and_says_so() {
    let agent = agent("quarantine_after_crashes = 2\n");
    let old = worker_pid(&agent).expect("a worker");
    say(&agent, "fault abort");
    serving_again(&agent, old);
    say(&agent, "fault abort");
    let started = Instant::now();
    let quarantined = loop {
        let status = agent
            .host
            .status("faulty")
            .and_then(|s| s.worker)
            .expect("worker");
        if let Some(why) = status.quarantined {
            break why;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{status:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        quarantined.contains("quarantined after 2 crashes"),
        "{quarantined}"
    );
    let reply = say(&agent, "fault ping");
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("quarantined after 2 crashes")),
        "{reply:?}"
    );
}

#[test]
fn the_status_of_a_plugin_whose_worker_is_quarantined_says_so_and_counts_its_restarts() {
    let agent = agent("quarantine_after_crashes = 2\n");
    let old = worker_pid(&agent).expect("a worker");
    say(&agent, "fault abort");
    serving_again(&agent, old);
    say(&agent, "fault abort");
    wait_until("the worker's quarantine", || {
        agent
            .host
            .status("faulty")
            .and_then(|s| s.worker)
            .is_some_and(|w| w.quarantined.is_some())
    });
    let status = agent.host.status("faulty").expect("faulty");
    assert!(status.quarantined, "the top level says so too: {status:?}");
    assert_eq!(status.state, "quarantined");
    assert!(
        status
            .state_reason
            .as_deref()
            .is_some_and(|why| why.contains("quarantined after 2 crashes")),
        "{status:?}"
    );
    assert_eq!(status.worker.as_ref().map(|w| w.restarts), Some(1));
    assert_eq!(
        (status.stats.crashes, status.stats.restarts),
        (2, 1),
        "{status:?}"
    );
    let health = agent.host.health();
    assert_eq!(health.status, "degraded");
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.starts_with("plugin 'faulty' is quarantined: quarantined after 2 crashes")),
        "{health:?}"
    );
    let metrics = agent.host.metrics_text();
    for (cause, count) in [("crashed", 2), ("restarted", 1), ("quarantined", 1)] {
        let line = format!(
            r#"agent_host_plugin_faults_total{{plugin="faulty",entry="worker",cause="{cause}"}} {count}"#
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // The neighbour in the host is unharmed.
    assert_eq!(
        agent.host.status("neighbour").map(|s| s.state),
        Some("serving")
    );
}

#[test]
fn a_worker_killed_from_outside_while_serving_is_replaced() {
    let agent = agent("");
    let old = worker_pid(&agent).expect("a worker");
    let mut events = agent.host.events();
    let mut looping = agent.host.events();
    let reply = std::thread::scope(|scope| {
        let slow = scope.spawn(|| say(&agent, "fault loop"));
        // Killed once the call runs in the worker: the plugin says so.
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            match looping.try_recv() {
                Ok(event) if event.name == "faulty:looping" => break,
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => {
                    assert!(Instant::now() < give_up, "the call never began");
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &old.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        slow.join().expect("the call returned")
    });
    // FAULT is not marked idempotent: its handler is not run again on the
    // new worker, and the message fails with the crash's cause.
    assert!(
        reply
            .errors
            .iter()
            .any(|e| e.contains("plugin 'faulty'") && e.contains("SIGKILL")),
        "{reply:?}"
    );
    let (new, _) = serving_again(&agent, old);
    let mut looped_again = false;
    while let Ok(event) = looping.try_recv() {
        looped_again |= event.name == "faulty:looping";
    }
    assert!(!looped_again, "the handler ran again on the new worker");
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.payload["plugin"] == json!("faulty") {
            seen.push((event.name.clone(), event.payload.clone()));
        }
    }
    let crashed = seen.iter().find(|(name, _)| name == "plugin:crashed");
    let restarted = seen.iter().find(|(name, _)| name == "plugin:restarted");
    assert!(
        crashed.is_some_and(|(_, p)| p["pid"] == json!(old)
            && p["cause"].as_str().is_some_and(|c| c.contains("SIGKILL"))),
        "{seen:?}"
    );
    assert!(
        restarted.is_some_and(|(_, p)| p["pid"] == json!(new)),
        "{seen:?}"
    );
}

/// A kill -9 of the worker while 4 threads send it 200 messages: the
/// messages that come while it restarts wait for the new worker (their
/// deadlines are far longer than a restart), a validate or evaluators
/// round the worker took with it is asked again of the new one, and so is
/// a handler of an idempotent action running in it: no message fails.
#[test]
fn messages_wait_for_a_worker_killed_under_load_to_come_back() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let agent = agent("");
    let old = worker_pid(&agent).expect("a worker");
    let answered = AtomicUsize::new(0);
    let failed: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = Vec::new();
                    for _ in 0..PER_THREAD {
                        let reply = say(&agent, "fault ping");
                        if !reply.ok || !reply.text.starts_with("pong from ") {
                            failed.push(format!("{:?}", reply.errors));
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    failed
                })
            })
            .collect();
        wait_until("40 messages answered", || {
            answered.load(Ordering::SeqCst) >= 40
        });
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &old.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        senders
            .into_iter()
            .flat_map(|sender| sender.join().expect("a sender"))
            .collect()
    });
    println!(
        "{} of {} messages failed across a kill -9 of the worker: {failed:?}",
        failed.len(),
        THREADS * PER_THREAD
    );
    let (new, _) = serving_again(&agent, old);
    assert_ne!(new, old);
    // A validate or evaluator round lost with the worker is asked again of
    // the new one, and so is the PING handler, which is marked idempotent.
    assert!(
        failed.is_empty(),
        "messages failed across the kill: {failed:?}"
    );
}

/// A message that comes while the worker waits out a long restart backoff
/// waits for it only within its own deadline, then fails saying why.
#[test]
fn a_message_whose_deadline_passes_while_the_worker_restarts_fails_saying_so() {
    let agent = agent("restart_backoff_ms = 4000\nrestart_backoff_max_ms = 4000\n");
    let old = worker_pid(&agent).expect("a worker");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_until("the worker's death to be noticed", || {
        worker_pid(&agent).is_none()
    });
    let reply = say(&agent, "fault ping");
    assert!(
        reply.errors.iter().any(|e| e.contains("plugin 'faulty'")
            && e.contains(&format!(
                "the worker (pid {old}) was restarting and did not come back within"
            ))),
        "{reply:?}"
    );
    serving_again(&agent, old);
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn a_reload_under_load_swaps_workers_and_loses_nothing() {
    let agent = agent("");
    let first = worker_pid(&agent).expect("a worker");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, failed, pids) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let (mut sent, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = say(&agent, "fault ping");
                sent += 1;
                if !reply.ok || !reply.text.starts_with("pong from ") {
                    failed.push(format!("{reply:?}"));
                }
            }
            (sent, failed)
        });
        let mut pids = vec![first];
        for _ in 0..5 {
            agent
                .host
                .reload_as(
                    "faulty",
                    None,
                    agent_host::ReloadOrigin::Api,
                    agent_host::WhenUnchanged::Reload,
                )
                .expect("reload");
            pids.push(worker_pid(&agent).expect("a worker"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (sent, failed) = load.join().expect("load");
        (sent, failed, pids)
    });
    assert!(sent > 0);
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        6,
        "every reload starts a new worker: {pids:?}"
    );
    let last = *pids.last().expect("pids");
    for pid in &pids[..5] {
        wait_until(&format!("old worker {pid} to end"), || !alive(*pid));
    }
    assert!(alive(last));
    let status = agent.host.status("faulty").expect("status");
    assert_eq!(
        status.worker.expect("worker").restarts,
        0,
        "a reload is not a crash"
    );
}

#[test]
fn watch_reloads_an_isolated_plugin_with_its_state() {
    use agent_host::PluginHost;
    let config = format!("[isolation]\nprocess = [\"counter\"]\nworker_program = \"{WORKER}\"\n");
    let options = HostOptions {
        config: AgentConfig::parse(&config).expect("config"),
        ..HostOptions::default()
    };
    let dir = test_support::folder_with(&[]);
    let file = dir.path().join(format!("counter.{}", test_support::EXT));
    std::fs::copy(test_support::fixture("counter-v1"), &file).expect("copy");
    let host = std::sync::Arc::new(PluginHost::new(options).expect("host"));
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");
    assert_eq!(count(&host), "v1: 1");
    let old = host
        .status("counter")
        .and_then(|s| s.worker)
        .and_then(|w| w.pid)
        .expect("pid");
    let staging = file.with_extension("staging");
    std::fs::copy(test_support::fixture("counter-v2"), &staging).expect("copy");
    std::fs::rename(&staging, &file).expect("rename");
    wait_until("the v2 reload", || {
        host.status("counter").map(|s| s.version).as_deref() == Some("2.0.0")
    });
    assert_eq!(
        count(&host),
        "v2: 2",
        "the count crossed from the old worker to the new"
    );
    let new = host
        .status("counter")
        .and_then(|s| s.worker)
        .and_then(|w| w.pid)
        .expect("pid");
    assert_ne!(old, new);
    wait_until("the old worker to end", || !alive(old));
}

#[test]
fn the_status_shows_the_protections_in_force() {
    let Some((agent, _folder)) = sandboxed(&[]) else {
        return;
    };
    let worker = agent
        .host
        .status("faulty")
        .and_then(|s| s.worker)
        .expect("worker");
    let p = &worker.protections;
    assert!(
        p.no_new_privs
            && p.landlock_filesystem
            && p.landlock_network
            && p.landlock_scopes
            && p.seccomp
            && p.resource_limits,
        "{worker:?}"
    );
    assert!(p.missing.is_empty(), "{:?}", p.missing);
}

/// An agent whose config (written to a file, as an operator's would be)
/// grants `faulty` exactly `grants` besides what the fixture needs.
/// `None` when the kernel has no landlock (the reason is printed).
fn sandboxed(grants: &[String]) -> Option<(TestAgent, tempfile::TempDir)> {
    let mut faulty = vec![
        "service:neighbour".to_string(),
        "event:emit:faulty:*".to_string(),
    ];
    faulty.extend(grants.iter().cloned());
    let config = format!(
        "[isolation]\nprocess = [\"faulty\"]\nworker_program = \"{WORKER}\"\n\
         [grants]\nfaulty = {faulty:?}\nneighbour = [\"service:faulty\", \"event:emit:neighbour:*\"]\n"
    );
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("agent.toml"), &config).expect("config file");
    let options = HostOptions {
        config: AgentConfig::load(&folder.path().join("agent.toml")).expect("config"),
        ..HostOptions::default()
    };
    let agent = TestAgent::load_with(&[test_support::fixture("isolated")], options).expect("stage");
    if let Some(failure) = agent.report.failures.first() {
        let line = failure.to_string();
        if line.contains("landlock") && line.contains("not supported") {
            eprintln!("skipped: this kernel has no landlock ({line})");
            return None;
        }
        panic!("{line}");
    }
    Some((agent, folder))
}

fn attempt(agent: &TestAgent, method: &str, argument: Value) -> Value {
    agent
        .host
        .call_service("faulty", method, &argument)
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn refused(outcome: &Value) -> bool {
    outcome["ok"] == json!(false)
        && outcome["error"]
            .as_str()
            .is_some_and(|e| e.contains("Permission denied") || e.contains("os error 13"))
}

#[test]
fn with_no_grant_an_isolated_plugin_reads_writes_and_connects_nowhere() {
    let Some((agent, folder)) = sandboxed(&[]) else {
        return;
    };
    let shadow = attempt(&agent, "read", json!("/etc/shadow"));
    assert!(refused(&shadow), "/etc/shadow: {shadow}");
    let own_config = folder.path().join("agent.toml");
    let config = attempt(&agent, "read", json!(own_config));
    assert!(refused(&config), "the agent's config: {config}");
    let target = folder.path().join("written.txt");
    let write = attempt(&agent, "write", json!(target));
    assert!(refused(&write), "a write: {write}");
    assert!(!target.exists());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let connect = attempt(&agent, "connect", json!(port));
    assert!(refused(&connect), "a loopback connection: {connect}");
    // The host itself can still do all of it.
    std::fs::read_to_string(&own_config).expect("the host reads its config");
}

#[test]
fn grants_open_exactly_what_they_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let (readable, writable, other) = (
        root.path().join("readable"),
        root.path().join("writable"),
        root.path().join("other"),
    );
    for dir in [&readable, &writable, &other] {
        std::fs::create_dir(dir).expect("dir");
        std::fs::write(dir.join("file.txt"), "data").expect("file");
        // Only the sandbox may stand between the worker and these files.
        open_to_the_worker_user(dir);
    }
    open_to_the_worker_user(root.path());
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    let grants = [
        format!("filesystem:read:{}", readable.display()),
        format!("filesystem:write:{}", writable.display()),
        format!("network:connect:{}", port(&open)),
    ];
    let Some((agent, _folder)) = sandboxed(&grants) else {
        return;
    };
    let read = |path: std::path::PathBuf| attempt(&agent, "read", json!(path));
    let write = |path: std::path::PathBuf| attempt(&agent, "write", json!(path));
    assert_eq!(read(readable.join("file.txt"))["ok"], json!(true));
    assert!(refused(&read(other.join("file.txt"))));
    assert_eq!(write(writable.join("new.txt"))["ok"], json!(true));
    assert_eq!(
        std::fs::read_to_string(writable.join("new.txt")).expect("written"),
        "written by faulty"
    );
    assert!(refused(&write(readable.join("new.txt"))));
    assert!(refused(&write(other.join("new.txt"))));
    let connected = attempt(&agent, "connect", json!(port(&open)));
    assert_eq!(connected["ok"], json!(true), "{connected}");
    assert!(refused(&attempt(&agent, "connect", json!(port(&closed)))));
}

/// Makes `path` (and what it holds) the worker user's when the tests run
/// as root, as an operator gives a root agent's workers (which run as
/// `nobody`) the folders it grants them.
#[cfg(unix)]
fn open_to_the_worker_user(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let nobody = Some(65534);
    std::os::unix::fs::chown(path, nobody, nobody).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("a folder") {
            let entry = entry.expect("an entry").path();
            std::os::unix::fs::chown(&entry, nobody, nobody).expect("chown");
        }
    }
}

#[cfg(not(unix))]
fn open_to_the_worker_user(_path: &std::path::Path) {}

#[test]
fn the_lock_and_signatures_hold_for_isolated_plugins() {
    use agent_host::trust::{digest::sha256_hex, lock, signature};
    use agent_host::{LoadError, OpenError, PluginHost};
    let dir = test_support::folder_with(&[]);
    let file = dir.path().join(format!("counter.{}", test_support::EXT));
    std::fs::copy(test_support::fixture("counter-v1"), &file).expect("copy");
    let stranger = dir.path().join(format!("fixture.{}", test_support::EXT));
    let bytes = std::fs::read(&file).expect("read");
    let operator = tempfile::tempdir().expect("tempdir");
    let mut pins = lock::LockFile::new();
    pins.pin(lock::LockedFile {
        name: format!("counter.{}", test_support::EXT),
        sha256: sha256_hex(&bytes),
        plugins: Vec::new(),
    });
    let lock_path = operator.path().join("plugins.lock");
    pins.write(&lock_path).expect("lock");
    let (_, secret, public) = signature::generate(None).expect("keys");
    let secret = signature::secret_key_from_text(&secret).expect("secret");
    let sign = |path: &std::path::Path| {
        let text =
            signature::sign(&std::fs::read(path).expect("read"), &secret, "f").expect("sign");
        std::fs::write(signature::signature_path(path), text).expect("write");
    };
    sign(&file);
    // Signed, but not pinned: the lock refuses it.
    std::fs::copy(test_support::fixture(""), &stranger).expect("copy");
    sign(&stranger);

    let mut config = AgentConfig::parse(&format!(
        "[isolation]\ndefault = \"process\"\nworker_program = \"{WORKER}\"\n"
    ))
    .expect("config");
    config.trust.lock = Some(lock_path);
    config.trust.public_keys = vec![public];
    let host = PluginHost::new(HostOptions {
        config,
        ..HostOptions::default()
    })
    .expect("host");
    let report = host.load_dir(dir.path()).expect("load");
    let refusal = |error: &LoadError| match error {
        LoadError::Open(OpenError::Refused(refusal)) => Some(refusal.reason.label()),
        _ => None,
    };
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(report.failures[0]
        .file
        .ends_with(stranger.file_name().expect("name")));
    assert_eq!(refusal(&report.failures[0].error), Some("not_in_lock"));
    let status = host.status("counter").expect("counter loads");
    assert_eq!(status.placement.to_string(), "process");
    assert_eq!(status.sha256, sha256_hex(&bytes));
    let pid = status.worker.and_then(|w| w.pid).expect("a worker");
    assert_eq!(count(&host), "v1: 1");

    // One byte changed, the signature kept: the probe never runs it.
    let mut changed = bytes.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x01;
    std::fs::write(&file, &changed).expect("write");
    let failure = host.reload("counter").expect_err("refused");
    assert!(failure.to_string().contains("hash differs"), "{failure}");
    assert_eq!(count(&host), "v1: 2");
    let status = host.status("counter").expect("still serving");
    assert_eq!(
        status.worker.and_then(|w| w.pid),
        Some(pid),
        "the same worker"
    );

    // Pinned bytes with a bad signature: refused by the signature check.
    std::fs::write(&file, &bytes).expect("write");
    std::fs::write(
        signature::signature_path(&file),
        std::fs::read_to_string(signature::signature_path(&stranger)).expect("read"),
    )
    .expect("a signature of another file");
    // The bytes are those serving, so only a forced reload opens them.
    let unchanged = host.reload("counter").expect("nothing to reload");
    assert!(unchanged.unchanged, "{unchanged:?}");
    let failure = host
        .reload_as(
            "counter",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        )
        .expect_err("refused");
    assert!(failure.to_string().contains("bad signature"), "{failure}");
    assert_eq!(count(&host), "v1: 3");
}

/// A hostile plugin against its sandbox: sockets, users, processes (Linux,
/// where the sandbox is).
#[cfg(target_os = "linux")]
mod hostile {
    use super::*;

    /// A socket another program listens on at a path, as a local daemon does
    /// (a container runtime's, D-Bus'), in a folder the worker's user could
    /// reach were it not for the sandbox.
    fn local_daemon() -> (tempfile::TempDir, std::os::unix::net::UnixListener, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("a named socket");
        open_to_the_worker_user(dir.path());
        (dir, listener, path.display().to_string())
    }

    /// `(domain, type, protocol)` of sockets no grant allows.
    const NEVER: &[(i32, i32, i32)] = &[
        (libc::AF_UNIX, libc::SOCK_STREAM, 0),
        (libc::AF_UNIX, libc::SOCK_DGRAM, 0),
        (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        (libc::AF_PACKET, libc::SOCK_RAW, 0),
        (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
    ];

    fn assert_no_socket(agent: &TestAgent, sockets: &[(i32, i32, i32)]) {
        for socket in sockets {
            let outcome = attempt(agent, "socket", json!(socket));
            assert!(refused(&outcome), "socket{socket:?}: {outcome}");
        }
    }

    #[test]
    fn without_a_grant_an_isolated_plugin_opens_no_socket_and_reaches_no_daemon() {
        let Some((agent, _folder)) = sandboxed(&[]) else {
            return;
        };
        let (_dir, _daemon, path) = local_daemon();
        let outcome = attempt(&agent, "connect_unix", json!(path));
        assert!(refused(&outcome), "a local daemon: {outcome}");
        let mut sockets = NEVER.to_vec();
        sockets.extend([
            (libc::AF_INET, libc::SOCK_STREAM, 0),
            (libc::AF_INET6, libc::SOCK_DGRAM, 0),
        ]);
        assert_no_socket(&agent, &sockets);
        let listener = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = listener.local_addr().expect("addr").port();
        assert!(refused(&attempt(&agent, "send_udp", json!(port))));
        let worker = agent.host.status("faulty").and_then(|s| s.worker);
        let protections = worker.expect("a worker").protections;
        assert!(protections.network_namespace, "{protections:?}");
    }

    #[test]
    fn a_tcp_grant_opens_tcp_to_its_port_and_nothing_else() {
        let (_dir, _daemon, path) = local_daemon();
        let open = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = open.local_addr().expect("addr").port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let udp_port = udp.local_addr().expect("addr").port();
        let Some((agent, _folder)) = sandboxed(&[format!("network:connect:{port}")]) else {
            return;
        };
        let connected = attempt(&agent, "connect", json!(port));
        assert_eq!(connected["ok"], json!(true), "{connected}");
        let sent = attempt(&agent, "send_udp", json!(udp_port));
        assert!(refused(&sent), "UDP: {sent}");
        assert!(refused(&attempt(&agent, "connect_unix", json!(path))));
        assert_no_socket(&agent, NEVER);
        let protections = agent
            .host
            .status("faulty")
            .and_then(|s| s.worker)
            .expect("a worker")
            .protections;
        // TCP needs the host's network.
        assert!(!protections.network_namespace, "{protections:?}");
        assert!(protections.pid_namespace && protections.user_namespace);
    }

    #[test]
    fn the_worker_of_a_root_agent_runs_as_nobody_without_capabilities() {
        let Some((agent, _folder)) = sandboxed(&[]) else {
            return;
        };
        let identity = attempt(&agent, "identity", Value::Null);
        assert_eq!(identity["capget"], json!(0), "{identity}");
        assert_eq!(identity["effective"], json!(0), "{identity}");
        assert_eq!(identity["permitted"], json!(0), "{identity}");
        assert_eq!(identity["bounding"], json!(0), "{identity}");
        if rustix::process::geteuid().is_root() {
            assert_eq!(identity["uid"], json!(65534), "{identity}");
            let worker = agent.host.status("faulty").and_then(|s| s.worker);
            assert!(worker.expect("a worker").protections.unprivileged_user);
        } else {
            eprintln!("the worker keeps the agent's user: the tests do not run as root");
        }
    }

    /// Answers every request on `listener` with `200 ok`, for `count`
    /// requests.
    fn serve_ok(listener: std::net::TcpListener, count: usize) {
        use std::io::{Read, Write};
        std::thread::spawn(move || {
            for stream in listener.incoming().take(count) {
                let Ok(mut stream) = stream else { continue };
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
    }

    #[test]
    fn an_isolated_http_client_resolves_names_through_the_host_for_its_ports_only() {
        let http_client = test_support::examples()
            .into_iter()
            .find(|file| file.to_string_lossy().contains("http"))
            .expect("the http-client example");
        let granted = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
        let (granted_port, other_port) = (port(&granted), port(&other));
        serve_ok(granted, 1);
        let config = format!(
            "[isolation]\nprocess = [\"http-client\"]\nworker_program = \"{WORKER}\"\n\
             [grants]\nhttp-client = [\"config:*\", \"network:connect:{granted_port}\"]\n"
        );
        let options = HostOptions {
            config: AgentConfig::parse(&config).expect("config"),
            ..HostOptions::default()
        };
        let agent = TestAgent::load_with(&[http_client], options).expect("stage");
        assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
        let worker = agent.host.status("http-client").and_then(|s| s.worker);
        assert!(worker.is_some(), "http-client runs in a worker");
        let get = |port: u16| {
            agent.host.call_service(
                "http-client",
                "get",
                &json!({"url": format!("http://localhost:{port}/")}),
            )
        };
        let answer = get(granted_port).expect("a granted port, by name");
        assert_eq!(answer["status"], json!(200), "{answer}");
        assert_eq!(answer["body"], json!("ok"), "{answer}");
        let refused = get(other_port).expect_err("a port not granted").to_string();
        assert!(
            refused.contains(&format!("network:connect:{other_port}")),
            "{refused}"
        );
    }

    #[test]
    fn a_worker_starts_no_more_processes_than_max_processes() {
        let agent = agent("[isolation.limits]\nmax_processes = 24\n");
        let spawned = agent
            .host
            .call_service("faulty", "spawn", &json!(200))
            .expect("spawn");
        let started = spawned["started"].as_u64().expect("a count");
        assert!(started < 24, "{spawned}");
        assert!(
            spawned["error"]
                .as_str()
                .is_some_and(|e| e.contains("Resource temporarily unavailable")),
            "{spawned}"
        );
    }

    #[test]
    fn a_granted_path_swapped_for_a_link_widens_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).expect("a folder");
        open_to_the_worker_user(dir.path());
        let grants = [
            format!("filesystem:write:{}", dir.path().display()),
            format!("filesystem:write:{}", inner.display()),
        ];
        let Some((agent, _folder)) = sandboxed(&grants) else {
            return;
        };
        assert!(refused(&attempt(&agent, "read", json!("/etc/passwd"))));
        let swapped = attempt(&agent, "swap_for_link", json!([inner, "/"]));
        assert_eq!(swapped["ok"], json!(true), "{swapped}");
        // A crash the plugin causes starts a new worker from the same
        // grants, which now name a link to `/`.
        let old = worker_pid(&agent).expect("a worker");
        assert!(!say(&agent, "fault abort").ok);
        let started = Instant::now();
        loop {
            let read = agent
                .host
                .call_service("faulty", "read", &json!("/etc/passwd"));
            assert!(
                read.as_ref().map_or(true, refused),
                "the new worker read /etc/passwd through the link: {read:?}"
            );
            let refused_restart = agent
                .host
                .status("faulty")
                .and_then(|s| s.worker)
                .and_then(|w| w.last_crash)
                .is_some_and(|crash| crash.contains("symbolic link"));
            if refused_restart {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the restart was neither refused nor an escape"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_ne!(worker_pid(&agent), Some(old));
    }

    #[test]
    fn a_broken_worker_program_fails_only_the_plugins_placed_in_workers() {
        // The agent binary probes with itself when the configured worker
        // program cannot run: the file's in-process plugin and another
        // file's plugin serve, and no isolated plugin's code runs in it.
        let config = "[isolation]\nprocess = [\"faulty\"]\n\
                      worker_program = \"/nonexistent/agent-host-worker\"\n";
        let agent = crate::common::Agent::start_with(
            &[test_support::fixture("isolated"), test_support::fixture("")],
            config,
            false,
        );
        let plugins = agent.get("/v1/plugins").json();
        let names = crate::common::plugin_names(&plugins);
        assert_eq!(names, ["fixture", "neighbour"], "{}", agent.log());
        let log = agent.log();
        assert!(
            log.lines()
                .any(|line| line.contains("faulty")
                    && line.contains("/nonexistent/agent-host-worker")),
            "{log}"
        );
    }

    /// Whether another process holds a lock on `path`.
    fn locked(path: &std::path::Path) -> bool {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).expect("the lock file");
        // SAFETY: a plain `flock` on a descriptor this function owns.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        !taken
    }

    #[test]
    fn no_process_of_an_isolated_plugin_outlives_the_agent() {
        for kill in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            open_to_the_worker_user(dir.path());
            let lock = dir.path().join("descendant.lock");
            let config = format!(
                "[isolation]\nprocess = [\"faulty\"]\n\
                 [grants]\nfaulty = [\"filesystem:write:{}\"]\n",
                dir.path().display()
            );
            let mut agent = crate::common::Agent::start_with(
                &[test_support::fixture("isolated")],
                &config,
                false,
            );
            let reply = agent
                .post_json(
                    "/v1/messages",
                    &json!({"text": format!("fault descendant {}", lock.display())}),
                )
                .json();
            assert_eq!(
                reply["text"],
                json!("a descendant holds the lock"),
                "{reply}"
            );
            assert!(locked(&lock), "the descendant holds the lock");
            if kill {
                agent.child.kill().expect("kill -9");
                let _ = agent.child.wait();
            } else {
                agent.terminate();
                agent.wait_for_exit(Duration::from_secs(10));
            }
            wait_until("the descendant to end with the agent", || !locked(&lock));
        }
    }
}
