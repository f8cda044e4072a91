//! Where the `agent-host` program is.

use crate::Error;
use std::path::{Path, PathBuf};

/// The environment variable that names the program.
pub(crate) const PROGRAM_VARIABLE: &str = "AGENT_HOST_BIN";

/// `chosen`, else `$AGENT_HOST_BIN`, else `agent-host` on `PATH`.
pub(crate) fn find(chosen: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(path) = chosen {
        return existing(path, "the program given to AgentBuilder::program");
    }
    if let Some(path) = std::env::var_os(PROGRAM_VARIABLE) {
        return existing(Path::new(&path), PROGRAM_VARIABLE);
    }
    let name = format!("agent-host{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|folder| folder.join(&name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::ProgramNotFound(format!(
                "{PROGRAM_VARIABLE} is not set and no {name} is on PATH; set {PROGRAM_VARIABLE} \
                 to the agent-host program your agent runs"
            ))
        })
}

fn existing(path: &Path, named_by: &str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::ProgramNotFound(format!(
            "{} (named by {named_by}) is not a file",
            path.display()
        )))
    }
}
