//! What axum and warp share: the request as a checked [`HandshakeRequest`],
//! the refusal as a response, the decision, and the HTTP/1.1 server behind
//! [`axum::serve`](super::axum::serve) and
//! [`warp::serve`](super::warp::serve): hyper's connection builder with a
//! timer, so that its header read timeout (the deadline on the upgrade
//! request) applies.
//!
//! Neither `axum::serve` nor `warp::serve` gives hyper a timer, and without
//! one hyper enforces no header read timeout at all: a client that sends its
//! request one byte at a time, or nothing, holds a socket and a task for as
//! long as it likes.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::Service;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Hub;
use crate::auth::{Authenticator, HandshakeRequest};
use crate::config::HubConfig;
use crate::connection::Adapter;
use crate::upgrade::{Admitted, Checked, Decision, Refusal};

/// The request's headers, query and peer as a [`HandshakeRequest`],
/// received by `adapter`, checked against the upgrade policy (once: [`admit`] does not check
/// again).
pub(super) fn check(
    method: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: Option<SocketAddr>,
    adapter: Adapter,
) -> Result<Checked, Refusal> {
    let mut builder = HandshakeRequest::builder();
    for (name, value) in headers {
        builder = builder.header(name.as_str(), super::header_value(value.as_bytes())?);
    }
    if let Some(query) = query {
        builder = builder.query(query);
    }
    if let Some(peer) = peer {
        builder = builder.peer_addr(peer);
    }
    let request = builder.build().map_err(|e| Refusal::from(&e))?;
    Checked::new(method, request, adapter)
}

/// Authenticates a checked request: admitted, or the refusal's response.
pub(super) async fn admit<A: Authenticator, B: From<String>>(
    hub: &Hub,
    checked: &Checked,
    authenticator: &A,
) -> Result<Admitted, Response<B>> {
    match checked.decide(hub, authenticator).await {
        Decision::Upgrade(admitted) => Ok(admitted),
        Decision::Refuse(refusal) => Err(refusal_response(&refusal)),
    }
}

/// A refusal as its HTTP response: the status, a JSON body, and the
/// refusal's headers.
pub(super) fn refusal_response<B: From<String>>(refusal: &Refusal) -> Response<B> {
    let mut response = Response::new(B::from(refusal.body()));
    *response.status_mut() =
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in &refusal.headers {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// How [`axum::serve`](super::axum::serve) and
/// [`warp::serve`](super::warp::serve) run their HTTP/1.1 connections.
///
/// [`ServeConfig::from(hub.config())`](ServeConfig::from) takes the deadline
/// from the hub's
/// [`upgrade_timeout`](crate::config::HubConfig::upgrade_timeout), the one
/// the tokio-tungstenite adapter enforces itself, so one setting bounds the
/// upgrade request on every adapter.
///
/// ```
/// use std::time::Duration;
/// use ws_lifecycle::adapters::ServeConfig;
///
/// let mut config = ServeConfig::default();
/// assert_eq!(config.header_read_timeout, Duration::from_secs(10));
/// config.header_read_timeout = Duration::from_secs(5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The deadline on each request head, from the moment the connection is
    /// accepted (or its previous response was sent): a client that has not
    /// sent a whole head by then, whether it trickles bytes or sends
    /// nothing, is disconnected. This is the slowloris defence for the
    /// upgrade request; it also closes a keep-alive connection left idle
    /// that long. Default: 10 s, `HubConfig::upgrade_timeout`'s default.
    pub header_read_timeout: Duration,
    /// Sets `TCP_NODELAY` on accepted sockets: the hub batches frames
    /// itself, so delaying small writes only adds latency (40 ms stalls
    /// against delayed ACKs). Default: `true`.
    pub tcp_nodelay: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig::from(&HubConfig::default())
    }
}

impl From<&HubConfig> for ServeConfig {
    /// The deadline is the hub's `upgrade_timeout`; `TCP_NODELAY` is on.
    fn from(config: &HubConfig) -> Self {
        ServeConfig {
            header_read_timeout: config.upgrade_timeout,
            tcp_nodelay: true,
        }
    }
}

/// Accepts connections from `listener` and serves each over HTTP/1.1 (with
/// upgrades) with the service `make_service` returns for its peer, until
/// `shutdown` resolves; then stops accepting, closes idle connections, lets
/// requests in flight finish, and returns once every connection is done.
/// Upgraded connections are no longer the server's: they end with the hub.
pub(super) async fn serve<M, S, B>(
    listener: TcpListener,
    config: ServeConfig,
    mut make_service: M,
    shutdown: impl Future<Output = ()>,
) where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Every connection task holds a receiver: `send` asks them to finish,
    // `closed` resolves once they all have.
    let (stop, stopping) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        if config.tcp_nodelay {
            // Best effort: a socket without it is only slower.
            let _ = stream.set_nodelay(true);
        }
        let service = make_service(peer);
        let mut stopping = stopping.clone();
        let deadline = config.header_read_timeout;
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(deadline);
            let connection = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // A client that gave up, reset, sent a malformed request or
            // missed the deadline: its doing, and anyone can cause as many
            // as they like, so never a warning or an error in the log.
            if let Err(error) = served {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stopping);
    // No receiver left means no connection left to tell.
    let _ = stop.send(());
    stop.closed().await;
}

/// An accept that failed: a connection that died in the backlog is
/// skipped; anything else (out of file descriptors, say) is the server's
/// problem, logged, and retried after a second so the loop does not spin.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A service that adds `extension` to every request (the peer's address,
/// in the framework's own type) before `inner` sees it.
#[derive(Debug, Clone)]
pub(super) struct WithExtension<S, T> {
    inner: S,
    extension: T,
}

impl<S, T> WithExtension<S, T> {
    pub(super) fn new(inner: S, extension: T) -> Self {
        WithExtension { inner, extension }
    }
}

impl<S, T> Service<Request<Incoming>> for WithExtension<S, T>
where
    S: Service<Request<Incoming>>,
    T: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: Request<Incoming>) -> S::Future {
        request.extensions_mut().insert(self.extension.clone());
        self.inner.call(request)
    }
}
