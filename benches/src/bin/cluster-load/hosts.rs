//! The hosts under load: real `agent-host run` processes of one agent,
//! each with its own config file and HTTP port, and their servers' names
//! (a PostgreSQL schema, the agent's streams and buckets), removed at the
//! end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a host may take to say it listens.
const START_WAIT: Duration = Duration::from_secs(60);

/// What every host of the run shares.
pub struct Setup {
    /// The `agent-host` binary.
    pub binary: PathBuf,
    /// The staged plugin folder.
    pub plugins: PathBuf,
    /// The example config the hosts' configs start from.
    pub base_config: PathBuf,
    /// The NATS server.
    pub nats_url: String,
    /// The PostgreSQL server.
    pub postgres_url: String,
    /// The agent's name (unique per run).
    pub agent: String,
    /// The schema the database plugin works in (unique per run).
    pub schema: String,
    /// `[cluster] ack_wait_ms`.
    pub ack_wait_ms: u64,
    /// Where configs and logs go.
    pub dir: PathBuf,
}

/// One running host.
pub struct Host {
    /// Its name in the cluster.
    pub name: String,
    /// Its HTTP address.
    pub address: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    child: Child,
}

impl Host {
    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Setup {
    /// The config of host `name`: the example config, with the database
    /// plugin on the run's schema and, when `cluster`, the `[cluster]`
    /// table.
    fn config_text(&self, name: &str, cluster: bool) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.base_config)
            .map_err(|e| format!("{}: {e}", self.base_config.display()))?;
        let mut config: toml::Table = text
            .parse()
            .map_err(|e| format!("{}: {e}", self.base_config.display()))?;
        let plugins = config
            .entry("plugins")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let mut database = toml::Table::new();
        database.insert("url".into(), self.postgres_url.clone().into());
        database.insert("schema".into(), self.schema.clone().into());
        if let Some(plugins) = plugins.as_table_mut() {
            plugins.insert("database".into(), toml::Value::Table(database));
        }
        if cluster {
            let mut table = toml::Table::new();
            table.insert("url".into(), self.nats_url.clone().into());
            table.insert("agent".into(), self.agent.clone().into());
            table.insert("host".into(), name.into());
            table.insert("ack_wait_ms".into(), (self.ack_wait_ms as i64).into());
            config.insert("cluster".into(), toml::Value::Table(table));
        }
        toml::to_string(&config).map_err(|e| e.to_string())
    }

    /// Starts host `name` (in the cluster when `cluster`), and waits until
    /// it listens.
    pub fn start(&self, name: &str, cluster: bool) -> Result<Host, String> {
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(&config, self.config_text(name, cluster)?)
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let log_path = self.dir.join(format!("{name}.log"));
        let mut child = Command::new(&self.binary)
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--plugins")
            .arg(&self.plugins)
            .env("RUST_LOG", "warn,agent_host::cli=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (found, address) = mpsc::channel();
        let log_file = log_path.clone();
        std::thread::spawn(move || copy_log(stderr, &log_file, found));
        let text = address.recv_timeout(START_WAIT).map_err(|_| {
            let _ = child.kill();
            format!(
                "host {name} did not say it listens within {START_WAIT:?}; its log: {}",
                log_path.display()
            )
        })?;
        let address: SocketAddr = text
            .parse()
            .map_err(|e| format!("host {name}: bad address {text}: {e}"))?;
        Ok(Host {
            name: name.to_string(),
            address: SocketAddr::from(([127, 0, 0, 1], address.port())),
            config,
            child,
        })
    }
}

/// Copies a host's log to its file, sending the address it listens on.
fn copy_log(stderr: impl std::io::Read, file: &Path, found: mpsc::Sender<String>) {
    use std::io::Write;
    let Ok(mut out) = std::fs::File::create(file) else {
        return;
    };
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let _ = found.send(rest.split_whitespace().next().unwrap_or("").to_string());
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Waits until every host answers a message (in the cluster: until the
/// shared consumer serves every front end).
pub fn wait_until_serving(hosts: &[Host]) -> Result<(), String> {
    let deadline = Instant::now() + START_WAIT;
    let http = crate::load::http_client(Duration::from_secs(10));
    for host in hosts {
        loop {
            let probe = serde_json::json!({"sender": "probe", "text": "hello"});
            if crate::load::post(&http, host.address, &probe).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("host {} does not answer", host.name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Drops the run's schema and deletes the agent's streams and buckets.
pub fn clean_up(setup: &Setup) {
    let _ = Command::new("psql")
        .arg(&setup.postgres_url)
        .args(["-q", "-c"])
        .arg(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            setup.schema
        ))
        .status();
    let names = agent_host::cluster::Names::new(&setup.agent);
    let url = setup.nats_url.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(_) => return,
    };
    runtime.block_on(async move {
        let Ok(client) = async_nats::connect(url).await else {
            return;
        };
        let jetstream = async_nats::jetstream::new(client);
        let _ = jetstream.delete_stream(&names.inbox_stream).await;
        for bucket in names.buckets() {
            let _ = jetstream.delete_key_value(bucket).await;
        }
    });
}

/// Counts the notes of the run, and their distinct message ids.
pub fn count_notes(setup: &Setup) -> Result<(u64, u64), String> {
    let output = Command::new("psql")
        .arg(&setup.postgres_url)
        .args(["-At", "-c"])
        .arg(format!(
            "SELECT count(*), count(DISTINCT message_id) FROM \"{}\".notes",
            setup.schema
        ))
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text.trim().split('|').map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(all)), Some(Ok(distinct))) => Ok((all, distinct)),
        _ => Err(format!(
            "psql said: {} {}",
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}
