//! Operators' requests to one host of the cluster (a reload, as a step of
//! a rolling reload), on the host's control subject, and the rolling
//! reload that makes them host by host.
//!
//! A rolling reload reloads one host at a time: it asks the host, waits
//! for its answer, then for a heartbeat announced after that answer that
//! shows the host taking messages again, and only then goes on to the
//! next host. A refused reload stops the roll; the hosts already reloaded
//! keep the new build.

use super::operator::Operator;
use super::status::short_hash;
use super::{ClusterError, ClusterNode};
use crate::watchdog::unix_ms_now;
use crate::{PluginHost, ReloadOrigin, WhenUnchanged};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request on a host's control subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Reload one plugin from its file.
    Reload {
        /// The plugin.
        plugin: String,
        /// Reload even a file byte-identical to the serving generation's.
        #[serde(default)]
        force: bool,
    },
}

/// A host's answer to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// The host that answered.
    pub host: String,
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The version that served before a reload.
    #[serde(default)]
    pub from_version: String,
    /// The version that serves after it.
    #[serde(default)]
    pub to_version: String,
    /// The serving generation's number.
    #[serde(default)]
    pub generation: u64,
    /// Whether the file was byte-identical, so nothing was reloaded.
    #[serde(default)]
    pub unchanged: bool,
    /// When the host answered, on its own clock, in unix ms.
    pub answered_unix_ms: u64,
}

impl ControlAnswer {
    fn refused(host: &str, error: String) -> Self {
        Self {
            host: host.to_string(),
            ok: false,
            error: Some(error),
            from_version: String::new(),
            to_version: String::new(),
            generation: 0,
            unchanged: false,
            answered_unix_ms: unix_ms_now(),
        }
    }
}

/// Starts answering requests on this host's control subject.
pub(super) async fn start(
    node: &Arc<ClusterNode>,
    host: &Arc<PluginHost>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    let subject = node.names.control_subject(&node.host_name);
    let mut requests = node.subscribe(&subject).await?;
    let (node, host) = (Arc::clone(node), Arc::clone(host));
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let answer = match serde_json::from_slice::<ControlRequest>(&message.payload) {
                Ok(request) => carry_out(&host, &node.host_name, request).await,
                Err(error) => ControlAnswer::refused(
                    &node.host_name,
                    format!("not a control request: {error}"),
                ),
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(error) = node.client.publish(reply_to, body.into()).await {
                tracing::warn!("cannot answer a control request: {error}");
            }
        }
    }))
}

/// Carries out one request (a reload runs on the blocking pool).
async fn carry_out(
    host: &Arc<PluginHost>,
    host_name: &str,
    request: ControlRequest,
) -> ControlAnswer {
    let ControlRequest::Reload { plugin, force } = request;
    if host.status(&plugin).is_none() {
        return ControlAnswer::refused(
            host_name,
            format!("no plugin named '{plugin}' is loaded on host {host_name}"),
        );
    }
    tracing::info!(
        plugin,
        force,
        "reload asked by a rolling reload of the cluster"
    );
    let when_unchanged = if force {
        WhenUnchanged::Reload
    } else {
        WhenUnchanged::Skip
    };
    let reloader = Arc::clone(host);
    let outcome = tokio::task::spawn_blocking(move || {
        reloader.reload_as(
            &plugin,
            None,
            ReloadOrigin::Cli { identity: None },
            when_unchanged,
        )
    })
    .await;
    match outcome {
        Ok(Ok(reloaded)) => ControlAnswer {
            host: host_name.to_string(),
            ok: true,
            error: None,
            from_version: reloaded.from_version,
            to_version: reloaded.to_version,
            generation: reloaded.generation,
            unchanged: reloaded.unchanged,
            answered_unix_ms: unix_ms_now(),
        },
        Ok(Err(failure)) => ControlAnswer::refused(host_name, failure.to_string()),
        Err(error) => ControlAnswer::refused(host_name, format!("the reload task failed: {error}")),
    }
}

/// Why a rolling reload stopped.
#[derive(Debug, thiserror::Error)]
pub enum RollError {
    /// The cluster's buckets could not be read.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// No host of the agent is alive.
    #[error("no host of agent '{agent}' is alive (none announced itself within host_timeout_ms)")]
    NoHosts {
        /// The agent.
        agent: String,
    },
    /// A host did not answer the request.
    #[error("host {host} did not answer the reload of {plugin}: {cause}{}", done_note(.reloaded))]
    Unanswered {
        /// The host.
        host: String,
        /// The plugin.
        plugin: String,
        /// The client's error.
        cause: String,
        /// The hosts already reloaded.
        reloaded: Vec<String>,
    },
    /// A host refused the reload.
    #[error("host {host} refused the reload of {plugin}: {cause}{}", done_note(.reloaded))]
    Refused {
        /// The host.
        host: String,
        /// The plugin.
        plugin: String,
        /// Why.
        cause: String,
        /// The hosts already reloaded.
        reloaded: Vec<String>,
    },
    /// A host reloaded but did not announce itself taking messages again.
    #[error("host {host} reloaded {plugin} but takes no messages {waited_ms} ms later: {why}{}", done_note(.reloaded))]
    NotHealthy {
        /// The host.
        host: String,
        /// The plugin.
        plugin: String,
        /// How long the roll waited.
        waited_ms: u64,
        /// What its last announcement said.
        why: String,
        /// The hosts already reloaded (this one included).
        reloaded: Vec<String>,
    },
}

/// What a stopped roll leaves behind.
fn done_note(reloaded: &[String]) -> String {
    if reloaded.is_empty() {
        "; the roll stopped, no host was reloaded".to_string()
    } else {
        format!(
            "; the roll stopped, and the hosts already reloaded keep the new build: {}",
            reloaded.join(", ")
        )
    }
}

/// One host reloaded and healthy again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollStep {
    /// The host's answer.
    pub answer: ControlAnswer,
    /// How long from the request to the healthy heartbeat, in ms.
    pub took_ms: u64,
}

/// Reloads `plugin` on every live host of the cluster, one at a time (in
/// the order of their names), each healthy again before the next;
/// `progress` hears of each host done.
pub async fn rolling_reload(
    operator: &Operator,
    plugin: &str,
    force: bool,
    mut progress: impl FnMut(&RollStep),
) -> Result<Vec<RollStep>, RollError> {
    let status = operator.status().await?;
    let hosts: Vec<String> = status
        .alive()
        .map(|h| h.announcement.host.clone())
        .collect();
    if hosts.is_empty() {
        return Err(RollError::NoHosts {
            agent: operator.settings.agent.clone(),
        });
    }
    let request = serde_json::to_vec(&ControlRequest::Reload {
        plugin: plugin.to_string(),
        force,
    })
    .unwrap_or_default();
    let answer_within = Duration::from_millis(operator.settings.reply_timeout_ms);
    let mut steps: Vec<RollStep> = Vec::new();
    for host in hosts {
        let reloaded: Vec<String> = steps.iter().map(|s| s.answer.host.clone()).collect();
        let started = Instant::now();
        let asked = async_nats::Request::new()
            .payload(request.clone().into())
            .timeout(Some(answer_within));
        let subject = operator.names.control_subject(&host);
        let message = operator
            .client
            .send_request(subject, asked)
            .await
            .map_err(|error| RollError::Unanswered {
                host: host.clone(),
                plugin: plugin.to_string(),
                cause: error.to_string(),
                reloaded: reloaded.clone(),
            })?;
        let answer: ControlAnswer =
            serde_json::from_slice(&message.payload).map_err(|error| RollError::Unanswered {
                host: host.clone(),
                plugin: plugin.to_string(),
                cause: format!("its answer is not one: {error}"),
                reloaded: reloaded.clone(),
            })?;
        if !answer.ok {
            return Err(RollError::Refused {
                host,
                plugin: plugin.to_string(),
                cause: answer.error.unwrap_or_else(|| "no reason given".into()),
                reloaded,
            });
        }
        let mut reloaded = reloaded;
        reloaded.push(host.clone());
        wait_healthy(operator, &host, plugin, answer.answered_unix_ms, &reloaded).await?;
        let step = RollStep {
            answer,
            took_ms: started.elapsed().as_millis() as u64,
        };
        progress(&step);
        steps.push(step);
    }
    Ok(steps)
}

/// Waits for a heartbeat of `host` put after `after_unix_ms` (on its own
/// clock) that shows it taking messages.
async fn wait_healthy(
    operator: &Operator,
    host: &str,
    plugin: &str,
    after_unix_ms: u64,
    reloaded: &[String],
) -> Result<(), RollError> {
    let settings = &operator.settings;
    let patience = Duration::from_millis(settings.host_timeout_ms * 2);
    let poll = Duration::from_millis((settings.heartbeat_ms / 4).clamp(10, 250));
    let started = Instant::now();
    let mut why = "no heartbeat since its answer".to_string();
    while started.elapsed() < patience {
        let status = operator.status().await?;
        if let Some(seen) = status.hosts.iter().find(|h| h.announcement.host == host) {
            let a = &seen.announcement;
            if a.heartbeat_unix_ms > after_unix_ms {
                if a.taking_messages {
                    return Ok(());
                }
                why = match &a.not_taking_because {
                    Some(reason) if !seen.lock_accepted => format!(
                        "{reason} (its plugins changed: `agent-host cluster accept-lock {}` \
                         accepts the new build, then run the roll again)",
                        a.lock_hash
                    ),
                    Some(reason) => reason.clone(),
                    None => format!("lock hash {}", short_hash(&a.lock_hash)),
                };
            }
        } else {
            why = "its announcement is gone (it stopped?)".to_string();
        }
        tokio::time::sleep(poll).await;
    }
    Err(RollError::NotHealthy {
        host: host.to_string(),
        plugin: plugin.to_string(),
        waited_ms: started.elapsed().as_millis() as u64,
        why,
        reloaded: reloaded.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_request_reads_as_json() {
        let request: ControlRequest =
            serde_json::from_str(r#"{"reload": {"plugin": "weather"}}"#).expect("a request");
        assert_eq!(
            request,
            ControlRequest::Reload {
                plugin: "weather".into(),
                force: false
            }
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"wipe": {}}"#).is_err());
    }

    #[test]
    fn a_stopped_roll_names_the_hosts_it_reloaded() {
        let error = RollError::Refused {
            host: "web-2".into(),
            plugin: "weather".into(),
            cause: "bad build".into(),
            reloaded: vec!["web-1".into()],
        };
        let text = error.to_string();
        assert!(
            text.contains("host web-2 refused the reload of weather: bad build"),
            "{text}"
        );
        assert!(text.contains("keep the new build: web-1"), "{text}");
    }
}
