//! [`ConnectionHandle`]: what the application and other tasks hold.
//!
//! A handle exists only once authentication has bound the connection's
//! user, so its user is never missing. It checks readiness at run time: an
//! event emitted before Ready is buffered, one emitted after Closing comes
//! back as [`SendError::Closed`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::close::{CloseCause, CloseFrame};
use crate::connection::outbox::{Refused, Routed};
use crate::connection::shared::ConnShared;
use crate::event::control::Control;
use crate::event::{EncodeError, EncodedEvent, Event};
use crate::extensions::Extensions;
use crate::id::{ConnectionId, UserId};
use crate::state::{ConnectionState, WaitError};
use crate::stream::ResumeOutcome;

/// An event was not accepted; the event is handed back so nothing is lost.
#[derive(Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The connection is closing or closed.
    #[error("connection is closing or closed")]
    Closed(T),
    /// The pre-ready buffer or outbound queue is full and the overflow
    /// policy refused the event (under the `Close` policy the connection is
    /// now closing too).
    #[error("connection buffer is full")]
    Full(T),
    /// The event alone is larger than the connection's whole buffer or
    /// queue ([`BufferLimit::max_bytes`](crate::config::BufferLimit)): no
    /// policy could make room for it. The connection is left alone.
    #[error("event larger than the connection's buffer limit")]
    TooLarge(T),
    /// The event could not be serialised.
    #[error("{error}")]
    Encode {
        /// The event.
        event: T,
        /// Why.
        error: EncodeError,
    },
}

impl<T> SendError<T> {
    /// The refused value.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(t)
            | SendError::Full(t)
            | SendError::TooLarge(t)
            | SendError::Encode { event: t, .. } => t,
        }
    }

    pub(crate) fn from_refused(refused: Refused, value: T) -> Self {
        match refused {
            Refused::Full | Refused::Overflowed => SendError::Full(value),
            Refused::TooLarge => SendError::TooLarge(value),
            // A handle addresses its own connection, so a misaddressed
            // refusal cannot happen here; treat it like a closed connection
            // rather than invent a variant callers must match.
            Refused::Closed | Refused::Misaddressed => SendError::Closed(value),
        }
    }
}

/// The connection's claims do not fit the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the connection's claims do not fit the requested type: {0}")]
pub struct ClaimsError(String);

/// A cheap, cloneable handle to one authenticated connection.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) shared: Arc<ConnShared>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl ConnectionHandle {
    /// The connection's id, minted when it started and never replaced.
    pub fn id(&self) -> &ConnectionId {
        &self.shared.id
    }

    /// The authenticated user the connection is bound to.
    pub fn user(&self) -> &UserId {
        &self.shared.user
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.state()
    }

    /// Waits until the connection is Ready, at most `timeout`.
    ///
    /// # Errors
    ///
    /// See [`StateWatch::wait_ready`](crate::state::StateWatch::wait_ready).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), WaitError> {
        self.shared.state.wait_ready(timeout).await
    }

    /// Emits `event` to this connection and returns its sequence number.
    ///
    /// Before Ready the event waits in the pre-ready buffer and is flushed,
    /// in order, when the connection becomes Ready; after that it goes to the
    /// outbound queue.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the connection is closing,
    /// [`SendError::Full`] when the overflow policy refuses it,
    /// [`SendError::Encode`] when it cannot be serialised. Each hands the
    /// event back.
    pub fn emit(&self, event: Event) -> Result<u64, SendError<Event>> {
        let encoded = match event.encode() {
            Ok(encoded) => encoded,
            Err(error) => return Err(SendError::Encode { event, error }),
        };
        self.push_own(encoded)
            .map_err(|(refused, _)| SendError::from_refused(refused, event))
    }

    /// Emits one of the crate's control events (counted like any refusal
    /// when the connection is full or closing: its overflow policy is
    /// already dealing with it).
    pub(crate) fn emit_control(&self, control: Control) {
        let _ = self.push_own(control.encode());
    }

    /// Pushes `event`, addressed to this connection; a refusal hands back
    /// the addressed event (no queue kept it).
    fn push_own(&self, event: EncodedEvent) -> Result<u64, (Refused, Arc<Routed>)> {
        let routed = Routed::for_connection(self.shared.id.clone(), event);
        match self.shared.push(&routed) {
            Ok((seq, _)) => Ok(seq),
            Err(refused) => Err((refused, routed)),
        }
    }

    /// Ends the connection at once, without a close frame and without
    /// writing what is queued, as a network failure would: the peer sees
    /// the connection drop (1006 in a browser). For exercising clients'
    /// reconnect and resume (the example servers' "drop connection");
    /// [`close`](ConnectionHandle::close) is the orderly way. Returns
    /// `false` if it was already closing (the first close wins).
    pub fn terminate(&self) -> bool {
        self.shared.outbox.request_close(CloseCause::Terminated)
    }

    /// Asks the connection to close with `frame` after writing what is
    /// already queued (bounded by
    /// [`close_timeout`](crate::config::HubConfig::close_timeout)); a
    /// connection not yet Ready first becomes Ready once its on-ready hook
    /// succeeds, so its buffer is written too. Returns `false` if it was
    /// already closing (the first close wins).
    pub fn close(&self, frame: CloseFrame) -> bool {
        self.shared
            .outbox
            .request_close(CloseCause::Requested(frame))
    }

    /// Whether a close has been asked for (by anyone).
    pub fn is_closing(&self) -> bool {
        self.shared.outbox.close_cause().is_some()
    }

    /// Resolves once the connection is closing or has ended, for any
    /// reason (the client left, a close was asked for, the server is
    /// shutting down), with the cause. Already closing: resolves at once.
    ///
    /// Work started for a connection (an agent run, a subscription) can
    /// stop when its client goes away:
    ///
    /// ```
    /// # use ws_lifecycle::ConnectionHandle;
    /// async fn run_agent(conn: ConnectionHandle) {
    ///     tokio::select! {
    ///         cause = conn.closed() => {
    ///             tracing::info!(cause = cause.as_str(), "client left: stopping the run");
    ///         }
    ///         () = agent_steps(&conn) => {}
    ///     }
    /// }
    /// # async fn agent_steps(_: &ConnectionHandle) {}
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it loses nothing, and any number of tasks may
    /// wait at once.
    pub async fn closed(&self) -> CloseCause {
        self.shared.outbox.watch_closed().await
    }

    /// The verified claims of the credentials the connection was admitted
    /// with, deserialised into the application's own type.
    ///
    /// ```
    /// # use ws_lifecycle::ConnectionHandle;
    /// #[derive(serde::Deserialize)]
    /// struct Claims {
    ///     sub: String,
    ///     #[serde(default)]
    ///     plan: Option<String>,
    /// }
    ///
    /// fn plan(conn: &ConnectionHandle) -> Option<String> {
    ///     conn.claims::<Claims>().ok().and_then(|claims| claims.plan)
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClaimsError`] when the claims do not fit `T` (a missing field, a
    /// wrong type).
    pub fn claims<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClaimsError> {
        let text = self.shared.claims.as_deref().unwrap_or("{}");
        serde_json::from_str(text).map_err(|e| ClaimsError(e.to_string()))
    }

    /// Where this connection joined its user's stream, and whether the
    /// resume it asked for (`since`) succeeded: set before
    /// [`Handler::on_ready`](crate::Handler::on_ready) runs, so the
    /// application can put it in its `ready` frame. `None` for a
    /// connection driven by hand through
    /// [`Connection::ready`](crate::connection::Connection::ready) (it
    /// joins no stream position).
    ///
    /// [`Event::with_resume`](crate::event::Event::with_resume) puts it in
    /// a `ready` event.
    pub fn resume(&self) -> Option<&ResumeOutcome> {
        self.shared.resume.get().map(|outcome| &**outcome)
    }

    /// The verified claims as compact JSON text (`{}` when the
    /// authenticator returned none), for the application to parse its own
    /// way or pass on.
    pub fn claims_json(&self) -> &str {
        self.shared.claims.as_deref().unwrap_or("{}")
    }

    /// The application's values attached while authenticating (see
    /// [`AuthOutcome::with_extension`](crate::auth::AuthOutcome::with_extension)).
    pub fn extensions(&self) -> &Extensions {
        &self.shared.extensions
    }

    /// Emits an event already serialised (an
    /// [`Envelope`](crate::event::Envelope) with a typed payload, or
    /// [`Event::encode`]) to this connection and returns its sequence
    /// number, as [`emit`](ConnectionHandle::emit) does.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the connection is closing,
    /// [`SendError::Full`] when the overflow policy refuses it,
    /// [`SendError::TooLarge`] when it is larger than the whole buffer; each
    /// hands the event back. Never [`SendError::Encode`].
    pub fn emit_encoded_event(&self, event: EncodedEvent) -> Result<u64, SendError<EncodedEvent>> {
        self.push_own(event).map_err(|(refused, routed)| {
            // Refused: no queue kept a reference, so the event comes back
            // without a copy (cloned only if one somehow did).
            let event = Arc::try_unwrap(routed).map_or_else(|r| r.event.clone(), |r| r.event);
            SendError::from_refused(refused, event)
        })
    }
}
