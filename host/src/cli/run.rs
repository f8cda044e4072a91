//! `agent-host run`: load the plugins, then serve messages until Ctrl-C or
//! SIGTERM, then shut down in reverse load order and exit 0.
//!
//! On a terminal it is a chat ([`super::chat`], where Ctrl-C also stops
//! the agent); with piped stdin it reads one JSON request per line and
//! writes one JSON line per request ([`super::json_lines`]). With
//! `--listen ADDR` it also serves the HTTP API ([`crate::http`]) and keeps
//! serving it after stdin closes; without it, the end of stdin ends the run.
//!
//! Without `[[api.tokens]]` in the config, the HTTP API is served on a
//! loopback address only (with a warning that anyone on this machine can
//! talk to the agent); another address is refused with an error naming it,
//! unless `--allow-unauthenticated` says the operator means it.
//!
//! With `[cluster]` it connects to the cluster's server before it loads
//! any plugin (a server that cannot be reached ends the run at once with an
//! error naming its URL), and joins the cluster once the plugins are
//! loaded, announcing the address its HTTP API listens on.
//!
//! On Ctrl-C or SIGTERM it stops taking work but keeps answering: a request
//! line gets `{"error": "the agent is shutting down"}`, an HTTP request a
//! 503 with that body. It waits for the calls in flight (at most the
//! `shutdown_grace_ms` setting), stops the plugins in reverse load order and
//! exits 0, even when a call is still stuck in plugin code (the log names it).

use super::chat::ChatEnd;
use crate::http::ApiAccess;
use crate::{AgentConfig, HostOptions, PluginHost};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long the HTTP server may take to close once the plugins have
/// stopped: answers being written are finished, requests still waiting on a
/// call stuck past the grace period are dropped.
const HTTP_CLOSE: Duration = Duration::from_secs(1);

/// Where and how to serve the HTTP API.
#[derive(Debug, Clone, Copy)]
pub struct Listen<'a> {
    /// The address, when the API is served.
    pub address: Option<&'a str>,
    /// Whether an address other than loopback may be served without tokens.
    pub allow_unauthenticated: bool,
}

/// Runs the agent; with `listen`, also serves the HTTP API on that address.
pub fn run(
    plugins: &Path,
    config: AgentConfig,
    listen: Listen<'_>,
    watch: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(serve(plugins, config, listen, watch))?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(code)
}

/// The HTTP server while it runs: the trigger that stops it, and its task.
struct HttpServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Stops accepting, waits (bounded) for the requests in flight.
    async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(HTTP_CLOSE, &mut task).await {
            Ok(Ok(Ok(()))) => tracing::info!("HTTP server stopped"),
            Ok(Ok(Err(error))) => tracing::warn!("the HTTP server failed: {error}"),
            Ok(Err(error)) => tracing::warn!("the HTTP server task failed: {error}"),
            Err(_) => {
                tracing::warn!(
                    "the HTTP server did not stop within {} ms; closing it",
                    HTTP_CLOSE.as_millis()
                );
                task.abort();
            }
        }
    }
}

/// Binds the HTTP API's address with its tokens, refusing an address
/// other than loopback without tokens unless allowed.
async fn bind(
    address: &str,
    access: &ApiAccess,
    allow_unauthenticated: bool,
) -> Result<tokio::net::TcpListener, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let bound = listener.local_addr()?;
    if !access.is_open() {
        return Ok(listener);
    }
    if bound.ip().is_loopback() {
        tracing::warn!(
            "no [[api.tokens]] in the config: anyone on this machine can talk to the agent \
             at http://{bound}, send messages and reload plugins"
        );
    } else if allow_unauthenticated {
        tracing::warn!(
            "no [[api.tokens]] in the config and --allow-unauthenticated: anyone who reaches \
             http://{bound} can send messages and reload plugins"
        );
    } else {
        return Err(format!(
            "refusing to serve the HTTP API on {address} ({bound}) without API tokens: anyone \
             who reaches it could send messages and reload plugins; add [[api.tokens]] to the \
             config, listen on a loopback address such as 127.0.0.1, or pass \
             --allow-unauthenticated"
        )
        .into());
    }
    Ok(listener)
}

async fn serve(
    dir: &Path,
    config: AgentConfig,
    listen: Listen<'_>,
    watch: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Tokens and bind first: a bad token entry or a taken port should fail
    // before any plugin is loaded.
    let access = ApiAccess::from_config(&config.api)?;
    let listener = match listen.address {
        Some(address) => Some(bind(address, &access, listen.allow_unauthenticated).await?),
        None => None,
    };
    // The cluster's server too: one that cannot be reached fails the start
    // before any plugin is loaded.
    let connected = match &config.cluster {
        Some(settings) => Some(crate::cluster::connect(settings).await?),
        None => None,
    };
    let http_address = listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let host = Arc::new(PluginHost::new(HostOptions {
        runtime: Some(tokio::runtime::Handle::current()),
        config,
        ..HostOptions::default()
    })?);
    let loader = Arc::clone(&host);
    let dir_owned = dir.to_path_buf();
    let report = tokio::task::spawn_blocking(move || loader.load_dir(&dir_owned))
        .await?
        .map_err(|e| format!("cannot read plugin folder {}: {e}", dir.display()))?;
    tracing::info!(
        loaded = report.loaded.len(),
        failed = report.failures.len(),
        "agent ready with plugins: {}",
        host.plugin_names().join(", ")
    );
    // Cluster mode starts once the plugins are loaded: a host takes
    // messages only with its plugins known.
    let cluster = match connected {
        Some(connected) => {
            let cluster = match crate::cluster::start(Arc::clone(&host), connected, http_address)
                .await
            {
                Ok(cluster) => cluster,
                Err(error) => {
                    // The loaded plugins stop as on any shutdown.
                    host.begin_shutdown();
                    let stopper = Arc::clone(&host);
                    for problem in tokio::task::spawn_blocking(move || stopper.shutdown()).await? {
                        tracing::warn!("{problem}");
                    }
                    return Err(error.into());
                }
            };
            let node = cluster.node();
            tracing::info!(
                "serving agent '{}' as host '{}' of its cluster at {}",
                node.settings.agent,
                node.host_name,
                node.settings.url
            );
            Some(cluster)
        }
        None => None,
    };
    let watching = if watch {
        Some(host.watch(dir, crate::reload::watch::DEFAULT_DEBOUNCE)?)
    } else {
        None
    };

    let mut http = None;
    if let Some(listener) = listener {
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::http::serve(
            Arc::clone(&host),
            listener,
            access,
            async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            },
        ));
        tracing::info!("listening on http://{address}");
        http = Some(HttpServer { stop, task });
    }

    let interactive = std::io::stdin().is_terminal();
    let signal = crate::sys::shutdown_signal();
    tokio::pin!(signal);
    let talk = conversation(Arc::clone(&host), interactive);
    tokio::pin!(talk);
    let mut talking = true;
    let mut outcome = Ok(());
    tokio::select! {
        result = &mut talk => {
            talking = false;
            match result {
                Ok(ConversationEnd::StdinClosed) if http.is_some() => {
                    tracing::info!("stdin closed; serving HTTP until Ctrl-C or SIGTERM");
                    (&mut signal).await;
                }
                Ok(_) => {}
                Err(error) => outcome = Err(error),
            }
        }
        _ = &mut signal => {}
    }
    tracing::info!(
        "shutting down: taking no new work, waiting at most {} ms for the calls in flight",
        host.settings().shutdown_grace_ms
    );
    // A host leaving its cluster takes no more messages; the ones it has
    // not acknowledged go to another host.
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    host.begin_shutdown();
    // Stop watching before the plugins stop, so no reload races the shutdown.
    drop(watching);
    let stopper = Arc::clone(&host);
    let stopping = tokio::task::spawn_blocking(move || stopper.shutdown());
    tokio::pin!(stopping);
    // Stdin and HTTP keep answering (with refusals) while the calls drain.
    let errors = loop {
        tokio::select! {
            errors = &mut stopping => break errors?,
            result = &mut talk, if talking => {
                talking = false;
                if let Err(error) = result {
                    outcome = Err(error);
                }
            }
        }
    };
    for error in errors {
        tracing::warn!("{error}");
    }
    if let Some(server) = http {
        server.stop().await;
    }
    outcome?;
    Ok(ExitCode::SUCCESS)
}

/// How the conversation on stdin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConversationEnd {
    /// Stdin closed (Ctrl-D in the chat, the end of a pipe).
    StdinClosed,
    /// The operator pressed Ctrl-C in the chat: stop the agent.
    StopAsked,
}

/// Reads requests from stdin until it closes, answering each: a chat on a
/// terminal, JSON lines on a pipe.
async fn conversation(
    host: Arc<PluginHost>,
    interactive: bool,
) -> Result<ConversationEnd, Box<dyn std::error::Error>> {
    if interactive {
        Ok(match super::chat::chat(host).await? {
            ChatEnd::Closed => ConversationEnd::StdinClosed,
            ChatEnd::Interrupted => ConversationEnd::StopAsked,
        })
    } else {
        super::json_lines::answer_lines(host).await?;
        Ok(ConversationEnd::StdinClosed)
    }
}
