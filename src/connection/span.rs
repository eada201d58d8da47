//! The connection's tracing span, `ws_connection`, and where a connection
//! came from ([`Origin`]): the fields an operator filters on.
//!
//! | field | value | recorded |
//! |---|---|---|
//! | `connection_id` | the minted [`ConnectionId`] | at creation |
//! | `adapter` | `axum`, `warp`, `tungstenite`, or `none` (driven by hand) | at creation |
//! | `peer` | the peer's socket address, when the adapter knew it | at creation |
//! | `user_id` | the bound user | at authentication |
//!
//! Each field is recorded once: a subscriber that appends recorded values
//! (tracing-subscriber's `fmt`) never prints one twice.

use std::net::SocketAddr;

use crate::auth::HandshakeRequest;
use crate::id::ConnectionId;

/// The adapter that served a connection, as the span's `adapter` field
/// spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adapter {
    /// `adapters::axum`.
    #[cfg(feature = "axum")]
    Axum,
    /// `adapters::warp`.
    #[cfg(feature = "warp")]
    Warp,
    /// `adapters::tungstenite`.
    #[cfg(feature = "tungstenite")]
    Tungstenite,
    /// Driven by the application itself: [`Hub::connect`](crate::Hub::connect),
    /// [`Hub::serve`](crate::Hub::serve), [`upgrade::decide`](crate::upgrade::decide)
    /// called by its own glue, the in-memory transport.
    None,
}

impl Adapter {
    fn as_str(self) -> &'static str {
        match self {
            #[cfg(feature = "axum")]
            Adapter::Axum => "axum",
            #[cfg(feature = "warp")]
            Adapter::Warp => "warp",
            #[cfg(feature = "tungstenite")]
            Adapter::Tungstenite => "tungstenite",
            Adapter::None => "none",
        }
    }
}

/// Where a connection came from: known when it is minted, so its span is
/// created whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) adapter: Adapter,
    pub(crate) peer: Option<SocketAddr>,
}

impl Origin {
    /// A connection the application drives by hand, peer unknown.
    pub(crate) const BY_HAND: Origin = Origin {
        adapter: Adapter::None,
        peer: None,
    };

    /// A connection upgraded from `request`, served through `adapter`.
    pub(crate) fn of(adapter: Adapter, request: &HandshakeRequest) -> Origin {
        Origin {
            adapter,
            peer: request.peer_addr(),
        }
    }
}

/// The `ws_connection` span of the connection `id`.
pub(crate) fn new(id: &ConnectionId, origin: Origin) -> tracing::Span {
    let span = tracing::info_span!(
        "ws_connection",
        connection_id = %id,
        adapter = origin.adapter.as_str(),
        peer = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    if let Some(peer) = origin.peer {
        span.record("peer", tracing::field::display(peer));
    }
    span
}
