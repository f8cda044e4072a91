//! The `agent-host` program, built in this package so that its tests can
//! run it as an operator does (and as the worker program of isolated
//! plugins): Cargo builds a package's own binaries for its tests, never
//! another package's. Its `main` is the host's.

fn main() -> std::process::ExitCode {
    agent_host::cli::main()
}
