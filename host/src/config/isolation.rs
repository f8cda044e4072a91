//! The operator's `[isolation]` table: which plugins run in a sandboxed
//! worker process, with what resource limits, and how crashed workers are
//! restarted.
//!
//! ```toml
//! [isolation]
//! default = "in-process"          # or "process"
//! process = ["weather", "notes"]  # run in workers (names; a trailing * matches a prefix)
//! in_process = []                 # the opposite, when the default is "process"
//! best_effort = false             # start even where the kernel lacks a protection
//! worker_user = "nobody"          # the user workers of a root agent run as
//! worker_per = "file"             # or "plugin": one worker per plugin
//!
//! [isolation.limits]              # every worker
//! memory_mb = 1024
//! open_files = 256
//! max_processes = 64              # processes and threads of one worker
//!
//! [isolation.plugins.weather]     # one plugin's limits
//! memory_mb = 256
//!
//! [isolation.groups]              # named workers shared by several files
//! search = ["weather", "geolocation"]
//! ```
//!
//! **Which plugins share a worker.** By default (`worker_per = "file"`) the
//! plugins of one library file that are placed in workers share one worker
//! process: they are one binary and could not be kept apart inside it
//! anyway. `worker_per = "plugin"` gives each its own. A group of
//! `[isolation.groups]` names plugins (exact names, no patterns): every
//! listed plugin runs in a worker (listing it is enough), and the plugins
//! of a group, whatever their files, share the group's one worker. A
//! shared worker's sandbox holds the union of its members' grants, and each
//! of its limits is the largest of its members' limits (unset, which is
//! unlimited, when any member leaves it unset), so no member gets less than
//! it would alone. A name in two groups, a group without members, an entry
//! that is empty or a pattern, or one that `in_process` keeps in the host,
//! is a config error naming the group and the entry; a name no plugin has
//! is reported with the other unknown names when the plugins load.
//!
//! What the host accepts from a worker (in `[isolation]`):
//!
//! ```toml
//! max_frame_bytes = 16777216      # a longer frame is refused from its length; the worker is restarted
//! write_timeout_ms = 10000        # a worker that stops reading is killed after this (or the call's deadline)
//! ```

use crate::permissions::matches;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// In the host's own process: calls are function calls.
    #[default]
    InProcess,
    /// In a sandboxed worker process of its own.
    Process,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::InProcess => "in-process",
            Placement::Process => "process",
        })
    }
}

/// How many workers the plugins placed in workers get, outside the named
/// groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerPer {
    /// One worker per plugin file: the file's isolated plugins share it.
    #[default]
    File,
    /// One worker per plugin.
    Plugin,
}

/// Which worker a plugin placed in a worker shares, and with whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// A worker of its own.
    Alone,
    /// The worker of its file, with the file's other plugins placed in
    /// workers (outside any group).
    File,
    /// The worker of the named group.
    Group(String),
}

/// A `[isolation.groups]` table that cannot work, naming the group and the
/// entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// A group lists no plugin.
    #[error("[isolation.groups] {group}: the group lists no plugin")]
    Empty {
        /// The group.
        group: String,
    },
    /// An entry is empty or a pattern: groups name plugins exactly.
    #[error(
        "[isolation.groups] {group}: entry '{entry}' is not a plugin name \
         (groups name plugins exactly, without patterns)"
    )]
    NotAName {
        /// The group.
        group: String,
        /// The entry.
        entry: String,
    },
    /// A plugin is listed twice (in one group, or in two).
    #[error("[isolation.groups] {group}: entry '{entry}' is already in group '{first}'")]
    Twice {
        /// The group that lists it again.
        group: String,
        /// The entry.
        entry: String,
        /// The group that listed it first.
        first: String,
    },
    /// A plugin `in_process` keeps in the host.
    #[error(
        "[isolation.groups] {group}: entry '{entry}' is also kept in the host by \
         [isolation] in_process; a group's plugins run in its worker"
    )]
    InProcess {
        /// The group.
        group: String,
        /// The entry.
        entry: String,
    },
}

/// Resource limits of a worker process; unset fields take the host-wide
/// value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Address space, in MiB (`RLIMIT_AS`).
    pub memory_mb: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processor time, in seconds (`RLIMIT_CPU`).
    pub cpu_seconds: Option<u64>,
    /// Processes and threads of one worker, its own threads included
    /// (`RLIMIT_NPROC`, counted in the worker's own user namespace). A
    /// worker runs a thread per call in flight, so keep it above the
    /// host's `max_calls_in_flight`.
    pub max_processes: Option<u64>,
}

/// The `[isolation]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationSettings {
    /// Where plugins run unless listed otherwise.
    pub default: Placement,
    /// Plugins that run in workers (when the default is in-process).
    pub process: Vec<String>,
    /// Plugins that run in process (when the default is `process`).
    pub in_process: Vec<String>,
    /// Start an isolated plugin even where the kernel cannot put every
    /// protection in force (its status then lists what is missing).
    pub best_effort: bool,
    /// The program to run as a worker (`PROGRAM worker`); the running
    /// executable when unset, which is right for the `agent-host` binary.
    /// A program that embeds the host as a library sets it to an
    /// `agent-host` binary of the same build.
    pub worker_program: Option<PathBuf>,
    /// The user a worker runs as when the agent runs as root: a user name
    /// or a numeric id. Unset, workers of a root agent run as `nobody`; an
    /// agent that is not root runs its workers as its own user, and setting
    /// this is then an error. `"root"` keeps root (without capabilities, in
    /// a user namespace of its own), which the worker's status reports.
    pub worker_user: Option<String>,
    /// Limits of every worker.
    pub limits: Limits,
    /// Limits of one plugin's worker, by plugin name.
    pub plugins: BTreeMap<String, Limits>,
    /// Whether the plugins of one file share a worker (the default) or
    /// each gets its own.
    pub worker_per: WorkerPer,
    /// Named workers, each shared by the plugins it lists (of any file).
    pub groups: BTreeMap<String, Vec<String>>,
    /// Wait before the first restart of a crashed worker, in ms; doubled
    /// for each further crash in the window.
    pub restart_backoff_ms: u64,
    /// The longest wait before a restart, in ms.
    pub restart_backoff_max_ms: u64,
    /// Crashes within `crash_window_ms` after which a plugin is
    /// quarantined (no more restarts; its calls fail at once).
    pub quarantine_after_crashes: u32,
    /// The window for counting crashes, in ms.
    pub crash_window_ms: u64,
    /// The longest frame (a reply, a callback) the host accepts from a
    /// worker, in bytes; a longer one is refused from its length alone, and
    /// the worker is killed and restarted. From 64 KiB to 64 MiB.
    #[serde(deserialize_with = "frame_limit")]
    pub max_frame_bytes: u64,
    /// How long a write to a worker may wait for the worker to read, in ms
    /// (a call's own deadline may end the wait sooner); then the worker is
    /// killed and restarted.
    pub write_timeout_ms: u64,
}

impl Default for IsolationSettings {
    fn default() -> Self {
        Self {
            default: Placement::InProcess,
            process: Vec::new(),
            in_process: Vec::new(),
            best_effort: false,
            worker_program: None,
            worker_user: None,
            limits: Limits::default(),
            plugins: BTreeMap::new(),
            worker_per: WorkerPer::File,
            groups: BTreeMap::new(),
            restart_backoff_ms: 10,
            restart_backoff_max_ms: 5_000,
            quarantine_after_crashes: 5,
            crash_window_ms: 60_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            write_timeout_ms: 10_000,
        }
    }
}

/// The longest frame the host accepts from a worker unless the config says
/// otherwise: above the largest reply a plugin legitimately sends (a
/// request body is at most a few MiB), far below a worker's memory.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 16 * 1024 * 1024;

/// The longest frame either side of a worker's connection accepts, whatever
/// the config says: the ceiling of `max_frame_bytes`.
pub(crate) const FRAME_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// `max_frame_bytes`, refused outside 64 KiB..=64 MiB: a frame over the
/// ceiling is refused on both sides whatever the config says, and a limit
/// much below a plugin's replies would fail every call.
fn frame_limit<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let bytes = u64::deserialize(deserializer)?;
    let ceiling = FRAME_BYTES_CEILING as u64;
    if !(64 * 1024..=ceiling).contains(&bytes) {
        return Err(serde::de::Error::custom(format!(
            "max_frame_bytes = {bytes}: must be from 65536 (64 KiB) to {ceiling} (64 MiB)"
        )));
    }
    Ok(bytes)
}

/// The host-wide memory limit when the config sets none, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// The host-wide open-file limit when the config sets none.
pub const DEFAULT_OPEN_FILES: u64 = 256;
/// The host-wide limit of processes and threads per worker when the config
/// sets none: twice the default `max_calls_in_flight`, as a worker runs a
/// thread per call in flight.
pub const DEFAULT_MAX_PROCESSES: u64 = 64;
/// The user workers of a root agent run as when the config names none.
pub const DEFAULT_WORKER_USER: &str = "nobody";

impl IsolationSettings {
    /// Where the plugin `name` runs: a group's member runs in a worker.
    pub fn placement_of(&self, name: &str) -> Placement {
        let listed = |list: &[String]| list.iter().any(|pattern| matches(pattern, name));
        if self.group_of(name).is_some() {
            return Placement::Process;
        }
        match self.default {
            Placement::InProcess if listed(&self.process) => Placement::Process,
            Placement::Process if listed(&self.in_process) => Placement::InProcess,
            other => other,
        }
    }

    /// Whether any plugin may run in a worker: only then must plugin files
    /// be opened in a worker first, before their names are known.
    pub fn any_process(&self) -> bool {
        self.default == Placement::Process || !self.process.is_empty() || !self.groups.is_empty()
    }

    /// The group that lists the plugin `name`, if one does.
    pub fn group_of(&self, name: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(_, members)| members.iter().any(|m| m == name))
            .map(|(group, _)| group.as_str())
    }

    /// Which worker the plugin `name`, placed in a worker, shares.
    pub fn sharing_of(&self, name: &str) -> Sharing {
        match (self.group_of(name), self.worker_per) {
            (Some(group), _) => Sharing::Group(group.to_string()),
            (None, WorkerPer::File) => Sharing::File,
            (None, WorkerPer::Plugin) => Sharing::Alone,
        }
    }

    /// Checks `[isolation.groups]`: every group lists plugins by exact
    /// name, each in one group only, none kept in the host by `in_process`.
    pub fn validate(&self) -> Result<(), GroupError> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (group, members) in &self.groups {
            if members.is_empty() {
                return Err(GroupError::Empty {
                    group: group.clone(),
                });
            }
            for entry in members {
                let named = |e: fn(String, String) -> GroupError| e(group.clone(), entry.clone());
                if entry.trim().is_empty() || entry.contains('*') {
                    return Err(named(|group, entry| GroupError::NotAName { group, entry }));
                }
                if let Some(first) = seen.insert(entry, group) {
                    return Err(GroupError::Twice {
                        group: group.clone(),
                        entry: entry.clone(),
                        first: first.to_string(),
                    });
                }
                if self
                    .in_process
                    .iter()
                    .any(|pattern| matches(pattern, entry))
                {
                    return Err(named(|group, entry| GroupError::InProcess { group, entry }));
                }
            }
        }
        Ok(())
    }

    /// The limits of a worker shared by `members`: each the largest of the
    /// members' ([`IsolationSettings::limits_of`]); unset (unlimited) when
    /// any member leaves it unset.
    pub fn limits_of_all<'a>(&self, members: impl IntoIterator<Item = &'a str>) -> Limits {
        let mut all = members.into_iter().map(|name| self.limits_of(name));
        let Some(first) = all.next() else {
            return self.limits_of("");
        };
        let larger = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a.max(b));
        all.fold(first, |acc, limits| Limits {
            memory_mb: larger(acc.memory_mb, limits.memory_mb),
            open_files: larger(acc.open_files, limits.open_files),
            cpu_seconds: larger(acc.cpu_seconds, limits.cpu_seconds),
            max_processes: larger(acc.max_processes, limits.max_processes),
        })
    }

    /// The limits of the plugin `name`'s worker: its own, then the
    /// host-wide ones, then the defaults.
    pub fn limits_of(&self, name: &str) -> Limits {
        let own = self.plugins.get(name).cloned().unwrap_or_default();
        Limits {
            memory_mb: own
                .memory_mb
                .or(self.limits.memory_mb)
                .or(Some(DEFAULT_MEMORY_MB)),
            open_files: own
                .open_files
                .or(self.limits.open_files)
                .or(Some(DEFAULT_OPEN_FILES)),
            cpu_seconds: own.cpu_seconds.or(self.limits.cpu_seconds),
            max_processes: own
                .max_processes
                .or(self.limits.max_processes)
                .or(Some(DEFAULT_MAX_PROCESSES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> IsolationSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_lists_invert_the_default() {
        let settings = parse("process = [\"weather\", \"notes-*\"]");
        assert_eq!(settings.placement_of("weather"), Placement::Process);
        assert_eq!(settings.placement_of("notes-daily"), Placement::Process);
        assert_eq!(settings.placement_of("geolocation"), Placement::InProcess);
        assert!(settings.any_process());
        let settings = parse("default = \"process\"\nin_process = [\"http-client\"]");
        assert_eq!(settings.placement_of("http-client"), Placement::InProcess);
        assert_eq!(settings.placement_of("weather"), Placement::Process);
        assert!(!IsolationSettings::default().any_process());
    }

    #[test]
    fn limits_fall_back_from_the_plugin_to_the_host_to_the_defaults() {
        let settings =
            parse("[limits]\nopen_files = 64\n[plugins.weather]\nmemory_mb = 256\ncpu_seconds = 5");
        let weather = settings.limits_of("weather");
        assert_eq!(weather.memory_mb, Some(256));
        assert_eq!(weather.open_files, Some(64));
        assert_eq!(weather.cpu_seconds, Some(5));
        let other = settings.limits_of("notes");
        assert_eq!(other.memory_mb, Some(DEFAULT_MEMORY_MB));
        assert_eq!(other.cpu_seconds, None);
        assert_eq!(other.max_processes, Some(DEFAULT_MAX_PROCESSES));
        let settings = parse("[limits]\nmax_processes = 8\n[plugins.weather]\nmax_processes = 4");
        assert_eq!(settings.limits_of("weather").max_processes, Some(4));
        assert_eq!(settings.limits_of("notes").max_processes, Some(8));
    }

    #[test]
    fn a_frame_limit_outside_its_range_is_refused_with_the_range() {
        assert_eq!(
            IsolationSettings::default().max_frame_bytes,
            DEFAULT_MAX_FRAME_BYTES
        );
        assert_eq!(parse("max_frame_bytes = 65536").max_frame_bytes, 65536);
        for bad in ["max_frame_bytes = 100", "max_frame_bytes = 1073741824"] {
            let error = toml::from_str::<IsolationSettings>(bad)
                .unwrap_err()
                .to_string();
            assert!(error.contains("must be from 65536"), "{error}");
        }
    }

    #[test]
    fn plugins_share_their_files_worker_unless_grouped_or_told_otherwise() {
        let settings = parse("process = [\"a\"]\n[groups]\nsearch = [\"b\", \"c\"]");
        assert_eq!(settings.sharing_of("a"), Sharing::File);
        assert_eq!(settings.sharing_of("b"), Sharing::Group("search".into()));
        assert_eq!(settings.placement_of("c"), Placement::Process);
        assert_eq!(settings.placement_of("d"), Placement::InProcess);
        assert!(parse("[groups]\ns = [\"b\"]").any_process());
        let settings = parse("worker_per = \"plugin\"\nprocess = [\"a\"]");
        assert_eq!(settings.sharing_of("a"), Sharing::Alone);
        settings.validate().unwrap();
    }

    #[test]
    fn a_bad_group_is_refused_naming_the_group_and_the_entry() {
        let cases = [
            ("[groups]\nsearch = []", "search: the group lists no plugin"),
            (
                "[groups]\nsearch = [\"we*\"]",
                "search: entry 'we*' is not a plugin name",
            ),
            (
                "[groups]\nsearch = [\"\"]",
                "search: entry '' is not a plugin name",
            ),
            (
                "[groups]\na = [\"x\"]\nb = [\"y\", \"x\"]",
                "b: entry 'x' is already in group 'a'",
            ),
            (
                "[groups]\na = [\"x\", \"x\"]",
                "a: entry 'x' is already in group 'a'",
            ),
            (
                "default = \"process\"\nin_process = [\"x*\"]\n[groups]\na = [\"xy\"]",
                "a: entry 'xy' is also kept in the host",
            ),
        ];
        for (text, cause) in cases {
            let error = parse(text).validate().unwrap_err().to_string();
            assert!(error.contains(cause), "{text}: {error}");
            assert!(error.starts_with("[isolation.groups] "), "{error}");
        }
    }

    #[test]
    fn a_shared_worker_takes_the_largest_limit_of_its_members() {
        let settings = parse(
            "[limits]\nmemory_mb = 100\ncpu_seconds = 5\n[plugins.a]\nmemory_mb = 300\n\
             [plugins.b]\ncpu_seconds = 9\nopen_files = 10",
        );
        let both = settings.limits_of_all(["a", "b"]);
        assert_eq!(both.memory_mb, Some(300));
        assert_eq!(both.cpu_seconds, Some(9));
        assert_eq!(both.open_files, Some(DEFAULT_OPEN_FILES));
        let settings = parse("[plugins.a]\ncpu_seconds = 5");
        assert_eq!(settings.limits_of_all(["a", "b"]).cpu_seconds, None);
        assert_eq!(settings.limits_of_all(["a"]).cpu_seconds, Some(5));
    }

    #[test]
    fn unknown_keys_and_placements_are_refused() {
        assert!(toml::from_str::<IsolationSettings>("defualt = \"process\"").is_err());
        let error = toml::from_str::<IsolationSettings>("default = \"sandbox\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("in-process"), "{error}");
    }
}
