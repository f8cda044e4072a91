//! The `agent-host` command line: `check`, `list`, `run` and `reload`.

use agent_host::cli::{self, Cli};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `agent-host worker` is how the host runs an isolated plugin; it is
    // not for people, so it is not in the help.
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
