//! `[trust]` in a running host, on real plugin files: a file that is not
//! pinned or not signed by a trusted key never becomes a plugin, at start,
//! when `--watch` sees it arrive, or on a reload, which leaves the serving
//! generation serving; every refusal and reload is counted.

use agent_host::trust::digest::sha256_hex;
use agent_host::trust::lock::{LockFile, LockedFile};
use agent_host::trust::signature;
use agent_host::{AgentConfig, HostOptions, LoadError, OpenError, PluginHost};
use agent_host_tests::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn lib(name: &str) -> String {
    format!("{name}.{EXT}")
}

/// Replaces `target` the way a build does: written aside, renamed into place.
fn replace_with_bytes(target: &Path, bytes: &[u8]) {
    let temp = target.with_extension("staging");
    std::fs::write(&temp, bytes).expect("write");
    std::fs::rename(&temp, target).expect("rename");
}

fn one_byte_changed(file: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    bytes
}

/// A lock pinning the files in `dir`, written outside it; returns its path.
fn lock_folder(dir: &Path, operator: &Path) -> PathBuf {
    let mut lock = LockFile::new();
    for entry in std::fs::read_dir(dir).expect("read folder").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(EXT) {
            lock.pin(LockedFile {
                name,
                sha256: sha256_hex(&std::fs::read(entry.path()).expect("read")),
                plugins: Vec::new(),
            });
        }
    }
    let path = operator.join("plugins.lock");
    lock.write(&path).expect("write the lock");
    path
}

fn host_with(config: AgentConfig) -> Arc<PluginHost> {
    Arc::new(
        PluginHost::new(HostOptions {
            config,
            ..HostOptions::default()
        })
        .expect("host"),
    )
}

fn locked_by(lock: &Path) -> AgentConfig {
    let mut config = AgentConfig::default();
    config.trust.lock = Some(lock.to_path_buf());
    config
}

fn refused_reason(error: &LoadError) -> Option<&'static str> {
    match error {
        LoadError::Open(OpenError::Refused(refusal)) => Some(refusal.reason.label()),
        _ => None,
    }
}

fn metric(host: &PluginHost, line: &str) -> bool {
    host.metrics_text().lines().any(|l| l == line)
}

/// The value of one metric series (its name and labels as written), 0 when absent.
fn count(host: &PluginHost, series: &str) -> u64 {
    host.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_file_not_in_the_lock_is_refused_at_start_and_when_the_watcher_sees_it() {
    let dir = folder_with(&[]);
    add_as(dir.path(), &fixture("counter-v1"), &lib("counter"));
    let operator = tempfile::tempdir().expect("tempdir");
    let lock = lock_folder(dir.path(), operator.path());
    add_as(dir.path(), &fixture(""), &lib("fixture"));

    let host = host_with(locked_by(&lock));
    let report = host.load_dir(dir.path()).expect("load");
    let failure = report
        .failures
        .iter()
        .find(|f| f.file.ends_with(lib("fixture")))
        .expect("the unpinned file fails");
    assert_eq!(refused_reason(&failure.error), Some("not_in_lock"));
    let line = failure.to_string();
    let hash = sha256_hex(&std::fs::read(dir.path().join(lib("fixture"))).expect("read"));
    assert!(
        line.contains(&lib("fixture")) && line.contains(&hash),
        "{line}"
    );
    assert!(line.contains("not in the lock file"), "{line}");
    assert_eq!(host.handle_message(msg("count")).text, "v1: 1");
    assert!(metric(
        &host,
        "agent_host_files_refused_total{reason=\"not_in_lock\"} 1"
    ));

    // A new file renamed into the watched folder is refused too.
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");
    let stranger = dir.path().join(lib("multi"));
    replace_with_bytes(&stranger, &std::fs::read(fixture("multi")).expect("read"));
    // (The rescan the new file causes tries the refused fixture again too.)
    wait_until("the watcher to refuse the new file", || {
        count(
            &host,
            "agent_host_files_refused_total{reason=\"not_in_lock\"}",
        ) >= 3
    });
    assert!(host.status("multi-one").is_none(), "never became a plugin");
    assert!(host.status("multi-two").is_none(), "never became a plugin");
    assert_eq!(host.handle_message(msg("count")).text, "v1: 2");
}

#[test]
fn a_pinned_file_changed_by_one_byte_is_refused_on_reload_and_the_old_generation_serves() {
    let dir = folder_with(&[]);
    let counter = add_as(dir.path(), &fixture("counter-v1"), &lib("counter"));
    let operator = tempfile::tempdir().expect("tempdir");
    let lock = lock_folder(dir.path(), operator.path());
    let pinned = sha256_hex(&std::fs::read(&counter).expect("read"));
    let host = host_with(locked_by(&lock));
    let report = host.load_dir(dir.path()).expect("load");
    assert!(report.is_clean(), "{:?}", report.failures);
    assert_eq!(host.status("counter").expect("loaded").sha256, pinned);
    assert_eq!(host.handle_message(msg("count")).text, "v1: 1");
    let generation = host.status("counter").expect("status").generation;

    // The watcher sees the changed file and refuses it.
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");
    replace_with_bytes(&counter, &one_byte_changed(&fixture("counter-v1")));
    wait_until("the watcher's reload to be refused", || {
        metric(
            &host,
            "agent_host_reloads_total{origin=\"watcher\",outcome=\"refused\"} 1",
        )
    });
    assert!(metric(
        &host,
        "agent_host_files_refused_total{reason=\"hash_differs\"} 1"
    ));
    let status = host.status("counter").expect("still loaded");
    assert_eq!(
        (status.generation, status.sha256),
        (generation, pinned.clone())
    );
    assert_eq!(host.handle_message(msg("count")).text, "v1: 2");

    // A reload asked for directly is refused the same way.
    let failure = host.reload("counter").expect_err("refused");
    assert!(failure.to_string().contains("hash differs"), "{failure}");
    assert!(failure.to_string().contains("keeps serving"), "{failure}");
    assert_eq!(host.handle_message(msg("count")).text, "v1: 3");

    // The pinned bytes back: the bytes that serve, so nothing to reload.
    replace_with_bytes(
        &counter,
        &std::fs::read(fixture("counter-v1")).expect("read"),
    );
    wait_until("the watcher to find the file unchanged", || {
        metric(
            &host,
            "agent_host_reloads_total{origin=\"watcher\",outcome=\"unchanged\"} 1",
        )
    });
    assert_eq!(
        host.status("counter").expect("status").generation,
        generation
    );
    let done = host.reload("counter").expect("pinned bytes");
    assert!(done.unchanged, "{done:?}");
    assert_eq!(
        (done.from_sha256.as_str(), done.to_sha256.as_str()),
        (pinned.as_str(), pinned.as_str())
    );
    assert_eq!(done.origin, agent_host::ReloadOrigin::Api);
    // Forced, the pinned bytes reload through the lock, hash to hash.
    let forced = host
        .reload_as(
            "counter",
            None,
            agent_host::ReloadOrigin::Api,
            agent_host::WhenUnchanged::Reload,
        )
        .expect("pinned bytes reload");
    assert!(!forced.unchanged);
    assert!(forced.generation > generation);
    assert_eq!(forced.to_sha256, pinned);
}

#[test]
fn with_trusted_keys_only_correctly_signed_files_load_and_reload() {
    let dir = folder_with(&[]);
    let counter = add_as(dir.path(), &fixture("counter-v1"), &lib("counter"));
    let (_, secret, public) = signature::generate(None).expect("keys");
    let secret = minisign_secret(&secret);
    let sign = |file: &Path| {
        let text =
            signature::sign(&std::fs::read(file).expect("read"), &secret, "counter").expect("sign");
        std::fs::write(signature::signature_path(file), text).expect("write signature");
    };
    sign(&counter);
    // An unsigned file next to it.
    add_as(dir.path(), &fixture(""), &lib("fixture"));
    let mut config = AgentConfig::default();
    config.trust.public_keys = vec![public];
    let host = host_with(config);
    let report = host.load_dir(dir.path()).expect("load");
    assert_eq!(host.handle_message(msg("count")).text, "v1: 1");
    let unsigned = report.failure_of_file(&lib("fixture"));
    assert_eq!(refused_reason(&unsigned.error), Some("unsigned"));

    // A tampered build with the old signature: the reload is refused.
    std::fs::write(&counter, one_byte_changed(&fixture("counter-v1"))).expect("tamper");
    let failure = host.reload("counter").expect_err("refused");
    assert!(failure.to_string().contains("bad signature"), "{failure}");
    assert_eq!(host.handle_message(msg("count")).text, "v1: 2");

    // A new build, signed: it reloads.
    add_as(dir.path(), &fixture("counter-v2"), &lib("counter"));
    sign(&counter);
    let done = host.reload("counter").expect("signed v2 reloads");
    assert_eq!(done.to_version, "2.0.0");
    assert_eq!(host.handle_message(msg("count")).text, "v2: 3");
    assert!(metric(
        &host,
        "agent_host_files_refused_total{reason=\"bad_signature\"} 1"
    ));
}

#[test]
fn a_signature_that_lands_after_its_library_gets_it_reloaded_by_the_watcher() {
    let dir = folder_with(&[]);
    let counter = add_as(dir.path(), &fixture("counter-v1"), &lib("counter"));
    let (_, secret, public) = signature::generate(None).expect("keys");
    let secret = minisign_secret(&secret);
    let signature_of = |bytes: &[u8]| signature::sign(bytes, &secret, "counter").expect("sign");
    let v1 = std::fs::read(&counter).expect("read");
    std::fs::write(signature::signature_path(&counter), signature_of(&v1)).expect("write");
    let mut config = AgentConfig::default();
    config.trust.public_keys = vec![public];
    let host = host_with(config);
    assert!(host.load_dir(dir.path()).expect("load").is_clean());
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");

    // The new build first, with the old signature: refused, v1 serves.
    let v2 = std::fs::read(fixture("counter-v2")).expect("read");
    replace_with_bytes(&counter, &v2);
    wait_until("the unsigned build to be refused", || {
        count(
            &host,
            "agent_host_files_refused_total{reason=\"bad_signature\"}",
        ) >= 1
    });
    assert_eq!(host.status("counter").expect("status").version, "1.0.0");
    // Then its signature: the watcher reloads the library.
    replace_with_bytes(
        &signature::signature_path(&counter),
        signature_of(&v2).as_bytes(),
    );
    wait_until("the signed build to load", || {
        host.status("counter").map(|s| s.version).as_deref() == Some("2.0.0")
    });
}

#[cfg(unix)]
#[test]
fn a_signature_swapped_for_a_fifo_is_refused_by_the_watcher_and_a_real_one_reloads() {
    let dir = folder_with(&[]);
    let counter = add_as(dir.path(), &fixture("counter-v1"), &lib("counter"));
    let (_, secret, public) = signature::generate(None).expect("keys");
    let secret = minisign_secret(&secret);
    let signature_of = |bytes: &[u8]| signature::sign(bytes, &secret, "counter").expect("sign");
    let signature_file = signature::signature_path(&counter);
    let v1 = std::fs::read(&counter).expect("read");
    std::fs::write(&signature_file, signature_of(&v1)).expect("write");
    let mut config = AgentConfig::default();
    config.trust.public_keys = vec![public];
    let host = host_with(config);
    assert!(host.load_dir(dir.path()).expect("load").is_clean());
    let _watch = PluginHost::watch(&host, dir.path(), Duration::from_millis(100)).expect("watch");

    // A new build, and a FIFO nobody writes into as its signature: the
    // reload is refused at once, naming the file, and waits on nothing.
    let v2 = std::fs::read(fixture("counter-v2")).expect("read");
    std::fs::remove_file(&signature_file).expect("rm");
    let fifo = std::process::Command::new("mkfifo")
        .arg(&signature_file)
        .status()
        .expect("run mkfifo");
    assert!(fifo.success());
    replace_with_bytes(&counter, &v2);
    wait_until(
        "the build with a FIFO for a signature to be refused",
        || {
            count(
                &host,
                "agent_host_files_refused_total{reason=\"unreadable_signature\"}",
            ) >= 1
        },
    );
    let failure = host.reload("counter").expect_err("refused");
    let line = failure.to_string();
    assert!(
        line.contains(&signature_file.display().to_string()) && line.contains("FIFO"),
        "{line}"
    );
    assert_eq!(host.handle_message(msg("count")).text, "v1: 1");

    // Its real signature: the watcher reloads the library.
    std::fs::remove_file(&signature_file).expect("rm the FIFO");
    replace_with_bytes(&signature_file, signature_of(&v2).as_bytes());
    wait_until("the signed build to load", || {
        host.status("counter").map(|s| s.version).as_deref() == Some("2.0.0")
    });
    assert_eq!(host.handle_message(msg("count")).text, "v2: 2");
}

fn minisign_secret(text: &str) -> signature::SecretKey {
    signature::secret_key_from_text(text).expect("an unencrypted secret key")
}

trait FailureOfFile {
    fn failure_of_file(&self, name: &str) -> &agent_host::LoadFailure;
}

impl FailureOfFile for agent_host::LoadReport {
    fn failure_of_file(&self, name: &str) -> &agent_host::LoadFailure {
        self.failures
            .iter()
            .find(|f| f.file.ends_with(name))
            .unwrap_or_else(|| panic!("a failure for {name}: {:?}", self.failures))
    }
}
