//! The warp adapter: a [`Filter`] extracting a [`WarpUpgrade`], checked
//! against the crate's upgrade policy.
//!
//! ```no_run
//! use std::sync::Arc;
//! use warp::Filter;
//! use ws_lifecycle::adapters::warp::upgrade;
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
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new();
//! let auth = JwtAuthenticator::builder()
//!     .hs256(std::env::var("JWT_SECRET")?) // 32 bytes or more
//!     .issuer("https://auth.example")
//!     .audience("chat")
//!     .build()?;
//! let auth = Arc::new(auth);
//! let app = Arc::new(App);
//! let ws = warp::path("ws").and(upgrade()).then(move |u: ws_lifecycle::adapters::warp::WarpUpgrade| {
//!     let (hub, auth, app) = (hub.clone(), auth.clone(), app.clone());
//!     async move { u.serve(&hub, &*auth, app).await }
//! });
//! warp::serve(ws).run(([127, 0, 0, 1], 3000)).await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use warp::Filter;
use warp::filters::ws::{Message as WarpMessage, WebSocket, Ws};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::auth::{AuthError, Authenticator, HandshakeRequest};
use crate::close::CloseFrame;
use crate::reauth::{Admission, Reauthenticate};
use crate::transport::{Message, Transport, TransportError, TransportSink, TransportStream};
use crate::upgrade::{self, Decision, Refusal};
use crate::{Handler, Hub};

/// An upgrade request: the checked [`HandshakeRequest`] and warp's upgrade,
/// or the refusal the policy already decided on.
pub struct WarpUpgrade {
    checked: Result<(HandshakeRequest, Ws), Refusal>,
}

impl std::fmt::Debug for WarpUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarpUpgrade").finish_non_exhaustive()
    }
}

/// The filter: matches any request (so malformed upgrades get the crate's
/// 400/426, not a warp rejection) and extracts a [`WarpUpgrade`].
pub fn upgrade() -> impl Filter<Extract = (WarpUpgrade,), Error = Infallible> + Clone {
    let ws = warp::ws().map(Some).or(warp::any().map(|| None)).unify();
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::method()
        .and(warp::header::headers_cloned())
        .and(query)
        .and(warp::addr::remote())
        .and(ws)
        .map(
            |method: Method,
             headers: HeaderMap,
             query: Option<String>,
             peer: Option<SocketAddr>,
             ws: Option<Ws>| {
                let checked = handshake_request(&headers, query, peer)
                    .map_err(|e| Refusal::from(&e))
                    .and_then(|request| {
                        upgrade::check_handshake(method.as_str(), &request)?;
                        // The policy accepted the handshake, so warp's own
                        // (looser) check did too.
                        let ws = ws.ok_or_else(Refusal::upgrade_invalid)?;
                        Ok((request, ws))
                    });
                WarpUpgrade { checked }
            },
        )
}

impl WarpUpgrade {
    /// Authenticates with `authenticator`, then refuses (400/401/403/431
    /// with a JSON body) or upgrades, echoing the marker subprotocol, and
    /// serves the connection with `handler` on `hub` in a task of its own.
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
        let (request, ws) = match self.checked {
            Ok(checked) => checked,
            Err(refusal) => return refusal_response(&refusal),
        };
        let (subprotocol, auth) = match upgrade::decide(hub, "GET", &request, authenticator).await {
            Decision::Refuse(refusal) => return refusal_response(&refusal),
            Decision::Upgrade { subprotocol, auth } => (subprotocol, auth),
        };
        let max = hub.config().max_message_size;
        let reauth = Admission::keep(authenticator.clone(), &request, &auth).map(Box::new);
        let hub = hub.clone();
        let reply = ws
            .max_message_size(max)
            .max_frame_size(max)
            .on_upgrade(move |socket| {
                // Accepted before the future is built (see the axum
                // adapter): the socket does not stay in its state.
                let conn = hub.connect().accept(WarpTransport::new(socket, max));
                async move {
                    let reauth = reauth.as_deref().map(|a| a as &dyn Reauthenticate);
                    let _report = hub.serve_accepted(conn, auth, reauth, &*handler).await;
                }
            });
        let mut response = reply.into_response();
        if let Some(value) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        response
    }
}

fn handshake_request(
    headers: &HeaderMap,
    query: Option<String>,
    peer: Option<SocketAddr>,
) -> Result<HandshakeRequest, AuthError> {
    let mut builder = HandshakeRequest::builder();
    for (name, value) in headers {
        let value = value
            .to_str()
            .map_err(|_| AuthError::ProtocolInvalid("a header value is not visible ASCII"))?;
        builder = builder.header(name.as_str(), value);
    }
    if let Some(query) = query {
        builder = builder.query(query);
    }
    if let Some(peer) = peer {
        builder = builder.peer_addr(peer);
    }
    builder.build()
}

fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = warp::reply::with_status(refusal.body(), status).into_response();
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

/// An upgraded warp socket as a [`Transport`].
#[derive(Debug)]
pub struct WarpTransport {
    socket: WebSocket,
    max_message_size: usize,
}

impl WarpTransport {
    /// Wraps `socket`, whose inbound limit was set to `max_message_size`.
    pub fn new(socket: WebSocket, max_message_size: usize) -> Self {
        WarpTransport {
            socket,
            max_message_size,
        }
    }
}

impl Transport for WarpTransport {
    type Sink = WarpSink;
    type Stream = WarpStream;

    fn split(self) -> (WarpSink, WarpStream) {
        let (sink, stream) = self.socket.split();
        (WarpSink(sink), WarpStream(stream, self.max_message_size))
    }
}

/// The write half of a [`WarpTransport`].
#[derive(Debug)]
pub struct WarpSink(SplitSink<WebSocket, WarpMessage>);

/// The read half of a [`WarpTransport`].
#[derive(Debug)]
pub struct WarpStream(SplitStream<WebSocket>, usize);

fn classify(error: warp::Error, limit: usize) -> TransportError {
    let tungstenite = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>());
    match tungstenite {
        Some(tungstenite::Error::Capacity(_)) => TransportError::MessageTooBig { limit },
        Some(tungstenite::Error::Protocol(e)) => TransportError::Protocol(e.to_string()),
        Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            TransportError::Closed
        }
        _ => TransportError::Other(Box::new(error)),
    }
}

fn close_message(frame: Option<CloseFrame>) -> WarpMessage {
    match frame {
        Some(frame) => {
            WarpMessage::close_with(frame.code.as_u16(), frame.reason.as_str().to_owned())
        }
        None => WarpMessage::close(),
    }
}

impl TransportSink for WarpSink {
    async fn feed(&mut self, message: Message) -> Result<(), TransportError> {
        let message = match message {
            Message::Text(text) => WarpMessage::text(text),
            Message::Binary(bytes) => WarpMessage::binary(bytes),
            Message::Ping(bytes) => WarpMessage::ping(bytes),
            Message::Pong(bytes) => WarpMessage::pong(bytes),
            Message::Close(frame) => close_message(frame),
        };
        self.0.feed(message).await.map_err(|e| classify(e, 0))
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().await.map_err(|e| classify(e, 0))
    }

    async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), TransportError> {
        self.0
            .send(close_message(frame))
            .await
            .map_err(|e| classify(e, 0))?;
        self.0.close().await.map_err(|e| classify(e, 0))
    }
}

impl TransportStream for WarpStream {
    async fn next(&mut self) -> Option<Result<Message, TransportError>> {
        let message = match self.0.next().await? {
            Ok(message) => message,
            Err(error) => return Some(Err(classify(error, self.1))),
        };
        Some(Ok(if message.is_text() {
            Message::Text(message.to_str().unwrap_or_default().to_owned())
        } else if message.is_binary() {
            Message::Binary(message.into_bytes())
        } else if message.is_ping() {
            Message::Ping(message.into_bytes())
        } else if message.is_pong() {
            Message::Pong(message.into_bytes())
        } else {
            Message::Close(
                message
                    .close_frame()
                    .and_then(|(code, reason)| super::peer_close(code, reason)),
            )
        }))
    }
}
