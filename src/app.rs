//! The application's side of a connection: the [`Handler`] callbacks and
//! the [`Inbound`] messages they receive.

use std::future::Future;

use bytes::Bytes;
use serde::Deserialize;

use crate::close::{CloseCode, CloseFrame, CloseReason};
use crate::connection::{CloseReport, ConnectionHandle};

/// An inbound data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message.
    Text(crate::transport::Text),
    /// A binary message.
    Binary(Bytes),
}

impl Inbound {
    /// Decodes a text message as JSON into the application's own type.
    /// `T` may borrow from the message (a `&str` field fails on a string
    /// with escapes; `String` or `Cow<str>` with `#[serde(borrow)]` does
    /// not).
    ///
    /// # Errors
    ///
    /// [`InboundError`] when the message is binary, not JSON, or JSON of
    /// another shape. It converts into a 4400 [`CloseFrame`], so a handler
    /// can close a connection that breaks the application's protocol with
    /// `?`; the frame's reason never quotes the peer's text.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::Deserialize;
    /// use ws_lifecycle::{ConnectionHandle, Handler, Inbound, close::CloseFrame};
    ///
    /// #[derive(Debug, Deserialize)]
    /// #[serde(tag = "type", rename_all = "snake_case")]
    /// enum ClientMessage {
    ///     Say { text: String },
    /// }
    ///
    /// struct Chat;
    ///
    /// impl Handler for Chat {
    ///     async fn on_message(&self, conn: &ConnectionHandle, message: Inbound) -> Result<(), CloseFrame> {
    ///         // Anything else closes the connection with 4400.
    ///         let ClientMessage::Say { text } = message.json()?;
    ///         tracing::info!(connection_id = %conn.id(), len = text.len(), "said");
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let said = Inbound::Text(r#"{"type":"say","text":"hi"}"#.into());
    /// assert!(matches!(said.json(), Ok(ClientMessage::Say { text }) if text == "hi"));
    /// let other = Inbound::Text(r#"{"type":"shout"}"#.into());
    /// let frame = CloseFrame::from(other.json::<ClientMessage>().unwrap_err());
    /// assert_eq!((frame.code.as_u16(), frame.reason.as_str()), (4400, "unexpected_message"));
    /// ```
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, InboundError> {
        let Inbound::Text(text) = self else {
            return Err(InboundError::NotText);
        };
        serde_json::from_str(text).map_err(|error| {
            let (line, column) = (error.line(), error.column());
            if error.is_data() {
                InboundError::UnexpectedShape { line, column }
            } else {
                InboundError::InvalidJson { line, column }
            }
        })
    }
}

/// An inbound message could not be decoded ([`Inbound::json`]).
///
/// Neither its text nor its [`close_frame`](InboundError::close_frame)
/// quotes the peer's message, so both are safe to log and to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// A binary message where text was expected. Closes with 4400
    /// `text_message_expected`.
    #[error("a binary message where a text message was expected")]
    NotText,
    /// The text is not JSON. Closes with 4400 `invalid_json`.
    #[error("the message is not JSON (line {line}, column {column})")]
    InvalidJson {
        /// Where the parser stopped (from 1).
        line: usize,
        /// Where the parser stopped (from 1).
        column: usize,
    },
    /// The text is JSON, but not of the expected shape (an unknown `type`,
    /// a missing field, a field of another type). Closes with 4400
    /// `unexpected_message`.
    #[error("the message is not one the application expects (line {line}, column {column})")]
    UnexpectedShape {
        /// Where the parser stopped (from 1).
        line: usize,
        /// Where the parser stopped (from 1).
        column: usize,
    },
}

impl InboundError {
    /// The frame that closes the connection for it: 4400 with a fixed
    /// ASCII reason (`text_message_expected`, `invalid_json`,
    /// `unexpected_message`).
    pub fn close_frame(&self) -> CloseFrame {
        const NOT_TEXT: CloseReason = CloseReason::from_static("text_message_expected");
        const INVALID_JSON: CloseReason = CloseReason::from_static("invalid_json");
        const UNEXPECTED: CloseReason = CloseReason::from_static("unexpected_message");
        let reason = match self {
            InboundError::NotText => NOT_TEXT,
            InboundError::InvalidJson { .. } => INVALID_JSON,
            InboundError::UnexpectedShape { .. } => UNEXPECTED,
        };
        CloseFrame::new(CloseCode::APP_PROTOCOL_ERROR, reason)
    }
}

impl From<InboundError> for CloseFrame {
    fn from(error: InboundError) -> Self {
        error.close_frame()
    }
}

/// What the application does with a connection. One value serves every
/// connection; per-connection state lives in the application, keyed by
/// [`ConnectionHandle::id`].
///
/// A callback that panics fails only its own connection (close 1011). A
/// callback that returns a [`CloseFrame`] closes its connection with it.
///
/// # Examples
///
/// ```
/// use ws_lifecycle::{ConnectionHandle, Handler, Inbound, close::CloseFrame};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     async fn on_message(&self, conn: &ConnectionHandle, message: Inbound) -> Result<(), CloseFrame> {
///         if let Inbound::Text(text) = message {
///             tracing::info!(connection_id = %conn.id(), len = text.len(), "got a message");
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync {
    /// Runs once the user is bound and the connection is routable, before
    /// it becomes Ready: start per-connection services here. Events emitted
    /// meanwhile are buffered and flushed, in order, when it becomes Ready.
    /// Bounded by [`HubConfig::services_ready_timeout`](crate::config::HubConfig::services_ready_timeout)
    /// (then close 1013).
    ///
    /// Returning a [`CloseFrame`] closes the connection without it ever
    /// becoming Ready: what was buffered is not written, and is reported in
    /// [`CloseReport::undelivered`].
    fn on_ready(
        &self,
        conn: &ConnectionHandle,
    ) -> impl Future<Output = Result<(), CloseFrame>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Handles one inbound data message. Messages of one connection are
    /// handled one at a time, in order; spawn long work rather than block
    /// the connection's reader.
    fn on_message(
        &self,
        conn: &ConnectionHandle,
        message: Inbound,
    ) -> impl Future<Output = Result<(), CloseFrame>> + Send;

    /// Runs exactly once after the connection has ended and left the
    /// routing table, on every exit path of [`Hub::run`](crate::Hub::run),
    /// [`Hub::serve`](crate::Hub::serve) and the adapters: a close from
    /// either side, a transport error, a timeout, a panic in
    /// [`on_message`](Handler::on_message) or [`on_ready`](Handler::on_ready)
    /// (cause `handler_panicked`), and the future driving the connection
    /// being dropped (cause `dropped`; it then runs inside that drop, so
    /// keep it short and do not block). A panic in `on_close` itself is
    /// caught and logged.
    fn on_close(&self, conn: &ConnectionHandle, report: &CloseReport) {
        let _ = (conn, report);
    }
}
