//! The demo application every example serves, speaking the protocol in
//! `docs/protocol.md` (its last section):
//!
//! * on ready: `{"type":"ready","connection_id":"…","user":"…","epoch":"…","off":N,"recovered":B}`;
//! * `{"type":"publish","to":"<user>","payload":"<text>"}` delivers
//!   `{"type":"message","from":"<sender>","payload":"<text>"}` to every
//!   connection of `to`;
//! * `{"type":"agent_run","prompt":"<text>"}` answers the sender's user with
//!   the five agent events, in order, for one freshly minted run; with
//!   `"step_ms":N` (0 to 2000, default 0: all five at once) a task of its
//!   own sends them N ms apart. The run belongs to the user, not to the
//!   connection: it goes on when the connection drops, and a client that
//!   resumes (`since`) gets the events it missed. A `step_ms` out of range
//!   is answered `{"type":"error","payload":{"code":"bad_step_ms"}}`;
//! * `{"type":"drop"}` ends the connection at once, without a close frame,
//!   as a network failure would (the browser sees 1006): the demo page's
//!   "drop connection" button, for watching the client reconnect and
//!   resume;
//! * anything else (a binary message, text that is not JSON, JSON of another
//!   shape) closes the connection with 4400 (`Inbound::json`).
//!
//! Messages are decoded into [`ClientMessage`] and events encoded from
//! typed payloads ([`Envelope`]), without a `serde_json::Value` either way.
//!
//! Frames also carry the crate's envelope fields (`v`, `seq`, and for agent
//! events `thread_id` and `run_id`), which clients that do not know them
//! ignore.

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::event::{AgentEventKind, Envelope, Event, EventName};

use ws_lifecycle::event::EncodedEvent;
use ws_lifecycle::id::{RequestId, UserId};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

/// One message from a client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Publish {
        to: String,
        payload: String,
    },
    AgentRun {
        prompt: String,
        #[serde(default)]
        step_ms: u64,
    },
    Drop,
}

/// The longest pause between two events of a run (`step_ms`).
const MAX_STEP_MS: u64 = 2_000;

/// The payload of each agent event of a run.
#[derive(Serialize)]
struct AgentStep<'a> {
    prompt: &'a str,
    step: u32,
    request_id: &'a RequestId,
}

/// The demo application. One value serves every connection.
#[derive(Debug, Clone)]
pub(crate) struct ChatApp {
    hub: Hub,
}

impl ChatApp {
    /// An app that routes through `hub`.
    pub(crate) fn new(hub: Hub) -> Self {
        ChatApp { hub }
    }
}

fn name(name: &str) -> Result<EventName, CloseFrame> {
    EventName::new(name).map_err(|_| internal())
}

fn internal() -> CloseFrame {
    close(CloseCode::INTERNAL_ERROR, "internal_error")
}

fn close(code: CloseCode, reason: &'static str) -> CloseFrame {
    let reason = CloseReason::new(reason).unwrap_or_else(|| unreachable!("a valid constant"));
    CloseFrame::new(code, reason)
}

impl Handler for ChatApp {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        // Emitted before Ready: buffered and written first, once Ready.
        let mut ready = Event::custom(name("ready")?, json!(null))
            .with_field("connection_id", conn.id().as_str())
            .and_then(|e| e.with_field("user", conn.user().as_str()))
            .map_err(|_| internal())?;
        // Where this connection joined the user's stream, and whether the
        // resume it asked for (`since`) worked: the client's next `since`.
        if let Some(resume) = conn.resume() {
            ready = ready.with_resume(resume);
        }
        conn.emit(ready).map_err(|_| internal())?;
        Ok(())
    }

    async fn on_message(
        &self,
        conn: &ConnectionHandle,
        message: Inbound,
    ) -> Result<(), CloseFrame> {
        // Not a message of this protocol: close with 4400 (the reason never
        // quotes the client's text).
        let message: ClientMessage = message.json()?;
        match message {
            ClientMessage::Publish { to, payload } => {
                let Ok(to) = UserId::new(&to) else {
                    let error = Event::custom(name("error")?, json!({ "code": "bad_user" }));
                    let _ = conn.emit(error);
                    return Ok(());
                };
                let envelope = Envelope::custom(name("message")?)
                    .with_field("from", conn.user().as_str())
                    .map_err(|_| internal())?;
                let event = envelope.encode(&payload).map_err(|_| internal())?;
                // A user with no connection simply misses it (counted by
                // the hub as a routing miss).
                let _ = self.hub.send_encoded_to_user(&to, event);
            }
            ClientMessage::AgentRun { prompt, step_ms } => {
                if step_ms > MAX_STEP_MS {
                    let error = Event::custom(name("error")?, json!({ "code": "bad_step_ms" }));
                    let _ = conn.emit(error);
                    return Ok(());
                }
                let events = self.run(conn.user(), &prompt)?;
                if step_ms == 0 {
                    for event in events {
                        let _ = self.hub.send_encoded_to_user(conn.user(), event);
                    }
                } else {
                    // The user's run, not the connection's: it does not
                    // watch the connection. Each event reaches whichever
                    // connections the user has when it is sent, and the
                    // user's stream keeps it for a client that resumes.
                    let (hub, user) = (self.hub.clone(), conn.user().clone());
                    tokio::spawn(async move {
                        for (i, event) in events.into_iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(step_ms)).await;
                            }
                            let _ = hub.send_encoded_to_user(&user, event);
                        }
                    });
                }
            }
            ClientMessage::Drop => {
                // As a network failure would: no close frame (1006).
                conn.terminate();
            }
        }
        Ok(())
    }
}

impl ChatApp {
    /// The five agent events of one freshly minted run for `user`, encoded.
    fn run(&self, user: &UserId, prompt: &str) -> Result<Vec<EncodedEvent>, CloseFrame> {
        let ctx = self.hub.ids().mint_context(user);
        (1..)
            .zip(AgentEventKind::ALL)
            .map(|(step, kind)| {
                let payload = AgentStep {
                    prompt,
                    step,
                    request_id: &ctx.request,
                };
                Envelope::agent(kind, &ctx.run)
                    .encode(&payload)
                    .map_err(|_| internal())
            })
            .collect()
    }
}
