//! Who may use the HTTP API: the tokens of `[[api.tokens]]`
//! ([`crate::config::ApiSettings`]), and the check every request but
//! `GET /healthz` passes when there are any.
//!
//! * A token is presented as `Authorization: Bearer <token>`, nowhere else
//!   (a token in the query string or the body is not looked at).
//! * It is hashed with SHA-256 and the digest compared with every
//!   configured digest in constant time, all of them, without stopping at a
//!   match: the time a check takes says nothing about how close a guess was
//!   or which token it matched.
//! * A route needs a role: `POST /v1/messages` needs `chat`; `/v1/plugins*`
//!   (reload included), `/v1/events`, `/v1/cluster` and `/metrics` need
//!   `admin`; `/v1/whoami` and any other path need a valid token of any
//!   role (an unknown path then gets its 404); the console's files
//!   (`GET /`, `GET /console/...`) need none: they hold no data.
//! * A refusal is `401` (no token, a malformed header, a token that is not
//!   configured; with `WWW-Authenticate: Bearer`) or `403` (a role the token
//!   lacks, a message naming another sender), with `{"error": ".."}`, a log
//!   line `event="auth_failed"` with `reason`, `route`, `method`, `peer`
//!   (and `identity` when the token was valid), and a count in
//!   `agent_host_auth_failures_total{reason}`.
//! * A request that passes carries its [`Identity`] to the handler.

use super::ApiState;
use crate::config::{ApiSettings, Role, TokenSource};
use crate::pipeline::InboundMessage;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Who a request's token says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's entry name in the config.
    pub token: String,
    /// The sender its messages come from.
    pub sender: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

/// The API's tokens, resolved: each one's SHA-256 and identity. With none,
/// the API is open (to whoever reaches its address).
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    tokens: Vec<KnownToken>,
}

#[derive(Debug, Clone)]
struct KnownToken {
    digest: [u8; 32],
    identity: Identity,
}

/// Why the tokens of a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    /// An `env` token names a variable that is not set, or is empty.
    MissingVariable {
        /// The entry's name.
        entry: String,
        /// The variable.
        variable: String,
    },
    /// An `env` token has whitespace in it: at its end (a line break
    /// copied from a file), at its start, or inside. A client never sends
    /// it so (a header value loses the whitespace around it), so it would
    /// never match.
    Whitespace {
        /// The entry's name.
        entry: String,
        /// The variable.
        variable: String,
        /// Where the whitespace is.
        place: WhitespacePlace,
    },
    /// An `env` token is shorter than [`MIN_TOKEN_BYTES`].
    TooShort {
        /// The entry's name.
        entry: String,
        /// The variable.
        variable: String,
        /// The token's length in bytes.
        bytes: usize,
    },
    /// Two entries have the same name.
    DuplicateName {
        /// The name.
        entry: String,
    },
    /// Two entries have the same token.
    DuplicateToken {
        /// The first entry.
        first: String,
        /// The second.
        second: String,
    },
}

/// The fewest bytes an API token may have: a shorter one is guessed too
/// easily.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Where a token has whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhitespacePlace {
    /// At its start.
    Start,
    /// At its end (a line break, often).
    End,
    /// Between other characters.
    Inside,
}

impl WhitespacePlace {
    /// Where `token` has whitespace, if it has any.
    fn of(token: &str) -> Option<Self> {
        if token.starts_with(char::is_whitespace) {
            Some(Self::Start)
        } else if token.ends_with(char::is_whitespace) {
            Some(Self::End)
        } else if token.contains(char::is_whitespace) {
            Some(Self::Inside)
        } else {
            None
        }
    }
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::MissingVariable { entry, variable } => write!(
                f,
                "[[api.tokens]] entry '{entry}' wants its token in the environment variable \
                 {variable}, which is not set or empty"
            ),
            AccessError::Whitespace {
                entry,
                variable,
                place,
            } => {
                let place = match place {
                    WhitespacePlace::Start => "starts with whitespace",
                    WhitespacePlace::End => "ends with whitespace (a line break?)",
                    WhitespacePlace::Inside => "holds whitespace",
                };
                write!(
                    f,
                    "[[api.tokens]] entry '{entry}': the token in the environment variable \
                     {variable} {place}, which no client can send in a header; set the \
                     variable to the token alone (printf %s, not echo)"
                )
            }
            AccessError::TooShort {
                entry,
                variable,
                bytes,
            } => write!(
                f,
                "[[api.tokens]] entry '{entry}': the token in the environment variable \
                 {variable} is {bytes} byte{} long; a token has at least {MIN_TOKEN_BYTES} \
                 bytes (head -c 32 /dev/urandom | base64)",
                if *bytes == 1 { "" } else { "s" }
            ),
            AccessError::DuplicateName { entry } => {
                write!(f, "two [[api.tokens]] entries are named '{entry}'")
            }
            AccessError::DuplicateToken { first, second } => write!(
                f,
                "[[api.tokens]] entries '{first}' and '{second}' have the same token; \
                 give each its own"
            ),
        }
    }
}

impl std::error::Error for AccessError {}

impl ApiAccess {
    /// No tokens: every request is served.
    pub fn open() -> Self {
        Self::default()
    }

    /// The tokens of `[api]`, those given by `env` read from the
    /// environment now.
    pub fn from_config(settings: &ApiSettings) -> Result<Self, AccessError> {
        Self::resolve(settings, |variable| std::env::var(variable).ok())
    }

    /// The tokens of `[api]`, with `lookup` as the environment.
    fn resolve(
        settings: &ApiSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AccessError> {
        let mut tokens: Vec<KnownToken> = Vec::new();
        for entry in &settings.tokens {
            let digest = match &entry.source {
                TokenSource::Sha256(digest) => *digest,
                TokenSource::Env(variable) => match lookup(variable) {
                    Some(token) if !token.is_empty() => {
                        check_token(&entry.name, variable, &token)?;
                        digest_of(&token)
                    }
                    _ => {
                        return Err(AccessError::MissingVariable {
                            entry: entry.name.clone(),
                            variable: variable.clone(),
                        })
                    }
                },
            };
            for known in &tokens {
                if known.identity.token == entry.name {
                    return Err(AccessError::DuplicateName {
                        entry: entry.name.clone(),
                    });
                }
                if known.digest == digest {
                    return Err(AccessError::DuplicateToken {
                        first: known.identity.token.clone(),
                        second: entry.name.clone(),
                    });
                }
            }
            tokens.push(KnownToken {
                digest,
                identity: Identity {
                    token: entry.name.clone(),
                    sender: entry.sender.clone(),
                    roles: entry.roles.clone(),
                },
            });
        }
        Ok(Self { tokens })
    }

    /// Whether the API asks for no token.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The identity of a presented token: its SHA-256 compared with every
    /// configured digest in constant time, all of them, whatever matched.
    pub fn identify(&self, presented: &str) -> Option<&Identity> {
        let digest = digest_of(presented);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, known) in self.tokens.iter().enumerate() {
            let same = known.digest[..].ct_eq(&digest[..]);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), same);
            found |= same;
        }
        if bool::from(found) {
            self.tokens.get(index as usize).map(|known| &known.identity)
        } else {
            None
        }
    }

    /// Whether a request with this `Authorization` header may use a route
    /// that needs `needed` (`None`: any valid token).
    fn check(
        &self,
        authorization: Option<&HeaderValue>,
        needed: Option<Role>,
    ) -> Result<&Identity, Refusal> {
        let Some(value) = authorization else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this API needs a token: send it as `Authorization: Bearer <token>` \
                 (a token in the query string or the body is not accepted)",
            ));
        };
        let Some(presented) = bearer_token(value) else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "malformed_header",
                "the Authorization header must be `Bearer <token>`",
            ));
        };
        let Some(identity) = self.identify(presented) else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unknown_token",
                "the API token is not valid",
            ));
        };
        match needed {
            Some(role) if !identity.roles.contains(&role) => Err(Refusal {
                identity: Some(identity.clone()),
                ..Refusal::new(
                    StatusCode::FORBIDDEN,
                    "wrong_role",
                    format!(
                        "token '{}' lacks the role '{role}' this route needs",
                        identity.token
                    ),
                )
            }),
            _ => Ok(identity),
        }
    }
}

/// Refuses a token read from `variable` for `entry` that no client could
/// send as it is (whitespace), or that is too short.
fn check_token(entry: &str, variable: &str, token: &str) -> Result<(), AccessError> {
    if let Some(place) = WhitespacePlace::of(token) {
        return Err(AccessError::Whitespace {
            entry: entry.to_string(),
            variable: variable.to_string(),
            place,
        });
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(AccessError::TooShort {
            entry: entry.to_string(),
            variable: variable.to_string(),
            bytes: token.len(),
        });
    }
    Ok(())
}

/// The SHA-256 of a token.
fn digest_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case), or `None` when the header is not one.
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The role a route needs; `None` for a path that is not the API's (any
/// valid token, then a 404).
fn needed_role(path: &str) -> Option<Role> {
    match path {
        "/v1/messages" => Some(Role::Chat),
        "/v1/plugins" | "/v1/events" | "/v1/cluster" | "/metrics" => Some(Role::Admin),
        _ if path.starts_with("/v1/plugins/") => Some(Role::Admin),
        _ => None,
    }
}

/// A refused request: its answer and what the audit log says of it.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    /// A stable word for logs and metrics.
    reason: &'static str,
    message: String,
    /// The token's identity, when it was valid.
    identity: Option<Identity>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            identity: None,
        }
    }

    /// Logs the refusal, counts it, and answers it.
    pub(super) fn answer(
        self,
        state: &ApiState,
        method: &Method,
        route: &str,
        peer: Option<SocketAddr>,
    ) -> Response {
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        let identity = self.identity.as_ref().map_or("", |i| i.token.as_str());
        tracing::warn!(
            event = "auth_failed",
            reason = self.reason,
            route,
            %method,
            peer,
            identity,
            "HTTP request refused: {}",
            self.message
        );
        state.host.metrics().auth_failed(self.reason);
        let challenge = match self.reason {
            "unknown_token" => "Bearer error=\"invalid_token\"",
            "wrong_role" | "sender_mismatch" => "Bearer error=\"insufficient_scope\"",
            _ => "Bearer",
        };
        (
            self.status,
            [(WWW_AUTHENTICATE, HeaderValue::from_static(challenge))],
            Json(json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// The peer of a request, as the server recorded it.
pub(super) fn peer_of(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
}

/// The middleware: with tokens configured, every request but
/// `GET /healthz` and the console's files needs one with the route's role; the identity goes on to
/// the handler as a request extension.
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if state.access.is_open()
        || path == "/healthz"
        || super::console::serves_without_token(request.method(), path)
    {
        return next.run(request).await;
    }
    let checked = state
        .access
        .check(request.headers().get(AUTHORIZATION), needed_role(path))
        .cloned();
    match checked {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(refusal) => {
            let peer = peer_of(&request);
            refusal.answer(&state, request.method(), request.uri().path(), peer)
        }
    }
}

/// Makes `identity`'s sender the sender of every message: a message that
/// names no sender, or the same one, gets it; one that names another is
/// refused (403), so that nobody speaks as someone else by writing a name.
pub(super) fn speak_as(
    identity: &Identity,
    messages: &mut [InboundMessage],
) -> Result<(), Refusal> {
    if let Some(other) = messages
        .iter()
        .find(|m| !m.sender.is_empty() && m.sender != identity.sender)
    {
        return Err(Refusal {
            identity: Some(identity.clone()),
            ..Refusal::new(
                StatusCode::FORBIDDEN,
                "sender_mismatch",
                format!(
                    "token '{}' speaks as sender '{}', and the message names sender '{}'; \
                     leave `sender` out or give the token's",
                    identity.token, identity.sender, other.sender
                ),
            )
        });
    }
    for message in messages {
        message.sender.clone_from(&identity.sender);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;

    fn token(name: &str, roles: &[Role], source: TokenSource) -> ApiToken {
        ApiToken {
            name: name.into(),
            sender: format!("{name}-sender"),
            roles: roles.to_vec(),
            source,
        }
    }

    fn access() -> ApiAccess {
        let settings = ApiSettings {
            tokens: vec![
                token(
                    "ops",
                    &[Role::Chat, Role::Admin],
                    TokenSource::Sha256(digest_of("ops-secret")),
                ),
                token("bot", &[Role::Chat], TokenSource::Env("BOT_TOKEN".into())),
                token(
                    "watch",
                    &[Role::Admin],
                    TokenSource::Sha256(digest_of("watch-secret")),
                ),
            ],
        };
        ApiAccess::resolve(&settings, |v| {
            (v == "BOT_TOKEN").then(|| "bot-secret-from-env".into())
        })
        .expect("resolves")
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).expect("header")
    }

    #[test]
    fn a_token_matches_its_entry_whatever_its_place_and_nothing_else_matches() {
        let access = access();
        for (presented, name) in [
            ("ops-secret", "ops"),
            ("bot-secret-from-env", "bot"),
            ("watch-secret", "watch"),
        ] {
            let identity = access.identify(presented).expect(presented);
            assert_eq!(identity.token, name);
            assert_eq!(identity.sender, format!("{name}-sender"));
        }
        for wrong in ["", "ops-secre", "ops-secret ", "OPS-SECRET", "bot"] {
            assert!(access.identify(wrong).is_none(), "{wrong:?}");
        }
        // The digest itself is not the token.
        let digest: String = digest_of("ops-secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(access.identify(&digest).is_none());
        assert!(ApiAccess::open().identify("ops-secret").is_none());
    }

    #[test]
    fn the_header_must_be_bearer_and_the_role_must_be_held() {
        let access = access();
        let reason = |h: Option<&str>, role| {
            access
                .check(h.map(header).as_ref(), role)
                .map(|i| i.token.clone())
                .map_err(|r| (r.status.as_u16(), r.reason))
        };
        assert_eq!(reason(None, Some(Role::Chat)), Err((401, "missing_token")));
        assert_eq!(
            reason(Some("Basic b3BzOg=="), Some(Role::Chat)),
            Err((401, "malformed_header"))
        );
        assert_eq!(
            reason(Some("Bearer "), Some(Role::Chat)),
            Err((401, "malformed_header"))
        );
        assert_eq!(
            reason(Some("ops-secret"), Some(Role::Chat)),
            Err((401, "malformed_header"))
        );
        assert_eq!(
            reason(Some("Bearer nope"), Some(Role::Chat)),
            Err((401, "unknown_token"))
        );
        assert_eq!(
            reason(Some("bearer ops-secret"), Some(Role::Admin)),
            Ok("ops".into())
        );
        assert_eq!(
            reason(Some("Bearer bot-secret-from-env"), Some(Role::Chat)),
            Ok("bot".into())
        );
        assert_eq!(
            reason(Some("Bearer bot-secret-from-env"), Some(Role::Admin)),
            Err((403, "wrong_role"))
        );
        assert_eq!(
            reason(Some("Bearer watch-secret"), Some(Role::Chat)),
            Err((403, "wrong_role"))
        );
        assert_eq!(
            reason(Some("Bearer bot-secret-from-env"), None),
            Ok("bot".into())
        );
    }

    #[test]
    fn routes_need_their_roles() {
        assert_eq!(needed_role("/v1/messages"), Some(Role::Chat));
        for admin in [
            "/v1/plugins",
            "/v1/plugins/notes",
            "/v1/plugins/notes/reload",
            "/v1/events",
            "/metrics",
        ] {
            assert_eq!(needed_role(admin), Some(Role::Admin), "{admin}");
        }
        assert_eq!(needed_role("/v1/whoami"), None, "any valid token");
        assert_eq!(needed_role("/v1/elsewhere"), None);
    }

    #[test]
    fn an_unset_variable_or_a_repeated_token_is_a_config_error() {
        let settings = ApiSettings {
            tokens: vec![token(
                "bot",
                &[Role::Chat],
                TokenSource::Env("UNSET".into()),
            )],
        };
        let error = ApiAccess::resolve(&settings, |_| None).expect_err("unset");
        assert_eq!(
            error.to_string(),
            "[[api.tokens]] entry 'bot' wants its token in the environment variable UNSET, \
             which is not set or empty"
        );
        let settings = ApiSettings {
            tokens: vec![
                token(
                    "a",
                    &[Role::Chat],
                    TokenSource::Sha256(digest_of("same-token-0123456789")),
                ),
                token("b", &[Role::Chat], TokenSource::Env("SAME".into())),
            ],
        };
        let error = ApiAccess::resolve(&settings, |_| Some("same-token-0123456789".into()))
            .expect_err("twice");
        assert!(
            matches!(error, AccessError::DuplicateToken { .. }),
            "{error}"
        );
    }

    #[test]
    fn an_env_token_with_whitespace_or_under_16_bytes_is_refused_naming_the_entry() {
        let settings = ApiSettings {
            tokens: vec![token("bot", &[Role::Chat], TokenSource::Env("T".into()))],
        };
        let refused = |value: &str| ApiAccess::resolve(&settings, |_| Some(value.into())).err();
        let place = |place| {
            Some(AccessError::Whitespace {
                entry: "bot".into(),
                variable: "T".into(),
                place,
            })
        };
        assert_eq!(
            refused("a-token-of-32-bytes-from-a-file\n"),
            place(WhitespacePlace::End)
        );
        assert_eq!(
            refused("\ta-token-of-32-bytes-after-a-tab"),
            place(WhitespacePlace::Start)
        );
        assert_eq!(
            refused("a-token-of-32 bytes-with-a-space"),
            place(WhitespacePlace::Inside)
        );
        let short = refused("fifteen-bytes-!").expect("too short");
        assert_eq!(
            short,
            AccessError::TooShort {
                entry: "bot".into(),
                variable: "T".into(),
                bytes: 15
            }
        );
        assert!(
            short.to_string().starts_with(
                "[[api.tokens]] entry 'bot': the token in the environment variable T is 15 \
                 bytes long; a token has at least 16 bytes"
            ),
            "{short}"
        );
        assert_eq!(refused("sixteen-bytes-!!"), None);
    }

    #[test]
    fn messages_take_the_tokens_sender_and_naming_another_is_refused() {
        let identity = access()
            .identify("bot-secret-from-env")
            .cloned()
            .expect("bot");
        let mut messages = vec![
            InboundMessage {
                text: "a".into(),
                ..Default::default()
            },
            InboundMessage {
                text: "b".into(),
                sender: "bot-sender".into(),
                ..Default::default()
            },
        ];
        assert!(speak_as(&identity, &mut messages).is_ok());
        assert!(messages.iter().all(|m| m.sender == "bot-sender"));
        messages.push(InboundMessage {
            text: "c".into(),
            sender: "alice".into(),
            ..Default::default()
        });
        let refusal = speak_as(&identity, &mut messages).expect_err("another sender");
        assert_eq!(
            (refusal.status.as_u16(), refusal.reason),
            (403, "sender_mismatch")
        );
        assert!(refusal.message.contains("'alice'"), "{}", refusal.message);
    }
}
