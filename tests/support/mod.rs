//! Helpers shared by the integration tests: a scriptable handler and
//! client-side readers for the in-memory transport.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

#[cfg(feature = "jwt")]
pub mod tokens;

use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::connection::{Authenticated, Connection};
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::metrics::MetricsSnapshot;
use ws_lifecycle::transport::Message;
use ws_lifecycle::transport::memory::{self, MemoryClient, MemoryTransport};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

/// What the scripted handler does.
#[derive(Debug, Clone, Default)]
pub enum OnReady {
    #[default]
    Ok,
    /// Emits these custom events (names) on its own connection, then returns.
    Emit(Vec<&'static str>),
    Panic,
    /// Never finishes.
    Hang,
    /// Hands the connection's handle to the test, which then knows it is
    /// routable (and about to become Ready).
    Signal(tokio::sync::mpsc::UnboundedSender<ConnectionHandle>),
}

#[derive(Debug, Clone, Default)]
pub enum OnMessage {
    #[default]
    Ignore,
    /// Close with this frame.
    Close(CloseFrame),
    Panic,
}

#[derive(Debug, Clone, Default)]
pub struct Scripted {
    pub on_ready: OnReady,
    pub on_message: OnMessage,
}

impl Handler for Scripted {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        match &self.on_ready {
            OnReady::Ok => Ok(()),
            OnReady::Emit(names) => {
                for name in names {
                    conn.emit(event(name, serde_json::json!("from on_ready")))
                        .unwrap_or_else(|e| panic!("emit in on_ready refused: {e}"));
                }
                Ok(())
            }
            OnReady::Panic => panic!("on_ready panicked on purpose"),
            OnReady::Hang => std::future::pending().await,
            OnReady::Signal(tx) => {
                let _ = tx.send(conn.clone());
                Ok(())
            }
        }
    }

    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        match &self.on_message {
            OnMessage::Ignore => Ok(()),
            OnMessage::Close(frame) => Err(frame.clone()),
            OnMessage::Panic => panic!("on_message panicked on purpose"),
        }
    }
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

pub fn event(name: &str, payload: serde_json::Value) -> Event {
    Event::custom(
        EventName::new(name).unwrap_or_else(|e| panic!("{e}")),
        payload,
    )
}

pub fn frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame::new(
        CloseCode::new(code).unwrap_or_else(|| panic!("bad code {code}")),
        CloseReason::new(reason).unwrap_or_else(|| panic!("bad reason {reason}")),
    )
}

/// A hub with the default configuration changed by `edit`.
pub fn hub_with(edit: impl FnOnce(&mut ws_lifecycle::config::HubConfig)) -> Hub {
    let mut config = ws_lifecycle::config::HubConfig::default();
    edit(&mut config);
    Hub::builder().config(config).build().unwrap()
}

/// Binds `user` on a fresh in-memory pair of capacity `cap`.
pub async fn bind(
    hub: &Hub,
    user: &UserId,
    cap: usize,
) -> (Connection<Authenticated<MemoryTransport>>, MemoryClient) {
    let (transport, client) = memory::pair(cap);
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(user.clone().into())
        .await
        .unwrap_or_else(|report| panic!("bind refused: {report}"));
    (conn, client)
}

/// The next frame, which must be a JSON text frame.
pub async fn next_json(client: &mut MemoryClient) -> serde_json::Value {
    match tokio::time::timeout(Duration::from_secs(30), client.recv()).await {
        Ok(Some(Message::Text(text))) => {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the close frame (returned) or the end of the stream (`None`),
/// returning the text frames seen on the way.
pub async fn read_to_close(
    client: &mut MemoryClient,
) -> (Vec<serde_json::Value>, Option<CloseFrame>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), client.recv()).await {
            Ok(Some(Message::Text(text))) => frames.push(
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
            ),
            Ok(Some(Message::Close(frame))) => return (frames, frame),
            Ok(Some(other)) => panic!("unexpected message {other:?}"),
            Ok(None) => return (frames, None),
            Err(_) => panic!("no close within 30 s"),
        }
    }
}

/// Invariant 3's ledger: every event accepted into a buffer or queue was
/// written, dropped to make room, or dropped at close; nothing else.
pub fn assert_accounted(m: &MetricsSnapshot) {
    assert_eq!(
        m.events_buffered + m.events_queued,
        m.events_written + m.dropped_overflow + m.dropped_on_close,
        "accepted events not accounted for: {m:?}"
    );
}

/// Admits everyone as alice.
pub struct Alice;

impl ws_lifecycle::auth::Authenticator for Alice {
    async fn authenticate(
        &self,
        _: &ws_lifecycle::auth::HandshakeRequest,
    ) -> Result<ws_lifecycle::auth::AuthOutcome, ws_lifecycle::auth::AuthFailure> {
        Ok(ws_lifecycle::auth::AuthOutcome::new(user("alice")))
    }
}

/// A well-formed upgrade request with no credentials.
pub fn upgrade_request() -> ws_lifecycle::auth::HandshakeRequest {
    ws_lifecycle::auth::HandshakeRequest::builder()
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs an authenticated connection of `user` on `hub` (its frames buffered
/// up to 4,096 in the client); returns the client and the handle once the
/// hub has started it, not necessarily Ready.
pub async fn start(
    hub: &ws_lifecycle::Hub,
    user: &ws_lifecycle::id::UserId,
) -> (
    ws_lifecycle::transport::memory::MemoryClient,
    ws_lifecycle::ConnectionHandle,
) {
    let (conn, client) = bind(hub, user, 4096).await;
    let handle = conn.handle();
    let (tx, _ready) = tokio::sync::mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let hub = hub.clone();
    tokio::spawn(async move { hub.run(conn, &handler).await });
    (client, handle)
}

/// [`start`], then waits until the connection is Ready (so its node
/// listens for the user).
pub async fn connect(
    hub: &ws_lifecycle::Hub,
    user: &ws_lifecycle::id::UserId,
) -> (
    ws_lifecycle::transport::memory::MemoryClient,
    ws_lifecycle::ConnectionHandle,
) {
    let (client, handle) = start(hub, user).await;
    handle.wait_ready(Duration::from_secs(20)).await.unwrap();
    (client, handle)
}
