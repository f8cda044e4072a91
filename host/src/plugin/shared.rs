//! Worker processes shared by several plugins, and which one a plugin
//! placed in a worker joins.
//!
//! A plugin placed in a worker joins a [`Place`]: a supervised worker and
//! the private copies it opened. Its file's place by default (the file's
//! isolated plugins are one binary and share one worker), a place of its
//! own with `worker_per = "plugin"`, or its group's (`[isolation.groups]`),
//! whose worker opens the files of every member. A member joins the
//! current place of its file or group when that worker opened a build of
//! the same bytes (the same SHA-256) and serves no plugin of its name (a
//! reload's new generation never joins its old one's worker, which ends
//! once its plugins are gone, and its memory with it). A worker's files are fixed when it starts, as its
//! sandbox is in force before it opens them: so a member whose build is not
//! among them (a reload's new build, a file added later), or one whose
//! place is quarantined, starts a new place, which its file's or group's
//! later members join (the other plugins of a rebuilt file, as they are
//! reloaded); the plugins still in the old one stay there until they are
//! reloaded, and it ends when its last plugin leaves.
//!
//! A place's sandbox holds the union of its members' grants (only the
//! members whose grants form a valid sandbox: one that does not fails
//! alone), and each limit is the largest of its members'
//! (`IsolationSettings::limits_of_all`).

use super::{CreateContext, Failure};
use crate::isolation::engine::probe::{check_grants, sandbox_policy};
use crate::isolation::engine::supervisor::{SharedWorker, WorkerSpec};
use crate::isolation::wire::protocol::{Hello, HelloFile, Job};
use crate::isolation::IsolationSettings;
use crate::load::library::PrivateCopy;
use agent_host_plugin_sdk::manifest::Manifest;
use agent_host_plugin_sdk::ErrorKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// One opened plugin file, as a shared worker needs it.
pub(crate) struct Offer {
    /// The file in the plugin folder.
    pub file: PathBuf,
    /// Its private copy.
    pub copy: PrivateCopy,
    /// Its plugins' manifests, in export order.
    pub manifests: Vec<Manifest>,
}

/// A worker shared by the plugins that joined it, and the private copies
/// it opened (kept on disk while it may restart).
pub(crate) struct Place {
    /// The supervised worker.
    pub worker: SharedWorker,
    /// The files it opened, in the handshake's order.
    offers: Vec<Arc<Offer>>,
}

impl Place {
    /// The number of the worker's file whose bytes are those of `offer`
    /// (the same SHA-256), if it opened such a file.
    pub(crate) fn file_number(&self, offer: &Offer) -> Option<u32> {
        let sha256 = &offer.copy.sha256;
        let position = self
            .offers
            .iter()
            .position(|o| o.copy.sha256 == *sha256 && !sha256.is_empty())?;
        u32::try_from(position).ok()
    }

    /// Whether the plugin `name` from `offer` may join: the worker opened
    /// a file of the same bytes, is not quarantined, and does not serve a
    /// plugin of that name (a reloaded plugin's new generation gets a new
    /// worker, so the old one's ends with it).
    fn takes(&self, offer: &Offer, name: &str) -> bool {
        self.file_number(offer).is_some()
            && !self.worker.is_quarantined()
            && !self.worker.serves(name)
    }
}

/// What a new place is made of.
pub(crate) struct PlaceSpec<'a> {
    /// The worker's name in the log.
    pub name: String,
    /// The group it serves, if any.
    pub group: Option<String>,
    /// Its files; the first is the one a member is created from now.
    pub offers: Vec<Arc<Offer>>,
    /// Which plugins of those files are its members (their grants make
    /// its sandbox).
    pub is_member: &'a dyn Fn(&str) -> bool,
}

/// Starts a place: a worker holding the union of its members' grants,
/// under the largest of their limits, with every file of `spec` opened.
pub(crate) fn start_place(
    spec: PlaceSpec<'_>,
    program: &Path,
    max_bytes: u64,
    settings: &Arc<IsolationSettings>,
    context: &CreateContext<'_>,
) -> Result<Arc<Place>, Failure> {
    let members: Vec<&Manifest> = spec
        .offers
        .iter()
        .flat_map(|offer| offer.manifests.iter())
        .filter(|m| (spec.is_member)(&m.name))
        .collect();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let copies: Vec<&PrivateCopy> = spec.offers.iter().map(|o| &o.copy).collect();
    let mut permissions: Vec<String> = Vec::new();
    for manifest in &members {
        let granted = (context.grants)(manifest);
        // A member whose grants form no sandbox fails alone, when it is
        // created; the others' worker does not hold them.
        if check_grants(&manifest.name, &granted).is_err() {
            continue;
        }
        for permission in granted {
            if !permissions.contains(&permission) {
                permissions.push(permission);
            }
        }
    }
    let mut policy = sandbox_policy(settings, &spec.name, &names, &permissions, &copies[0].path)
        .map_err(|e| Failure::new(ErrorKind::InvalidInput, e.to_string()))?;
    policy.more_copies = copies[1..].iter().map(|c| c.path.clone()).collect();
    let grants = crate::isolation::unenforceable_in_process(&permissions)
        .into_iter()
        .map(str::to_string)
        .collect();
    let first = &spec.offers[0];
    let hello_more = spec.offers[1..]
        .iter()
        .map(|o| HelloFile {
            file: o.file.clone(),
            copy: o.copy.path.clone(),
        })
        .collect();
    let worker = WorkerSpec {
        program: program.to_path_buf(),
        name: spec.name,
        group: spec.group,
        hello: Hello {
            file: first.file.clone(),
            copy: first.copy.path.clone(),
            max_bytes,
            job: Job::Serve,
            policy,
            more: hello_more,
        },
        grants,
        settings: Arc::clone(settings),
        lifecycle_timeout: context.lifecycle_timeout,
    };
    let worker = SharedWorker::start(worker, Arc::clone(&context.announce))
        .map_err(|e| Failure::msg(e.to_string()))?;
    Ok(Arc::new(Place {
        worker,
        offers: spec.offers,
    }))
}

/// The host's shared workers: for each plugin file, the place its
/// plugins join; for each named group (`[isolation.groups]`), the files
/// offered for its members and the place its members join.
#[derive(Default)]
pub(crate) struct WorkerPlaces {
    by_file: Mutex<BTreeMap<PathBuf, Arc<Mutex<Weak<Place>>>>>,
    by_group: Mutex<BTreeMap<String, Arc<Mutex<Group>>>>,
}

#[derive(Default)]
struct Group {
    /// Files holding members, offered as they were opened.
    offers: Vec<Weak<Offer>>,
    /// The place members join.
    current: Weak<Place>,
}

impl WorkerPlaces {
    fn group(&self, name: &str) -> Arc<Mutex<Group>> {
        let mut groups = self.by_group.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(groups.entry(name.to_string()).or_default())
    }

    /// The place of the plugin file of `offer` for its plugin `name`: the
    /// current one if it may take it, else a new one started by `start`.
    /// The file's other members wait for the start and join.
    pub(crate) fn join_file(
        &self,
        offer: &Arc<Offer>,
        name: &str,
        start: impl FnOnce() -> Result<Arc<Place>, Failure>,
    ) -> Result<Arc<Place>, Failure> {
        let slot = {
            let mut files = self.by_file.lock().unwrap_or_else(PoisonError::into_inner);
            files.retain(|_, place| {
                Arc::strong_count(place) > 1
                    || place
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .strong_count()
                        > 0
            });
            Arc::clone(files.entry(offer.file.clone()).or_default())
        };
        let mut current = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(place) = current.upgrade().filter(|p| p.takes(offer, name)) {
            return Ok(place);
        }
        let place = start()?;
        *current = Arc::downgrade(&place);
        Ok(place)
    }

    /// Notes that `offer` holds members of `group`.
    pub(crate) fn offer(&self, group: &str, offer: &Arc<Offer>) {
        let group = self.group(group);
        let mut group = group.lock().unwrap_or_else(PoisonError::into_inner);
        group.offers.retain(|o| o.strong_count() > 0);
        if !group
            .offers
            .iter()
            .any(|o| o.upgrade().is_some_and(|o| o.copy.path == offer.copy.path))
        {
            group.offers.push(Arc::downgrade(offer));
        }
    }

    /// The place of `group` for its member `name` from `offer`: the current
    /// one if it may take it, else a new one started by `start` with the files
    /// of every member known now (the member's own build first, then, for
    /// each other plugin file, its latest build offered).
    pub(crate) fn join_group(
        &self,
        group: &str,
        offer: &Arc<Offer>,
        name: &str,
        start: impl FnOnce(Vec<Arc<Offer>>) -> Result<Arc<Place>, Failure>,
    ) -> Result<Arc<Place>, Failure> {
        let group = self.group(group);
        let mut group = group.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(place) = group.current.upgrade().filter(|p| p.takes(offer, name)) {
            return Ok(place);
        }
        // Offered files, then those of the current place (whose offers
        // may be gone once their load ended), the latest build of each.
        let mut known: Vec<Arc<Offer>> = group.offers.iter().filter_map(Weak::upgrade).collect();
        if let Some(place) = group.current.upgrade() {
            known.extend(place.offers.iter().cloned());
        }
        let mut offers = vec![Arc::clone(offer)];
        for other in known.into_iter().rev() {
            if !offers.iter().any(|o| o.file == other.file) {
                offers.push(other);
            }
        }
        let place = start(offers)?;
        group.current = Arc::downgrade(&place);
        Ok(place)
    }
}
