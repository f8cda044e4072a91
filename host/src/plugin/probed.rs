//! A plugin file opened where some of its plugins may be isolated.
//!
//! The host cannot learn a file's plugin names without running its code
//! (the manifests are built by plugin code), and an isolated plugin's code
//! must never run in the host, not even a library constructor. So such a
//! file is first opened by a **probe**: a worker in the strictest sandbox
//! (no grants at all) that checks the file like the host would and reports
//! its manifests, then exits. Each plugin of the file is then created where
//! the operator placed it: in a worker (the file's, its group's or its own:
//! `shared.rs`), sandboxed by the grants of the plugins it serves; or in
//! process, from the same private copy, opened in the host only then.
//!
//! A probe that fails because of the worker program (it cannot be run, or
//! fails its handshake), not the file, must not fail plugins that no worker
//! was ever meant to run. Yet opening the file in the host runs its code,
//! which is only safe for a file none of whose plugins is isolated. The
//! lock file says, without running the file, which plugins a pinned file
//! exports: a file pinned with plugins all placed in process is then opened
//! in the host and serves. Otherwise, a program that serves workers itself
//! (the `agent-host` binary) probes the file in the same sandbox instead,
//! and only the plugins placed in workers fail. Any other file fails whole
//! with the program's cause, and no code of it runs in the host.

use super::isolated::WorkerBackend;
use super::shared::{start_place, Offer, Place, PlaceSpec};
use super::{Backend, CreateContext, Failure, PluginSource, WorkerPlaces};
use crate::config::isolation::Sharing;
use crate::isolation::engine::probe::{
    check_grants, sandbox_policy, worker_program, WorkerSetupError,
};
use crate::isolation::engine::process::{Guards, StartError, WorkerProcess};
use crate::isolation::wire::protocol::{Hello, Job};
use crate::isolation::{IsolationSettings, Placement};
use crate::load::library::{self, OpenedLibrary, PrivateCopy};
use crate::load::private_copy::ShadowDir;
use crate::load::OpenError;
use crate::trust::TrustPolicy;
use agent_host_plugin_sdk::manifest::{parse_manifests, Manifest};
use agent_host_plugin_sdk::{ErrorKind, Host};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A plugin file whose manifests a probe worker read.
pub(crate) struct ProbedFile {
    /// The file, the private copy the probe, the workers and the host open
    /// (it stays on disk while this value or a worker of the file needs
    /// it), and its manifests.
    offer: Arc<Offer>,
    max_bytes: u64,
    program: PathBuf,
    settings: Arc<IsolationSettings>,
    /// The library, opened in the host for the file's in-process plugins.
    in_process: OnceLock<Result<OpenedLibrary, OpenError>>,
    /// Why no worker can serve this file's plugins (its probe could not run
    /// the worker program), when it was opened in the host instead.
    no_worker: Option<String>,
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
    // The worker's side of a probe reports text; so does this side, in
    // the same place.
    let worker_error = |error: WorkerSetupError| OpenError::Worker {
        cause: error.to_string(),
    };
    let program = worker_program(settings).map_err(worker_error)?;
    let probe = file
        .file_name()
        .map_or_else(|| "probe".to_string(), |n| n.to_string_lossy().into_owned());
    let policy = sandbox_policy(settings, &probe, &[], &[], &copy.path).map_err(worker_error)?;
    let hello = Hello {
        file: file.to_path_buf(),
        copy: copy.path.clone(),
        max_bytes,
        job: Job::Probe,
        policy,
        more: Vec::new(),
    };
    let guards = Guards::of(settings);
    let mut no_worker = None;
    let worker = match WorkerProcess::start(&program, &hello, &probe, None, None, guards) {
        Ok(worker) => worker,
        Err(error) if error.is_the_programs() => {
            let pinned = trust.pinned_plugins(&copy.sha256);
            let only_in_process = pinned.as_ref().is_some_and(|names| {
                names
                    .iter()
                    .all(|name| settings.placement_of(name) == Placement::InProcess)
            });
            if only_in_process {
                return open_without_worker(file, copy, max_bytes, program, settings, error);
            }
            // This program, when it serves workers itself, can still probe
            // the file in the strictest sandbox: its in-process plugins
            // then load, and its plugins placed in workers fail with the
            // configured program's cause.
            let own = crate::isolation::own_worker_program().filter(|own| *own != program);
            if let Some(own) = own {
                if let Ok(worker) = WorkerProcess::start(&own, &hello, &probe, None, None, guards) {
                    no_worker = Some(format!("the worker program cannot serve: {error}"));
                    return probed(file, copy, &worker, max_bytes, program, settings, no_worker);
                }
            }
            let why = if pinned.is_some() {
                "the lock file says it exports a plugin placed in a worker"
            } else {
                "no lock file names its plugins, which only running its code could tell"
            };
            return Err(OpenError::Worker {
                cause: format!(
                    "probe worker: {error}; the file is not opened in the host instead: {why}"
                ),
            });
        }
        Err(error) => {
            return Err(OpenError::Worker {
                cause: format!("probe worker: {error}"),
            })
        }
    };
    probed(file, copy, &worker, max_bytes, program, settings, no_worker)
}

/// The file `worker` probed, with its manifests.
fn probed(
    file: &Path,
    copy: PrivateCopy,
    worker: &WorkerProcess,
    max_bytes: u64,
    program: PathBuf,
    settings: &Arc<IsolationSettings>,
    no_worker: Option<String>,
) -> Result<ProbedFile, OpenError> {
    let manifests = parse_manifests(&worker.manifests_json).map_err(|e| OpenError::Manifest {
        cause: format!("{e:?}"),
    })?;
    Ok(ProbedFile {
        offer: Arc::new(Offer {
            file: file.to_path_buf(),
            copy,
            manifests,
        }),
        max_bytes,
        program,
        settings: Arc::clone(settings),
        in_process: OnceLock::new(),
        no_worker,
    })
}

/// Opens `file`'s private copy in the host because the worker program
/// cannot serve (`error`) and the lock file says every plugin of the file
/// is placed in process. A plugin of another name (the lock was wrong)
/// that is placed in a worker fails, naming `error`.
fn open_without_worker(
    file: &Path,
    copy: PrivateCopy,
    max_bytes: u64,
    program: PathBuf,
    settings: &Arc<IsolationSettings>,
    error: StartError,
) -> Result<ProbedFile, OpenError> {
    let cause = format!("the probe of its file could not run: {error}");
    tracing::warn!(
        file = %file.display(),
        "{cause}; the lock file says all its plugins run in process: it is opened in the host"
    );
    let library = library::open_in_host(file, &copy, max_bytes)?;
    Ok(ProbedFile {
        offer: Arc::new(Offer {
            file: file.to_path_buf(),
            copy,
            manifests: library.manifests.clone(),
        }),
        max_bytes,
        program,
        settings: Arc::clone(settings),
        in_process: OnceLock::from(Ok(library)),
        no_worker: Some(cause),
    })
}

impl ProbedFile {
    /// Whether the plugin `name` runs in a worker.
    fn isolated(&self, name: &str) -> bool {
        self.settings.placement_of(name) == Placement::Process
    }

    /// The place the plugin `name` of this file joins (its file's, its
    /// group's, or one of its own), started when none it may join runs.
    fn place_of(&self, name: &str, context: &CreateContext<'_>) -> Result<Arc<Place>, Failure> {
        let file_name = self
            .offer
            .file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let start = |spec: PlaceSpec<'_>| {
            start_place(spec, &self.program, self.max_bytes, &self.settings, context)
        };
        match self.settings.sharing_of(name) {
            Sharing::Alone => start(PlaceSpec {
                name: name.to_string(),
                group: None,
                offers: vec![Arc::clone(&self.offer)],
                is_member: &|member| member == name,
            }),
            Sharing::File => context.places.join_file(&self.offer, name, || {
                let settings = &self.settings;
                start(PlaceSpec {
                    name: file_name.clone(),
                    group: None,
                    offers: vec![Arc::clone(&self.offer)],
                    is_member: &|member| {
                        self.isolated(member) && settings.sharing_of(member) == Sharing::File
                    },
                })
            }),
            Sharing::Group(group) => {
                context
                    .places
                    .join_group(&group, &self.offer, name, |offers| {
                        start(PlaceSpec {
                            name: format!("group {group}"),
                            group: Some(group.clone()),
                            offers,
                            is_member: &|member| {
                                self.settings.group_of(member) == Some(group.as_str())
                            },
                        })
                    })
            }
        }
    }
}

impl PluginSource for ProbedFile {
    fn file(&self) -> &Path {
        &self.offer.file
    }

    fn manifests(&self) -> &[Manifest] {
        &self.offer.manifests
    }

    fn sha256(&self) -> &str {
        &self.offer.copy.sha256
    }

    fn image_bytes(&self) -> u64 {
        match self.in_process.get() {
            Some(Ok(library)) => library.image_bytes,
            _ => 0,
        }
    }

    fn offer_to(&self, places: &WorkerPlaces) {
        for manifest in &self.offer.manifests {
            if let Some(group) = self.settings.group_of(&manifest.name) {
                places.offer(group, &self.offer);
            }
        }
    }

    fn create(
        &self,
        index: u32,
        host: Box<dyn Host>,
        context: &CreateContext<'_>,
    ) -> Result<Box<dyn Backend>, Failure> {
        let manifest = self
            .offer
            .manifests
            .get(index as usize)
            .ok_or_else(|| Failure::msg(format!("no plugin number {index}")))?;
        let name = manifest.name.as_str();
        if !self.isolated(name) {
            let library = self
                .in_process
                .get_or_init(|| {
                    library::open_in_host(&self.offer.file, &self.offer.copy, self.max_bytes)
                })
                .as_ref()
                .map_err(|e| Failure::msg(e.to_string()))?;
            return library.create(index, host, context);
        }
        if let Some(cause) = &self.no_worker {
            return Err(Failure::new(
                ErrorKind::Unavailable,
                format!("it is placed in a worker process, but {cause}"),
            ));
        }
        // Its own grants first: a bad one fails this plugin alone, named.
        check_grants(name, context.permissions)
            .map_err(|e| Failure::new(ErrorKind::InvalidInput, e.to_string()))?;
        self.offer_to(context.places);
        let place = self.place_of(name, context)?;
        let file = place
            .file_number(&self.offer)
            .ok_or_else(|| Failure::msg("its worker did not open its file"))?;
        let member = place.worker.add(manifest, file, index, host)?;
        Ok(Box::new(WorkerBackend::new(member, manifest, place)))
    }
}
