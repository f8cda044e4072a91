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
//!
//! [isolation.limits]              # every worker
//! memory_mb = 1024
//! open_files = 256
//! max_processes = 64              # processes and threads of one worker
//!
//! [isolation.plugins.weather]     # one plugin's limits
//! memory_mb = 256
//! ```
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
    /// Where the plugin `name` runs.
    pub fn placement_of(&self, name: &str) -> Placement {
        let listed = |list: &[String]| list.iter().any(|pattern| matches(pattern, name));
        match self.default {
            Placement::InProcess if listed(&self.process) => Placement::Process,
            Placement::Process if listed(&self.in_process) => Placement::InProcess,
            other => other,
        }
    }

    /// Whether any plugin may run in a worker: only then must plugin files
    /// be opened in a worker first, before their names are known.
    pub fn any_process(&self) -> bool {
        self.default == Placement::Process || !self.process.is_empty()
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
    fn unknown_keys_and_placements_are_refused() {
        assert!(toml::from_str::<IsolationSettings>("defualt = \"process\"").is_err());
        let error = toml::from_str::<IsolationSettings>("default = \"sandbox\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("in-process"), "{error}");
    }
}
