//! The server under the HTTP API: accepts connections and serves each with
//! hyper (HTTP/1.1), so that no client can hold the agent's connections:
//!
//! * a client that does not send a request's headers within the header
//!   timeout, or leaves a connection idle past the idle timeout, is
//!   disconnected ([`ConnectionClock`]);
//! * a request's body must all arrive within the body timeout, and a body
//!   announced or chunked past the size limit is refused as soon as its
//!   size is known ([`RequestBody`], `http/framing.rs`);
//! * at most `max_connections` are served at once, and at most
//!   `max_per_address` from one client address; a connection beyond
//!   either is answered `503` with `{"error": "..."}` at once, without
//!   waiting for its request, and closed. The log says so once each time
//!   a limit is reached, and once when connections are accepted again;
//! * a response sent before its request's body was read to the end says
//!   `Connection: close`, since hyper then closes the connection;
//! * on shutdown it stops accepting, lets each connection finish the
//!   request it is serving, and returns once all are closed.
//!
//! Each request carries its client's address (`ConnectInfo<SocketAddr>`)
//! as an extension, for the audit log.

use super::connection_clock::{ConnectionClock, TimedBody, Watched};
use super::framing::{BodyFraming, BodySignal, Framed, NextBody};
use super::request_body::{BodyProgress, RequestBody};
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::header::CONNECTION;
use axum::http::HeaderValue;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

/// The most connections beyond the limit answered at once; past them a
/// connection gets its answer only if its socket takes it at once.
const MAX_REFUSALS: u32 = 64;

/// How long a connection beyond the limit is read from after its answer,
/// before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How long to wait before accepting again when accepting fails (at the
/// limit of open files, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What the server allows each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnectionLimits {
    /// How long a request's headers may take to arrive.
    pub(super) header_timeout: Duration,
    /// How long a connection may stay idle between requests.
    pub(super) idle_timeout: Duration,
    /// How long a request's body may take to arrive, from its headers.
    pub(super) body_timeout: Duration,
    /// The most connections served at once (at least one).
    pub(super) max_connections: u32,
    /// The most connections served at once from one IP address (at least
    /// one).
    pub(super) max_per_address: u32,
}

impl ConnectionLimits {
    /// The limits of the `[host]` settings.
    pub(super) fn of(settings: &crate::config::HostSettings) -> Self {
        Self {
            header_timeout: Duration::from_millis(settings.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(settings.http_idle_timeout_ms),
            body_timeout: Duration::from_millis(settings.http_body_timeout_ms),
            max_connections: u32::try_from(settings.http_max_connections)
                .unwrap_or(u32::MAX)
                .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX)),
            max_per_address: u32::try_from(settings.http_max_connections_per_address)
                .unwrap_or(u32::MAX)
                .max(1),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and returns once every connection is closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if let Some(files) = crate::sys::open_file_limit() {
        if files <= u64::from(limits.max_connections) {
            tracing::warn!(
                "the limit of open files ({files}) is not above http_max_connections ({}): \
                 past it, new connections wait unanswered until others close; raise the \
                 limit (ulimit -n) or lower http_max_connections",
                limits.max_connections
            );
        }
    }
    let open = Arc::new(Semaphore::new(limits.max_connections as usize));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS as usize));
    let refusal = refusal(limits.max_connections);
    let address_refusal = address_refusal(limits.max_per_address);
    let addresses = Arc::new(Addresses::default());
    let (close, closing) = watch::channel(false);
    let mut at_limit = AtLimit::default();
    let mut accept_failed = false;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if std::mem::take(&mut accept_failed) {
                    tracing::info!("accepting HTTP connections again");
                }
                accepted
            }
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                if !std::mem::replace(&mut accept_failed, true) {
                    tracing::warn!(
                        "cannot accept HTTP connections: {error}; retrying every {} ms",
                        ACCEPT_RETRY.as_millis()
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let answer = match Arc::clone(&open).try_acquire_owned() {
            Ok(permit) => {
                at_limit.left();
                match Addresses::enter(&addresses, peer.ip(), limits.max_per_address) {
                    Some(place) => {
                        let app = app.clone();
                        tokio::spawn(serve_connection(
                            stream,
                            peer,
                            app,
                            limits,
                            (permit, place),
                            closing.clone(),
                        ));
                        continue;
                    }
                    None => &address_refusal,
                }
            }
            Err(_) => {
                at_limit.refused(limits.max_connections);
                &refusal
            }
        };
        match Arc::clone(&refusing).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(refuse_connection(stream, answer.clone(), permit));
            }
            Err(_) => refuse_at_once(&stream, answer),
        }
    }
    drop(listener);
    // Nobody listening only means no connection is open.
    let _ = close.send(true);
    // Every connection holds a permit until it is closed.
    let _all_closed = open.acquire_many(limits.max_connections).await;
    let _all_refused = refusing.acquire_many(MAX_REFUSALS).await;
    Ok(())
}

/// Whether the server is refusing connections, and how many it refused
/// since it began, so that the log says it once each time.
#[derive(Debug, Default)]
struct AtLimit {
    refused: Option<u64>,
}

impl AtLimit {
    /// A connection was refused.
    fn refused(&mut self, max_connections: u32) {
        match &mut self.refused {
            Some(count) => *count += 1,
            None => {
                tracing::warn!(
                    "HTTP connection limit reached ({max_connections} open): new connections \
                     get 503 until some close (http_max_connections)"
                );
                self.refused = Some(1);
            }
        }
    }

    /// A connection was accepted.
    fn left(&mut self) {
        if let Some(count) = self.refused.take() {
            tracing::info!(
                "HTTP connections are accepted again; {count} refused while at the limit"
            );
        }
    }
}

/// The connections open from each client address.
#[derive(Debug, Default)]
struct Addresses {
    open: Mutex<HashMap<IpAddr, PerAddress>>,
}

/// One address's connections.
#[derive(Debug, Default)]
struct PerAddress {
    /// How many are open.
    open: u32,
    /// How many were refused since it reached its limit, if it has.
    refused: Option<u64>,
}

/// A connection's place among its address's; given back when dropped.
#[derive(Debug)]
struct AddressPlace {
    addresses: Arc<Addresses>,
    address: IpAddr,
}

impl Addresses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PerAddress>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more connection from `address`, unless it has
    /// `max_per_address` open already (the first refusal of a run is
    /// logged).
    fn enter(this: &Arc<Self>, address: IpAddr, max_per_address: u32) -> Option<AddressPlace> {
        // An IPv4 client of an IPv6 socket is the same client.
        let address = address.to_canonical();
        let mut open = this.lock();
        let entry = open.entry(address).or_default();
        if entry.open >= max_per_address {
            match &mut entry.refused {
                Some(count) => *count += 1,
                None => {
                    tracing::warn!(
                        %address,
                        "HTTP connections from {address} reached their limit \
                         ({max_per_address} open, http_max_connections_per_address): its new \
                         connections get 503 until some close"
                    );
                    entry.refused = Some(1);
                }
            }
            return None;
        }
        entry.open += 1;
        Some(AddressPlace {
            addresses: Arc::clone(this),
            address,
        })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self.addresses.lock();
        if let Some(entry) = open.get_mut(&self.address) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                if let Some(count) = entry.refused {
                    tracing::info!(
                        address = %self.address,
                        "HTTP connections from {} are accepted again; {count} refused while \
                         at the limit",
                        self.address
                    );
                }
                open.remove(&self.address);
            }
        }
    }
}

/// Errors of one connection that was never accepted; the next one may be.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until the client closes it, a timeout of its
/// [`ConnectionClock`] ends it, or the server shuts down (once the request
/// being served, if any, is answered). Holds its places among the open
/// connections, and among its address's, until then.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    _places: (OwnedSemaphorePermit, AddressPlace),
    mut closing: watch::Receiver<bool>,
) {
    let clock = ConnectionClock::start(limits.header_timeout, limits.idle_timeout);
    let requests = Arc::clone(&clock);
    let next_body = Arc::new(NextBody::default());
    let framed_bodies = Arc::clone(&next_body);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // hyper calls this as soon as it has read the head, before it reads
        // any of the body: the stream learns how the body is framed first.
        let responding = requests.request_started();
        let signal = Arc::new(BodySignal::default());
        framed_bodies.set(BodyFraming::of(request.body()), Arc::clone(&signal));
        let progress = Arc::new(BodyProgress::default());
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = request.map(|body| {
            Body::new(RequestBody::new(
                body,
                limits.body_timeout,
                signal,
                Arc::clone(&progress),
                peer,
            ))
        });
        let mut app = app.clone().into_service::<Body>();
        async move {
            std::future::poll_fn(|cx| app.poll_ready(cx)).await?;
            let mut response = app.call(request).await?;
            if !progress.has_ended() {
                // hyper will not read the rest: the connection ends here.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| TimedBody::new(body, responding)))
        }
    });
    let limit = u64::try_from(super::MAX_REQUEST_BYTES).unwrap_or(u64::MAX);
    // The clock keeps the time; hyper's own header timeout would also end
    // idle connections at the header timeout.
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(
            TokioIo::new(Watched::new(
                Framed::new(stream, limit, next_body),
                Arc::clone(&clock),
            )),
            service,
        );
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!("HTTP connection ended: {error}");
                }
                return;
            }
            expired = clock.expired() => {
                tracing::debug!("closing an HTTP connection: {expired}");
                return;
            }
            _ = closing.wait_for(|closing| *closing), if !shutting_down => {
                if !clock.is_serving() {
                    // Idle, or still waiting for a request: nothing to finish.
                    return;
                }
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The answer to a connection beyond the limit, whole: a `503` with
/// `{"error": "..."}`, sent without waiting for the request so that a
/// client that sends nothing costs nothing.
fn refusal(max_connections: u32) -> Bytes {
    service_unavailable(&format!(
        "the agent serves at most {max_connections} connections at once; try again later"
    ))
}

/// The answer to a connection beyond its address's limit, as [`refusal`].
fn address_refusal(max_per_address: u32) -> Bytes {
    service_unavailable(&format!(
        "the agent serves at most {max_per_address} connections from one address at once; \
         close one or try again later"
    ))
}

/// A whole `503` answer with `{"error": error}` that closes the connection.
fn service_unavailable(error: &str) -> Bytes {
    let body = serde_json::json!({ "error": error }).to_string();
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// With too many refusals under way: sends `refusal` if the socket takes
/// it at once, and reads what has arrived of the request, so that the
/// connection is closed rather than reset when it is dropped.
fn refuse_at_once(stream: &TcpStream, refusal: &[u8]) {
    let _ = stream.try_write(refusal);
    let mut unread = [0; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut unread), Ok(read) if read > 0) {
            break;
        }
    }
}

/// Sends `refusal` on a connection beyond the limit, then reads and drops
/// what the client sends until it closes (at most [`REFUSAL_LINGER`]): a
/// connection closed with bytes unread is reset, and a reset can destroy
/// the answer before the client reads it.
async fn refuse_connection(mut stream: TcpStream, refusal: Bytes, _refusing: OwnedSemaphorePermit) {
    let answered = async {
        stream.write_all(&refusal).await?;
        stream.shutdown().await?;
        let mut unread = [0; 4096];
        while stream.read(&mut unread).await? > 0 {}
        io::Result::Ok(())
    };
    if let Ok(Err(error)) = tokio::time::timeout(REFUSAL_LINGER, answered).await {
        tracing::debug!("refused HTTP connection ended: {error}");
    }
}
