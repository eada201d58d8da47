//! The transport seam: what a WebSocket stack must offer the crate.
//!
//! A transport splits into a [`TransportSink`] (owned by the connection's one
//! writer task) and a [`TransportStream`] (read by the hub's reader loop). The
//! crate never implements the WebSocket protocol itself: adapters for axum,
//! warp and tokio-tungstenite wrap their socket in these two traits, and
//! [`memory`] provides an in-process pair for tests and examples.
//!
//! Transports answer pings themselves if their stack does (all three
//! supported stacks do). Inbound pings and pongs are still passed up: the
//! hub's heartbeat counts anything from the peer as a sign of life, and
//! sends its own pings through the sink
//! ([`HubConfig::ping_interval`](crate::config::HubConfig::ping_interval)).

use std::future::Future;

use bytes::Bytes;

use crate::close::CloseFrame;

pub mod memory;
mod text;

pub use text::{InvalidUtf8, Text};

/// One WebSocket message, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Text),
    /// A binary message.
    Binary(Bytes),
    /// A ping.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its code and reason if it carried a valid one.
    Close(Option<CloseFrame>),
}

impl Message {
    /// The payload length in bytes (0 for close frames).
    pub fn len(&self) -> usize {
        match self {
            Message::Text(s) => s.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(_) => 0,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The transport failed; the connection is over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer is gone: the socket was closed or reset.
    #[error("transport closed")]
    Closed,
    /// The peer broke the WebSocket protocol (invalid frame, bad close
    /// code).
    #[error("WebSocket protocol error: {0}")]
    Protocol(String),
    /// The peer sent data inconsistent with its message type: a text message
    /// that is not UTF-8 (RFC 6455 section 8.1). The hub closes with 1007
    /// ([`CloseCause::InvalidPayload`](crate::close::CloseCause::InvalidPayload)).
    /// The payload is the peer's and is not kept.
    #[error("invalid payload: a text message is not UTF-8")]
    InvalidPayload,
    /// An inbound message exceeded the configured size limit.
    #[error("inbound message larger than the limit of {limit} bytes")]
    MessageTooBig {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// An I/O or stack error.
    #[error("transport error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// A WebSocket connection that splits into a sink and a stream.
pub trait Transport: Send + 'static {
    /// The write half.
    type Sink: TransportSink;
    /// The read half.
    type Stream: TransportStream;

    /// Splits the transport. The crate calls this once, when the connection
    /// is accepted.
    fn split(self) -> (Self::Sink, Self::Stream);
}

/// The write half of a transport. Only one task ever owns it.
pub trait TransportSink: Send + 'static {
    /// Queues `message` for sending; it may stay buffered until
    /// [`flush`](TransportSink::flush), so that a burst of events costs one
    /// write.
    fn feed(&mut self, message: Message)
    -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends everything fed so far.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a close frame (`None`: close without one) and closes the
    /// write side.
    fn close(
        &mut self,
        frame: Option<CloseFrame>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The read half of a transport.
pub trait TransportStream: Send + 'static {
    /// The next message; `None` once the transport has ended.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: the hub polls it inside `select!` and may drop
    /// the future when another branch wins. (A `futures::Stream`'s
    /// `StreamExt::next` is.)
    fn next(&mut self) -> impl Future<Output = Option<Result<Message, TransportError>>> + Send;
}
