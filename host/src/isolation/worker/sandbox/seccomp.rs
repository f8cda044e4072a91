//! The worker's system-call filter (see the Linux sandbox's documentation
//! for what it refuses). Built with seccompiler for x86-64 and aarch64, the
//! processors it supports that the host is tested on; elsewhere the filter
//! is missing.

use super::shortfall::SandboxCause;
use crate::isolation::wire::policy::NetworkGrant;

/// No filter for this processor: seccomp is missing.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) fn install(_network: &NetworkGrant) -> Result<(), SandboxCause> {
    Err(SandboxCause::NoFilter {
        arch: std::env::consts::ARCH,
    })
}

/// Installs the filters on every thread of the process (seccomp's TSYNC):
/// threads that already run are covered too.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) fn install(network: &NetworkGrant) -> Result<(), SandboxCause> {
    use seccompiler::{apply_filter_all_threads, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(seccompiler::Error::from)?;
    let programs = filters::programs(network, arch)?;
    for program in &programs {
        apply_filter_all_threads(program)?;
    }
    Ok(())
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod filters {
    use crate::isolation::wire::policy::NetworkGrant;
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;

    /// System calls refused with `EPERM`.
    const REFUSED: &[libc::c_long] = &[
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_kexec_load,
        SYS_KEXEC_FILE_LOAD,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        // Memory in a memory file counts against no limit of the worker's
        // until it is mapped: a plugin could fill the host's memory with it.
        libc::SYS_memfd_create,
        libc::SYS_memfd_secret,
        // System V shared memory, message queues and semaphores: a detached
        // segment holds memory no limit of the worker counts either, and
        // nothing a plugin needs is there. (POSIX message queues are held
        // by `RLIMIT_MSGQUEUE`, in the worker's own IPC namespace.)
        libc::SYS_shmget,
        libc::SYS_shmat,
        libc::SYS_shmdt,
        libc::SYS_shmctl,
        libc::SYS_msgget,
        libc::SYS_msgsnd,
        libc::SYS_msgrcv,
        libc::SYS_msgctl,
        libc::SYS_semget,
        libc::SYS_semop,
        libc::SYS_semtimedop,
        libc::SYS_semctl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_ioperm,
    ];

    /// `kexec_file_load`, which the libc crate lacks for some aarch64 targets:
    /// the generic number there.
    #[cfg(target_arch = "aarch64")]
    const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;
    #[cfg(not(target_arch = "aarch64"))]
    const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;

    /// The `clone` flags that create namespaces.
    const NAMESPACE_FLAGS: &[libc::c_int] = &[
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWCGROUP,
    ];

    /// The `socket` calls refused under `network` (an empty list refuses
    /// every call). A rule is a conjunction of conditions and any matching
    /// rule refuses, so each rule names one way a call can fall outside
    /// what the grant allows:
    ///
    /// * no grant: every socket;
    /// * `network:connect:PORT`: anything but IPv4 or IPv6, anything but a
    ///   stream, any protocol but the default or TCP (SCTP and MPTCP are
    ///   streams too);
    /// * `network:*`: anything but IPv4 or IPv6, anything but a stream or a
    ///   datagram, any protocol but the default, TCP or UDP (ICMP "ping"
    ///   datagrams included).
    ///
    /// UNIX, raw, packet and netlink sockets are never allowed.
    fn socket_rules(network: &NetworkGrant) -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let (kinds, protocols): (&[libc::c_int], &[libc::c_int]) = match network {
            NetworkGrant::None => return Ok(Vec::new()),
            NetworkGrant::Ports(_) => (&[libc::SOCK_STREAM], &[0, libc::IPPROTO_TCP]),
            NetworkGrant::Any => (
                &[libc::SOCK_STREAM, libc::SOCK_DGRAM],
                &[0, libc::IPPROTO_TCP, libc::IPPROTO_UDP],
            ),
        };
        let mut rules = vec![
            SeccompRule::new(vec![
                arg(0, SeccompCmpOp::Ne, libc::AF_INET)?,
                arg(0, SeccompCmpOp::Ne, libc::AF_INET6)?,
            ])?,
            SeccompRule::new(
                protocols
                    .iter()
                    .map(|&protocol| arg(2, SeccompCmpOp::Ne, protocol))
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
        ];
        // The type's low four bits are the kind of socket; the flags above
        // them (`SOCK_NONBLOCK`, `SOCK_CLOEXEC`) are free.
        for kind in 0..=SOCKET_KIND_MASK {
            if !kinds.contains(&kind) {
                rules.push(SeccompRule::new(vec![arg(
                    1,
                    SeccompCmpOp::MaskedEq(u64::from(SOCKET_KIND_MASK.unsigned_abs())),
                    kind,
                )?])?);
            }
        }
        Ok(rules)
    }

    /// The bits of `socket`'s type argument that hold the kind of socket.
    const SOCKET_KIND_MASK: libc::c_int = 0xf;

    /// A condition on argument `index` of a system call, compared as its low
    /// 32 bits: `clone` flags and socket domains, types and protocols are
    /// `int`s to the kernel.
    fn arg(
        index: u8,
        op: SeccompCmpOp,
        value: libc::c_int,
    ) -> Result<SeccompCondition, seccompiler::BackendError> {
        SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            op,
            u64::from(value.unsigned_abs()),
        )
    }

    /// The filters, one per action (a seccompiler filter has one).
    pub(super) fn programs(
        network: &NetworkGrant,
        arch: TargetArch,
    ) -> Result<Vec<BpfProgram>, seccompiler::Error> {
        let errno = |errno: libc::c_int| SeccompAction::Errno(errno.unsigned_abs());

        let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
            REFUSED.iter().map(|&call| (call, Vec::new())).collect();
        let namespace_rules = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                SeccompRule::new(vec![arg(
                    0,
                    SeccompCmpOp::MaskedEq(u64::from(flag.unsigned_abs())),
                    flag,
                )?])
            })
            .collect::<Result<Vec<_>, _>>()?;
        refused.insert(libc::SYS_clone, namespace_rules);

        let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);

        if *network != NetworkGrant::Any {
            refused.insert(libc::SYS_listen, Vec::new());
        }
        let sockets = BTreeMap::from([
            (libc::SYS_socket, socket_rules(network)?),
            // A connected pair reaches nothing by itself, but a datagram end
            // can still send to a named socket's address: none at all.
            (libc::SYS_socketpair, Vec::new()),
        ]);

        let mut programs = Vec::new();
        for (rules, action) in [
            (refused, errno(libc::EPERM)),
            (clone3, errno(libc::ENOSYS)),
            (sockets, errno(libc::EACCES)),
        ] {
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)?;
            programs.push(BpfProgram::try_from(filter)?);
        }
        #[cfg(target_arch = "x86_64")]
        programs.push(x32_guard());
        Ok(programs)
    }

    /// On x86-64, the x32 system calls (numbers with bit 30 set) reach the same
    /// kernel code under other numbers, out of the other filters' reach: refuse
    /// them all, as this process never makes them. The other filters already
    /// end a process that makes 32-bit system calls.
    #[cfg(target_arch = "x86_64")]
    fn x32_guard() -> BpfProgram {
        use seccompiler::sock_filter;
        const X32_SYSCALL_BIT: u32 = 0x4000_0000;
        // BPF opcodes are 16 bits wide; libc gives them as `u32`.
        let code = |code: u32| code as u16;
        vec![
            // Load `seccomp_data.nr`.
            sock_filter {
                code: code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
                jt: 0,
                jf: 0,
                k: 0,
            },
            sock_filter {
                code: code(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K),
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            sock_filter {
                code: code(libc::BPF_RET | libc::BPF_K),
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs(),
            },
            sock_filter {
                code: code(libc::BPF_RET | libc::BPF_K),
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ]
    }
}
