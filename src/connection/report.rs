//! [`CloseReport`]: how a connection ended.

use crate::close::CloseCause;
use crate::id::{ConnectionId, UserId};
use crate::state::ConnectionState;

/// How a connection ended. Also the error of a connection step that ended
/// it (for example a refused [`authenticate`](crate::connection::Connection::authenticate)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection {connection_id} ended ({state}): {cause}")]
#[non_exhaustive]
pub struct CloseReport {
    /// The connection.
    pub connection_id: ConnectionId,
    /// Its user, if authentication got that far.
    pub user: Option<UserId>,
    /// Why it ended.
    pub cause: CloseCause,
    /// Its final state: `Closed` or `Failed`.
    pub state: ConnectionState,
    /// Events still queued when it ended, never written (also counted in
    /// the hub's `dropped_on_close` metric).
    pub undelivered: u64,
}
