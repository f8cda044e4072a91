//! A plugin file opened where some of its plugins may be isolated.
//!
//! The host cannot learn a file's plugin names without running its code
//! (the manifests are built by plugin code), and an isolated plugin's code
//! must never run in the host, not even a library constructor. So such a
//! file is first opened by a **probe**: a worker in the strictest sandbox
//! (no grants at all) that checks the file like the host would and reports
//! its manifests, then exits. Each plugin of the file is then created where
//! the operator placed it: in a worker of its own, sandboxed by its grants;
//! or in process, from the same private copy, opened in the host only then.

use super::backend::{WorkerBackend, WorkerSpec};
use super::policy::{ResourceLimits, SandboxPolicy};
use super::process::{StartError, WorkerProcess};
use super::protocol::{Hello, Job};
use super::settings::{IsolationSettings, Placement};
use crate::load::library::{self, OpenedLibrary, PrivateCopy};
use crate::load::private_copy::ShadowDir;
use crate::load::OpenError;
use crate::plugin::{Backend, CreateContext, Failure, PluginSource};
use crate::trust::TrustPolicy;
use agent_host_plugin_sdk::manifest::{parse_manifests, Manifest};
use agent_host_plugin_sdk::{ErrorKind, Host};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A plugin file whose manifests a probe worker read.
pub(crate) struct ProbedFile {
    file: PathBuf,
    /// The private copy the probe, the workers and the host open; it stays
    /// on disk while this value or a worker of the file needs it.
    copy: PrivateCopy,
    manifests: Vec<Manifest>,
    max_bytes: u64,
    program: PathBuf,
    settings: Arc<IsolationSettings>,
    /// The library, opened in the host for the file's in-process plugins.
    in_process: OnceLock<Result<OpenedLibrary, String>>,
}

/// The worker program: the configured one, else this executable.
pub(crate) fn worker_program(settings: &IsolationSettings) -> Result<PathBuf, OpenError> {
    match &settings.worker_program {
        Some(program) => Ok(program.clone()),
        None => std::env::current_exe().map_err(|e| OpenError::Worker {
            cause: format!("cannot find this program to run as a worker: {e}"),
        }),
    }
}

fn limits(settings: &IsolationSettings, plugin: &str) -> ResourceLimits {
    let limits = settings.limits_of(plugin);
    ResourceLimits {
        memory_bytes: limits.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        open_files: limits.open_files,
        cpu_seconds: limits.cpu_seconds,
    }
}

/// Opens `file` through a probe worker, from a private copy `trust`
/// admitted: the probe, every worker and an in-process plugin of the file
/// all open that same copy.
pub(crate) fn open(
    file: &Path,
    shadow: &ShadowDir,
    max_bytes: u64,
    settings: &Arc<IsolationSettings>,
    trust: &TrustPolicy,
) -> Result<ProbedFile, OpenError> {
    let copy = library::private_copy(file, shadow, max_bytes, trust)?;
    let program = worker_program(settings)?;
    let probe = file
        .file_name()
        .map_or_else(|| "probe".to_string(), |n| n.to_string_lossy().into_owned());
    let policy = SandboxPolicy::new(
        &probe,
        &[],
        &copy.path,
        limits(settings, &probe),
        settings.best_effort,
    )
    .map_err(|e| OpenError::Worker {
        cause: e.to_string(),
    })?;
    let hello = Hello {
        file: file.to_path_buf(),
        copy: copy.path.clone(),
        max_bytes,
        job: Job::Probe,
        policy,
    };
    let worker = WorkerProcess::start(&program, &hello, &probe, None, None).map_err(|e| {
        OpenError::Worker {
            cause: format!("probe worker: {e}"),
        }
    })?;
    let manifests = parse_manifests(&worker.manifests_json).map_err(|e| OpenError::Manifest {
        cause: format!("{e:?}"),
    })?;
    Ok(ProbedFile {
        file: file.to_path_buf(),
        copy,
        manifests,
        max_bytes,
        program,
        settings: Arc::clone(settings),
        in_process: OnceLock::new(),
    })
}

impl PluginSource for ProbedFile {
    fn file(&self) -> &Path {
        &self.file
    }

    fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    fn sha256(&self) -> &str {
        &self.copy.sha256
    }

    fn image_bytes(&self) -> u64 {
        match self.in_process.get() {
            Some(Ok(library)) => library.image_bytes,
            _ => 0,
        }
    }

    fn create(
        &self,
        index: u32,
        host: Box<dyn Host>,
        context: &CreateContext<'_>,
    ) -> Result<Box<dyn Backend>, Failure> {
        let manifest = self
            .manifests
            .get(index as usize)
            .ok_or_else(|| Failure::msg(format!("no plugin number {index}")))?;
        let name = manifest.name.as_str();
        if self.settings.placement_of(name) == Placement::InProcess {
            let library = self
                .in_process
                .get_or_init(|| {
                    library::open_in_host(&self.file, &self.copy, self.max_bytes)
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| Failure::msg(e.clone()))?;
            return library.create(index, host, context);
        }
        let policy = SandboxPolicy::new(
            name,
            context.permissions,
            &self.copy.path,
            limits(&self.settings, name),
            self.settings.best_effort,
        )
        .map_err(|e| Failure::new(ErrorKind::InvalidInput, e.to_string()))?;
        let spec = WorkerSpec {
            program: self.program.clone(),
            plugin: name.to_string(),
            hello: Hello {
                file: self.file.clone(),
                copy: self.copy.path.clone(),
                max_bytes: self.max_bytes,
                job: Job::Serve { index },
                policy,
            },
            _copy: self.copy.clone(),
            manifest: manifest.clone(),
            settings: Arc::clone(&self.settings),
        };
        let backend = WorkerBackend::start(spec, host, Arc::clone(&context.announce)).map_err(
            |e| match e {
                StartError::Refused { error } => Failure::msg(error),
                other => Failure::msg(other.to_string()),
            },
        )?;
        Ok(Box::new(backend))
    }
}
