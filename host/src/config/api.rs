//! The `[api]` table of the config file: who may use the HTTP API.
//!
//! ```toml
//! [[api.tokens]]
//! name = "ops"                 # names the token in logs and errors
//! sender = "ops"               # its messages come from this sender ([senders] gives its permissions)
//! roles = ["chat", "admin"]    # chat: POST /v1/messages; admin: plugins, reload, events, metrics
//! sha256 = "<64 hex digits>"   # the token's SHA-256 (`printf %s "$TOKEN" | sha256sum`)
//!
//! [[api.tokens]]
//! name = "bot"
//! sender = "alice"
//! roles = ["chat"]
//! env = "AGENT_TOKEN_BOT"      # or: the token itself is in this environment variable
//! ```
//!
//! A token is never written in the file: an entry that holds one (`token`,
//! `secret`) is refused with an error naming the entry, and so is a
//! `sha256` that is not exactly 64 hex digits. A token given by `env` is
//! checked when it is read (`http/auth.rs`): at least 16 bytes, no
//! whitespace.

use serde::Deserialize;
use std::fmt;

/// The `[api]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// The API tokens; with none, the HTTP API asks for no token.
    pub tokens: Vec<ApiToken>,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send messages, as the token's sender (`POST /v1/messages`).
    Chat,
    /// Operate the agent: plugin details (`/v1/plugins*`), reload, the event
    /// stream (`/v1/events`), `/metrics`.
    Admin,
}

impl Role {
    /// The role's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chat => "chat",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a token's value is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The SHA-256 of the token, 32 bytes (given as 64 hex digits).
    Sha256([u8; 32]),
    /// The token itself is in this environment variable, read at start.
    Env(String),
}

/// One `[[api.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawToken")]
pub struct ApiToken {
    /// The entry's name, for logs and errors.
    pub name: String,
    /// The sender the token speaks as.
    pub sender: String,
    /// What the token allows.
    pub roles: Vec<Role>,
    /// Where its value is found.
    pub source: TokenSource,
}

/// An entry as written, checked by [`ApiToken::try_from`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<String>,
    sender: Option<String>,
    roles: Option<Vec<Role>>,
    sha256: Option<String>,
    env: Option<String>,
    /// Keys that would hold the token itself: known only to be refused.
    token: Option<toml::Value>,
    secret: Option<toml::Value>,
}

/// Why an `[[api.tokens]]` entry is refused; serde shows it, naming the
/// entry, as the config's error.
#[derive(Debug, thiserror::Error)]
enum TokenEntryError {
    #[error("an [[api.tokens]] entry has no `name`")]
    NoName,
    #[error(
        "[[api.tokens]] entry '{0}' holds its token in plain text (`{1}`); a token is never \
         written in the config: give `sha256 = \"<SHA-256 of the token in hex>\"` \
         (printf %s \"$TOKEN\" | sha256sum) or `env = \"VARIABLE\"` instead"
    )]
    PlainText(String, &'static str),
    #[error("[[api.tokens]] entry '{0}' has no `sender`: the sender its messages come from")]
    NoSender(String),
    #[error("[[api.tokens]] entry '{0}' has no `roles`: give \"chat\", \"admin\" or both")]
    NoRoles(String),
    #[error(
        "[[api.tokens]] entry '{0}': `sha256` must be the token's SHA-256 as 64 hex digits \
         (printf %s \"$TOKEN\" | sha256sum), not the token itself; this one {1}"
    )]
    NotADigest(String, #[source] DigestProblem),
    #[error("[[api.tokens]] entry '{0}': `env` names no variable")]
    EmptyVariable(String),
    #[error("[[api.tokens]] entry '{0}' has both `sha256` and `env`; give one")]
    BothSources(String),
    #[error(
        "[[api.tokens]] entry '{0}' has neither `sha256` nor `env`: give the token's SHA-256 \
         in hex, or the environment variable that holds it"
    )]
    NoSource(String),
}

/// What keeps a `sha256` value from being 64 hex digits.
#[derive(Debug, thiserror::Error)]
enum DigestProblem {
    #[error("has {0} characters")]
    Length(usize),
    #[error("has '{wrong}' at position {position}, which is not a hex digit")]
    NotHex { wrong: char, position: usize },
}

impl TryFrom<RawToken> for ApiToken {
    type Error = TokenEntryError;

    fn try_from(raw: RawToken) -> Result<Self, TokenEntryError> {
        let Some(name) = raw.name.filter(|n| !n.trim().is_empty()) else {
            return Err(TokenEntryError::NoName);
        };
        if let Some(key) = [("token", &raw.token), ("secret", &raw.secret)]
            .iter()
            .find_map(|(key, value)| value.as_ref().map(|_| *key))
        {
            return Err(TokenEntryError::PlainText(name, key));
        }
        let Some(sender) = raw.sender.filter(|s| !s.is_empty()) else {
            return Err(TokenEntryError::NoSender(name));
        };
        let roles = raw.roles.unwrap_or_default();
        if roles.is_empty() {
            return Err(TokenEntryError::NoRoles(name));
        }
        let source = match (raw.sha256, raw.env) {
            (Some(hex), None) => match parse_digest(&hex) {
                Ok(digest) => TokenSource::Sha256(digest),
                Err(problem) => return Err(TokenEntryError::NotADigest(name, problem)),
            },
            (None, Some(variable)) if !variable.trim().is_empty() => TokenSource::Env(variable),
            (None, Some(_)) => return Err(TokenEntryError::EmptyVariable(name)),
            (Some(_), Some(_)) => return Err(TokenEntryError::BothSources(name)),
            (None, None) => return Err(TokenEntryError::NoSource(name)),
        };
        Ok(ApiToken {
            name,
            sender,
            roles,
            source,
        })
    }
}

/// Exactly 64 hex digits (nothing around them) as 32 bytes, or what is
/// wrong with `hex`.
fn parse_digest(hex: &str) -> Result<[u8; 32], DigestProblem> {
    let characters = hex.chars().count();
    if characters != 64 {
        return Err(DigestProblem::Length(characters));
    }
    if let Some((position, wrong)) = hex
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(DigestProblem::NotHex {
            wrong,
            position: position + 1,
        });
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
    }
    Ok(digest)
}

/// The value of one ASCII hex digit (0 for any other byte, which
/// [`parse_digest`] has refused before).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApiSettings, String> {
        toml::from_str::<ApiSettings>(text).map_err(|e| e.to_string())
    }

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn entries_by_hash_or_by_variable_are_read() {
        let settings = parse(&format!(
            "[[tokens]]\nname = \"ops\"\nsender = \"ops\"\nroles = [\"chat\", \"admin\"]\n\
             sha256 = \"{}\"\n\
             [[tokens]]\nname = \"bot\"\nsender = \"alice\"\nroles = [\"chat\"]\nenv = \"T\"\n",
            DIGEST.to_uppercase()
        ))
        .expect("parses");
        let TokenSource::Sha256(digest) = &settings.tokens[0].source else {
            panic!("{settings:?}")
        };
        assert_eq!(digest[0], 0x9f);
        assert_eq!(digest[31], 0x08);
        assert_eq!(settings.tokens[0].roles, [Role::Chat, Role::Admin]);
        assert_eq!(settings.tokens[1].source, TokenSource::Env("T".into()));
    }

    #[test]
    fn a_plain_secret_or_a_bad_entry_is_refused_naming_the_entry() {
        let base = "[[tokens]]\nname = \"ops\"\nsender = \"ops\"\nroles = [\"admin\"]\n";
        for (extra, expected) in [
            (
                "token = \"hunter2\"\n",
                "entry 'ops' holds its token in plain text (`token`)",
            ),
            (
                "secret = \"hunter2\"\n",
                "entry 'ops' holds its token in plain text (`secret`)",
            ),
            ("sha256 = \"hunter2\"\n", "entry 'ops': `sha256` must be"),
            (
                &format!("sha256 = \"{DIGEST} \"\n"),
                "not the token itself; this one has 65 characters",
            ),
            (
                &format!("sha256 = \"+{}\"\n", &DIGEST[1..]),
                "this one has '+' at position 1, which is not a hex digit",
            ),
            ("", "entry 'ops' has neither `sha256` nor `env`"),
        ] {
            let error = parse(&format!("{base}{extra}")).expect_err(extra);
            assert!(error.contains(expected), "{extra}: {error}");
        }
        let error = parse("[[tokens]]\nsender = \"a\"\nroles = [\"chat\"]\nenv = \"T\"\n")
            .expect_err("no name");
        assert!(error.contains("has no `name`"), "{error}");
        let error =
            parse("[[tokens]]\nname = \"x\"\nsender = \"a\"\nroles = [\"root\"]\nenv = \"T\"\n")
                .expect_err("unknown role");
        assert!(error.contains("root"), "{error}");
    }
}
