//! The `agent-host` command line: `check`, `list`, `run` and `reload`.

fn main() -> std::process::ExitCode {
    agent_host::cli::main()
}
