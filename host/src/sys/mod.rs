//! Everything that differs between operating systems, in one place: the
//! object format and processor a plugin file must be built for, how a
//! library is opened, which signals end the agent, how many files it may
//! open, the terminal's mode around the chat, how a file is opened without
//! waiting, and the modes and owner of the private copies' folder and
//! files. Porting the host to a new platform means editing this module
//! (and nothing else).
//!
//! Private-copy folders are guarded by a lock file each (standard file
//! locks work on every platform), so finding a folder left by a process that
//! is gone needs nothing from here.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{
    check_private_folder, create_private_folder, create_read_only_file, is_own, is_same_file,
    open_file_limit, open_library, open_without_blocking, resident_bytes, shutdown_signal,
    TerminalMode,
};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{
    check_private_folder, create_private_folder, create_read_only_file, is_own, is_same_file,
    open_file_limit, open_library, open_without_blocking, resident_bytes, shutdown_signal,
    TerminalMode,
};

use object::{Architecture, BinaryFormat};

/// The object format of loadable libraries on this operating system.
pub(crate) fn library_format() -> BinaryFormat {
    if cfg!(target_vendor = "apple") {
        BinaryFormat::MachO
    } else if cfg!(windows) {
        BinaryFormat::Pe
    } else {
        BinaryFormat::Elf
    }
}

/// The processor this host runs on, as object files name it.
pub(crate) fn architecture() -> Architecture {
    match std::env::consts::ARCH {
        "x86_64" => Architecture::X86_64,
        "x86" => Architecture::I386,
        "aarch64" => Architecture::Aarch64,
        "arm" => Architecture::Arm,
        "riscv64" => Architecture::Riscv64,
        "powerpc64" => Architecture::PowerPc64,
        "s390x" => Architecture::S390x,
        "loongarch64" => Architecture::LoongArch64,
        _ => Architecture::Unknown,
    }
}
