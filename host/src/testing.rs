//! Load real plugin files in an integration test.
//!
//! ```no_run
//! use agent_host::testing::TestAgent;
//! use agent_host::InboundMessage;
//!
//! // The release build of your plugin, next to the plugins it depends on.
//! let agent = TestAgent::load(&["target/release/libgreeter.so"]).expect("stage the files");
//! assert!(agent.report.is_clean(), "{:?}", agent.report.failures);
//! let reply = agent.host.handle_message(InboundMessage {
//!     text: "hello".into(),
//!     ..InboundMessage::default()
//! });
//! assert!(reply.ok);
//! ```
//!
//! It must never load a file in place: the files are copied into a folder
//! of the agent's own, as an operator's plugin folder would hold them.

use crate::{HostOptions, LoadReport, PluginHost};
use std::path::{Path, PathBuf};

/// A host loaded with copies of some plugin files, in a folder removed when
/// the agent is dropped.
pub struct TestAgent {
    /// The host.
    pub host: PluginHost,
    /// What loading reported.
    pub report: LoadReport,
    dir: PathBuf,
}

impl TestAgent {
    /// Copies `files` into a fresh folder and loads it with default options.
    pub fn load(files: &[impl AsRef<Path>]) -> std::io::Result<Self> {
        Self::load_with(files, HostOptions::default())
    }

    /// Copies `files` into a fresh folder and loads it with `options`.
    pub fn load_with(files: &[impl AsRef<Path>], options: HostOptions) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("agent-host-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let staged = (|| {
            for file in files {
                let file = file.as_ref();
                let name = file.file_name().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{} names no file", file.display()),
                    )
                })?;
                std::fs::copy(file, dir.join(name))?;
            }
            let host = PluginHost::new(options)?;
            let report = host.load_dir(&dir)?;
            Ok((host, report))
        })();
        match staged {
            Ok((host, report)) => Ok(Self { host, report, dir }),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    /// The folder the files were staged in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.host.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
