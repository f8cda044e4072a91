//! The first steps of the Linux sandbox: who the worker is and what it can
//! see of the system, before any limit, landlock rule or filter.
//!
//! 1. **Identity.** A worker started by root drops every capability from its
//!    bounding set and becomes the policy's unprivileged user (supplementary
//!    groups cleared), which empties its capability sets.
//! 2. **Namespaces.** It enters new user, PID and IPC namespaces, and a new
//!    (empty) network namespace when the plugin has no network grant. Its
//!    user is mapped to itself, so files see the same owner.
//! 3. **Capabilities.** In its new user namespace it holds every capability
//!    of that namespace: it drops them all (bounding, ambient, effective,
//!    permitted and inheritable sets), so nothing it runs holds any.
//! 4. **Process tree.** A PID namespace applies to the children of the
//!    process that enters it, so the process splits in three:
//!    - the *keeper*, the process the host started, stays outside the new
//!      namespace, waits, and ends as the worker ended (same exit code, or
//!      the same signal), so the host sees the worker's true ending;
//!    - the *init*, process 1 of the namespace, reaps orphans and, when the
//!      worker ends, reports how to the keeper and exits, which makes the
//!      kernel kill every process left in the namespace (forks and `setsid`
//!      descendants included);
//!    - the *worker*, process 2, which returns from here and goes on.
//!
//!    Each dies with its parent (`PR_SET_PDEATHSIG`), and the keeper with
//!    the host: a host that exits or is killed takes the whole tree with it.
//!
//! The keeper and the init run no plugin code: they only wait.

use super::shortfall::{SandboxCause, Shortfall};
use crate::isolation::wire::policy::{NetworkGrant, SandboxPolicy};
use std::io;

/// What the confinement put in force.
#[derive(Debug, Default)]
pub(super) struct Confinement {
    /// The worker runs as a user other than root.
    pub unprivileged_user: bool,
    /// No capability in any set.
    pub no_capabilities: bool,
    /// A user namespace of its own.
    pub user_namespace: bool,
    /// A PID namespace of its own, whose end ends every process in it.
    pub pid_namespace: bool,
    /// An IPC namespace of its own.
    pub ipc_namespace: bool,
    /// An empty network namespace (only without a network grant).
    pub network_namespace: bool,
    /// What could not be put in force.
    pub shortfalls: Vec<Shortfall>,
}

const IDENTITY: &str = "unprivileged user";
const NAMESPACES: &str = "namespaces";
const CAPABILITIES: &str = "capabilities";
const PROCESS_TREE: &str = "pid namespace";

/// Confines this process as the module documentation says. Returns in the
/// worker only; the keeper and the init never return. `threads` is the
/// process's thread count: switching users and entering namespaces needs a
/// process with one thread.
pub(super) fn confine(policy: &SandboxPolicy, threads: Option<usize>) -> Confinement {
    let mut done = Confinement::default();
    let single_threaded = threads == Some(1);
    let parent = rustix::process::getppid();

    match &policy.identity {
        Some(identity) if !single_threaded => done.shortfalls.push(Shortfall::new(
            IDENTITY,
            SandboxCause::UserWithThreads {
                user: identity.user.clone(),
            },
        )),
        Some(identity) => {
            if let Err(source) = become_user(identity.uid, identity.gid) {
                done.shortfalls.push(Shortfall::new(
                    IDENTITY,
                    SandboxCause::BecomeUser {
                        user: identity.user.clone(),
                        source,
                    },
                ));
            }
        }
        None => {}
    }
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    done.unprivileged_user = uid != 0;
    if !done.unprivileged_user && policy.identity.is_some() {
        // `worker_user = "root"`: the operator's choice, said in the status.
        done.shortfalls
            .push(Shortfall::new(IDENTITY, SandboxCause::RunsAsRoot));
    }

    let mut entered_pid_namespace = false;
    if single_threaded {
        let new_network = policy.network == NetworkGrant::None;
        match enter_namespaces(uid, gid, new_network) {
            Ok(()) => {
                done.user_namespace = true;
                done.ipc_namespace = true;
                done.network_namespace = new_network;
                entered_pid_namespace = true;
            }
            Err(error) => done.shortfalls.push(Shortfall::new(NAMESPACES, error)),
        }
    } else {
        done.shortfalls.push(Shortfall::new(
            NAMESPACES,
            SandboxCause::NamespacesWithThreads,
        ));
    }

    match drop_capabilities() {
        Ok(()) => done.no_capabilities = true,
        Err(error) => done.shortfalls.push(Shortfall::new(CAPABILITIES, error)),
    }

    // Changing credentials disarms the parent-death signal: arm it again,
    // and leave if the host died in between.
    if let Err(error) = die_with_parent(parent) {
        done.shortfalls.push(Shortfall::new(PROCESS_TREE, error));
    }
    if entered_pid_namespace {
        match split_process_tree() {
            Ok(()) => done.pid_namespace = true,
            Err(error) => done.shortfalls.push(Shortfall::new(PROCESS_TREE, error)),
        }
    }
    done
}

/// Drops every capability from the bounding set, then becomes `uid`:`gid`
/// with no supplementary group. (Through the C library, which changes the
/// ids of every thread, although there is only one.)
fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    drop_bounding_set()?;
    // SAFETY: plain system calls on this process's credentials; a null
    // list with a zero count is the empty list of groups.
    let changed = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(gid, gid, gid) == 0
            && libc::setresuid(uid, uid, uid) == 0
    };
    if !changed {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Enters new user, PID, IPC and (when `network`) network namespaces, with
/// `uid` and `gid` mapped to themselves.
fn enter_namespaces(uid: u32, gid: u32, network: bool) -> io::Result<()> {
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
    if network {
        flags |= libc::CLONE_NEWNET;
    }
    // The maps are written through `/proc/self`, which a process that
    // changed its user may not write while it is not dumpable.
    set_dumpable(true)?;
    // SAFETY: `unshare` changes no memory of this process; the caller has
    // checked that it has a single thread, which a new user namespace needs.
    if unsafe { libc::unshare(flags) } != 0 {
        let error = io::Error::last_os_error();
        let _ = set_dumpable(false);
        return Err(io::Error::new(
            error.kind(),
            format!("unshare: {error} (are user namespaces disabled on this system?)"),
        ));
    }
    let mapped = std::fs::write("/proc/self/setgroups", "deny")
        .and_then(|()| std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")))
        .and_then(|()| std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")));
    set_dumpable(false)?;
    mapped.map_err(|e| io::Error::new(e.kind(), format!("mapping the worker's user: {e}")))
}

fn set_dumpable(dumpable: bool) -> io::Result<()> {
    // SAFETY: `PR_SET_DUMPABLE` takes a plain integer and changes a flag of
    // this process.
    if unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            libc::c_ulong::from(dumpable),
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties the bounding set, one capability at a time until the kernel
/// knows no more.
fn drop_bounding_set() -> io::Result<()> {
    for capability in 0..64 {
        // SAFETY: `PR_CAPBSET_READ` and `PR_CAPBSET_DROP` take a plain
        // capability number.
        let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, capability, 0, 0, 0) };
        if held < 0 {
            // EINVAL: past the last capability this kernel knows.
            return Ok(());
        }
        if held == 1 {
            // SAFETY: as above.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Empties every capability set of this process, and checks it.
fn drop_capabilities() -> io::Result<()> {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet, CapabilitySets};
    let bounding = drop_bounding_set();
    rustix::thread::clear_ambient_capability_set()?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    set_capabilities(None, none)?;
    let now = capabilities(None)?;
    if !(now.effective.is_empty() && now.permitted.is_empty() && now.inheritable.is_empty()) {
        return Err(io::Error::other("the kernel kept some capabilities"));
    }
    // A process without capabilities cannot shrink its bounding set, and
    // needs no empty one: with `no_new_privs` nothing it runs gains any.
    match bounding {
        Err(error) if error.raw_os_error() == Some(libc::EPERM) => Ok(()),
        other => other,
    }
}

/// Arms the parent-death signal, and exits if `parent` is gone already.
fn die_with_parent(parent: Option<rustix::process::Pid>) -> io::Result<()> {
    use rustix::process::{getppid, set_parent_process_death_signal, Signal};
    set_parent_process_death_signal(Some(Signal::KILL))?;
    if getppid() != parent {
        std::process::exit(0);
    }
    Ok(())
}

/// Splits into keeper, init and worker (see the module documentation);
/// returns in the worker.
fn split_process_tree() -> io::Result<()> {
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // SAFETY: this process has a single thread (the caller entered a new
    // user namespace, which needs one), so the child is a whole copy of it.
    let init = unsafe { libc::fork() };
    if init < 0 {
        return Err(io::Error::last_os_error());
    }
    if init > 0 {
        drop(report_write);
        keep(init, report_read.into());
    }
    // The init: process 1 of the new PID namespace.
    drop(report_read);
    arm_death_signal();
    // SAFETY: as above: the init has a single thread.
    let worker = unsafe { libc::fork() };
    if worker < 0 {
        let error = io::Error::last_os_error();
        eprintln!("agent-host worker: cannot start the worker in its PID namespace: {error}");
        // SAFETY: ends this process without running anything of it.
        unsafe { libc::_exit(71) };
    }
    if worker > 0 {
        reap(worker, report_write.into());
    }
    drop(report_write);
    arm_death_signal();
    Ok(())
}

/// In the init and the worker: killed when the parent dies. (Their parent
/// cannot have died before: each is killed with its parent's parent.)
fn arm_death_signal() {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
}

/// Closes every descriptor but standard output and error and `keep`, and
/// puts `/dev/null` on standard input (the worker's control connection).
fn close_all_but(keep: libc::c_int) {
    // SAFETY: the descriptors closed belong to this process alone after the
    // fork; nothing in it uses them again. `/dev/null` is opened as a new
    // descriptor and moved onto 0.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
        } else {
            libc::close(0);
        }
        for fd in 3..1024 {
            if fd != keep {
                libc::close(fd);
            }
        }
    }
}

/// The keeper: waits for the init, then ends as the worker ended.
fn keep(init: libc::pid_t, report: std::fs::File) -> ! {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    close_all_but(report.as_raw_fd());
    let init_status = wait_for(init);
    let mut bytes = [0u8; 4];
    let worker_status = match (&report).read_exact(&mut bytes) {
        Ok(()) => libc::c_int::from_ne_bytes(bytes),
        // The init ended without a word (killed from outside).
        Err(_) => init_status,
    };
    end_as(worker_status)
}

/// The init: reaps every process of the namespace until the worker ends,
/// then reports how to the keeper and exits, which ends the namespace.
fn reap(worker: libc::pid_t, report: std::fs::File) -> ! {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    close_all_but(report.as_raw_fd());
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waits for any child of this process; `status` is a local.
        let ended = unsafe { libc::waitpid(-1, &mut status, 0) };
        if ended == worker {
            let _ = (&report).write_all(&status.to_ne_bytes());
            // SAFETY: ends this process without running anything of it.
            unsafe { libc::_exit(0) };
        }
        if ended < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: as above.
            unsafe { libc::_exit(70) };
        }
    }
}

/// Waits for `pid` and returns its wait status.
fn wait_for(pid: libc::pid_t) -> libc::c_int {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waits for a child of this process; `status` is a local.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return status;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 70 << 8;
        }
    }
}

/// Ends this process as a wait status says another ended: the same exit
/// code, or the same signal.
fn end_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: resets one signal to its default action, unblocks it and
        // sends it to this process, which then ends as the worker did; no
        // memory is involved. Core dumps are off for the keeper.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
            libc::_exit(128 + signal);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        70
    };
    // SAFETY: ends this process without running anything of it.
    unsafe { libc::_exit(code) }
}
