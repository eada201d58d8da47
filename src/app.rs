//! The application's side of a connection: the [`Handler`] callbacks and
//! the [`Inbound`] messages they receive.

use std::future::Future;

use bytes::Bytes;

use crate::close::CloseFrame;
use crate::connection::{CloseReport, ConnectionHandle};

/// An inbound data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message.
    Text(crate::transport::Text),
    /// A binary message.
    Binary(Bytes),
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
