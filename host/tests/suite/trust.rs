//! `agent-host lock`, `sign`, `keygen` and `check --locked` / `[trust]`, run
//! as real processes on real plugin files: what is pinned or signed by a
//! trusted key loads, anything else is refused with one line naming the
//! file, its SHA-256 and the cause.

use crate::common::{request, Agent};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use test_support::{add_as, fixture, EXT};

fn agent_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("AGENT_HOST_SIGNING_PASSWORD")
        .output()
        .expect("run agent-host")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn lib(name: &str) -> String {
    format!("{name}.{EXT}")
}

/// The SHA-256 of a file, as the lock writes it.
fn sha256(file: &Path) -> String {
    agent_host::trust::digest::sha256_hex(&std::fs::read(file).expect("read"))
}

/// Flips one byte in the middle of `file`.
fn change_one_byte(file: &Path) {
    let mut bytes = std::fs::read(file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(file, bytes).expect("write");
}

/// A plugin folder with the counter (v1) and the default fixture, and a
/// separate folder for the lock and keys (where the plugin folder's
/// writers cannot write).
fn folders() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let plugins = tempfile::tempdir().expect("tempdir");
    add_as(plugins.path(), &fixture("counter-v1"), &lib("counter"));
    add_as(plugins.path(), &fixture(""), &lib("fixture"));
    let operator = tempfile::tempdir().expect("tempdir");
    let lock = operator.path().join("plugins.lock");
    (plugins, operator, lock)
}

/// The `check` output's FAIL line for `file`; the test fails without one.
fn fail_line<'a>(out: &'a str, file: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with("FAIL") && l.contains(file))
        .unwrap_or_else(|| panic!("a FAIL line for {file}:\n{out}"))
}

fn check_locked(plugins: &Path, lock: &Path) -> Output {
    agent_host(&["check", &format!("--locked={}", s(lock)), s(plugins)])
}

#[test]
fn lock_pins_every_file_and_check_locked_refuses_what_is_not_pinned() {
    let (plugins, _operator, lock) = folders();
    let output = agent_host(&["lock", s(plugins.path()), "--output", s(&lock)]);
    assert!(output.status.success(), "{}", text(&output));
    let written = std::fs::read_to_string(&lock).expect("the lock");
    let counter = plugins.path().join(lib("counter"));
    assert!(written.contains(&sha256(&counter)), "{written}");
    assert!(
        written.contains(&format!("name = \"{}\"", lib("counter"))),
        "{written}"
    );
    assert!(written.contains("name = \"counter\""), "{written}");
    assert!(written.contains("version = \"1.0.0\""), "{written}");

    let output = check_locked(plugins.path(), &lock);
    assert!(output.status.success(), "{}", text(&output));

    // A file that is not in the lock.
    let stranger = add_as(plugins.path(), &fixture("multi"), &lib("stranger"));
    let output = check_locked(plugins.path(), &lock);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let line = fail_line(&out, &lib("stranger"));
    assert!(line.contains(&sha256(&stranger)), "{line}");
    assert!(line.contains("not in the lock file"), "{line}");
    assert!(
        out.contains("ok    counter 1.0.0"),
        "unrelated plugins load: {out}"
    );

    // The same file without the lock loads.
    let output = agent_host(&["check", s(plugins.path())]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn a_file_changed_by_one_byte_after_locking_is_refused() {
    let (plugins, _operator, lock) = folders();
    let output = agent_host(&["lock", s(plugins.path()), "--output", s(&lock)]);
    assert!(output.status.success(), "{}", text(&output));
    let counter = plugins.path().join(lib("counter"));
    let pinned = sha256(&counter);
    change_one_byte(&counter);
    let output = check_locked(plugins.path(), &lock);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let line = fail_line(&out, &lib("counter"));
    assert!(line.contains(&sha256(&counter)), "{line}");
    assert!(line.contains("hash differs"), "{line}");
    assert!(line.contains(&pinned), "names the pinned hash: {line}");
    assert!(out.contains("ok    fixture 1.0.0"), "{out}");
}

#[test]
fn lock_update_re_pins_one_file_and_keeps_the_others() {
    let (plugins, _operator, lock) = folders();
    // `--locked` alone reads the folder's plugins.lock, which `lock` writes.
    let output = agent_host(&["lock", s(plugins.path())]);
    assert!(output.status.success(), "{}", text(&output));
    let default_lock = plugins.path().join("plugins.lock");
    let before = agent_host::trust::lock::LockFile::read(&default_lock).expect("lock");
    std::fs::copy(&default_lock, &lock).expect("copy");

    add_as(plugins.path(), &fixture("counter-v2"), &lib("counter"));
    let output = agent_host(&["check", "--locked", s(plugins.path())]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));

    // Re-pin by plugin name, in both locks.
    for target in [None, Some(&lock)] {
        let mut args = vec!["lock", s(plugins.path()), "--update", "counter"];
        if let Some(target) = target {
            args.extend(["--output", s(target)]);
        }
        let output = agent_host(&args);
        assert!(output.status.success(), "{}", text(&output));
    }
    let after = agent_host::trust::lock::LockFile::read(&lock).expect("lock");
    let entry = |lock: &agent_host::trust::lock::LockFile, name: &str| {
        lock.files
            .iter()
            .find(|f| f.name == lib(name))
            .cloned()
            .expect("an entry")
    };
    assert_eq!(
        entry(&after, "counter").sha256,
        sha256(&plugins.path().join(lib("counter")))
    );
    assert_eq!(entry(&after, "counter").plugins[0].version, "2.0.0");
    assert_eq!(entry(&after, "fixture"), entry(&before, "fixture"), "kept");
    let output = agent_host(&["check", "--locked", s(plugins.path())]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("ok    counter 2.0.0"), "{out}");

    // A name that is nowhere.
    let output = agent_host(&["lock", s(plugins.path()), "--update", "nothing"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("'nothing'"), "{}", text(&output));
}

/// `keygen` into `dir`; returns the secret key file and the public key line.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let output = agent_host(&[
        "keygen",
        "--secret-key",
        s(&secret),
        "--public-key",
        s(&public),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let base64 = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("public_keys = [\"")?
                .strip_suffix("\"]")
                .map(str::to_string)
        })
        .expect("the config line");
    (secret, base64)
}

fn config_trusting(dir: &Path, key: &str) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("[trust]\npublic_keys = [\"{key}\"]\n")).expect("config");
    config
}

#[test]
fn signed_files_load_and_unsigned_tampered_or_foreign_ones_are_refused() {
    let (plugins, operator, _) = folders();
    let (secret, public) = keygen(operator.path(), "release");
    let config = config_trusting(operator.path(), &public);
    let counter = plugins.path().join(lib("counter"));
    let fixture_file = plugins.path().join(lib("fixture"));
    let output = agent_host(&["sign", "--key", s(&secret), s(&counter), s(&fixture_file)]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(plugins
        .path()
        .join(format!("{}.minisig", lib("counter")))
        .exists());

    let check = || agent_host(&["check", "--config", s(&config), s(plugins.path())]);
    let output = check();
    assert!(
        output.status.success(),
        "signed files load: {}",
        text(&output)
    );

    // Tampered after signing: one byte, the old signature kept.
    change_one_byte(&counter);
    let output = check();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let line = fail_line(&out, &lib("counter"));
    assert!(line.contains("bad signature"), "{line}");
    assert!(line.contains(&sha256(&counter)), "{line}");
    assert!(out.contains("ok    fixture 1.0.0"), "{out}");

    // Unsigned.
    add_as(plugins.path(), &fixture("counter-v1"), &lib("counter"));
    std::fs::remove_file(plugins.path().join(format!("{}.minisig", lib("counter")))).expect("rm");
    let out = text(&check());
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains(&lib("counter"))
            && l.contains("unsigned")),
        "{out}"
    );

    // Signed by a key the config does not trust.
    let (other, _) = keygen(operator.path(), "other");
    let output = agent_host(&["sign", "--key", s(&other), s(&counter)]);
    assert!(output.status.success(), "{}", text(&output));
    let out = text(&check());
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains(&lib("counter"))
            && l.contains("not among [trust] public_keys")),
        "{out}"
    );
}

#[test]
fn keygen_refuses_to_overwrite_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path(), "k");
    let output = agent_host(&[
        "keygen",
        "--secret-key",
        s(&dir.path().join("k.key")),
        "--public-key",
        s(&dir.path().join("k.pub")),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--force"), "{}", text(&output));
}

/// Runs `agent-host` with `args` and its stdin closed; killed if it has
/// not ended within a minute. Its output, or `None` when it had to be killed.
#[cfg(unix)]
fn agent_host_ending(args: &[&str]) -> Option<Output> {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("AGENT_HOST_SIGNING_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agent-host");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("output"))
}

/// Puts a FIFO (a named pipe nobody writes into) at `path`.
#[cfg(unix)]
fn make_fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn a_signature_that_is_a_fifo_or_a_device_is_refused_by_check_and_run_without_waiting() {
    let (plugins, operator, _) = folders();
    let (secret, public) = keygen(operator.path(), "release");
    let config = config_trusting(operator.path(), &public);
    let counter = plugins.path().join(lib("counter"));
    let fixture_file = plugins.path().join(lib("fixture"));
    let output = agent_host(&["sign", "--key", s(&secret), s(&counter), s(&fixture_file)]);
    assert!(output.status.success(), "{}", text(&output));
    let fifo = plugins.path().join(format!("{}.minisig", lib("counter")));
    make_fifo(&fifo);
    // Read to its end, this one would fill the memory.
    let zeros = plugins.path().join(format!("{}.minisig", lib("fixture")));
    std::fs::remove_file(&zeros).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &zeros).expect("symlink");

    let output = agent_host_ending(&["check", "--config", s(&config), s(plugins.path())])
        .expect("check ends: it neither waits for a writer nor reads without end");
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let line = fail_line(&out, &lib("counter"));
    assert!(line.contains(s(&fifo)), "names the signature file: {line}");
    assert!(line.contains("not a regular file"), "{line}");
    assert!(line.contains("FIFO"), "{line}");
    let line = fail_line(&out, &lib("fixture"));
    assert!(line.contains(s(&zeros)), "names the signature file: {line}");
    assert!(line.contains("not a regular file"), "{line}");
    assert!(line.contains("device"), "{line}");

    let output = agent_host_ending(&[
        "run",
        "--config",
        s(&config),
        "--plugins",
        s(plugins.path()),
    ])
    .expect("run starts, and ends with its closed stdin");
    let out = text(&output);
    assert!(
        out.contains(s(&fifo)) && out.contains("FIFO"),
        "the refusal is in the log: {out}"
    );
}

/// `POST /v1/plugins/{name}/reload?force=true` on `agent`.
#[cfg(unix)]
fn force_reload(agent: &Agent, plugin: &str) -> crate::common::Response {
    request(
        agent.address,
        "POST",
        &format!("/v1/plugins/{plugin}/reload?force=true"),
        None,
    )
}

#[cfg(unix)]
#[test]
fn a_reload_whose_signature_is_a_fifo_is_refused_at_once_and_later_reloads_and_sigterm_work() {
    let staging = tempfile::tempdir().expect("tempdir");
    let operator = tempfile::tempdir().expect("tempdir");
    let counter = add_as(staging.path(), &fixture("counter-v1"), &lib("counter"));
    let (secret, public) = keygen(operator.path(), "release");
    let output = agent_host(&["sign", "--key", s(&secret), s(&counter)]);
    assert!(output.status.success(), "{}", text(&output));
    let signed = staging.path().join(format!("{}.minisig", lib("counter")));
    let mut agent = Agent::launch(
        &[counter, signed],
        &format!("[trust]\npublic_keys = [\"{public}\"]\n"),
        false,
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let signature = agent
        .plugins_dir()
        .join(format!("{}.minisig", lib("counter")));
    let good = std::fs::read(&signature).expect("the signature");
    make_fifo(&signature);

    let refused = force_reload(&agent, "counter");
    assert_eq!(refused.status, 422, "{}", refused.text());
    let cause = refused.text();
    assert!(cause.contains(s(&signature)), "names the file: {cause}");
    assert!(cause.contains("FIFO"), "{cause}");

    // A later reload is applied.
    std::fs::remove_file(&signature).expect("rm");
    std::fs::write(&signature, good).expect("the signature back");
    let done = force_reload(&agent, "counter");
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["generation"], 2, "{}", done.text());

    agent.terminate();
    assert_eq!(
        agent.wait_for_exit(crate::common::WAIT),
        Some(0),
        "{}",
        agent.log()
    );
}

/// The private copies on disk under `temp`: files in the agent's folders
/// of copies (`agent-host-shadow-*`), their lock files aside.
#[cfg(unix)]
fn copies_under(temp: &Path) -> Vec<PathBuf> {
    let mut copies = Vec::new();
    for folder in std::fs::read_dir(temp)
        .expect("read the temp folder")
        .flatten()
    {
        if !folder
            .file_name()
            .to_string_lossy()
            .contains("agent-host-shadow-")
        {
            continue;
        }
        for file in std::fs::read_dir(folder.path()).expect("read").flatten() {
            if file.file_name() != ".lock" {
                copies.push(file.path());
            }
        }
    }
    copies
}

/// The value of the metric `name` (no labels) in `metrics`.
#[cfg(unix)]
fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let (series, value) = l.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    })
}

/// Reloads `plugin` `times` times in an agent on `file` with `config`,
/// whose temporary folder is `temp`; returns the copies left on disk and
/// the agent's gauges of them (count, bytes).
#[cfg(unix)]
fn copies_after_reloads(
    file: &Path,
    config: &str,
    plugin: &str,
    times: usize,
) -> (Vec<PathBuf>, Option<u64>, Option<u64>) {
    let temp = tempfile::tempdir().expect("tempdir");
    let temp_path = s(temp.path()).to_string();
    let agent = Agent::launch(
        &[file.to_path_buf()],
        config,
        false,
        &["--listen", "127.0.0.1:0"],
        &[("TMPDIR", &temp_path)],
    );
    for _ in 0..times {
        let done = force_reload(&agent, plugin);
        assert_eq!(done.status, 200, "{}", done.text());
    }
    let copies = copies_under(temp.path());
    let metrics = agent.get("/metrics").text();
    (
        copies,
        gauge(&metrics, "agent_host_private_copies"),
        gauge(&metrics, "agent_host_private_copies_bytes"),
    )
}

// Windows cannot remove the file of a library in use.
#[cfg(unix)]
#[test]
fn fifty_in_process_reloads_leave_no_copy_on_disk() {
    let (copies, count, bytes) = copies_after_reloads(&fixture("counter-v1"), "", "counter", 50);
    assert!(
        copies.is_empty(),
        "an in-process copy is removed once mapped: {copies:?}"
    );
    assert_eq!((count, bytes), (Some(0), Some(0)));
}

// Windows cannot remove the file of a library in use.
#[cfg(unix)]
#[test]
fn ten_isolated_reloads_leave_the_serving_copy_only() {
    let (copies, count, bytes) = copies_after_reloads(
        &fixture("counter-v1"),
        "[isolation]\nprocess = [\"counter\"]\n",
        "counter",
        10,
    );
    assert!(
        copies.len() <= 2,
        "the serving generation's copy, and at most one being let go: {copies:?}"
    );
    let file_bytes = std::fs::metadata(fixture("counter-v1"))
        .expect("size")
        .len();
    assert!(count.is_some_and(|c| (1..=2).contains(&c)), "{count:?}");
    assert!(
        bytes.is_some_and(|b| b >= file_bytes && b <= 2 * file_bytes),
        "{bytes:?} for copies of {file_bytes} bytes"
    );
}

#[cfg(unix)]
#[test]
fn another_local_user_can_neither_reach_nor_replace_a_copy_of_a_world_writable_file() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let staging = tempfile::tempdir().expect("tempdir");
    let counter = add_as(staging.path(), &fixture("counter-v1"), &lib("counter"));
    std::fs::set_permissions(&counter, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let temp = tempfile::tempdir().expect("tempdir");
    let temp_path = s(temp.path()).to_string();
    // Isolated, the plugin's copy stays on disk while its worker may start.
    let agent = Agent::launch(
        &[counter],
        "[isolation]\nprocess = [\"counter\"]\n",
        false,
        &["--listen", "127.0.0.1:0"],
        &[("TMPDIR", &temp_path)],
    );
    let source_mode = std::fs::metadata(agent.plugins_dir().join(lib("counter")))
        .expect("the plugin file")
        .mode();
    assert_eq!(
        source_mode & 0o777,
        0o666,
        "the plugin file is world-writable"
    );
    let copies = copies_under(temp.path());
    let [copy] = copies.as_slice() else {
        panic!("one copy: {copies:?}");
    };
    let folder = copy.parent().expect("its folder");
    let mode = |p: &Path| std::fs::symlink_metadata(p).expect("metadata").mode() & 0o7777;
    assert_eq!(mode(copy), 0o444, "{}", copy.display());
    assert_eq!(mode(folder), 0o700, "{}", folder.display());
    let before = std::fs::read(copy).expect("read");

    test_support::assert_another_user_cannot_touch(folder, copy);
    assert_eq!(
        std::fs::read(copy).expect("read"),
        before,
        "the copy is unchanged"
    );
    let reply = agent.post_json("/v1/messages", &serde_json::json!({"text": "count"}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("v1: 1"), "{}", reply.text());
}
