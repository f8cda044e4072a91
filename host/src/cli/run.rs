//! `agent-host run`: load the plugins, then serve messages until Ctrl-C or
//! SIGTERM, then shut down in reverse load order and exit 0.
//!
//! On a terminal it is a chat prompt; with piped stdin it reads one JSON
//! request per line and writes one JSON reply per line. With `--listen ADDR`
//! it also serves the HTTP API ([`crate::http`]) and keeps serving it after
//! stdin closes; without it, the end of stdin ends the run.
//!
//! On Ctrl-C or SIGTERM it stops taking work but keeps answering: a request
//! line gets `{"error": "the agent is shutting down"}`, an HTTP request a
//! 503 with that body. It waits for the calls in flight (at most the
//! `shutdown_grace_ms` setting), stops the plugins in reverse load order and
//! exits 0, even when a call is still stuck in plugin code (the log names it).

use crate::pipeline::InboundMessage;
use crate::{AgentConfig, HostOptions, PluginHost};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long the HTTP server may take to close once the plugins have
/// stopped: answers being written are finished, requests still waiting on a
/// call stuck past the grace period are dropped.
const HTTP_CLOSE: Duration = Duration::from_secs(1);

/// Runs the agent; with `listen`, also serves the HTTP API on that address.
pub fn run(
    plugins: &Path,
    config: AgentConfig,
    listen: Option<&str>,
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

async fn serve(
    dir: &Path,
    config: AgentConfig,
    listen: Option<&str>,
    watch: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Bind first: a taken port should fail before any plugin is loaded.
    let listener = match listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address}: {e}"))?,
        ),
        None => None,
    };
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
            outcome = result;
            if outcome.is_ok() && http.is_some() {
                tracing::info!("stdin closed; serving HTTP until Ctrl-C or SIGTERM");
                (&mut signal).await;
            }
        }
        _ = &mut signal => {}
    }
    tracing::info!(
        "shutting down: taking no new work, waiting at most {} ms for the calls in flight",
        host.settings().shutdown_grace_ms
    );
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

/// Reads requests from stdin until it closes, answering each: a chat on a
/// terminal, JSON lines on a pipe.
async fn conversation(
    host: Arc<PluginHost>,
    interactive: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    if interactive {
        chat(host).await
    } else {
        super::json_lines::answer_lines(host).await
    }
}

/// The chat on a terminal: each line is a message from `operator`, or an
/// operator command.
async fn chat(host: Arc<PluginHost>) -> Result<(), Box<dyn std::error::Error>> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(b"agent-host ready. Type a message (Ctrl-D to quit).\n> ")
        .await?;
    stdout.flush().await?;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim().to_string();
        if line.is_empty() {
            stdout.write_all(b"> ").await?;
            stdout.flush().await?;
            continue;
        }
        let output = if host.is_shutting_down() {
            format!("{}\n> ", crate::SHUTTING_DOWN)
        } else if let Some(command) = line.strip_prefix('/') {
            format!("{}\n> ", operator_command(&host, command).await?)
        } else {
            let message = InboundMessage {
                sender: "operator".into(),
                text: line,
                ..InboundMessage::default()
            };
            let reply = host.answer(message).await;
            let mut text = reply.text.clone();
            if !reply.evaluations.is_empty() {
                let verdicts: Vec<String> = reply
                    .evaluations
                    .iter()
                    .map(|e| {
                        let mark = if e.evaluation.passed { "ok" } else { "flagged" };
                        format!("{} {:.2} {mark}", e.evaluator, e.evaluation.score)
                    })
                    .collect();
                text.push_str(&format!("\n  [{}]", verdicts.join("; ")));
            }
            for error in &reply.errors {
                text.push_str(&format!("\n  ! {error}"));
            }
            format!("{text}\n> ")
        };
        stdout.write_all(output.as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// The chat's operator commands: `/reload NAME` and `/plugins`.
async fn operator_command(
    host: &Arc<PluginHost>,
    command: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut words = command.split_whitespace();
    Ok(match (words.next(), words.next()) {
        (Some("reload"), Some(name)) => {
            let worker = Arc::clone(host);
            let name = name.to_string();
            match tokio::task::spawn_blocking(move || worker.reload(&name)).await? {
                Ok(done) => format!(
                    "reloaded {} {} -> {} (generation {}, calls held {} us)",
                    done.plugin,
                    done.from_version,
                    done.to_version,
                    done.generation,
                    done.paused_us
                ),
                Err(failure) => failure.to_string(),
            }
        }
        (Some("plugins"), None) => host
            .statuses()
            .iter()
            .map(|p| {
                format!(
                    "{} {} generation {} ({} generations mapped, {} KiB){}\n  runs {}",
                    p.name,
                    p.version,
                    p.generation,
                    p.mapped.generations,
                    p.mapped.bytes / 1024,
                    if p.quarantined { " QUARANTINED" } else { "" },
                    p.placement_line()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "commands: /reload NAME, /plugins".to_string(),
    })
}
