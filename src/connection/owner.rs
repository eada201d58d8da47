//! [`Owner`]: what a connection asks of whoever runs it.
//!
//! The hub implements it; this module never names the hub, so a connection
//! depends on the hub's services, not on the hub (the imports run one way:
//! `hub` → `connection`).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::connection::outbox::Routed;
use crate::connection::shared::{ConnShared, Context};
use crate::event::EncodedEvent;
use crate::id::UserId;
use crate::stream::Position;

/// Where a connection joins its user's stream.
pub(crate) struct Joined {
    /// The stream's epoch and latest offset once the connection listens.
    pub(crate) position: Position,
    /// With a `since` in the same epoch: the retained events after it,
    /// when they cover everything up to `position` (`None`: they do not,
    /// or the history could not be read).
    pub(crate) history: Option<Vec<Arc<Routed>>>,
}

impl Joined {
    /// `user`'s stream at `position`, with `history` as `(offset, event)`.
    pub(crate) fn new(
        user: &UserId,
        position: Position,
        history: Option<Vec<(u64, EncodedEvent)>>,
    ) -> Self {
        let history = history.map(|events| {
            events
                .into_iter()
                .map(|(off, event)| Routed::for_user(user.clone(), off, event))
                .collect()
        });
        Joined { position, history }
    }
}

/// Why a connection could not enter the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnterError {
    /// The user already has the maximum number of connections here.
    LimitReached,
    /// Another connection already has this id (a broken id generator):
    /// routing by it could reach the wrong user.
    DuplicateId,
}

/// The services a connection uses during its life.
pub(crate) trait Owner: Send + Sync + 'static {
    /// Configuration and metrics.
    fn context(&self) -> &Arc<Context>;

    /// Counts a new connection of `user` cluster-wide when that is on:
    /// `Some(true)` admitted (release it when it ends), `Some(false)`
    /// refused, `None` not counted.
    fn admit<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Option<bool>>;

    /// Releases a connection counted by [`admit`](Owner::admit).
    fn release(&self, user: &UserId);

    /// Enters the routing table. A connection evicted to make room (the
    /// per-user limit's `CloseOldest` policy) is asked to close; a hub that
    /// is closing asks the new connection to close at once.
    fn enter(&self, conn: &Arc<ConnShared>) -> Result<(), EnterError>;

    /// Leaves the routing table (idempotent).
    fn leave(&self, conn: &Arc<ConnShared>);

    /// Resolves once events published for `user` on other nodes reach this
    /// one; `false` when that could not be confirmed in time (local
    /// delivery goes on).
    fn listening<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, bool>;

    /// Reads `user`'s stream for a connection that already listens: its
    /// position and, when `since` asks for it, the history after it.
    fn join_stream<'a>(
        &'a self,
        user: &'a UserId,
        since: Option<&'a Position>,
    ) -> BoxFuture<'a, Joined>;

    /// The connection reached a terminal state: one live connection fewer.
    fn ended(&self);
}
