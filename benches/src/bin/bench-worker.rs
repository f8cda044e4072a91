//! The worker program of the isolation benchmark: what `agent-host worker`
//! runs, the program the host starts for each isolated plugin.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_none_or(|arg| arg != "worker") {
        eprintln!("usage: bench-worker worker (started by the host, not by hand)");
        return ExitCode::from(2);
    }
    let code = agent_host::isolation::run_worker();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
