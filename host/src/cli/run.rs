//! `agent-host run`: load the plugins, then serve messages until Ctrl-C or
//! SIGTERM, then shut down in reverse load order and exit 0.
//!
//! On a terminal it is a chat prompt; with piped stdin it reads one JSON
//! request per line and writes one JSON reply per line.

use crate::pipeline::InboundMessage;
use crate::{HostOptions, PluginHost};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Runs the agent.
pub fn run(plugins: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(serve(plugins))?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(code)
}

async fn serve(dir: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = Arc::new(PluginHost::new(HostOptions {
        runtime: Some(tokio::runtime::Handle::current()),
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

    let interactive = std::io::stdin().is_terminal();
    tokio::select! {
        result = conversation(Arc::clone(&host), interactive) => result?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    let stopper = Arc::clone(&host);
    let errors = tokio::task::spawn_blocking(move || stopper.shutdown()).await?;
    for error in errors {
        tracing::warn!("{error}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads messages from stdin until it closes, answering each.
async fn conversation(
    host: Arc<PluginHost>,
    interactive: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    if interactive {
        stdout
            .write_all(b"agent-host ready. Type a message (Ctrl-D to quit).\n> ")
            .await?;
        stdout.flush().await?;
    }
    while let Some(line) = lines.next_line().await? {
        let line = line.trim().to_string();
        if line.is_empty() {
            if interactive {
                stdout.write_all(b"> ").await?;
                stdout.flush().await?;
            }
            continue;
        }
        let output = if interactive {
            let message = InboundMessage {
                sender: "operator".into(),
                text: line,
                ..InboundMessage::default()
            };
            let worker = Arc::clone(&host);
            let reply = tokio::task::spawn_blocking(move || worker.handle_message(message)).await?;
            let mut text = reply.text.clone();
            for error in &reply.errors {
                text.push_str(&format!("\n  ! {error}"));
            }
            format!("{text}\n> ")
        } else {
            match serde_json::from_str::<InboundMessage>(&line) {
                Ok(message) => {
                    let worker = Arc::clone(&host);
                    let reply =
                        tokio::task::spawn_blocking(move || worker.handle_message(message)).await?;
                    format!("{}\n", serde_json::to_string(&reply)?)
                }
                Err(error) => format!(
                    "{}\n",
                    serde_json::json!({"error": format!("invalid request: {error}")})
                ),
            }
        };
        stdout.write_all(output.as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
