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
use axum::response::{IntoResponse, Response};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::http::{self, WithExtension};
use super::{ServeConfig, StackTransport, sealed};
use crate::auth::{Authenticator, HandshakeRequest};
use crate::connection::Adapter;
use crate::transport::{Message, Text, TransportError};
use crate::upgrade::Checked;
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
    checked: Checked,
}

impl std::fmt::Debug for WsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not axum's `Debug`: it prints the offered subprotocols, tokens
        // included. The request's own `Debug` prints header names only.
        f.debug_struct("WsUpgrade")
            .field("request", self.request())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let checked = http::check(
            parts.method.as_str(),
            &parts.headers,
            parts.uri.query(),
            peer,
            Adapter::Axum,
        )
        .map_err(|refusal| http::refusal_response(&refusal))?;
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WsUpgrade { upgrade, checked })
    }
}

impl WsUpgrade {
    /// The framework-free view of the request.
    pub fn request(&self) -> &HandshakeRequest {
        self.checked.request()
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
        let admitted = match http::admit(hub, &self.checked, authenticator).await {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        let config = hub.config();
        let max = config.max_message_size;
        let mut upgrade = self
            .upgrade
            .max_message_size(max)
            .max_frame_size(max)
            .read_buffer_size(config.read_buffer_size)
            .write_buffer_size(config.write_buffer_size);
        if let Some(protocol) = admitted.subprotocol() {
            upgrade = upgrade.protocols([protocol.to_owned()]);
        }
        let prepared = admitted.prepare(authenticator.clone(), self.checked.request());
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

/// An upgraded axum socket as a [`Transport`](crate::transport::Transport):
/// [`AxumTransport::new(socket, max_message_size)`](StackTransport::new).
pub type AxumTransport = StackTransport<WebSocket>;

impl sealed::Codec for WebSocket {
    type Message = ws::Message;
    type StackError = axum::Error;

    fn encode(message: Message) -> ws::Message {
        match message {
            Message::Text(text) => ws::Message::Text(text.into_axum()),
            Message::Binary(bytes) => ws::Message::Binary(bytes),
            Message::Ping(bytes) => ws::Message::Ping(bytes),
            Message::Pong(bytes) => ws::Message::Pong(bytes),
            Message::Close(frame) => ws::Message::Close(frame.map(|frame| ws::CloseFrame {
                code: frame.code.as_u16(),
                reason: frame.reason.as_str().into(),
            })),
        }
    }

    fn decode(message: ws::Message) -> Result<Option<Message>, TransportError> {
        Ok(Some(match message {
            ws::Message::Text(text) => Message::Text(Text::from_axum(text)),
            ws::Message::Binary(bytes) => Message::Binary(bytes),
            ws::Message::Ping(bytes) => Message::Ping(bytes),
            ws::Message::Pong(bytes) => Message::Pong(bytes),
            ws::Message::Close(frame) => {
                Message::Close(frame.and_then(|f| super::peer_close(f.code, f.reason.as_str())))
            }
        }))
    }

    fn error(error: axum::Error) -> Box<dyn std::error::Error + Send + Sync> {
        error.into_inner()
    }
}
