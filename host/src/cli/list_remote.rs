//! `agent-host list --url URL`: the plugins a running agent serves, from
//! its `GET /v1/plugins` (with the token of `AGENT_HOST_TOKEN`, which needs
//! the admin role): each plugin's state, where it runs (its worker's PID),
//! its counts and memory, and the files that failed to load.

use super::TOKEN_VARIABLE;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

/// Prints what the agent at `url` serves; JSON (the agent's answer as it
/// is) with `as_json`. Fails when the agent cannot be reached or refuses.
pub(super) fn list_remote(
    url: &str,
    as_json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let endpoint = format!("{}/v1/plugins", url.trim_end_matches('/'));
    let token = super::client_token();
    let mut response = super::to_agent(ureq::get(&endpoint), token.as_deref())
        .call()
        .map_err(|e| format!("cannot reach the agent at {endpoint}: {e}"))?;
    let code = response.status().as_u16();
    let body: Value = response.body_mut().read_json().unwrap_or_default();
    if !response.status().is_success() {
        eprintln!(
            "list refused ({code}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
        if code == 401 && token.is_none() {
            eprintln!("set {TOKEN_VARIABLE} to an API token with the admin role");
        }
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let plugins = body["plugins"].as_array().cloned().unwrap_or_default();
    for (n, plugin) in plugins.iter().enumerate() {
        write_plugin(&mut out, n + 1, plugin)?;
    }
    let failed = body["failed"].as_array().cloned().unwrap_or_default();
    for failure in &failed {
        let file = failure["file"].as_str().unwrap_or("?");
        let reason = failure["reason"].as_str().unwrap_or("no reason given");
        match failure["plugin"].as_str() {
            Some(plugin) => writeln!(out, "not loaded: {file}: plugin '{plugin}': {reason}")?,
            None => writeln!(out, "not loaded: {file}: {reason}")?,
        }
    }
    writeln!(
        out,
        "{} plugin(s) served by {url}, {} file(s) failed to load",
        plugins.len(),
        failed.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// One plugin of the agent's answer, as a few lines for people.
fn write_plugin(out: &mut impl Write, n: usize, plugin: &Value) -> std::io::Result<()> {
    let text = |key: &str| plugin[key].as_str().unwrap_or("—").to_string();
    writeln!(
        out,
        "{n}. {} {} - {}",
        text("name"),
        text("version"),
        text("description")
    )?;
    let state = match plugin["state_reason"].as_str() {
        Some(why) => format!("{}: {why}", text("state")),
        None => text("state"),
    };
    writeln!(out, "   state:        {state}")?;
    writeln!(out, "   file:         {}", text("file"))?;
    writeln!(out, "   runs:         {}", runs(plugin))?;
    let stats = &plugin["stats"];
    let number = |value: &Value| value.as_u64().map_or("—".to_string(), |n| n.to_string());
    writeln!(
        out,
        "   calls:        {} (p50 {} us, p99 {} us); timeouts {}, panics {}, crashes {}, restarts {}",
        number(&stats["calls"]),
        number(&stats["p50_us"]),
        number(&stats["p99_us"]),
        number(&stats["timeouts"]),
        number(&stats["panics"]),
        number(&stats["crashes"]),
        number(&stats["restarts"]),
    )?;
    if let Some(bytes) = plugin["memory_bytes"].as_u64() {
        writeln!(out, "   memory:       {} KiB", bytes / 1024)?;
    }
    Ok(())
}

/// Where the plugin runs: in the agent's process, or its worker's PID (and
/// group), as the agent reports it.
fn runs(plugin: &Value) -> String {
    let worker = &plugin["worker"];
    if worker.is_null() {
        return match plugin["placement"].as_str() {
            Some("process") => "in a worker process, not started yet".to_string(),
            _ => "in the agent's process".to_string(),
        };
    }
    let mut line = match worker["pid"].as_u64() {
        Some(pid) => format!("in worker process {pid}"),
        None => "in a worker process (not running now)".to_string(),
    };
    if let Some(group) = worker["group"].as_str() {
        line.push_str(&format!(" of group {group}"));
    }
    if let Some(restarts) = worker["restarts"].as_u64() {
        line.push_str(&format!(", {restarts} restart(s)"));
    }
    if let Some(why) = worker["quarantined"].as_str() {
        line.push_str(&format!(", QUARANTINED: {why}"));
    }
    line
}
