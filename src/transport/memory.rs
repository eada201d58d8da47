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

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Message, Text, Transport, TransportError, TransportSink, TransportStream};
use crate::close::CloseFrame;

/// Creates a connected pair: the server side is a [`Transport`] for the hub,
/// the client side is driven by the test. Each direction holds at most
/// `capacity` messages; a full direction makes the writer wait, exactly like
/// a peer that stopped reading.
pub fn pair(capacity: usize) -> (MemoryTransport, MemoryClient) {
    let capacity = capacity.max(1);
    let (to_client, from_server) = channel(capacity);
    let (to_server, from_client) = channel(capacity);
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
    tx: Option<Sender>,
}

impl TransportSink for MemorySink {
    async fn feed(&mut self, message: Message) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        tx.send(message).await
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), TransportError> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        tx.send(Message::Close(frame)).await
    }
}

/// The read half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemoryStream {
    rx: Receiver,
}

impl TransportStream for MemoryStream {
    async fn next(&mut self) -> Option<Result<Message, TransportError>> {
        self.rx.recv().await.map(Ok)
    }
}

/// The client side of an in-memory pair.
#[derive(Debug)]
pub struct MemoryClient {
    tx: Option<Sender>,
    rx: Receiver,
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
        tx.send(message).await
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
        self.rx.try_recv()
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

/// One direction of a pair: a bounded queue that keeps its room between
/// messages (so a steady stream allocates nothing), one waiting receiver,
/// and senders that wait for room.
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes senders waiting for room.
    room: Notify,
    capacity: usize,
}

struct QueueState {
    messages: VecDeque<Message>,
    receiver: Option<Waker>,
    senders_gone: bool,
    receiver_gone: bool,
}

fn channel(capacity: usize) -> (Sender, Receiver) {
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState {
            messages: VecDeque::new(),
            receiver: None,
            senders_gone: false,
            receiver_gone: false,
        }),
        room: Notify::new(),
        capacity,
    });
    (Sender(Arc::clone(&queue)), Receiver(queue))
}

struct Sender(Arc<Queue>);

impl Sender {
    /// Queues `message`, waiting while the queue is full.
    async fn send(&self, message: Message) -> Result<(), TransportError> {
        let mut message = Some(message);
        loop {
            let room = self.0.room.notified();
            {
                let mut s = self.0.state.lock();
                if s.receiver_gone {
                    return Err(TransportError::Closed);
                }
                if s.messages.len() < self.0.capacity {
                    if let Some(message) = message.take() {
                        s.messages.push_back(message);
                    }
                    let receiver = s.receiver.take();
                    drop(s);
                    if let Some(receiver) = receiver {
                        receiver.wake();
                    }
                    return Ok(());
                }
            }
            room.await;
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let receiver = {
            let mut s = self.0.state.lock();
            s.senders_gone = true;
            s.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

struct Receiver(Arc<Queue>);

impl Receiver {
    /// The next message; `None` once it is empty and the sender is gone.
    async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| {
            let mut s = self.0.state.lock();
            if let Some(message) = s.messages.pop_front() {
                drop(s);
                self.0.room.notify_one();
                return Poll::Ready(Some(message));
            }
            if s.senders_gone {
                return Poll::Ready(None);
            }
            match &mut s.receiver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    fn try_recv(&mut self) -> Option<Message> {
        let message = self.0.state.lock().messages.pop_front();
        if message.is_some() {
            self.0.room.notify_one();
        }
        message
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.state.lock().receiver_gone = true;
        self.0.room.notify_waiters();
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
