//! Connecting to the NATS server with the credentials `[cluster]` names,
//! read from the environment (or a credentials file), never from the
//! config itself.

use crate::config::ClusterSettings;
use std::path::PathBuf;
use std::time::Duration;

/// How long the first connection may take before `agent-host run` stops
/// with an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A credential's environment variable is not set.
    #[error("[cluster] `{field}` names the environment variable {variable}, which is not set")]
    MissingVariable {
        /// `token_env` or `password_env`.
        field: &'static str,
        /// The variable.
        variable: String,
    },
    /// The credentials file could not be read.
    #[error("[cluster] `credentials_file` {}: {cause}", file.display())]
    CredentialsFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
    /// The server refused the connection or could not be reached.
    #[error("cannot connect to NATS at {url}: {cause}")]
    Server {
        /// The server's URL.
        url: String,
        /// The client's error.
        #[source]
        cause: async_nats::ConnectError,
    },
}

/// This host's name when `[cluster] host` gives none: the machine's name
/// and the process id, as a cluster name (letters, digits, `-`, `_`).
pub(super) fn default_host_name() -> String {
    let machine = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let machine: String = machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("{machine}-{}", std::process::id())
}

/// Reads an environment variable a credential names.
fn variable(field: &'static str, name: &str) -> Result<String, ConnectError> {
    std::env::var(name).map_err(|_| ConnectError::MissingVariable {
        field,
        variable: name.to_string(),
    })
}

/// Connects as `host_name`, with the configured credentials.
pub(super) async fn connect(
    settings: &ClusterSettings,
    host_name: &str,
) -> Result<async_nats::Client, ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("agent-host {}/{host_name}", settings.agent))
        .connection_timeout(CONNECT_TIMEOUT);
    if let Some(name) = &settings.token_env {
        options = options.token(variable("token_env", name)?);
    }
    if let (Some(user), Some(name)) = (&settings.user, &settings.password_env) {
        options = options.user_and_password(user.clone(), variable("password_env", name)?);
    }
    if let Some(file) = &settings.credentials_file {
        options = options.credentials_file(file).await.map_err(|cause| {
            ConnectError::CredentialsFile {
                file: file.clone(),
                cause,
            }
        })?;
    }
    options
        .connect(settings.url.as_str())
        .await
        .map_err(|cause| ConnectError::Server {
            url: settings.url.clone(),
            cause,
        })
}
