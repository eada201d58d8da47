//! The axum adapter: an extractor, [`WsUpgrade`], usable in any handler of
//! an existing `Router` with the application's own state, and [`serve`],
//! which serves the router with the deadline on the upgrade request.
//!
//! Serve with [`serve`], not `axum::serve`: `axum::serve` gives hyper no
//! timer, so no header read timeout applies and a client that sends its
//! upgrade request a byte at a time, or nothing at all, keeps its socket
//! open indefinitely (see [`ServeConfig`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, extract::State, response::Response, routing::any};
//! use ws_lifecycle::adapters::{ServeConfig, axum::{self as adapter, WsUpgrade}};
//! use ws_lifecycle::auth::JwtAuthenticator;
//! use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound, close::CloseFrame};
//!
//! struct App;
//! impl Handler for App {
//!     async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct AppState { hub: Hub, auth: JwtAuthenticator, app: Arc<App> }
//!
//! async fn ws(upgrade: WsUpgrade, State(s): State<AppState>) -> Response {
//!     upgrade.serve(&s.hub, &s.auth, s.app.clone()).await
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new();
//! // The deadline on the upgrade request: the hub's `upgrade_timeout`.
//! let config = ServeConfig::from(hub.config());
//! let state = AppState {
//!     hub,
//!     auth: JwtAuthenticator::builder()
//!         .hs256(std::env::var("JWT_SECRET")?) // 32 bytes or more
//!         .issuer("https://auth.example")
//!         .audience("chat")
//!         .build()?,
//!     app: Arc::new(App),
//! };
//! // `any`, so a malformed upgrade (say, a POST) gets the crate's 400, not a 405.
//! let router = Router::new().route("/ws", any(ws)).with_state(state);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! adapter::serve(listener, router, config, std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::ServeConfig;
use super::http::{self, WithExtension};
use crate::auth::{Authenticator, HandshakeRequest};
use crate::close::CloseFrame;
use crate::transport::{Message, Transport, TransportError, TransportSink, TransportStream};
use crate::upgrade::{self, Decision, Refusal};
use crate::{Handler, Hub};

/// Serves `router` on `listener` over HTTP/1.1 (with upgrades) until
/// `shutdown` resolves, with the deadline on every request head that
/// `axum::serve` lacks: [`ServeConfig::header_read_timeout`]. Each request
/// carries axum's `ConnectInfo<SocketAddr>`, so handlers (and the request
/// [`WsUpgrade`] builds) see the peer's address.
///
/// On `shutdown` it stops accepting, closes idle connections, lets requests
/// in flight finish, and returns once they have. Upgraded connections are
/// the hub's: end them with [`Hub::shutdown`]. A client that aborts or
/// botches its request, or misses the deadline, is logged at DEBUG only.
///
/// # Example
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use ws_lifecycle::adapters::{ServeConfig, axum::serve};
///
/// # async fn run() -> std::io::Result<()> {
/// let router = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let ctrl_c = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// serve(listener, router, ServeConfig::default(), ctrl_c).await;
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) {
    let make_service = |peer: SocketAddr| {
        WithExtension::new(TowerToHyperService::new(router.clone()), ConnectInfo(peer))
    };
    http::serve(listener, config, make_service, shutdown).await;
}

/// A WebSocket upgrade request, checked against the crate's upgrade policy
/// (malformed upgrades are answered 400/426 before any handler code runs).
pub struct WsUpgrade {
    upgrade: WebSocketUpgrade,
    request: HandshakeRequest,
}

impl std::fmt::Debug for WsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not axum's `Debug`: it prints the offered subprotocols, tokens
        // included. The request's own `Debug` prints header names only.
        f.debug_struct("WsUpgrade")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let request = handshake_request(parts).map_err(|refusal| refusal_response(&refusal))?;
        upgrade::check_handshake(parts.method.as_str(), &request)
            .map_err(|refusal| refusal_response(&refusal))?;
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WsUpgrade { upgrade, request })
    }
}

impl WsUpgrade {
    /// The framework-free view of the request.
    pub fn request(&self) -> &HandshakeRequest {
        &self.request
    }

    /// Authenticates with `authenticator`, then refuses (400/401/403/431
    /// with a JSON body) or upgrades, echoing the marker subprotocol, and
    /// serves the connection with `handler` on `hub` in a task of its own.
    /// Inbound messages are limited to the hub's
    /// [`max_message_size`](crate::config::HubConfig::max_message_size) on
    /// the socket itself, so larger ones are never buffered.
    ///
    /// The connection keeps a clone of `authenticator` (and the request,
    /// without its credentials) for in-band re-authentication, so every
    /// fresh token goes through the same decision as the first
    /// ([`Authenticator::reauthenticate`]). An authenticator that is not
    /// [`Clone`] can be passed as `&Arc<_>`.
    pub async fn serve<A, H>(self, hub: &Hub, authenticator: &A, handler: Arc<H>) -> Response
    where
        A: Authenticator + Clone + 'static,
        H: Handler + 'static,
    {
        let decision = upgrade::decide(hub, "GET", &self.request, authenticator).await;
        let admitted = match decision {
            Decision::Refuse(refusal) => return refusal_response(&refusal),
            Decision::Upgrade(admitted) => admitted,
        };
        let max = hub.config().max_message_size;
        let mut upgrade = self
            .upgrade
            .max_message_size(max)
            .max_frame_size(max)
            .read_buffer_size(hub.config().read_buffer_size)
            .write_buffer_size(hub.config().write_buffer_size);
        if let Some(protocol) = admitted.subprotocol() {
            upgrade = upgrade.protocols([protocol.to_owned()]);
        }
        let prepared = admitted.prepare(authenticator.clone(), &self.request);
        let hub = hub.clone();
        upgrade.on_upgrade(move |socket| {
            // Accepted before the task's future is built: the socket moves
            // into the connection's two halves instead of staying in the
            // future's state for the connection's whole life.
            let upgraded = prepared.accept(&hub, AxumTransport::new(socket, max));
            async move {
                let _report = upgraded.serve(&hub, &*handler).await;
            }
        })
    }
}

fn handshake_request(parts: &Parts) -> Result<HandshakeRequest, Refusal> {
    let mut builder = HandshakeRequest::builder();
    for (name, value) in &parts.headers {
        builder = builder.header(name.as_str(), super::header_value(value.as_bytes())?);
    }
    if let Some(query) = parts.uri.query() {
        builder = builder.query(query);
    }
    if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        builder = builder.peer_addr(*addr);
    }
    builder.build().map_err(|e| Refusal::from(&e))
}

fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, refusal.body()).into_response();
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

/// An upgraded axum socket as a [`Transport`].
#[derive(Debug)]
pub struct AxumTransport {
    socket: WebSocket,
    max_message_size: usize,
}

impl AxumTransport {
    /// Wraps `socket`, whose inbound limit was set to `max_message_size`
    /// (reported in [`TransportError::MessageTooBig`]).
    pub fn new(socket: WebSocket, max_message_size: usize) -> Self {
        AxumTransport {
            socket,
            max_message_size,
        }
    }
}

impl Transport for AxumTransport {
    type Sink = AxumSink;
    type Stream = AxumStream;

    fn split(self) -> (AxumSink, AxumStream) {
        let (sink, stream) = self.socket.split();
        (AxumSink(sink), AxumStream(stream, self.max_message_size))
    }
}

/// The write half of an [`AxumTransport`].
#[derive(Debug)]
pub struct AxumSink(SplitSink<WebSocket, ws::Message>);

/// The read half of an [`AxumTransport`].
#[derive(Debug)]
pub struct AxumStream(SplitStream<WebSocket>, usize);

fn other(error: axum::Error) -> TransportError {
    TransportError::Other(error.into_inner())
}

impl TransportSink for AxumSink {
    async fn feed(&mut self, message: Message) -> Result<(), TransportError> {
        let message = match message {
            Message::Text(text) => ws::Message::Text(text.into()),
            Message::Binary(bytes) => ws::Message::Binary(bytes),
            Message::Ping(bytes) => ws::Message::Ping(bytes),
            Message::Pong(bytes) => ws::Message::Pong(bytes),
            Message::Close(frame) => ws::Message::Close(frame.map(close_frame)),
        };
        self.0.feed(message).await.map_err(other)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().await.map_err(other)
    }

    async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), TransportError> {
        // The close frame, then the close handshake; a peer already gone is
        // not an error worth more than the caller's best effort.
        self.0
            .send(ws::Message::Close(frame.map(close_frame)))
            .await
            .map_err(other)?;
        self.0.close().await.map_err(other)
    }
}

fn close_frame(frame: CloseFrame) -> ws::CloseFrame {
    ws::CloseFrame {
        code: frame.code.as_u16(),
        reason: frame.reason.as_str().into(),
    }
}

impl TransportStream for AxumStream {
    async fn next(&mut self) -> Option<Result<Message, TransportError>> {
        let message = match self.0.next().await? {
            Ok(message) => message,
            Err(error) => return Some(Err(classify(error, self.1))),
        };
        Some(Ok(match message {
            ws::Message::Text(text) => Message::Text(text.as_str().to_owned()),
            ws::Message::Binary(bytes) => Message::Binary(bytes),
            ws::Message::Ping(bytes) => Message::Ping(bytes),
            ws::Message::Pong(bytes) => Message::Pong(bytes),
            ws::Message::Close(frame) => {
                Message::Close(frame.and_then(|f| super::peer_close(f.code, f.reason.as_str())))
            }
        }))
    }
}

/// Tells an oversized message (the socket's limit) from other failures.
fn classify(error: axum::Error, limit: usize) -> TransportError {
    let inner = error.into_inner();
    inner
        .downcast_ref::<tungstenite::Error>()
        .and_then(|e| super::transport_error(e, limit))
        .unwrap_or(TransportError::Other(inner))
}
