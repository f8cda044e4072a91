//! The command line: argument parsing and one module per command.
//!
//! `check` loads the folder, reports, and shuts the plugins down; `list`
//! reads the folder's manifests without starting a plugin, or (`--url`)
//! asks a running agent what it serves;
//! `run` serves until Ctrl-C or SIGTERM; `reload` asks a running agent to
//! reload one plugin from its file (or, with `--cluster`, every host of
//! its cluster, one at a time); `cluster` shows and decides the cluster's
//! hosts and lock hashes; `lock` pins a folder's files, `sign`
//! and `keygen` sign them. `--version` names the plugin ABI and SDK
//! versions this host speaks besides its own.

mod chat;
mod check;
mod cluster;
mod json_lines;
mod list_remote;
mod lock;
mod log_output;
mod run;
mod sign;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

/// What `--version` prints after the program name: the host's version, then
/// the plugin ABI and SDK versions it speaks, such as
/// `0.1.0 (plugin ABI 1.0.0, agent-host-plugin-sdk 0.1.0)`. A plugin loads
/// when it was built against the same ABI major version.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (plugin ABI {}, agent-host-plugin-sdk {})",
            env!("CARGO_PKG_VERSION"),
            agent_host_plugin_abi::ABI_VERSION,
            agent_host_plugin_sdk::SDK_VERSION
        )
    })
}

/// The `agent-host` command line: `check`, `list`, `run`, `reload`,
/// `cluster`, `lock`, `sign` and `keygen`.
#[derive(Debug, Parser)]
#[command(
    name = "agent-host",
    version = version(),
    about = "A plugin host for AI agents: native plugins, dependencies, hot reload."
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace) and full diagnostics for rejected plugins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands: `check`, `list`, `run`, `reload`, `cluster`, `lock`,
/// `sign`, `keygen`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify every plugin file in a folder: load, check, start and stop them.
    /// Exits non-zero when any file fails.
    Check {
        /// The plugin folder.
        dir: PathBuf,
        /// The config file (TOML): plugin configs are validated against their schemas.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Load only files pinned by this lock file (`--locked` alone: the
        /// config's `[trust] lock`, else DIR/plugins.lock).
        #[arg(long, value_name = "LOCK", num_args = 0..=1, require_equals = true)]
        locked: Option<Option<PathBuf>>,
    },
    /// Describe the plugins in a folder from their manifests: name,
    /// version, dependencies, components, file, load order and where each
    /// would run. Reads only: no plugin starts (no `on_load`, no service,
    /// no worker serving it). With --url, the plugins a running agent
    /// serves instead: their state, where each runs (worker PIDs
    /// included), their counts and the files that failed to load.
    ///
    /// With --url, the API token is read from the environment variable
    /// AGENT_HOST_TOKEN and sent as `Authorization: Bearer`.
    List {
        /// The plugin folder.
        #[arg(required_unless_present = "url", conflicts_with = "url")]
        dir: Option<PathBuf>,
        /// A running agent's HTTP address (started with --listen), such as
        /// http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// The config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the agent with the plugins in a folder until Ctrl-C or SIGTERM.
    Run {
        /// The plugin folder.
        #[arg(long)]
        plugins: PathBuf,
        /// The config file (TOML): host settings, plugin configs, grants, senders.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also serve the HTTP API on this address, such as 127.0.0.1:8080
        /// (port 0 picks a free port); it keeps serving after stdin closes.
        /// Without [[api.tokens]] in the config, only a loopback address.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Serve the HTTP API without API tokens on an address other than
        /// loopback: anyone who reaches it may send messages and reload plugins.
        #[arg(long)]
        allow_unauthenticated: bool,
        /// Reload a plugin when its file changes, load new files, stop
        /// plugins whose files are removed.
        #[arg(long)]
        watch: bool,
        /// Load only files pinned by this lock file, at start and on every
        /// reload (`--locked` alone: the config's `[trust] lock`, else
        /// PLUGINS/plugins.lock).
        #[arg(long, value_name = "LOCK", num_args = 0..=1, require_equals = true)]
        locked: Option<Option<PathBuf>>,
    },
    /// Pin the plugin files of a folder: write a lock file with each file's
    /// name, SHA-256 and plugins. Exits non-zero, writing nothing, when a
    /// file cannot be opened.
    Lock {
        /// The plugin folder.
        dir: PathBuf,
        /// Where to write the lock (default: DIR/plugins.lock).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Re-pin only this file (a file name or a plugin name), keeping
        /// the other entries of the existing lock.
        #[arg(long, value_name = "NAME")]
        update: Option<String>,
        /// The config file (TOML): its [isolation] decides how files are
        /// opened, its trusted keys which may be pinned.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Sign plugin files with a minisign secret key: writes FILE.minisig
    /// next to each. An encrypted key's password is read from
    /// AGENT_HOST_SIGNING_PASSWORD.
    Sign {
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
        /// The files to sign.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make a minisign key pair for signing plugins (encrypted with
    /// AGENT_HOST_SIGNING_PASSWORD when it is set).
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = "agent-host.key")]
        secret_key: PathBuf,
        /// Where to write the public key.
        #[arg(long, default_value = "agent-host.pub")]
        public_key: PathBuf,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Ask a running agent (started with --listen) to reload a plugin from
    /// its file. Exits non-zero when the new build is refused.
    ///
    /// The API token (a token with the `admin` role) is read from the
    /// environment variable AGENT_HOST_TOKEN and sent as
    /// `Authorization: Bearer`.
    Reload {
        /// The plugin's name.
        plugin: String,
        /// The agent's HTTP address, such as http://127.0.0.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Reload even when the file is byte-identical to the serving
        /// generation's (a restart of the plugin, its state handed over).
        #[arg(long)]
        force: bool,
        /// Reload it on every live host of the cluster that `--config`'s
        /// [cluster] names, one at a time: each host answers and takes
        /// messages again before the next is asked. A refusal stops the
        /// roll (the hosts already reloaded keep the new build).
        #[arg(long, requires = "config", conflicts_with = "url")]
        cluster: bool,
        /// The agent's config file, for `--cluster`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show or decide an agent's cluster (its config's [cluster] table):
    /// its hosts, their lock hashes, and the hashes it accepts.
    Cluster {
        /// The agent's config file.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// The `cluster` commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The hosts (lock hash, plugins, load, last heartbeat, whether each
    /// takes messages or why not) and the accepted lock hashes.
    Status {
        /// Print JSON (what `GET /v1/cluster` answers).
        #[arg(long)]
        json: bool,
    },
    /// Accept a lock hash: hosts with it take messages (a new build
    /// joining a rolling upgrade).
    AcceptLock {
        /// The hash (64 hex digits, or the start of one a host announces).
        hash: String,
    },
    /// Retire a lock hash: hosts with it stop taking messages (the old
    /// build, once a rolling upgrade is done).
    RetireLock {
        /// The hash (64 hex digits, or the start of one a host announces).
        hash: String,
    },
}

impl Command {
    /// Whether the command prints a report of its own (so the loader's log
    /// lines would only repeat it).
    fn reports(&self) -> bool {
        matches!(
            self,
            Command::Check { .. }
                | Command::List { .. }
                | Command::Reload { .. }
                | Command::Cluster { .. }
                | Command::Lock { .. }
                | Command::Sign { .. }
                | Command::Keygen { .. }
        )
    }
}

/// The log filter directive that silences the chat's line editor.
const LINE_EDITOR_SILENT: &str = "rustyline=off";

/// The `agent-host` program's `main`: `agent-host worker` (how the host
/// runs an isolated plugin; not for people, so not in the help), else the
/// command line. Every program that is the host calls this and nothing
/// else (the `agent-host` binary, and the copy the tests package builds
/// for its own tests).
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "worker") {
        let code = crate::isolation::run_worker();
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    crate::isolation::this_program_serves_workers();
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Sets up `tracing` from `RUST_LOG`, or else from the verbosity flag; log
/// lines go to stderr, or above the prompt while the chat runs.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.verbose, cli.command.reports()) {
        (0, true) => "warn,agent_host::loader=off",
        (0, false) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // The line editor logs every key and every line it prints; printed
    // above its own prompt, those lines would never end.
    let filter = match LINE_EDITOR_SILENT.parse() {
        Ok(silent) => filter.add_directive(silent),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_output::LogOutput)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Check {
            dir,
            config,
            json,
            locked,
        } => check::check(
            &dir,
            &with_lock(load_config(config.as_deref())?, locked, &dir),
            json,
            cli.verbose > 0,
        ),
        Command::List {
            url: Some(url),
            json,
            ..
        } => list_remote::list_remote(&url, json),
        Command::List {
            dir: Some(dir),
            config,
            json,
            ..
        } => check::list(&dir, &load_config(config.as_deref())?, json),
        Command::List { .. } => Err("list needs a plugin folder or --url".into()),
        Command::Reload {
            plugin,
            url,
            force,
            cluster: false,
            ..
        } => reload_remote(&url, &plugin, force),
        Command::Reload {
            plugin,
            force,
            config,
            ..
        } => Ok(cluster::run(
            &config_for_cluster(config)?,
            cluster::Operation::Reload { plugin, force },
        )?),
        Command::Cluster { config, command } => {
            let operation = match command {
                ClusterCommand::Status { json } => cluster::Operation::Status { json },
                ClusterCommand::AcceptLock { hash } => cluster::Operation::AcceptLock(hash),
                ClusterCommand::RetireLock { hash } => cluster::Operation::RetireLock(hash),
            };
            Ok(cluster::run(&config_for_cluster(config)?, operation)?)
        }
        Command::Run {
            plugins,
            config,
            listen,
            allow_unauthenticated,
            watch,
            locked,
        } => run::run(
            &plugins,
            with_lock(load_config(config.as_deref())?, locked, &plugins),
            run::Listen {
                address: listen.as_deref(),
                allow_unauthenticated,
            },
            watch,
        ),
        Command::Lock {
            dir,
            output,
            update,
            config,
        } => lock::lock(
            &dir,
            output.as_deref(),
            update.as_deref(),
            &load_config(config.as_deref())?,
        ),
        Command::Sign { key, files } => sign::sign(&key, &files),
        Command::Keygen {
            secret_key,
            public_key,
            force,
        } => sign::keygen(&secret_key, &public_key, force),
    }
}

/// The config with `--locked` applied: a lock named on the command line,
/// else the config's own, else the folder's `plugins.lock`.
fn with_lock(
    mut config: crate::AgentConfig,
    locked: Option<Option<PathBuf>>,
    dir: &std::path::Path,
) -> crate::AgentConfig {
    match locked {
        Some(Some(path)) => config.trust.lock = Some(path),
        Some(None) if config.trust.lock.is_none() => {
            config.trust.lock = Some(lock::default_lock_path(dir));
        }
        _ => {}
    }
    config
}

/// The environment variable the client commands read the API token from.
pub const TOKEN_VARIABLE: &str = "AGENT_HOST_TOKEN";

/// The API token of [`TOKEN_VARIABLE`], when it is set and not empty.
fn client_token() -> Option<String> {
    std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty())
}

/// `request` as the client commands send it to a running agent: straight
/// to it (no proxy from the environment), an error status read as an
/// answer, the CLI's user agent, and `token` as the bearer when there is
/// one.
fn to_agent<B>(request: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    let request = request
        .config()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .header(
            "user-agent",
            format!(
                "{}{}",
                crate::http::CLI_USER_AGENT_PREFIX,
                env!("CARGO_PKG_VERSION")
            ),
        );
    match token {
        Some(token) => request.header("authorization", &format!("Bearer {token}")),
        None => request,
    }
}

/// `agent-host reload`: POSTs to the running agent's reload endpoint, with
/// the token of [`TOKEN_VARIABLE`] when it is set.
fn reload_remote(
    url: &str,
    plugin: &str,
    force: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let force = if force { "?force=true" } else { "" };
    let endpoint = format!(
        "{}/v1/plugins/{plugin}/reload{force}",
        url.trim_end_matches('/')
    );
    let token = client_token();
    let request = to_agent(ureq::post(&endpoint), token.as_deref())
        .header("content-type", "application/json");
    match request.send("{}") {
        Ok(mut response) if response.status().is_success() => {
            let done: serde_json::Value = response.body_mut().read_json()?;
            if done["unchanged"] == serde_json::Value::Bool(true) {
                println!(
                    "{} not reloaded: its file is byte-identical to the serving generation {} (--force reloads it anyway)",
                    done["plugin"].as_str().unwrap_or(plugin),
                    done["generation"]
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "reloaded {} {} -> {} (generation {}, calls held {} us)",
                done["plugin"].as_str().unwrap_or(plugin),
                done["from_version"].as_str().unwrap_or("?"),
                done["to_version"].as_str().unwrap_or("?"),
                done["generation"],
                done["paused_us"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(mut response) => {
            let code = response.status().as_u16();
            let body: serde_json::Value = response.body_mut().read_json().unwrap_or_default();
            eprintln!(
                "reload refused ({code}): {}",
                body["error"].as_str().unwrap_or("no reason given")
            );
            if code == 401 && token.is_none() {
                eprintln!("set {TOKEN_VARIABLE} to an API token with the admin role");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(format!("cannot reach the agent at {url}: {error}").into()),
    }
}

/// The config file a cluster command reads `[cluster]` from.
fn config_for_cluster(config: Option<PathBuf>) -> Result<PathBuf, Box<dyn std::error::Error>> {
    config.ok_or_else(|| {
        "give the agent's config file with --config: cluster commands read its [cluster] table"
            .into()
    })
}

/// Reads the config file, or the empty config when there is none.
fn load_config(
    path: Option<&std::path::Path>,
) -> Result<crate::AgentConfig, crate::config::ConfigError> {
    path.map_or_else(
        || Ok(crate::AgentConfig::default()),
        crate::AgentConfig::load,
    )
}
