//! The `agent-host` program, built in this package so that its tests can
//! run it as an operator does (and as the worker program of isolated
//! plugins): Cargo builds a package's own binaries for its tests, never
//! another package's. Its `main` is the host's.

use agent_host::cli::{self, Cli};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "worker") {
        let code = agent_host::isolation::run_worker();
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    agent_host::isolation::this_program_serves_workers();
    let cli = Cli::parse();
    cli::init_logging(&cli);
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
