//! The Linux sandbox, applied in this order:
//!
//! 1. Confinement (`confine.rs`): an unprivileged user for a worker started
//!    by root, new user, PID, IPC and (without a network grant) network
//!    namespaces, no capabilities, and a process tree whose end ends every
//!    process the plugin started.
//! 2. Resource limits: `RLIMIT_AS`, `RLIMIT_NOFILE`, `RLIMIT_CPU` and
//!    `RLIMIT_NPROC` as the policy sets them (soft and hard, never above the
//!    inherited hard limit), and `RLIMIT_CORE` 0.
//! 3. `no_new_privs`.
//! 4. Landlock. Handled, so denied unless a rule allows them: every file
//!    right of landlock ABI 6 (required), the newer file rights when the
//!    kernel has them (connecting to named UNIX sockets, ABI 9), TCP bind
//!    and connect unless the policy allows any network use, and the scopes
//!    (abstract UNIX sockets and signals). Rules: read and map for execution
//!    under `read_exec`, read under `read`, everything under `write`,
//!    connecting to each granted TCP port. UDP is not restricted by landlock.
//!    The plugin's copy gets its rule from the open file the host passed,
//!    when it did: the worker's user may not be able to reach its path.
//!    A granted path is opened without following any symbolic link (a
//!    plugin that may write above its grant could swap it for a link);
//!    system paths may be links.
//! 5. Seccomp, on every thread of the process: `EPERM` for the system calls
//!    that debug other processes, change mounts or namespaces, load kernel
//!    code, or reach kernel interfaces a plugin has no use for (io_uring
//!    among them, as its requests bypass the filter); `EPERM` for `clone`
//!    with a namespace flag; `ENOSYS` for `clone3` (its flags are out of the
//!    filter's reach, and the C library then falls back to `clone`);
//!    `EACCES` for every `socket` and `socketpair` but the network grant's
//!    (see `seccomp.rs`), and `EPERM` for `listen` without `network:*`. On
//!    x86-64, x32 system calls get `EPERM`.
//!
//! What the worker must do for it:
//!
//! * Apply the sandbox on its main thread before starting any other thread:
//!   landlock restricts the calling thread and the threads it starts later;
//!   restricting threads that already run needs landlock ABI 8, and without
//!   it the landlock protections count as missing.
//! * Open beforehand what the policy does not grant: its channel to the host
//!   (a connection to an abstract or named UNIX socket, a file) and anything
//!   under `/proc` or `/dev` it needs. Descriptors opened before stay usable.
//! * Have no need, afterwards, of `/proc` (backtraces read
//!   `/proc/self/maps`), `/dev`, locale or time-zone data outside
//!   `/usr/lib`, or running programs: none of it is granted.

use super::confine;
use super::shortfall::{SandboxCause, Shortfall};
use super::SandboxError;
use crate::isolation::wire::policy::{is_system_path, NetworkGrant, ResourceLimits, SandboxPolicy};
use crate::worker_status::Protections;
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, NetPort, PathBeneath,
    RestrictSelfAttr, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope, ABI,
};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::os::fd::{AsFd, OwnedFd};

/// The landlock ABI whose protections a policy that is not best-effort
/// requires: all file rights of ABI 5, TCP (ABI 4) and scopes (ABI 6).
const REQUIRED_ABI: ABI = ABI::V6;

/// The newest landlock ABI the crate knows: its file rights are handled
/// wherever the kernel has them.
const NEWEST_ABI: ABI = ABI::V10;

/// Applies `policy` to this process, in the order of the module
/// documentation; see [`super::apply`].
pub(super) fn apply(
    policy: &SandboxPolicy,
    copies: &[std::fs::File],
) -> Result<Protections, SandboxError> {
    let mut run = Run {
        policy,
        protections: Protections::default(),
    };
    // Opened before the worker may lose the right to reach them.
    let grants = open_grants(policy)?;
    let paths = std::iter::once(&policy.copy).chain(&policy.more_copies);
    let copies = paths
        .enumerate()
        .map(|(i, path)| {
            match copies.get(i) {
                Some(file) => file.as_fd().try_clone_to_owned(),
                None => std::fs::File::open(path).map(OwnedFd::from),
            }
            .map_err(|source| {
                SandboxError::new(
                    &policy.plugin,
                    "filesystem grants",
                    SandboxCause::Copy {
                        path: path.clone(),
                        source,
                    },
                )
            })
        })
        .collect::<Result<Vec<OwnedFd>, SandboxError>>()?;

    // Counted before landlock hides `/proc`; confinement needs one thread.
    let threads = thread_count();
    let confinement = confine::confine(policy, threads);
    run.protections.unprivileged_user = confinement.unprivileged_user;
    run.protections.no_capabilities = confinement.no_capabilities;
    run.protections.user_namespace = confinement.user_namespace;
    run.protections.pid_namespace = confinement.pid_namespace;
    run.protections.ipc_namespace = confinement.ipc_namespace;
    run.protections.network_namespace = confinement.network_namespace;
    for shortfall in confinement.shortfalls {
        run.shortfall(shortfall)?;
    }

    let limits = lower_limits(&policy.limits);
    run.protections.resource_limits = run.check("resource limits", limits)?;

    let no_new_privs = rustix::thread::set_no_new_privs(true)
        .map_err(SandboxCause::from)
        .and_then(|()| no_new_privs_set());
    // Best-effort policies record it once, at the end.
    if !policy.best_effort {
        run.check("no_new_privs", no_new_privs)?;
    }

    match landlock(policy, &copies, &grants, threads) {
        Ok(outcome) => {
            run.protections.landlock_filesystem = outcome.filesystem;
            run.protections.landlock_network = outcome.network;
            run.protections.landlock_scopes = outcome.scopes;
            for shortfall in outcome.shortfalls {
                run.shortfall(shortfall)?;
            }
        }
        Err(shortfall) => run.shortfall(shortfall)?,
    }

    let seccomp = super::seccomp::install(&policy.network);
    run.protections.seccomp = run.check("seccomp", seccomp)?;

    // Landlock and seccomp set it too: report what holds now.
    run.protections.no_new_privs = run.check("no_new_privs", no_new_privs_set())?;
    Ok(run.protections)
}

/// One application of a policy: what is in force so far.
struct Run<'a> {
    policy: &'a SandboxPolicy,
    protections: Protections,
}

impl Run<'_> {
    /// Whether a step succeeded; a failure is an error unless the policy is
    /// best-effort, which records it as missing.
    fn check(
        &mut self,
        protection: &'static str,
        step: Result<(), SandboxCause>,
    ) -> Result<bool, SandboxError> {
        match step {
            Ok(()) => Ok(true),
            Err(cause) => self
                .shortfall(Shortfall::new(protection, cause))
                .map(|()| false),
        }
    }

    fn shortfall(&mut self, shortfall: Shortfall) -> Result<(), SandboxError> {
        if self.policy.best_effort {
            self.protections
                .missing
                .push(format!("{}: {}", shortfall.protection, shortfall.cause));
            Ok(())
        } else {
            Err(SandboxError::new(
                &self.policy.plugin,
                shortfall.protection,
                shortfall.cause,
            ))
        }
    }
}

/// A path the policy grants, opened (`O_PATH`) for its landlock rule.
struct OpenedPath {
    fd: OwnedFd,
    /// A file, not a folder: its rule takes only file rights.
    file: bool,
}

/// The policy's paths, opened.
struct OpenedGrants {
    read_exec: Vec<OpenedPath>,
    read: Vec<OpenedPath>,
    write: Vec<OpenedPath>,
}

/// Opens every path the policy grants, for the landlock rules. A granted
/// path that does not exist is an error (a grant of nothing is a mistake
/// to report, not a rule to skip); a system path a system lacks is
/// skipped.
///
/// A granted path is resolved without following any symbolic link, at
/// any of its components: a plugin that may write in a folder above one of
/// its grants could otherwise swap the granted path for a link to `/`, and
/// the next worker (after a crash it caused, say) would be granted
/// whatever the link names. The system paths, which only root can change,
/// may be links (`/lib` on merged-`/usr` systems).
fn open_grants(policy: &SandboxPolicy) -> Result<OpenedGrants, SandboxError> {
    let open_all = |paths: &[std::path::PathBuf]| -> Result<Vec<OpenedPath>, SandboxError> {
        let mut opened = Vec::new();
        for path in paths {
            let system = is_system_path(path);
            match open_path(path, system) {
                Ok(path) => opened.push(path),
                Err(e) if system && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    let path = path.clone();
                    let cause = if source.raw_os_error() == Some(libc::ELOOP) {
                        SandboxCause::GrantThroughLink { path, source }
                    } else {
                        SandboxCause::Grant { path, source }
                    };
                    return Err(SandboxError::new(
                        &policy.plugin,
                        "filesystem grants",
                        cause,
                    ));
                }
            }
        }
        Ok(opened)
    };
    Ok(OpenedGrants {
        read_exec: open_all(&policy.read_exec)?,
        read: open_all(&policy.read)?,
        write: open_all(&policy.write)?,
    })
}

/// Opens `path` as a handle for a rule; without following symbolic links
/// unless it is a system path.
fn open_path(path: &std::path::Path, system: bool) -> std::io::Result<OpenedPath> {
    use rustix::fs::{fstat, openat2, FileType, Mode, OFlags, ResolveFlags, CWD};
    let resolve = if system {
        ResolveFlags::empty()
    } else {
        ResolveFlags::NO_SYMLINKS
    };
    let fd = openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )?;
    let file = FileType::from_raw_mode(fstat(&fd)?.st_mode) != FileType::Directory;
    Ok(OpenedPath { fd, file })
}

/// The rules of `paths`, each with `access` (its file rights only, for a
/// file).
fn rules(
    paths: &[OpenedPath],
    access: landlock::BitFlags<AccessFs>,
) -> impl Iterator<Item = Result<PathBeneath<std::os::fd::BorrowedFd<'_>>, RulesetError>> {
    paths.iter().map(move |path| {
        let access = if path.file {
            access & AccessFs::from_file(NEWEST_ABI)
        } else {
            access
        };
        Ok(PathBeneath::new(path.fd.as_fd(), access))
    })
}

fn no_new_privs_set() -> Result<(), SandboxCause> {
    match rustix::thread::no_new_privs() {
        Ok(true) => Ok(()),
        Ok(false) => Err(SandboxCause::NotKept),
        Err(errno) => Err(errno.into()),
    }
}

fn lower_limits(limits: &ResourceLimits) -> Result<(), SandboxCause> {
    let wanted = [
        (Resource::As, "RLIMIT_AS", limits.memory_bytes),
        (Resource::Nofile, "RLIMIT_NOFILE", limits.open_files),
        (Resource::Cpu, "RLIMIT_CPU", limits.cpu_seconds),
        (Resource::Nproc, "RLIMIT_NPROC", limits.processes),
        (Resource::Core, "RLIMIT_CORE", Some(0)),
    ];
    for (resource, name, value) in wanted {
        let Some(value) = value else { continue };
        // Never above the inherited hard limit, which only a privileged
        // process may raise.
        let value = getrlimit(resource)
            .maximum
            .map_or(value, |maximum| maximum.min(value));
        let limit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        setrlimit(resource, limit).map_err(|errno| SandboxCause::Limit {
            limit: name,
            source: errno.into(),
        })?;
    }
    Ok(())
}

/// The threads of this process, if `/proc` tells.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|threads| threads.count())
}

/// What landlock put in force.
const FILESYSTEM: &str = "landlock filesystem";
const NETWORK: &str = "landlock network";
const SCOPES: &str = "landlock scopes";
const LANDLOCK: &str = "landlock";

#[derive(Debug, Default)]
struct LandlockOutcome {
    filesystem: bool,
    network: bool,
    scopes: bool,
    shortfalls: Vec<Shortfall>,
}

fn landlock(
    policy: &SandboxPolicy,
    copies: &[OwnedFd],
    grants: &OpenedGrants,
    threads: Option<usize>,
) -> Result<LandlockOutcome, Shortfall> {
    let level = if policy.best_effort {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let restrict_network = policy.network != NetworkGrant::Any;

    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(REQUIRED_ABI))
        .map_err(|e| Shortfall::new(FILESYSTEM, e))?;
    if restrict_network {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| Shortfall::new(NETWORK, e))?;
    }
    let ruleset = ruleset
        .scope(Scope::from_all(REQUIRED_ABI))
        .map_err(|e| Shortfall::new(SCOPES, e))?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST_ABI))
        .map_err(|e| Shortfall::new(FILESYSTEM, e))?
        .set_compatibility(level);

    let mut read = AccessFs::from_read(NEWEST_ABI);
    read.remove(AccessFs::Execute);
    let ports = match &policy.network {
        NetworkGrant::Ports(ports) => ports.as_slice(),
        NetworkGrant::None | NetworkGrant::Any => &[],
    };
    // A rule the kernel cannot take in full is narrowed (rights it lacks,
    // folder rights on a file): that grants less, never protects less.
    let mut created = ruleset
        .create()
        .map_err(|e| Shortfall::new(LANDLOCK, e))?
        .set_compatibility(CompatLevel::BestEffort)
        .add_rules(copies.iter().map(|copy| {
            Ok::<_, RulesetError>(PathBeneath::new(copy, AccessFs::from_read(NEWEST_ABI)))
        }))
        .and_then(|r| r.add_rules(rules(&grants.read_exec, AccessFs::from_read(NEWEST_ABI))))
        .and_then(|r| r.add_rules(rules(&grants.read, read)))
        .and_then(|r| r.add_rules(rules(&grants.write, AccessFs::from_all(NEWEST_ABI))))
        .and_then(|r| {
            r.add_rules(
                ports
                    .iter()
                    .map(|&port| Ok::<_, RulesetError>(NetPort::new(port, AccessNet::ConnectTcp))),
            )
        })
        .map_err(|e| Shortfall::new(LANDLOCK, e))?
        .set_compatibility(level);
    let only_thread = threads == Some(1);
    if !only_thread {
        created = created
            .all_threads(true)
            .map_err(|_| Shortfall::new(LANDLOCK, SandboxCause::OtherThreads { threads }))?;
    }
    let status = created
        .restrict_self()
        .map_err(|e| Shortfall::new(LANDLOCK, e))?;

    Ok(outcome_of(&status, restrict_network, only_thread, threads))
}

/// What a landlock restriction put in force, read from its status: each
/// protection the kernel's landlock version allows, and a shortfall for
/// each it does not.
fn outcome_of(
    status: &RestrictionStatus,
    restrict_network: bool,
    only_thread: bool,
    threads: Option<usize>,
) -> LandlockOutcome {
    let mut outcome = LandlockOutcome::default();
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi,
        LandlockStatus::NotEnabled => {
            outcome
                .shortfalls
                .push(Shortfall::new(LANDLOCK, SandboxCause::LandlockDisabled));
            return outcome;
        }
        LandlockStatus::NotImplemented => {
            outcome
                .shortfalls
                .push(Shortfall::new(LANDLOCK, SandboxCause::LandlockUnsupported));
            return outcome;
        }
    };
    if status.ruleset == RulesetStatus::NotEnforced {
        outcome
            .shortfalls
            .push(Shortfall::new(LANDLOCK, SandboxCause::NothingEnforced));
        return outcome;
    }
    if !only_thread && !status.all_threads {
        outcome.shortfalls.push(Shortfall::new(
            LANDLOCK,
            SandboxCause::OtherThreads { threads },
        ));
        return outcome;
    }
    let needs = |feature: &'static str, protection: &'static str, required: ABI| {
        Shortfall::new(
            protection,
            SandboxCause::OldAbi {
                feature,
                required,
                found: abi,
            },
        )
    };
    outcome.filesystem = abi >= ABI::V5;
    if !outcome.filesystem {
        outcome
            .shortfalls
            .push(needs("restricting every file right", FILESYSTEM, ABI::V5));
    }
    if restrict_network {
        outcome.network = abi >= ABI::V4;
        if !outcome.network {
            outcome
                .shortfalls
                .push(needs("restricting TCP", NETWORK, ABI::V4));
        }
    }
    outcome.scopes = abi >= ABI::V6;
    if !outcome.scopes {
        outcome.shortfalls.push(needs(
            "scoping abstract UNIX sockets and signals",
            SCOPES,
            ABI::V6,
        ));
    }
    outcome
}
