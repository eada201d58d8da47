//! An in-process transport for tests and examples: no socket, same contract.
//!
//! ```
//! use ws_lifecycle::transport::{memory, Message};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (server_side, mut client) = memory::pair(16);
//! drop(server_side);
//! assert_eq!(client.recv().await, None);
//! # }
//! ```

use tokio::sync::mpsc;

use super::{Message, Text, Transport, TransportError, TransportSink, TransportStream};
use crate::close::CloseFrame;

/// Creates a connected pair: the server side is a [`Transport`] for the hub,
/// the client side is driven by the test. Each direction holds at most
/// `capacity` messages; a full direction makes the writer wait, exactly like
/// a peer that stopped reading.
pub fn pair(capacity: usize) -> (MemoryTransport, MemoryClient) {
    let capacity = capacity.max(1);
    let (to_client, from_server) = mpsc::channel(capacity);
    let (to_server, from_client) = mpsc::channel(capacity);
    (
        MemoryTransport {
            sink: MemorySink {
                tx: Some(to_client),
            },
            stream: MemoryStream { rx: from_client },
        },
        MemoryClient {
            tx: Some(to_server),
            rx: from_server,
        },
    )
}

/// The server side of an in-memory pair.
#[derive(Debug)]
pub struct MemoryTransport {
    sink: MemorySink,
    stream: MemoryStream,
}

impl Transport for MemoryTransport {
    type Sink = MemorySink;
    type Stream = MemoryStream;

    fn split(self) -> (MemorySink, MemoryStream) {
        (self.sink, self.stream)
    }
}

/// The write half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemorySink {
    tx: Option<mpsc::Sender<Message>>,
}

impl TransportSink for MemorySink {
    async fn feed(&mut self, message: Message) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        tx.send(message).await.map_err(|_| TransportError::Closed)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), TransportError> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        tx.send(Message::Close(frame))
            .await
            .map_err(|_| TransportError::Closed)
    }
}

/// The read half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemoryStream {
    rx: mpsc::Receiver<Message>,
}

impl TransportStream for MemoryStream {
    async fn next(&mut self) -> Option<Result<Message, TransportError>> {
        self.rx.recv().await.map(Ok)
    }
}

/// The client side of an in-memory pair.
#[derive(Debug)]
pub struct MemoryClient {
    tx: Option<mpsc::Sender<Message>>,
    rx: mpsc::Receiver<Message>,
}

impl MemoryClient {
    /// Sends `message` to the server.
    ///
    /// # Errors
    ///
    /// [`TransportError::Closed`] once the server side is gone or this side
    /// was closed.
    pub async fn send(&self, message: Message) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        tx.send(message).await.map_err(|_| TransportError::Closed)
    }

    /// Sends a text message.
    ///
    /// # Errors
    ///
    /// As [`MemoryClient::send`].
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), TransportError> {
        self.send(Message::Text(Text::from(text.into()))).await
    }

    /// The next message from the server; `None` once the server side is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is already waiting, without waiting: `None`
    /// when nothing has been written (or the server side is gone). Lets a
    /// test assert that nothing reached the transport yet.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Sends a close frame and stops sending.
    pub async fn close(&mut self, frame: Option<CloseFrame>) {
        if let Some(tx) = self.tx.take() {
            // The server may already be gone; closing is best effort.
            let _ = tx.send(Message::Close(frame)).await;
        }
    }

    /// Drops the sending side without a close frame, like a TCP reset.
    pub fn abort(&mut self) {
        self.tx = None;
    }
}
