//! The warp adapter: a [`Filter`] extracting a [`WarpUpgrade`], checked
//! against the crate's upgrade policy, and [`serve`], which serves the
//! routes with the deadline on the upgrade request.
//!
//! Serve with [`serve`], not `warp::serve`, for two reasons:
//!
//! * `warp::serve` gives hyper no timer, so no header read timeout applies
//!   and a client that sends its upgrade request a byte at a time, or
//!   nothing at all, keeps its socket open indefinitely (see
//!   [`ServeConfig`]);
//! * `warp::serve` logs every failed connection at ERROR (target
//!   `warp::server`): a client that resets or abandons its upgrade, or sends
//!   a malformed request, adds an ERROR line, so anyone can flood the log.
//!   [`serve`] logs those at DEBUG. Staying on `warp::serve`? Filter that
//!   target out (`warp::server=off` in an `EnvFilter`), which also hides
//!   its accept errors.
//!
//! Under [`serve`], `warp::addr::remote()` is `None` (warp keeps its own
//! server's address type private): read the peer's address with
//! [`peer_addr`], which works under both servers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use warp::Filter;
//! use ws_lifecycle::adapters::ServeConfig;
//! use ws_lifecycle::adapters::warp::{WarpUpgrade, serve, upgrade};
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
//! // The deadline on the upgrade request: the hub's `upgrade_timeout`.
//! let config = ServeConfig::from(hub.config());
//! let auth = JwtAuthenticator::builder()
//!     .hs256(std::env::var("JWT_SECRET")?) // 32 bytes or more
//!     .issuer("https://auth.example")
//!     .audience("chat")
//!     .build()?;
//! let auth = Arc::new(auth);
//! let app = Arc::new(App);
//! let ws = warp::path("ws").and(upgrade()).then(move |u: WarpUpgrade| {
//!     let (hub, auth, app) = (hub.clone(), auth.clone(), app.clone());
//!     async move { u.serve(&hub, &*auth, app).await }
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, ws, config, std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use warp::Filter;
use warp::filters::ws::{Message as WarpMessage, WebSocket, Ws};
use warp::http::{HeaderMap, HeaderValue, Method, header};
use warp::reply::{Reply, Response};

use super::http::{self, WithExtension};
use super::{ServeConfig, StackTransport, sealed};
use crate::auth::Authenticator;
use crate::connection::Adapter;
use crate::transport::{Message, Text, TransportError};
use crate::upgrade::{Checked, Refusal};
use crate::{Handler, Hub};

/// Serves `filter` on `listener` over HTTP/1.1 (with upgrades) until
/// `shutdown` resolves, with the deadline on every request head that
/// `warp::serve` lacks: [`ServeConfig::header_read_timeout`]. A client that
/// aborts or botches its request, or misses the deadline, is logged at
/// DEBUG only (`warp::serve` logs it at ERROR). [`peer_addr`] extracts the
/// client's address.
///
/// On `shutdown` it stops accepting, closes idle connections, lets requests
/// in flight finish, and returns once they have. Upgraded connections are
/// the hub's: end them with [`Hub::shutdown`].
///
/// # Example
///
/// ```no_run
/// use warp::Filter;
/// use ws_lifecycle::adapters::{ServeConfig, warp::serve};
///
/// # async fn run() -> std::io::Result<()> {
/// let hello = warp::path::end().map(|| "hello");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let ctrl_c = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// serve(listener, hello, ServeConfig::default(), ctrl_c).await;
/// # Ok(()) }
/// ```
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let service = warp::service(filter);
    let make_service = |peer: SocketAddr| {
        WithExtension::new(TowerToHyperService::new(service.clone()), PeerAddr(peer))
    };
    http::serve(listener, config, make_service, shutdown).await;
}

/// The peer's address as [`serve`] records it on each request.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// Extracts the client's address: warp's own (`warp::addr::remote()`)
/// under `warp::serve`, the one [`serve`] records under [`serve`]; `None`
/// when the server gives neither.
///
/// ```
/// use warp::Filter;
///
/// let who = ws_lifecycle::adapters::warp::peer_addr()
///     .map(|addr: Option<std::net::SocketAddr>| format!("{addr:?}"));
/// # drop(who);
/// ```
pub fn peer_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Copy {
    warp::addr::remote()
        .and(warp::ext::optional::<PeerAddr>())
        .map(|remote: Option<SocketAddr>, recorded: Option<PeerAddr>| {
            remote.or(recorded.map(|PeerAddr(addr)| addr))
        })
}

/// An upgrade request: the checked request and warp's upgrade, or the
/// refusal the policy already decided on.
pub struct WarpUpgrade {
    checked: Result<(Checked, Ws), Refusal>,
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
        .and(peer_addr())
        .and(ws)
        .map(
            |method: Method,
             headers: HeaderMap,
             query: Option<String>,
             peer: Option<SocketAddr>,
             ws: Option<Ws>| {
                let checked = http::check(
                    method.as_str(),
                    &headers,
                    query.as_deref(),
                    peer,
                    Adapter::Warp,
                )
                .and_then(|checked| {
                    // The policy accepted the handshake, so warp's own
                    // (looser) check did too.
                    let ws = ws.ok_or_else(Refusal::upgrade_invalid)?;
                    Ok((checked, ws))
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
        let (checked, ws) = match self.checked {
            Ok(checked) => checked,
            Err(refusal) => return http::refusal_response(&refusal),
        };
        let admitted = match http::admit(hub, &checked, authenticator).await {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        let subprotocol = admitted.subprotocol().map(str::to_owned);
        let max = hub.config().max_message_size;
        let prepared = admitted.prepare(authenticator.clone(), checked.request());
        let hub = hub.clone();
        let reply = ws
            .max_message_size(max)
            .max_frame_size(max)
            .on_upgrade(move |socket| {
                // Accepted before the future is built (see the axum
                // adapter): the socket does not stay in its state.
                let upgraded = prepared.accept(&hub, WarpTransport::new(socket, max));
                async move {
                    let _report = upgraded.serve(&hub, &*handler).await;
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

/// An upgraded warp socket as a [`Transport`](crate::transport::Transport):
/// [`WarpTransport::new(socket, max_message_size)`](StackTransport::new).
///
/// Text costs one UTF-8 check per inbound message: warp hands out a text
/// message's bytes but not tungstenite's checked text. Outbound text is
/// handed to warp as the writer's `String`, without a copy.
pub type WarpTransport = StackTransport<WebSocket>;

impl sealed::Codec for WebSocket {
    type Message = WarpMessage;
    type StackError = warp::Error;

    fn encode(message: Message) -> WarpMessage {
        match message {
            Message::Text(text) => WarpMessage::text(String::from(text)),
            Message::Binary(bytes) => WarpMessage::binary(bytes),
            Message::Ping(bytes) => WarpMessage::ping(bytes),
            Message::Pong(bytes) => WarpMessage::pong(bytes),
            Message::Close(Some(frame)) => {
                WarpMessage::close_with(frame.code.as_u16(), frame.reason.as_str().to_owned())
            }
            Message::Close(None) => WarpMessage::close(),
        }
    }

    fn decode(message: WarpMessage) -> Result<Option<Message>, TransportError> {
        Ok(Some(if message.is_text() {
            // tungstenite checked it already; warp keeps that to itself.
            let text = Text::try_from(message.into_bytes());
            Message::Text(text.map_err(|_| TransportError::InvalidPayload)?)
        } else if message.is_binary() {
            Message::Binary(message.into_bytes())
        } else if message.is_ping() {
            Message::Ping(message.into_bytes())
        } else if message.is_pong() {
            Message::Pong(message.into_bytes())
        } else if message.is_close() {
            Message::Close(
                message
                    .close_frame()
                    .and_then(|(code, reason)| super::peer_close(code, reason)),
            )
        } else {
            // Raw frames are never yielded when reading.
            return Ok(None);
        }))
    }

    fn error(error: warp::Error) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(error)
    }
}
