//! # ws-lifecycle
//!
//! Everything between "a WebSocket upgrade was requested" and "that
//! connection is gone", for Rust servers: one identity per connection, a
//! state machine that refuses to write before the application is ready, a
//! bounded per-connection event buffer with sequence numbers, and a per-user
//! routing table that never delivers one user's events to another.
//!
//! The crate does not speak the WebSocket protocol: your stack (axum, warp,
//! tokio-tungstenite, …) does, and plugs in through the small
//! [`Transport`](transport::Transport) trait.
//!
//! ## The guarantees
//!
//! 1. **One identity.** A connection's [`ConnectionId`](id::ConnectionId) is
//!    minted first and never replaced; every span, routing entry and report
//!    carries it. All ids come from one [`IdGenerator`](id::IdGenerator), and
//!    a [`RunId`](id::RunId) always knows its thread.
//! 2. **Readiness gate.** Nothing reaches the transport before the
//!    connection is `Ready`; earlier events are buffered and flushed before
//!    any later event: the connection's own in emission order, then its
//!    user's stream in offset order.
//! 3. **Ordered, accounted delivery.** Every event gets a per-connection
//!    sequence number from 1; an event that is not delivered is refused to
//!    its caller or counted in [`MetricsSnapshot`](metrics::MetricsSnapshot),
//!    never lost silently.
//! 4. **Isolation.** Events for a user reach only that user's connections:
//!    checked at lookup and again on each connection's write path.
//! 5. **Table hygiene.** A connection is routable exactly while it is
//!    authenticated and not closing; every exit path removes it.
//! 6. **Resumed delivery.** Every event addressed to a user has an offset
//!    in that user's stream (`off`). A client that comes back with
//!    `since=<epoch>:<offset>` inside the retained history receives every
//!    event of its user after that position exactly once, in offset order,
//!    then live events; outside it, it is told (`recovered: false`) and
//!    receives no partial replay. See [`stream`].
//!
//! ## Example
//!
//! Two users, three connections, the five agent events, over the in-memory
//! transport:
//!
//! ```
//! use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};
//! use ws_lifecycle::close::CloseFrame;
//! use ws_lifecycle::event::{AgentEventKind, Event};
//! use ws_lifecycle::id::UserId;
//! use ws_lifecycle::transport::{memory, Message};
//!
//! /// The application: here it ignores inbound messages.
//! struct App;
//! impl Handler for App {
//!     async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new();
//! let (alice, bob) = (UserId::new("alice")?, UserId::new("bob")?);
//! let mut clients = Vec::new();
//! for user in [&alice, &alice, &bob] {
//!     // An adapter does this after the upgrade; here the transport is in memory.
//!     let (transport, client) = memory::pair(64);
//!     let conn = hub.connect().accept(transport).authenticate(user.clone().into()).await?;
//!     let hub = hub.clone();
//!     tokio::spawn(async move { hub.run(conn, &App).await });
//!     clients.push(client);
//! }
//!
//! // One run, five events, to both of alice's connections and not to bob's.
//! let ctx = hub.ids().mint_context(&alice);
//! for kind in AgentEventKind::ALL {
//!     let event = Event::agent(kind, &ctx.run, serde_json::json!({}));
//!     let delivery = hub.send_to_user(&alice, &event)?;
//!     assert_eq!(delivery.accepted(), 2);
//! }
//! for client in &mut clients[..2] {
//!     for (seq, kind) in (1..).zip(AgentEventKind::ALL) {
//!         let Some(Message::Text(frame)) = client.recv().await else { panic!("closed") };
//!         let frame: serde_json::Value = serde_json::from_str(&frame)?;
//!         assert_eq!(frame["seq"], seq);
//!         assert_eq!(frame["type"], kind.name());
//!         assert_eq!(frame["run_id"], ctx.run.as_str());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `jwt` | yes | [`JwtAuthenticator`](auth::JwtAuthenticator) on jsonwebtoken's pure-Rust backend |
//! | `axum` | no | `adapters::axum`: the `WsUpgrade` extractor |
//! | `warp` | no | `adapters::warp`: the `upgrade()` filter |
//! | `tungstenite` | no | `adapters::tungstenite::serve` for any tokio stream |
//! | `redis` | no | `backplane::redis::RedisBackplane`: routing and presence across nodes |
//! | `redis-tls` | no | `rediss://` URLs and `backplane::redis::TlsOptions` (rustls on `ring`) |
//! | `metrics` | no | counters, gauges and histograms through the `metrics` facade (`metrics::names`, `docs/observability.md`) |
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "axum", feature = "tungstenite", feature = "warp"))]
pub mod adapters;
mod app;
pub mod auth;
pub mod backplane;
pub mod close;
pub mod config;
pub mod connection;
pub mod event;
mod extensions;
mod hub;
pub mod id;
pub mod limits;
#[cfg(all(test, loom))]
mod loom_models;
pub mod metrics;
mod router;
pub mod state;
pub mod stream;
mod sync;
pub mod transport;
pub mod upgrade;

pub use app::{Handler, Inbound, InboundError};
pub use connection::{CloseReport, ConnectionHandle, SendError};
pub use extensions::Extensions;
pub use hub::{Delivery, FanOut, Hub, HubBuilder, ShutdownKind, ShutdownReport};
