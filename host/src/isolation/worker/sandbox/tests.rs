//! The sandbox against the running kernel. A sandbox cannot be lifted, so
//! every check runs in a child process: the test re-runs this test binary
//! with a probe (a policy and one attempt) in `AGENT_HOST_SANDBOX_PROBE`; the
//! child applies the policy, makes the attempt and prints one
//! `PROBE-RESULT:` line, which the test reads.
//!
//! The child makes its attempt before `main`, where it is the only thread,
//! as the worker is when it applies its sandbox: the test harness runs each
//! test on a thread of its own, and landlock cannot restrict the harness's
//! main thread on kernels before landlock ABI 8. The tests about threads run
//! their probe on the harness's test thread instead.
//!
//! Results: `ok`, `ok: DETAIL`, `errno N: TEXT`, `refused: TEXT` (a failure
//! without an OS error) or `apply-error: TEXT`.

use super::apply;
use crate::isolation::wire::policy::{ResourceLimits, SandboxPolicy};
use crate::worker_status::Protections;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const PROBE: &str = "AGENT_HOST_SANDBOX_PROBE";
const RESULT: &str = "PROBE-RESULT: ";
/// The test a child runs (when the probe is for the test thread), or would
/// run if the probe before `main` did not exit first.
const CHILD_TEST: &str = "isolation::worker::sandbox::tests::probe_in_test_thread";

/// What a child does: apply `policy` where `entry` says, then `attempt`.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    policy: SandboxPolicy,
    attempt: Attempt,
    entry: Entry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Entry {
    /// Before `main`, the process's only thread.
    BeforeMain,
    /// On the test harness's thread, in `probe_in_test_thread`.
    TestThread,
}

/// One thing a sandboxed child tries.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Attempt {
    /// Report the protections in force, as JSON.
    Protections,
    Read(PathBuf),
    /// Create or replace a file.
    Write(PathBuf),
    /// A TCP connection to this port on 127.0.0.1.
    Connect(u16),
    /// `socket(domain, type, 0)`.
    Socket(i32, i32),
    /// `socket(domain, type, protocol)`.
    SocketWith(i32, i32, i32),
    /// Connect to the named UNIX socket at this path.
    ConnectNamed(PathBuf),
    /// Report who the process is: user, process id, capabilities.
    Identity,
    /// Start a process that starts another in a session of its own
    /// (`setsid`), which sleeps this many seconds holding standard output,
    /// then return at once.
    LeaveADescendant(u32),
    /// Start this many threads (each sleeps a second); how many started.
    Threads(usize),
    /// `memfd_create`.
    Memfd,
    /// `shmget` of a private 16 MiB segment.
    SharedMemory,
    /// `unshare(CLONE_NEWUSER)`.
    Unshare,
    /// `clone(CLONE_NEWUSER | SIGCHLD)`: a child in a new user namespace.
    CloneNewUser,
    /// `clone3` (with no arguments: refused by the kernel, if not before).
    Clone3,
    /// `unshare(CLONE_NEWUSER)` by its x32 number.
    X32Unshare,
    /// `process_vm_readv` from this process.
    ReadMemoryOf(i32),
    /// Signal 0 (a permission check) to this process.
    Signal(i32),
    /// Connect to the abstract UNIX socket of this name.
    ConnectAbstract(String),
    /// Reserve this many bytes of memory.
    Allocate(usize),
    /// Open `count` descriptors of `path` and keep them.
    Open {
        path: PathBuf,
        count: usize,
    },
    /// The attempt on a thread started after the sandbox.
    InThread(Box<Attempt>),
}

// SAFETY: the function runs before `main`, so before the test harness
// starts threads; it only reads the environment and, when a probe asks for
// it, runs the probe and ends the process. The rest of the time it returns
// at once.
#[used]
#[unsafe(link_section = ".init_array")]
static PROBE_BEFORE_MAIN: extern "C" fn() = probe_before_main;

extern "C" fn probe_before_main() {
    let Some(Ok(probe)) = probe_from_env() else {
        return;
    };
    if probe.entry != Entry::BeforeMain {
        return;
    }
    let line = std::panic::catch_unwind(|| run(&probe))
        .unwrap_or_else(|_| "refused: the probe panicked".to_owned());
    report(&line);
    std::process::exit(0);
}

/// The child's side for probes on the harness's thread; nothing without a
/// probe.
#[test]
fn probe_in_test_thread() {
    let line = match probe_from_env() {
        None => return,
        Some(Err(e)) => format!("refused: unreadable probe: {e}"),
        Some(Ok(probe)) if probe.entry == Entry::TestThread => run(&probe),
        Some(Ok(_)) => "refused: the probe did not run before main".to_owned(),
    };
    report(&line);
}

fn probe_from_env() -> Option<Result<Probe, serde_json::Error>> {
    let probe = std::env::var(PROBE).ok()?;
    Some(serde_json::from_str(&probe))
}

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{RESULT}{line}");
    let _ = out.flush();
}

fn run(probe: &Probe) -> String {
    match apply(&probe.policy, &[]) {
        Err(e) => format!("apply-error: {e}"),
        Ok(protections) => attempt(&probe.attempt, &protections),
    }
}

fn attempt(attempt: &Attempt, protections: &Protections) -> String {
    match attempt {
        Attempt::Protections => match serde_json::to_string(protections) {
            Ok(json) => format!("ok: {json}"),
            Err(e) => format!("refused: {e}"),
        },
        Attempt::Read(path) => outcome(std::fs::read(path).map(drop)),
        Attempt::Write(path) => outcome(std::fs::write(path, "written in the sandbox")),
        Attempt::Connect(port) => {
            outcome(TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).map(drop))
        }
        Attempt::Socket(domain, kind) => {
            self::attempt(&Attempt::SocketWith(*domain, *kind, 0), protections)
        }
        Attempt::SocketWith(domain, kind, protocol) => {
            // SAFETY: `socket` takes plain integers.
            let fd = unsafe { libc::socket(*domain, *kind, *protocol) };
            if fd < 0 {
                outcome(Err(std::io::Error::last_os_error()))
            } else {
                // SAFETY: `fd` is a new descriptor nothing else owns.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                "ok".to_owned()
            }
        }
        Attempt::Unshare => {
            // SAFETY: a new user namespace changes no memory; the probe ends
            // right after.
            os_result(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
        }
        Attempt::CloneNewUser => clone_new_user(),
        Attempt::Clone3 => {
            // SAFETY: with no argument structure (size 0) the kernel creates
            // no process and reads no memory.
            os_result(unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) })
        }
        Attempt::X32Unshare => x32_unshare(),
        Attempt::ReadMemoryOf(pid) => {
            let mut buffer = [0u8; 8];
            let local = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            // An address in the other process: whether it is mapped there
            // does not matter to a refusal.
            let remote = local;
            // SAFETY: `local` describes `buffer`, which lives across the
            // call; the kernel checks the other process's address.
            let read = unsafe { libc::process_vm_readv(*pid, &local, 1, &remote, 1, 0) };
            os_result(read.try_into().unwrap_or(-1))
        }
        Attempt::Signal(pid) => match rustix::process::Pid::from_raw(*pid) {
            Some(pid) => outcome(rustix::process::test_kill_process(pid).map_err(Into::into)),
            None => "refused: not a process id".to_owned(),
        },
        Attempt::ConnectNamed(path) => outcome(UnixStream::connect(path).map(drop)),
        Attempt::Identity => identity(),
        Attempt::SharedMemory => {
            // SAFETY: `shmget` takes plain integers; a segment it makes is
            // private to this probe, which ends right after.
            let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 16 << 20, libc::IPC_CREAT | 0o600) };
            os_result(id.into())
        }
        Attempt::Memfd => {
            // SAFETY: the name is a C string literal; the descriptor, if
            // any, is closed at once.
            let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), libc::MFD_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: `fd` is a new descriptor nothing else owns.
                unsafe { libc::close(fd) };
            }
            os_result(fd.into())
        }
        Attempt::LeaveADescendant(seconds) => leave_a_descendant(*seconds),
        Attempt::Threads(count) => {
            let mut started = Vec::new();
            for _ in 0..*count {
                match std::thread::Builder::new()
                    .spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)))
                {
                    Ok(thread) => started.push(thread),
                    Err(_) => break,
                }
            }
            format!("ok: {}", started.len())
        }
        Attempt::ConnectAbstract(name) => outcome(
            SocketAddr::from_abstract_name(name)
                .and_then(|a| UnixStream::connect_addr(&a).map(drop)),
        ),
        Attempt::Allocate(bytes) => match Vec::<u8>::new().try_reserve_exact(*bytes) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("refused: {e}"),
        },
        Attempt::Open { path, count } => {
            let mut open = Vec::new();
            for _ in 0..*count {
                match std::fs::File::open(path) {
                    Ok(file) => open.push(file),
                    Err(e) => {
                        return format!("{} after {} files", outcome(Err(e)), open.len());
                    }
                }
            }
            "ok".to_owned()
        }
        Attempt::InThread(inner) => {
            let (inner, protections) = (inner.as_ref().clone(), protections.clone());
            match std::thread::spawn(move || self::attempt(&inner, &protections)).join() {
                Ok(line) => line,
                Err(_) => "refused: the thread panicked".to_owned(),
            }
        }
    }
}

/// `ok: {"uid":..,"pid":..,"effective":..,"permitted":..,"bounding":..}`:
/// the user, the process id as the process sees it, and how many
/// capabilities each set holds.
fn identity() -> String {
    let sets = match rustix::thread::capabilities(None) {
        Ok(sets) => sets,
        Err(e) => return outcome(Err(e.into())),
    };
    let bounding = (0..64)
        // SAFETY: `PR_CAPBSET_READ` takes a plain capability number.
        .map(|cap| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) })
        .take_while(|held| *held >= 0)
        .filter(|held| *held == 1)
        .count();
    format!(
        "ok: {}",
        serde_json::json!({
            "uid": rustix::process::geteuid().as_raw(),
            "pid": std::process::id(),
            "effective": sets.effective.bits().count_ones(),
            "permitted": sets.permitted.bits().count_ones(),
            "bounding": bounding,
        })
    )
}

/// Forks a child that forks a grandchild in a session of its own, which
/// sleeps `seconds` (holding standard output, which the test reads to its
/// end) and exits; the child exits at once, so the grandchild is orphaned.
/// What a descendant left by the worker writes on the probe's output if it
/// is still alive when its sleep ends.
const OUTLIVED: &str = "\na descendant outlived its worker\n";

fn leave_a_descendant(seconds: u32) -> String {
    // SAFETY: the probe runs on the process's only thread; the copies call
    // only `setsid`, `fork`, `sleep`, `write` and `_exit`.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above; the marker is a static buffer of its length.
        unsafe {
            if libc::fork() == 0 {
                libc::setsid();
                libc::sleep(seconds);
                let marker = OUTLIVED.as_bytes();
                libc::write(1, marker.as_ptr().cast(), marker.len());
            }
            libc::_exit(0);
        }
    }
    if child < 0 {
        return outcome(Err(std::io::Error::last_os_error()));
    }
    // SAFETY: waits for our own child; a null status is allowed.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    "ok".to_owned()
}

/// A raw `clone` without a new stack: a copy of this (single-threaded)
/// process in a new user namespace, which exits at once.
fn clone_new_user() -> String {
    let flags = libc::CLONE_NEWUSER | libc::SIGCHLD;
    let none: libc::c_long = 0;
    // SAFETY: without a new stack, `clone` duplicates the process as `fork`
    // does; the probe runs on the process's only thread, and the copy calls
    // `_exit` and nothing else.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(flags),
            none,
            none,
            none,
            none,
        )
    };
    if pid == 0 {
        // SAFETY: leaves the copy without running anything of this process.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: waits for our own child; a null status is allowed.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
    os_result(pid)
}

#[cfg(target_arch = "x86_64")]
fn x32_unshare() -> String {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: as `unshare(CLONE_NEWUSER)`, if the kernel runs it at all.
    os_result(unsafe {
        libc::syscall(
            libc::SYS_unshare | X32_SYSCALL_BIT,
            libc::c_long::from(libc::CLONE_NEWUSER),
        )
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_unshare() -> String {
    "refused: x32 exists on x86-64 only".to_owned()
}

fn os_result(returned: libc::c_long) -> String {
    if returned < 0 {
        outcome(Err(std::io::Error::last_os_error()))
    } else {
        "ok".to_owned()
    }
}

fn outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => match e.raw_os_error() {
            Some(errno) => format!("errno {errno}: {e}"),
            None => format!("refused: {e}"),
        },
    }
}

// The parent's side.

/// Applies `policy` in a fresh single-threaded child, makes `attempt`
/// there, and returns the child's result line.
fn run_probe(policy: &SandboxPolicy, attempt: Attempt) -> String {
    run_probe_on(Entry::BeforeMain, policy, attempt)
}

fn run_probe_on(entry: Entry, policy: &SandboxPolicy, attempt: Attempt) -> String {
    run_probe_whole(entry, policy, attempt).0
}

/// [`run_probe_on`], with everything the child and what it left wrote on
/// its standard output.
fn run_probe_whole(entry: Entry, policy: &SandboxPolicy, attempt: Attempt) -> (String, String) {
    let probe = Probe {
        policy: policy.clone(),
        attempt,
        entry,
    };
    let probe = serde_json::to_string(&probe).expect("a probe is JSON");
    let test_binary = std::env::current_exe().expect("the test binary");
    let output = Command::new(test_binary)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(PROBE, probe)
        .stdin(Stdio::null())
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The harness may have begun the line (`test NAME ... `).
    let result = stdout
        .lines()
        .find_map(|line| line.split_once(RESULT).map(|(_, result)| result));
    match result {
        Some(result) => (result.to_owned(), stdout.into_owned()),
        None => panic!(
            "the probe reported nothing ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The policy of a plugin holding `permissions`; the test binary stands
/// for its copy.
fn policy(permissions: &[String], limits: ResourceLimits, best_effort: bool) -> SandboxPolicy {
    let copy = std::env::current_exe().expect("the test binary");
    SandboxPolicy::new("probe", permissions, &copy, limits, best_effort).expect("valid grants")
}

fn strict(permissions: &[String]) -> SandboxPolicy {
    policy(permissions, ResourceLimits::default(), false)
}

fn grant(kind: &str, path: &Path) -> String {
    format!("filesystem:{kind}:{}", path.display())
}

fn errno(result: &str) -> Option<i32> {
    result
        .strip_prefix("errno ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

#[track_caller]
fn assert_ok(result: &str) {
    assert!(result == "ok" || result.starts_with("ok: "), "{result}");
}

#[track_caller]
fn assert_errno(result: &str, expected: i32) {
    assert_eq!(errno(result), Some(expected), "{result}");
}

fn protections(result: &str) -> Protections {
    let json = result
        .strip_prefix("ok: ")
        .unwrap_or_else(|| panic!("no protections: {result}"));
    serde_json::from_str(json).expect("protections are JSON")
}

/// The running kernel's landlock ABI, 0 without landlock.
fn kernel_landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: asking for the version reads no attribute (null, size 0).
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

/// Whether the kernel has what a strict policy requires; says why not.
fn landlock_missing() -> bool {
    let abi = kernel_landlock_abi();
    if abi < 6 {
        eprintln!("skipped: the kernel's landlock ABI is {abi}; strict sandboxes need 6");
        return true;
    }
    false
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    (listener, port)
}

#[test]
fn a_strict_policy_puts_every_protection_in_force() {
    if landlock_missing() {
        return;
    }
    let result = run_probe(&strict(&[]), Attempt::Protections);
    let protections = protections(&result);
    assert_eq!(
        protections,
        Protections {
            // The probe keeps its user: the identity tests switch it.
            unprivileged_user: !rustix::process::geteuid().is_root(),
            no_capabilities: true,
            user_namespace: true,
            pid_namespace: true,
            ipc_namespace: true,
            network_namespace: true,
            no_new_privs: true,
            landlock_filesystem: true,
            landlock_network: true,
            landlock_scopes: true,
            seccomp: true,
            resource_limits: true,
            missing: Vec::new(),
        }
    );
}

#[test]
fn without_a_grant_files_are_out_of_reach() {
    if landlock_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "outside every grant").expect("written");
    let policy = strict(&[]);

    // Root reads /etc/shadow whatever its mode: only landlock refuses it.
    assert_errno(
        &run_probe(&policy, Attempt::Read("/etc/shadow".into())),
        libc::EACCES,
    );
    assert_errno(&run_probe(&policy, Attempt::Read(secret)), libc::EACCES);
    let created = dir.path().join("created");
    assert_errno(
        &run_probe(&policy, Attempt::Write(created.clone())),
        libc::EACCES,
    );
    assert!(!created.exists());
}

#[test]
fn a_read_grant_allows_reading_only() {
    if landlock_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let notes = dir.path().join("notes");
    std::fs::write(&notes, "readable").expect("written");
    let policy = strict(&[grant("read", dir.path())]);

    assert_ok(&run_probe(&policy, Attempt::Read(notes.clone())));
    assert_errno(
        &run_probe(&policy, Attempt::Write(notes.clone())),
        libc::EACCES,
    );
    assert_eq!(std::fs::read_to_string(&notes).expect("read"), "readable");
    assert_errno(
        &run_probe(&policy, Attempt::Write(dir.path().join("new"))),
        libc::EACCES,
    );
}

#[test]
fn a_write_grant_allows_writing_and_reading() {
    if landlock_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let notes = dir.path().join("notes");
    let policy = strict(&[grant("write", dir.path())]);

    assert_ok(&run_probe(&policy, Attempt::Write(notes.clone())));
    assert_eq!(
        std::fs::read_to_string(&notes).expect("written by the child"),
        "written in the sandbox"
    );
    assert_ok(&run_probe(&policy, Attempt::Read(notes)));
    assert_errno(
        &run_probe(&policy, Attempt::Read("/etc/shadow".into())),
        libc::EACCES,
    );
}

#[test]
fn a_granted_path_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let missing = dir.path().join("missing");
    for best_effort in [false, true] {
        let policy = policy(
            &[grant("read", &missing)],
            ResourceLimits::default(),
            best_effort,
        );
        let result = run_probe(&policy, Attempt::Protections);
        assert!(result.starts_with("apply-error: "), "{result}");
        assert!(result.contains("plugin 'probe'"), "{result}");
        assert!(result.contains(&missing.display().to_string()), "{result}");
    }
}

/// Sockets no grant ever allows: UNIX (named and abstract alike), raw,
/// packet and netlink ones, and TCP's stream cousins.
fn never_allowed() -> Vec<(i32, i32, i32)> {
    vec![
        (libc::AF_UNIX, libc::SOCK_STREAM, 0),
        (libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0),
        (libc::AF_UNIX, libc::SOCK_SEQPACKET, 0),
        (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        (libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
        (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        (libc::AF_PACKET, libc::SOCK_RAW, 0),
        (libc::AF_PACKET, libc::SOCK_DGRAM, 0),
        (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        (libc::AF_NETLINK, libc::SOCK_DGRAM, 0),
        (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        (libc::AF_INET, libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP),
    ]
}

fn assert_sockets_refused(policy: &SandboxPolicy, sockets: &[(i32, i32, i32)]) {
    for &(domain, kind, protocol) in sockets {
        let result = run_probe(policy, Attempt::SocketWith(domain, kind, protocol));
        assert_eq!(
            errno(&result),
            Some(libc::EACCES),
            "socket({domain}, {kind}, {protocol}): {result}"
        );
    }
}

/// A server on a named UNIX socket, the kind a local daemon listens on.
fn named_socket() -> (tempfile::TempDir, UnixListener, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("daemon.sock");
    let listener = UnixListener::bind(&path).expect("a named socket");
    (dir, listener, path)
}

#[test]
fn without_a_network_grant_no_socket_opens() {
    if landlock_missing() {
        return;
    }
    let (_listener, port) = listener();
    let (_dir, _daemon, daemon) = named_socket();
    let policy = strict(&[]);

    // seccomp refuses the socket itself.
    assert_errno(&run_probe(&policy, Attempt::Connect(port)), libc::EACCES);
    assert_errno(
        &run_probe(&policy, Attempt::ConnectNamed(daemon)),
        libc::EACCES,
    );
    let mut sockets = never_allowed();
    sockets.extend([
        (libc::AF_INET, libc::SOCK_STREAM, 0),
        (libc::AF_INET6, libc::SOCK_DGRAM, 0),
        (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
    ]);
    assert_sockets_refused(&policy, &sockets);
}

#[test]
fn a_port_grant_opens_tcp_and_nothing_else() {
    if landlock_missing() {
        return;
    }
    let (_listener, port) = listener();
    let (_dir, _daemon, daemon) = named_socket();
    let policy = strict(&[format!("network:connect:{port}")]);

    assert_ok(&run_probe(&policy, Attempt::Connect(port)));
    assert_ok(&run_probe(
        &policy,
        Attempt::SocketWith(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0),
    ));
    assert_errno(
        &run_probe(&policy, Attempt::ConnectNamed(daemon)),
        libc::EACCES,
    );
    let mut sockets = never_allowed();
    sockets.extend([
        (libc::AF_INET, libc::SOCK_DGRAM, 0),
        (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
    ]);
    assert_sockets_refused(&policy, &sockets);
}

#[test]
fn network_star_opens_tcp_and_udp_and_nothing_else() {
    if landlock_missing() {
        return;
    }
    let policy = strict(&["network:*".to_owned()]);
    assert_ok(&run_probe(
        &policy,
        Attempt::SocketWith(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
    ));
    assert_ok(&run_probe(
        &policy,
        Attempt::SocketWith(libc::AF_INET6, libc::SOCK_STREAM, 0),
    ));
    assert_sockets_refused(&policy, &never_allowed());
}

#[test]
fn a_worker_holds_no_capability_and_sees_no_other_process() {
    if landlock_missing() {
        return;
    }
    let result = run_probe(&strict(&[]), Attempt::Identity);
    let identity: serde_json::Value =
        serde_json::from_str(result.trim_start_matches("ok: ")).expect(&result);
    assert_eq!(identity["effective"], 0, "{identity}");
    assert_eq!(identity["permitted"], 0, "{identity}");
    assert_eq!(identity["bounding"], 0, "{identity}");
    // Process 1 is the namespace's init; the worker comes next.
    assert_eq!(identity["pid"], 2, "{identity}");
}

#[test]
fn a_worker_started_by_root_runs_as_its_worker_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: switching users needs the tests to run as root");
        return;
    }
    if landlock_missing() {
        return;
    }
    let mut policy = strict(&[]);
    policy.identity = Some(crate::isolation::wire::policy::WorkerIdentity {
        user: "65534".to_owned(),
        uid: 65534,
        gid: 65534,
    });
    let result = run_probe(&policy, Attempt::Identity);
    let identity: serde_json::Value =
        serde_json::from_str(result.trim_start_matches("ok: ")).expect(&result);
    assert_eq!(identity["uid"], 65534, "{identity}");
    assert_eq!(identity["bounding"], 0, "{identity}");
    assert_eq!(identity["effective"], 0, "{identity}");
    let protections = protections(&run_probe(&policy, Attempt::Protections));
    assert!(protections.unprivileged_user, "{protections:?}");
    assert!(protections.no_capabilities, "{protections:?}");
}

#[test]
fn no_process_of_the_plugin_outlives_its_worker() {
    if landlock_missing() {
        return;
    }
    // The descendant holds the probe's standard output: the test reads it
    // to its end, which comes when the last holder is gone. One that ran on
    // after the worker would have written its marker there by then.
    let (result, output) = run_probe_whole(
        Entry::BeforeMain,
        &strict(&[]),
        Attempt::LeaveADescendant(30),
    );
    assert_ok(&result);
    assert!(
        !output.contains(OUTLIVED.trim()),
        "a process the worker left ran on after it: {output}"
    );
}

#[test]
fn max_processes_bounds_the_threads_of_a_worker() {
    if landlock_missing() {
        return;
    }
    let limits = ResourceLimits {
        processes: Some(8),
        ..ResourceLimits::default()
    };
    let mut policy = policy(&[], limits, false);
    // The kernel does not hold root to the limit: a root agent's workers
    // run as their worker user.
    if rustix::process::geteuid().is_root() {
        policy.identity = Some(crate::isolation::wire::policy::WorkerIdentity {
            user: "65534".to_owned(),
            uid: 65534,
            gid: 65534,
        });
    }
    let result = run_probe(&policy, Attempt::Threads(32));
    let started: usize = result
        .trim_start_matches("ok: ")
        .parse()
        .unwrap_or_else(|_| panic!("{result}"));
    // The keeper and the init count too.
    assert!((1..8).contains(&started), "{started} threads started");
}

#[test]
fn a_port_grant_connects_to_that_port_only() {
    if landlock_missing() {
        return;
    }
    let (_a, port_a) = listener();
    let (_b, port_b) = listener();
    let policy = strict(&[format!("network:connect:{port_a}")]);

    assert_ok(&run_probe(&policy, Attempt::Connect(port_a)));
    // landlock refuses the connection.
    assert_errno(&run_probe(&policy, Attempt::Connect(port_b)), libc::EACCES);
}

#[test]
fn network_star_allows_every_port() {
    if landlock_missing() {
        return;
    }
    let (_a, port_a) = listener();
    let (_b, port_b) = listener();
    let policy = strict(&["network:*".to_owned()]);

    assert_ok(&run_probe(&policy, Attempt::Connect(port_a)));
    assert_ok(&run_probe(&policy, Attempt::Connect(port_b)));
}

#[test]
fn seccomp_refuses_namespaces_and_other_processes_memory() {
    if landlock_missing() {
        return;
    }
    let policy = strict(&[]);
    let parent = i32::try_from(std::process::id()).expect("a pid");

    assert_errno(&run_probe(&policy, Attempt::Unshare), libc::EPERM);
    assert_errno(&run_probe(&policy, Attempt::CloneNewUser), libc::EPERM);
    assert_errno(&run_probe(&policy, Attempt::Clone3), libc::ENOSYS);
    assert_errno(
        &run_probe(&policy, Attempt::ReadMemoryOf(parent)),
        libc::EPERM,
    );
    if cfg!(target_arch = "x86_64") {
        assert_errno(&run_probe(&policy, Attempt::X32Unshare), libc::EPERM);
    }
}

#[test]
fn scopes_keep_signals_and_abstract_sockets_inside() {
    if landlock_missing() {
        return;
    }
    static SOCKETS: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "agent-host-sandbox-test-{}-{}",
        std::process::id(),
        SOCKETS.fetch_add(1, Ordering::Relaxed)
    );
    let address = SocketAddr::from_abstract_name(&name).expect("an abstract name");
    let _listener = UnixListener::bind_addr(&address).expect("listening");
    let policy = strict(&[]);
    let parent = i32::try_from(std::process::id()).expect("a pid");

    // Outside its PID namespace the parent has no id the worker could
    // name (ESRCH); landlock's signal scope stands behind that (EPERM).
    let signal = run_probe(&policy, Attempt::Signal(parent));
    assert!(
        matches!(errno(&signal), Some(libc::ESRCH | libc::EPERM)),
        "{signal}"
    );
    // seccomp refuses the UNIX socket before landlock's scope would
    // refuse the connection, and the name lives in another network
    // namespace anyway.
    assert_errno(
        &run_probe(&policy, Attempt::ConnectAbstract(name)),
        libc::EACCES,
    );
}

#[test]
fn the_memory_limit_refuses_large_allocations() {
    let gibibyte = 1 << 30;
    let unlimited = policy(&[], ResourceLimits::default(), true);
    assert_ok(&run_probe(&unlimited, Attempt::Allocate(gibibyte)));

    let limits = ResourceLimits {
        memory_bytes: Some(256 << 20),
        ..ResourceLimits::default()
    };
    let result = run_probe(&policy(&[], limits, true), Attempt::Allocate(gibibyte));
    assert!(result.starts_with("refused: "), "{result}");
}

#[test]
fn the_open_files_limit_refuses_descriptors() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("written");
    let permissions = [grant("read", dir.path())];
    let open = Attempt::Open {
        path: file,
        count: 32,
    };

    let unlimited = policy(&permissions, ResourceLimits::default(), true);
    assert_ok(&run_probe(&unlimited, open.clone()));

    let limits = ResourceLimits {
        open_files: Some(16),
        ..ResourceLimits::default()
    };
    let result = run_probe(&policy(&permissions, limits, true), open);
    assert_errno(&result, libc::EMFILE);
}

#[test]
fn threads_started_after_the_sandbox_are_inside_it() {
    if landlock_missing() {
        return;
    }
    let (_listener, port) = listener();
    let policy = strict(&[]);
    let in_thread = |attempt| Attempt::InThread(Box::new(attempt));

    assert_errno(
        &run_probe(&policy, in_thread(Attempt::Read("/etc/shadow".into()))),
        libc::EACCES,
    );
    assert_errno(
        &run_probe(&policy, in_thread(Attempt::Unshare)),
        libc::EPERM,
    );
    assert_errno(
        &run_probe(&policy, in_thread(Attempt::Connect(port))),
        libc::EACCES,
    );
}

#[test]
fn a_strict_policy_refuses_threads_landlock_cannot_reach() {
    if landlock_missing() {
        return;
    }
    // The harness's main thread is already running beside the test thread.
    let result = run_probe_on(Entry::TestThread, &strict(&[]), Attempt::Protections);
    if kernel_landlock_abi() >= 8 {
        assert!(protections(&result).landlock_filesystem, "{result}");
    } else {
        // Namespaces need a single thread too, and come first.
        assert!(result.starts_with("apply-error: "), "{result}");
        assert!(result.contains("namespaces"), "{result}");
        assert!(result.contains("other threads"), "{result}");
    }
}

#[test]
fn best_effort_reports_what_is_missing() {
    if landlock_missing() {
        return;
    }
    let best_effort = policy(&[], ResourceLimits::default(), true);
    let result = run_probe_on(Entry::TestThread, &best_effort, Attempt::Protections);
    let protections = protections(&result);
    assert!(protections.seccomp && protections.resource_limits && protections.no_new_privs);
    // Namespaces need a single thread, whatever the kernel.
    assert!(!protections.pid_namespace, "{protections:?}");
    assert!(
        protections.missing[0].starts_with("namespaces: cannot enter new namespaces"),
        "{protections:?}"
    );
    if kernel_landlock_abi() < 8 {
        assert!(!protections.landlock_filesystem, "{protections:?}");
        assert!(
            protections
                .missing
                .iter()
                .any(|m| m.starts_with("landlock: 1 other thread")),
            "{protections:?}"
        );
    }
}

#[test]
fn a_granted_path_with_a_symbolic_link_on_the_way_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("a folder");
    // A link to `/` where a granted folder was, as a plugin that may write
    // beside its grant could make one between two workers.
    let link = dir.path().join("granted");
    std::os::unix::fs::symlink("/", &link).expect("a link");
    for path in [link.clone(), link.join("etc")] {
        let result = run_probe(&strict(&[grant("read", &path)]), Attempt::Protections);
        assert!(result.starts_with("apply-error: "), "{result}");
        assert!(result.contains("symbolic link"), "{result}");
        assert!(result.contains(&*path.to_string_lossy()), "{result}");
    }
    // The real path is granted as usual.
    std::fs::write(real.join("file"), "data").expect("a file");
    assert_ok(&run_probe(
        &strict(&[grant("read", &real)]),
        Attempt::Read(real.join("file")),
    ));
}

#[test]
fn no_memory_file_can_hold_memory_outside_the_limit() {
    if landlock_missing() {
        return;
    }
    assert_errno(&run_probe(&strict(&[]), Attempt::Memfd), libc::EPERM);
    assert_errno(&run_probe(&strict(&[]), Attempt::SharedMemory), libc::EPERM);
}
