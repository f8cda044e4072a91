//! `agent-host check DIR` and `agent-host list DIR`.

use crate::{AgentConfig, HostOptions, LoadReport, PluginHost};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn load(
    dir: &Path,
    config: &AgentConfig,
) -> Result<(PluginHost, LoadReport), Box<dyn std::error::Error>> {
    let host = PluginHost::new(HostOptions {
        config: config.clone(),
        ..HostOptions::default()
    })?;
    let report = host
        .load_dir(dir)
        .map_err(|e| format!("cannot read plugin folder {}: {e}", dir.display()))?;
    Ok((host, report))
}

/// Loads, starts and stops every plugin in `dir`; prints one line per file.
pub fn check(
    dir: &Path,
    config: &AgentConfig,
    as_json: bool,
    verbose: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (host, report) = load(dir, config)?;
    let shutdown = host.shutdown();
    // A config that speaks of plugins that are not there fails the check.
    let config_errors = &report.unknown_config;
    let ok = report.failures.is_empty() && shutdown.is_empty() && config_errors.is_empty();
    let mut out = std::io::stdout().lock();
    if as_json {
        let document = json!({
            "ok": ok,
            "loaded": report.loaded,
            "failures": report.failures,
            "config_errors": config_errors,
            "warnings": report.warnings,
            "shutdown_errors": shutdown,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    } else {
        for plugin in &report.loaded {
            writeln!(
                out,
                "ok    {} {} ({}){}",
                plugin.name,
                plugin.version,
                plugin.file.display(),
                if plugin.lazy {
                    " lazy: checked, not started"
                } else {
                    ""
                }
            )?;
        }
        for failure in &report.failures {
            writeln!(out, "FAIL  {failure}")?;
            if verbose {
                if let Some(detail) = failure.detail() {
                    writeln!(out, "{detail}")?;
                }
            }
        }
        for error in config_errors {
            writeln!(out, "FAIL  {error}")?;
        }
        for warning in &report.warnings {
            writeln!(out, "warn  {warning}")?;
        }
        for error in &shutdown {
            writeln!(out, "FAIL  {error} (during shutdown)")?;
        }
        writeln!(
            out,
            "{} loaded, {} failed",
            report.loaded.len(),
            report.failures.len() + shutdown.len() + config_errors.len()
        )?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Describes the plugins in `dir` from their manifests. Reads only: every
/// plugin is checked as a lazy one is (file, ABI, manifest, dependencies,
/// config) and none starts: no `on_load`, no service, no worker serving
/// it (an isolated plugin's manifest is read by the probe, which exits).
/// What a running agent serves is `list --url`'s.
pub fn list(
    dir: &Path,
    config: &AgentConfig,
    as_json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut reading = config.clone();
    reading.host.lazy_plugins = vec!["*".to_string()];
    let (host, report) = load(dir, &reading)?;
    let statuses = host.statuses();
    host.shutdown();
    let mut out = std::io::stdout().lock();
    if as_json {
        let document = json!({
            "loaded": report.loaded,
            "failures": report.failures,
            "warnings": report.warnings,
            "config_errors": report.unknown_config,
            "placements": statuses
                .iter()
                .map(|s| json!({"plugin": s.name, "placement": s.placement, "image_bytes": s.image_bytes}))
                .collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
        return Ok(exit_code(&report));
    }
    for p in &report.loaded {
        writeln!(
            out,
            "{}. {} {} - {}",
            p.order + 1,
            p.name,
            p.version,
            p.description
        )?;
        writeln!(out, "   file:         {}", p.file.display())?;
        if let Some(status) = statuses.iter().find(|s| s.name == p.name) {
            let placement = match status.placement {
                crate::isolation::Placement::Process => "in a worker process",
                crate::isolation::Placement::InProcess => "in the agent's process",
            };
            writeln!(
                out,
                "   runs:         {placement} (as placed by the config; `list --url` asks the serving agent)"
            )?;
            writeln!(out, "   image:        {} KiB", status.image_bytes / 1024)?;
        }
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(", ")
            }
        };
        writeln!(out, "   dependencies: {}", list(&p.dependencies))?;
        writeln!(out, "   actions:      {}", list(&p.actions))?;
        writeln!(out, "   providers:    {}", list(&p.providers))?;
        writeln!(out, "   evaluators:   {}", list(&p.evaluators))?;
        writeln!(out, "   services:     {}", list(&p.services))?;
    }
    for failure in &report.failures {
        writeln!(out, "not loaded: {failure}")?;
    }
    Ok(exit_code(&report))
}

/// Success only when every file loaded: a script that lists a folder learns
/// that something in it is broken.
fn exit_code(report: &crate::LoadReport) -> ExitCode {
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
