//! The one [`Transport`] over every supported stack's socket: each stack
//! says only how one message maps each way and how its error reads
//! ([`Stack`]); splitting, feeding, closing and the error's close are
//! shared.

use std::error::Error as StdError;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::close::CloseFrame;
use crate::transport::{Message, Transport, TransportError, TransportSink, TransportStream};

/// A WebSocket socket of a supported stack: axum's and warp's `WebSocket`
/// (with the `axum` or `warp` feature), tokio-tungstenite's
/// `WebSocketStream` over any `AsyncRead + AsyncWrite` stream (with the
/// `tungstenite` feature), so a socket upgraded by the application itself
/// can be served too ([`StackTransport::new`], then
/// [`Admitted::serve`](crate::upgrade::Admitted::serve)). Sealed: the crate
/// implements it for those three only.
pub trait Stack: sealed::Codec {}

impl<S: sealed::Codec> Stack for S {}

pub(super) mod sealed {
    use super::{Message, Sink, StdError, Stream, TransportError};

    /// How one stack's messages and errors map to the transport's.
    pub trait Codec:
        Sink<Self::Message, Error = Self::StackError>
        + Stream<Item = Result<Self::Message, Self::StackError>>
        + Send
        + Unpin
        + 'static
    {
        /// The stack's message.
        type Message: Send;
        /// The stack's error.
        type StackError;

        /// One outbound message, close frames included.
        fn encode(message: Message) -> Self::Message;

        /// One inbound message; `Ok(None)` for one the transport skips.
        fn decode(message: Self::Message) -> Result<Option<Message>, TransportError>;

        /// The error, boxed for [`classify`](super::classify).
        fn error(error: Self::StackError) -> Box<dyn StdError + Send + Sync>;
    }
}

/// A stack's upgraded socket as a [`Transport`], with the inbound size
/// limit its socket was configured with (reported in
/// [`TransportError::MessageTooBig`]).
pub struct StackTransport<S> {
    socket: S,
    max_message_size: usize,
}

impl<S: Stack> StackTransport<S> {
    /// Wraps `socket`, whose inbound limit was set to `max_message_size`.
    pub fn new(socket: S, max_message_size: usize) -> Self {
        StackTransport {
            socket,
            max_message_size,
        }
    }
}

impl<S> std::fmt::Debug for StackTransport<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackTransport")
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

impl<S: Stack> Transport for StackTransport<S> {
    type Sink = StackSink<S>;
    type Stream = StackStream<S>;

    fn split(self) -> (StackSink<S>, StackStream<S>) {
        let (sink, stream) = self.socket.split();
        let limit = self.max_message_size;
        (StackSink { sink, limit }, StackStream { stream, limit })
    }
}

/// The write half of a [`StackTransport`].
pub struct StackSink<S: Stack> {
    sink: SplitSink<S, S::Message>,
    limit: usize,
}

/// The read half of a [`StackTransport`].
pub struct StackStream<S> {
    stream: SplitStream<S>,
    limit: usize,
}

impl<S: Stack> std::fmt::Debug for StackSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackSink").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for StackStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackStream").finish_non_exhaustive()
    }
}

impl<S: Stack> StackSink<S> {
    fn fail(&self, error: S::StackError) -> TransportError {
        classify(S::error(error), self.limit)
    }
}

impl<S: Stack> TransportSink for StackSink<S> {
    async fn feed(&mut self, message: Message) -> Result<(), TransportError> {
        match self.sink.feed(S::encode(message)).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail(error)),
        }
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        match self.sink.flush().await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail(error)),
        }
    }

    async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), TransportError> {
        // The close frame, then the close handshake.
        if let Err(error) = self.sink.send(S::encode(Message::Close(frame))).await {
            return Err(self.fail(error));
        }
        match self.sink.close().await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail(error)),
        }
    }
}

impl<S: Stack> TransportStream for StackStream<S> {
    async fn next(&mut self) -> Option<Result<Message, TransportError>> {
        loop {
            let decoded = match self.stream.next().await? {
                Ok(message) => S::decode(message),
                Err(error) => Err(classify(S::error(error), self.limit)),
            };
            match decoded {
                Ok(None) => continue,
                Ok(Some(message)) => return Some(Ok(message)),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// The one mapping from a stack's WebSocket error to the transport's, so
/// every adapter gives the same close for the same fault. The stacks wrap
/// tungstenite's error (warp one level down); an error of no known kind
/// stays `Other`. A peer that went away without a close frame is `Closed`
/// (1006, abnormal closure), not a protocol error of ours.
fn classify(error: Box<dyn StdError + Send + Sync>, limit: usize) -> TransportError {
    use tungstenite::Error;
    use tungstenite::error::ProtocolError;
    let known = error
        .downcast_ref::<Error>()
        .or_else(|| error.source().and_then(|source| source.downcast_ref()));
    match known {
        Some(Error::Capacity(_)) => TransportError::MessageTooBig { limit },
        Some(Error::Utf8(_)) => TransportError::InvalidPayload,
        Some(
            Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_),
        ) => TransportError::Closed,
        Some(Error::Protocol(e)) => TransportError::Protocol(e.to_string()),
        _ => TransportError::Other(error),
    }
}
