//! The HTTP API that `agent-host run --listen ADDR` serves over a
//! [`PluginHost`]:
//!
//! * `POST /v1/messages`: one message (`{"text": ..}`) answered with its
//!   [`Reply`], or a batch (`{"messages": [..]}`) answered with
//!   `{"replies": [..]}` (evaluators then score the batch together);
//! * `GET /v1/plugins` and `GET /v1/plugins/{name}`: [`PluginStatus`]es;
//! * `POST /v1/plugins/{name}/reload`: reloads one plugin from its file and
//!   answers with what changed (404 for an unknown plugin, 422 when the new
//!   build is refused and the running generation keeps serving);
//! * `GET /v1/events`: the event bus as server-sent events (`event: <name>`,
//!   `data: <BusEvent JSON>`); a subscriber that falls behind skips the
//!   events it missed;
//! * `GET /v1/cluster`: in cluster mode, the cluster's hosts and accepted
//!   lock hashes as of this host's last heartbeat (what `agent-host
//!   cluster status --json` prints); 404 when the host is not in one;
//! * `GET /v1/whoami`: who the request's token is (its name, sender and
//!   roles), or `{"open": true}` when the API asks for no token; the
//!   console signs in with it;
//! * `GET /healthz` and `GET /metrics` (Prometheus text format);
//! * `GET /`: the operator console (`http/console.rs`), a page that uses
//!   the routes above with the operator's token; its files need none.
//!
//! With `[[api.tokens]]` in the config ([`ApiAccess`], `http/auth.rs`),
//! every request but `GET /healthz` needs `Authorization: Bearer <token>`:
//! `401` without a valid one, `403` without the route's role (`chat` for
//! messages, `admin` for the rest). A message's sender is then the token's
//! sender; a body naming another sender is refused with `403`.
//!
//! Once the host shuts down (Ctrl-C or SIGTERM) the server keeps answering
//! while the calls in flight finish, but takes no new work: every request
//! gets `503 Service Unavailable` with `{"error": "the agent is shutting
//! down"}` (a message that reached the host as it began to shut down too),
//! except `GET /healthz`, which answers 503 with `{"status": "draining",
//! ..}`, and `GET /metrics`.
//!
//! Every request the API cannot serve (bad JSON, a wrong content type, a
//! message without `text`, an unknown route or method, ...) gets a 4xx answer
//! whose body is `{"error": "..."}` saying what is wrong; the server keeps
//! serving. A message body is read as a stdin line is ([`crate::request`]):
//! the same limit ([`MAX_REQUEST_BYTES`], beyond it a 413, before the body
//! arrives when its `Content-Length` or a chunk size says so) and the same
//! error texts; a body that does not all arrive within
//! `http_body_timeout_ms` gets a 408. A refusal that ends the connection
//! (401, 403, 408, 413, 503) says `Connection: close`.
//!
//! In cluster mode a message goes through the agent's cluster: a reply
//! that does not come within `reply_timeout_ms` is a `504` naming the
//! message's id (the client may send it again with that id: it does not
//! run twice), a server that cannot be reached a `503`.
//!
//! # What this module must never do
//!
//! * Run plugin code on an async worker thread: plugin calls block (a handler
//!   may take seconds), so every message goes to the blocking pool
//!   ([`PluginHost::answer`], [`PluginHost::answer_batch`]), and its reply
//!   comes back on time even when a plugin call hangs.
//!
//! [`PluginHost::answer`]: crate::PluginHost::answer
//! [`PluginHost::answer_batch`]: crate::PluginHost::answer_batch
//! * Panic or `unwrap` on anything a client sends: every malformed input
//!   becomes an error answer.
//! * Keep the process alive after shutdown: event streams end when the
//!   shutdown future resolves, so graceful shutdown does not wait on them.
//!
//! [`PluginStatus`]: crate::PluginStatus
//! [`Reply`]: crate::Reply
//!
//! (One file of about 500 lines, a third of them tests: the routes, their
//! error answers and the event stream read best side by side.)

mod auth;
mod connection_clock;
mod console;
mod framing;
mod request_body;
mod server;

pub use auth::{AccessError, ApiAccess, Identity, WhitespacePlace, MIN_TOKEN_BYTES};

use crate::pipeline::Answered;
use crate::registry::events::BusEvent;
use crate::request::{self, RequestError};
use crate::PluginHost;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use request_body::BodyRefused;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::future::{ready, Future};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

pub use crate::request::{MAX_BATCH, MAX_REQUEST_BYTES};

/// The content type of `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The routes, for the answer to an unknown one.
const ROUTES: &str = "POST /v1/messages, GET /v1/plugins, GET /v1/plugins/{name}, \
                      POST /v1/plugins/{name}/reload, GET /v1/events, GET /v1/cluster, \
                      GET /v1/whoami, GET /healthz, GET /metrics, GET / (the console)";

/// What every handler can reach.
#[derive(Clone)]
struct ApiState {
    host: Arc<PluginHost>,
    /// Who may use the API.
    access: Arc<ApiAccess>,
    /// Turns `true` when the server shuts down; ends the event streams.
    stopping: watch::Receiver<bool>,
}

/// Serves the HTTP API for `host` on `listener` until `shutdown` resolves,
/// then stops accepting, ends the event streams, and returns once the
/// requests in flight are answered. The caller shuts the host down.
///
/// Each client gets the header, idle and body timeouts and the connection
/// limits of the host's settings (`http_header_timeout_ms`,
/// `http_idle_timeout_ms`, `http_body_timeout_ms`, `http_max_connections`,
/// `http_max_connections_per_address`); `access` says which tokens it
/// needs ([`ApiAccess::open`]: none).
pub async fn serve(
    host: Arc<PluginHost>,
    listener: tokio::net::TcpListener,
    access: ApiAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let limits = server::ConnectionLimits::of(host.settings());
    let app = router(ApiState {
        host,
        access: Arc::new(access),
        stopping,
    });
    server::serve(listener, app, limits, async move {
        shutdown.await;
        // Nobody listening only means no event stream is open.
        let _ = stop.send(true);
    })
    .await
}

fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/messages", post(post_messages))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/plugins/{name}", get(one_plugin))
        .route("/v1/plugins/{name}/reload", post(reload_plugin))
        .route("/v1/events", get(events))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/whoami", get(whoami))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(console::routes())
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_while_shutting_down,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(refuse_oversized_body))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Whether a content type is JSON (`application/json`, or `+json`), with
/// any parameters such as `charset`.
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn check_content_type(content_type: Option<&HeaderValue>) -> Result<(), ApiError> {
    let expected = "expected Content-Type: application/json";
    match content_type {
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{expected}, and the request has no Content-Type"),
        )),
        Some(value) => match value.to_str() {
            Ok(text) if is_json_type(text) => Ok(()),
            Ok(text) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{expected}, got '{text}'"),
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{expected}, got a Content-Type that is not text"),
            )),
        },
    }
}

/// How a refused request is answered: malformed text is a bad request, a
/// request too large is one, and JSON that is no message is unprocessable.
impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        let status = match &error {
            RequestError::Empty | RequestError::NotUtf8 { .. } | RequestError::NotJson { .. } => {
                StatusCode::BAD_REQUEST
            }
            RequestError::TooLarge | RequestError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            RequestError::NotAnObject { .. }
            | RequestError::BothMessageAndBatch
            | RequestError::BatchNotAnArray { .. }
            | RequestError::Message { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, error.to_string())
    }
}

/// A message the cluster did not answer (cluster mode): its reply late
/// (504, the client may retry with the same id), or the server unreachable
/// (503).
impl From<crate::host::RouteError> for ApiError {
    fn from(error: crate::host::RouteError) -> Self {
        let status = match &error {
            crate::host::RouteError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            crate::host::RouteError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string())
    }
}

/// A body refused before it was read: late (408) or too large (413).
impl From<BodyRefused> for ApiError {
    fn from(refused: BodyRefused) -> Self {
        let status = match refused {
            BodyRefused::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyRefused::TooLarge | BodyRefused::ChunkSizeTooLong => StatusCode::PAYLOAD_TOO_LARGE,
        };
        ApiError::new(status, refused.to_string())
    }
}

/// Reads a `POST /v1/messages` body: checks the content type, then reads
/// the request as every front-end does ([`request::parse`]).
fn parse_request(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<request::Request, ApiError> {
    check_content_type(content_type)?;
    Ok(request::parse(body)?)
}

/// `POST /v1/messages`. With tokens, every message is the token's sender's.
async fn post_messages(
    State(state): State<ApiState>,
    identity: Option<Extension<Identity>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if let Some(refused) = BodyRefused::cause_of(&rejection) {
            ApiError::from(refused)
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from(RequestError::TooLarge)
        } else {
            ApiError::new(
                rejection.status(),
                format!("cannot read the request body: {}", rejection.body_text()),
            )
        }
    })?;
    let host = Arc::clone(&state.host);
    let (mut messages, one) = match parse_request(headers.get(CONTENT_TYPE), &body)? {
        request::Request::One(message) => (vec![message], true),
        request::Request::Batch(messages) => (messages, false),
    };
    if let Some(Extension(identity)) = &identity {
        if let Err(refusal) = auth::speak_as(identity, &mut messages) {
            let peer = peer.map(|Extension(ConnectInfo(peer))| peer);
            return Ok(refusal.answer(&state, &Method::POST, "/v1/messages", peer));
        }
    }
    // The drain check let the request in, but the shutdown may have begun
    // since: a message the host refuses unseen is a 503 like any other.
    let shutting_down = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, crate::SHUTTING_DOWN);
    match messages.pop() {
        Some(message) if one => match host.answer_unless_shutting_down(message).await {
            Ok(Answered::Served(reply)) => Ok(Json(reply).into_response()),
            Ok(Answered::ShuttingDown(_)) => Err(shutting_down()),
            Err(error) => Err(ApiError::from(error)),
        },
        last => {
            messages.extend(last);
            match host.answer_batch_unless_shutting_down(messages).await {
                Answered::Served(replies) => {
                    Ok(Json(json!({ "replies": replies })).into_response())
                }
                Answered::ShuttingDown(_) => Err(shutting_down()),
            }
        }
    }
}

/// `GET /v1/plugins`.
async fn list_plugins(State(state): State<ApiState>) -> Response {
    Json(json!({
        "plugins": state.host.statuses(),
        "failed": state.host.failed_loads(),
    }))
    .into_response()
}

/// `GET /v1/plugins/{name}`.
async fn one_plugin(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = plugin_name(name)?;
    match state.host.status(&name) {
        Some(status) => Ok(Json(status).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no plugin named '{name}' is loaded"),
        )),
    }
}

/// The plugin name in a path, or a JSON error saying why it is not one.
fn plugin_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(name)| name).map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("bad plugin name in the path: {}", rejection.body_text()),
        )
    })
}

/// The `user-agent` that `agent-host reload` sends, so the audit trail
/// can tell its reloads from other HTTP clients' (a claim of the client).
pub const CLI_USER_AGENT_PREFIX: &str = "agent-host-cli/";

/// Who asked for a reload over HTTP: the CLI when its `user-agent` says
/// so, else an HTTP client; `identity` names the token it presented.
fn reload_origin(headers: &HeaderMap, identity: Option<String>) -> crate::ReloadOrigin {
    let from_cli = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CLI_USER_AGENT_PREFIX));
    if from_cli {
        crate::ReloadOrigin::Cli { identity }
    } else {
        crate::ReloadOrigin::Http { identity }
    }
}

/// The query of `POST /v1/plugins/{name}/reload`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReloadQuery {
    /// Reload even a file byte-identical to the serving generation's.
    force: bool,
}

/// `POST /v1/plugins/{name}/reload`: reloads the plugin from its file
/// (`?force=true`: even when it is byte-identical to the serving
/// generation's; otherwise such a reload is skipped, `"unchanged": true`).
/// 200 with what changed; 404 for an unknown plugin; 422 when the new build
/// is refused (the running generation keeps serving).
///
/// With tokens, the caller's [`Identity`] goes into the audit trail.
async fn reload_plugin(
    State(state): State<ApiState>,
    identity: Option<Extension<Identity>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<axum::extract::Query<ReloadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let when_unchanged = match query {
        Ok(axum::extract::Query(ReloadQuery { force: true })) => crate::WhenUnchanged::Reload,
        Ok(_) => crate::WhenUnchanged::Skip,
        Err(rejection) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the query string: {rejection} (only force=true or force=false)"),
            ))
        }
    };
    let identity = identity.map(|Extension(identity)| identity.token);
    let origin = reload_origin(&headers, identity);
    let name = plugin_name(name)?;
    if state.host.status(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no plugin named '{name}' is loaded"),
        ));
    }
    let host = Arc::clone(&state.host);
    let outcome =
        tokio::task::spawn_blocking(move || host.reload_as(&name, None, origin, when_unchanged))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the reload task failed: {e}"),
                )
            })?;
    match outcome {
        Ok(reloaded) => Ok(Json(reloaded).into_response()),
        Err(failure) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            failure.to_string(),
        )),
    }
}

/// An SSE event name: event names come from plugins, and a line break in
/// one would end the field early (axum panics on it), so it is replaced.
fn event_name(name: &str) -> String {
    name.replace(['\n', '\r'], " ")
}

/// `GET /v1/events`.
async fn events(
    State(state): State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before answering, so that the client misses nothing that
    // happens after it sees the response head.
    let stream = event_stream(state.host.events(), state.stopping.clone());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The bus as SSE events: a greeting comment, then every event, skipping
/// those a slow reader missed, until the server stops.
fn event_stream(
    receiver: broadcast::Receiver<BusEvent>,
    mut stopping: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let greeting = stream::once(ready(Ok(
        Event::default().comment("subscribed to the agent-host event bus")
    )));
    let live = BroadcastStream::new(receiver).filter_map(|item| {
        ready(match item {
            Ok(event) => {
                let sse = Event::default()
                    .event(event_name(&event.name))
                    .json_data(&event)
                    .unwrap_or_else(|error| {
                        Event::default().comment(format!("event not serializable: {error}"))
                    });
                Some(Ok(sse))
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::debug!(missed, "an event stream fell behind and skipped events");
                None
            }
        })
    });
    greeting.chain(live).take_until(async move {
        // An error means the server is gone: end the stream as well.
        let _ = stopping.wait_for(|stop| *stop).await;
    })
}

/// `GET /v1/cluster`: the cluster's status, or 404 outside cluster mode.
async fn cluster_status(State(state): State<ApiState>) -> Result<Response, ApiError> {
    match state.host.cluster_report() {
        Some(status) => Ok(Json(status).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this host is not in cluster mode (its config has no [cluster] table)",
        )),
    }
}

/// `GET /v1/whoami`: the identity of the request's token (any role will
/// do), or `{"open": true}` with every role when the API takes no tokens.
async fn whoami(identity: Option<Extension<Identity>>) -> Response {
    match identity {
        Some(Extension(identity)) => Json(json!({
            "open": false,
            "token": identity.token,
            "sender": identity.sender,
            "roles": identity.roles.iter().map(|role| role.as_str()).collect::<Vec<_>>(),
        }))
        .into_response(),
        None => Json(json!({
            "open": true,
            "roles": [crate::config::Role::Chat.as_str(), crate::config::Role::Admin.as_str()],
        }))
        .into_response(),
    }
}

/// `GET /healthz`: 200 while serving (`ok`, or `degraded` with the
/// reasons: a plugin quarantined, a file that failed to load, a worker that
/// keeps restarting), 503 while shutting down.
async fn healthz(State(state): State<ApiState>) -> Response {
    let health = state.host.health();
    if health.status == "draining" {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": health.status,
                "plugins": health.plugins,
                "reasons": health.reasons,
                "error": crate::SHUTTING_DOWN,
            })),
        )
            .into_response();
    }
    Json(json!({
        "status": health.status,
        "plugins": health.plugins,
        "reasons": health.reasons,
    }))
    .into_response()
}

/// Answers every request but `/healthz` and `/metrics` with 503 once the
/// host shuts down, so that nothing new starts while the calls in flight
/// finish.
async fn refuse_while_shutting_down(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if state.host.is_shutting_down() && path != "/healthz" && path != "/metrics" {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, crate::SHUTTING_DOWN)
            .into_response();
    }
    next.run(request).await
}

/// `GET /metrics`.
async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.host.metrics_text(),
    )
        .into_response()
}

/// Any route the API does not serve.
async fn unknown_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {} {}; the API serves {ROUTES}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Refuses a request whose `Content-Length` is over [`MAX_REQUEST_BYTES`]
/// with `413` before any of its body is read.
async fn refuse_oversized_body(request: Request, next: Next) -> Response {
    let announced = http_body::Body::size_hint(request.body()).lower();
    if announced > MAX_REQUEST_BYTES as u64 {
        tracing::info!(
            peer = auth::peer_of(&request).map(|p| p.to_string()),
            announced,
            "HTTP request refused: its Content-Length is over the limit"
        );
        return ApiError::from(RequestError::TooLarge).into_response();
    }
    next.run(request).await
}

/// Whether an answer with `status` refuses the request and ends the
/// connection: the client is told so (`Connection: close`), and a
/// client that keeps connections alive never writes into a closed one.
fn ends_the_connection(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// Whether a response already carries a JSON body.
fn has_json_body(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_type)
}

/// Turns every error answer that is not JSON yet (axum's own rejections,
/// `405 Method Not Allowed`, ...) into `{"error": "..."}`, and logs requests.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let status = response.status();
    tracing::debug!(%method, %path, status = status.as_u16(), "http request");
    if ends_the_connection(status) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if !(status.is_client_error() || status.is_server_error()) || has_json_body(response.headers())
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("method {method} is not allowed on {path}")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string()
    } else {
        text
    };
    let mut error = Map::new();
    error.insert("error".into(), Value::String(message));
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(Value::Object(error).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn json_type() -> HeaderValue {
        HeaderValue::from_static("application/json; charset=utf-8")
    }

    fn error_of(content_type: Option<&HeaderValue>, body: &str) -> ApiError {
        parse_request(content_type, body.as_bytes()).expect_err("an error")
    }

    #[test]
    fn a_body_needs_a_json_content_type_and_refusals_get_their_status() {
        let ct = json_type();
        assert!(matches!(
            parse_request(Some(&ct), br#"{"text": "hi"}"#),
            Ok(request::Request::One(_))
        ));
        let e = error_of(None, r#"{"text": "hi"}"#);
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.message.contains("no Content-Type"), "{}", e.message);
        let e = error_of(Some(&HeaderValue::from_static("text/plain")), "{}");
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.message.contains("'text/plain'"), "{}", e.message);
        for (body, status) in [
            ("  ", StatusCode::BAD_REQUEST),
            ("{nope", StatusCode::BAD_REQUEST),
            ("[1]", StatusCode::UNPROCESSABLE_ENTITY),
            (r#"{"sender": "a"}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (
                r#"{"messages": [{"text": "a"}, {}]}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ] {
            let e = error_of(Some(&ct), body);
            assert_eq!(e.status, status, "{body}: {}", e.message);
            let refused = request::parse(body.as_bytes()).expect_err("refused");
            assert_eq!(
                e.message,
                refused.to_string(),
                "the text every front-end gives"
            );
        }
    }

    #[test]
    fn content_types_with_parameters_and_suffixes_are_json() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON ; charset=UTF-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/json+html"));
        assert!(!is_json_type("application/x-www-form-urlencoded"));
    }

    #[tokio::test]
    async fn a_slow_event_reader_skips_what_it_missed_and_the_stream_ends_on_stop() {
        let (sender, receiver) = broadcast::channel(2);
        let (stop, stopping) = watch::channel(false);
        let mut events = Box::pin(event_stream(receiver, stopping));
        for n in 0..5 {
            let _ = sender.send(BusEvent {
                name: format!("test:{n}"),
                source: "host".into(),
                payload: json!(n),
            });
        }
        let within = Duration::from_secs(5);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let item = tokio::time::timeout(within, events.next()).await;
            let Ok(Some(Ok(event))) = item else {
                panic!("an event: {item:?}")
            };
            seen.push(format!("{event:?}"));
        }
        assert!(seen[0].contains("subscribed"), "{seen:?}");
        assert!(
            seen[1].contains("test:3"),
            "the oldest were skipped: {seen:?}"
        );
        assert!(seen[2].contains("test:4"), "{seen:?}");
        stop.send(true).expect("send stop");
        let end = tokio::time::timeout(within, events.next()).await;
        assert!(matches!(end, Ok(None)), "the stream ends on stop");
    }

    /// A message that passed the drain check just before the shutdown began
    /// reaches the host after it: the answer is a 503, never a 200 whose
    /// reply says the agent is shutting down.
    #[test]
    fn a_message_the_host_refuses_while_shutting_down_is_answered_503() {
        use crate::plugin::in_memory::{host_with, source};
        use agent_host_plugin_sdk::{Action, ActionResult, Plugin};
        let (host, _) = host_with(
            "",
            vec![source("echo.so", || {
                Plugin::new("echo", "1.0.0")
                    .action(Action::new("ECHO").handler(|_, _| Ok(ActionResult::text("echo"))))
            })],
        );
        let host = Arc::new(host);
        let (_stop, stopping) = watch::channel(false);
        let state = ApiState {
            host: Arc::clone(&host),
            access: Arc::new(ApiAccess::open()),
            stopping,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let post = |body: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, json_type());
            runtime.block_on(post_messages(
                State(state.clone()),
                None,
                None,
                headers,
                Ok(Bytes::from_static(body.as_bytes())),
            ))
        };
        let served = post(r#"{"text": "hi"}"#).expect("served");
        assert_eq!(served.status(), StatusCode::OK);

        assert!(host.shutdown().is_empty());
        for body in [
            r#"{"text": "hi"}"#,
            r#"{"messages": [{"text": "a"}, {"text": "b"}]}"#,
        ] {
            let refused = post(body).expect_err("refused");
            assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(refused.message, crate::SHUTTING_DOWN, "{body}");
        }
    }

    #[test]
    fn event_names_lose_line_breaks() {
        assert_eq!(event_name("a:b\nc\r"), "a:b c ");
    }
}
