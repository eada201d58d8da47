//! Multi-node delivery: the [`Backplane`] seam.
//!
//! A single node needs none: without a backplane the hub is local-only and
//! nothing is configured. With one, [`Hub::send_to_user`](crate::Hub::send_to_user)
//! also publishes the event (serialised once) for the other nodes, and each
//! node delivers what it receives into its own routing table through the
//! same checked path as local sends ([`NodeLink::deliver`]): the isolation
//! checks of the outbox and the writer apply to remote events too.
//!
//! The hub tells the backplane when a user gets their first local connection
//! and loses their last ([`Backplane::user_joined`], [`Backplane::user_left`]),
//! so a backplane can listen only for the users this node has; and it waits
//! for [`Backplane::ready_for`] before a connection becomes Ready, so every
//! event published after a connection is Ready reaches it.
//!
//! **Streams.** By default each node keeps its own stream per user
//! ([`crate::stream`]): offsets are this node's, and a client can resume
//! only on the node it left. A backplane that keeps the users' streams
//! itself ([`Backplane::keeps_streams`], as the Redis one does) assigns
//! each event its offset when it is published, delivers it to *every*
//! node, this one included, through [`NodeLink::deliver_at`], and answers
//! [`Backplane::read_stream`]: then offsets are the same on every node,
//! and a client resumes anywhere. [`deliver_at`](NodeLink::deliver_at)
//! checks each event's place against the last one this node delivered and
//! reports a [`Placement::Hole`] for the backplane to repair from its
//! history (or to give up on with [`NodeLink::skip_to`]).

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use crate::close::CloseFrame;
use crate::event::EncodedEvent;
use crate::event::control::GapReason;
use crate::id::UserId;
use crate::stream::{HistoryConfig, Position};

/// A boxed future, so [`Backplane`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the backplane could not do what was asked. Local delivery is never
/// affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The backplane's server is unreachable (down, restarting, or not
    /// answering within the command timeout); it reconnects on its own.
    #[error("the backplane is down: remote nodes were not reached")]
    Down,
    /// The backplane's outgoing queue is full: remote nodes were not
    /// reached for this event.
    #[error("the backplane's outgoing queue is full")]
    Overloaded,
    /// The backplane does not keep the users' streams
    /// ([`Backplane::keeps_streams`] is `false`).
    #[error("this backplane does not keep the users' streams")]
    NoStreams,
}

impl BackplaneError {
    /// A stable code for metrics and logs.
    pub fn code(self) -> &'static str {
        match self {
            BackplaneError::Down => "backplane_down",
            BackplaneError::Overloaded => "backplane_overloaded",
            BackplaneError::NoStreams => "backplane_no_streams",
        }
    }
}

/// What happened to the remote side of a send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remote {
    /// The hub has no backplane: local delivery only.
    #[default]
    LocalOnly,
    /// Handed to the backplane for the other nodes.
    Published,
    /// Not handed on; the other nodes will not see it (also counted).
    Failed(BackplaneError),
}

/// What [`Backplane::read_stream`] found in a user's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRead {
    /// The stream's epoch and latest offset (0: empty), read atomically
    /// with `events`.
    pub position: Position,
    /// When a `since` of the same epoch was asked for and the history
    /// holds every event after it: those events, `(offset, event)` in
    /// offset order. `None` otherwise (another epoch, trimmed, ahead of
    /// the stream, no history): then nothing is replayed.
    pub events: Option<Vec<(u64, EncodedEvent)>>,
}

impl StreamRead {
    /// A read at `position`, with `events` after the asked offset.
    pub fn new(position: Position, events: Option<Vec<(u64, EncodedEvent)>>) -> Self {
        StreamRead { position, events }
    }
}

/// Where [`NodeLink::deliver_at`] placed an event of a user's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// The next offset (or this node's first for the user): handed to
    /// this many local connections.
    Delivered(usize),
    /// At or below the last offset delivered here: a repeat, dropped.
    Repeat,
    /// Past the next one: events `after + 1 ..` up to this one are missing
    /// here. Nothing was delivered; read them from the history and deliver
    /// them first (then this one again), or call [`NodeLink::skip_to`].
    Hole {
        /// The last offset delivered here.
        after: u64,
    },
    /// Of another epoch: the stream was restarted. The user's connections
    /// were told (a `gap`), and the event handed to this many.
    Restarted(usize),
}

/// Carries events and control between nodes. See the [module docs](self).
///
/// Implementations must not block in the synchronous methods: they are
/// called on the send path.
pub trait Backplane: Send + Sync + 'static {
    /// Called once, when the hub is built: remote events go to `node`.
    fn start(&self, node: NodeLink);

    /// Publishes `event` for `user` to the other nodes. Never blocks.
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the event will not reach the other nodes.
    fn publish(&self, user: &UserId, event: &EncodedEvent) -> Result<(), BackplaneError>;

    /// `user` has their first connection on this node.
    ///
    /// Called while the routing table holds `user`'s shard locked, so that
    /// joins and leaves reach the backplane in the table's own order: be
    /// quick, and never call back into the hub from here (a [`NodeLink`]
    /// call would wait on that lock). Record the change and act on it from
    /// your own task.
    fn user_joined(&self, user: &UserId);

    /// `user` has no connection left on this node. Called under the same
    /// lock as [`user_joined`](Backplane::user_joined), with the same rules.
    fn user_left(&self, user: &UserId);

    /// Resolves once events published for `user` by other nodes reach this
    /// node (for example its subscription is confirmed).
    fn ready_for<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<(), BackplaneError>>;

    /// Asks every other node to close `user`'s connections with `frame`.
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the request will not reach them.
    fn disconnect_user(&self, user: &UserId, frame: &CloseFrame) -> Result<(), BackplaneError>;

    /// Whether `user` has a connection on any node.
    fn is_online<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, BackplaneError>>;

    /// Users with a connection on any node.
    fn online_count(&self) -> BoxFuture<'_, Result<u64, BackplaneError>>;

    /// Counts a new connection of `user` against a cluster-wide `limit`:
    /// `Ok(false)` when the user already has `limit` connections across all
    /// nodes (the connection is then refused, 4429). On `Err` the hub
    /// admits the connection (and later releases it). The future may be
    /// dropped before it finishes (the client went away): nothing may stay
    /// counted then. Used when
    /// [`HubConfig::cluster_connection_limit`](crate::config::HubConfig::cluster_connection_limit)
    /// is on; the default admits everything.
    fn admit<'a>(
        &'a self,
        user: &'a UserId,
        limit: usize,
    ) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        let _ = (user, limit);
        Box::pin(async { Ok(true) })
    }

    /// A connection [`admit`](Backplane::admit) was asked about has ended.
    /// Called for every such connection that was not refused, *including*
    /// when `admit` returned an error (the hub admits then), and never when
    /// the `admit` future was dropped before it finished: an implementation
    /// keeps its count exact under both. Must not block or need a runtime
    /// (it can run in `Drop`).
    fn release(&self, user: &UserId) {
        let _ = user;
    }

    /// Whether this backplane keeps the users' streams (see the [module
    /// docs](self)): [`publish`](Backplane::publish) then assigns the
    /// event's offset and delivers it to every node *including this one*
    /// through [`NodeLink::deliver_at`], and the hub does not deliver it
    /// locally itself. Default: `false`.
    fn keeps_streams(&self) -> bool {
        false
    }

    /// Reads `user`'s stream: its position and, with `since` of the same
    /// epoch, every retained event after it (see [`StreamRead`]). Called
    /// for a connection once [`ready_for`](Backplane::ready_for) resolved,
    /// so nothing published after the read can be missed. Only called when
    /// [`keeps_streams`](Backplane::keeps_streams) is `true`.
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the stream cannot be read; the connection
    /// is then not recovered.
    fn read_stream<'a>(
        &'a self,
        user: &'a UserId,
        since: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<StreamRead, BackplaneError>> {
        let _ = (user, since);
        Box::pin(async { Err(BackplaneError::NoStreams) })
    }
}

/// What a backplane may ask of the hub it serves; the hub implements it,
/// so this module never names the hub (imports run one way: `hub` →
/// `backplane`).
pub(crate) trait Node: Send + Sync {
    fn deliver(&self, user: &UserId, event: EncodedEvent) -> usize;
    fn deliver_at(&self, user: &UserId, position: &Position, event: EncodedEvent) -> Placement;
    fn skip_to(&self, user: &UserId, position: &Position) -> usize;
    fn history(&self) -> HistoryConfig;
    fn disconnect_local(&self, user: &UserId, frame: &CloseFrame) -> usize;
    fn notify_gap(&self, reason: GapReason) -> usize;
    fn notify_gap_to(&self, user: &UserId, reason: GapReason) -> usize;
    fn record_lost(&self, n: u64);
    fn record_rejected(&self);
    fn local_users(&self) -> Vec<UserId>;
}

/// The backplane's way back into its hub. Holds the hub weakly, so a
/// backplane never keeps a dropped hub alive: once the hub is gone every
/// call does nothing (and returns 0 or `None`).
#[derive(Clone)]
pub struct NodeLink {
    node: Weak<dyn Node>,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink").finish_non_exhaustive()
    }
}

impl NodeLink {
    pub(crate) fn new(node: Weak<dyn Node>) -> Self {
        NodeLink { node }
    }

    /// Delivers a remote `event` for `user` to this node's connections of
    /// that user, through the same checked path as a local send (the
    /// isolation checks apply). Returns how many connections took it;
    /// `None` once the hub is gone.
    pub fn deliver(&self, user: &UserId, event: EncodedEvent) -> Option<usize> {
        self.node.upgrade().map(|node| node.deliver(user, event))
    }

    /// Delivers an event of `user`'s stream at `position` (for a backplane
    /// that [keeps the streams](Backplane::keeps_streams)): handed to the
    /// user's local connections only when it is the next offset after the
    /// last one delivered here. See [`Placement`]; `None` once the hub is
    /// gone.
    pub fn deliver_at(
        &self,
        user: &UserId,
        position: &Position,
        event: EncodedEvent,
    ) -> Option<Placement> {
        self.node
            .upgrade()
            .map(|node| node.deliver_at(user, position, event))
    }

    /// Gives up on a [`Placement::Hole`] that the history could not fill:
    /// `user`'s local connections get a `gap` event (`stream_hole`), and
    /// this node goes on from `position` (deliver that event again with
    /// [`deliver_at`](NodeLink::deliver_at) afterwards). Returns how many
    /// connections were told.
    pub fn skip_to(&self, user: &UserId, position: &Position) -> usize {
        self.node
            .upgrade()
            .map_or(0, |node| node.skip_to(user, position))
    }

    /// The hub's history settings, for a backplane that keeps the history
    /// (the default settings once the hub is gone).
    pub fn history(&self) -> HistoryConfig {
        self.node
            .upgrade()
            .map(|node| node.history())
            .unwrap_or_default()
    }

    /// Closes this node's connections of `user` with `frame`; returns how
    /// many were asked.
    pub fn disconnect_local(&self, user: &UserId, frame: &CloseFrame) -> usize {
        self.node
            .upgrade()
            .map_or(0, |node| node.disconnect_local(user, frame))
    }

    /// Tells every local connection that remote events may have been missed
    /// (the backplane was down): each gets a `gap` event, so clients resync
    /// instead of trusting a silent hole. Returns how many took it.
    pub fn notify_gap(&self, reason: GapReason) -> usize {
        self.node
            .upgrade()
            .map_or(0, |node| node.notify_gap(reason))
    }

    /// Like [`notify_gap`](NodeLink::notify_gap), for `user`'s local
    /// connections only: another node lost events it had accepted for
    /// them. Returns how many connections took the `gap` event.
    pub fn notify_gap_to(&self, user: &UserId, reason: GapReason) -> usize {
        self.node
            .upgrade()
            .map_or(0, |node| node.notify_gap_to(user, reason))
    }

    /// Counts `n` events this node's backplane had accepted for the other
    /// nodes and lost (in [`MetricsSnapshot::backplane_lost`](crate::metrics::MetricsSnapshot::backplane_lost)).
    /// A backplane that loses events must also tell their users, for
    /// example with a message that makes the other nodes call
    /// [`notify_gap_to`](NodeLink::notify_gap_to).
    pub fn record_lost(&self, n: u64) {
        if let Some(node) = self.node.upgrade() {
            node.record_lost(n);
        }
    }

    /// Counts a message from another node that was dropped unread: not
    /// authentic (bad signature) or malformed (in
    /// [`MetricsSnapshot::backplane_rejected`](crate::metrics::MetricsSnapshot::backplane_rejected)).
    pub fn record_rejected(&self) {
        if let Some(node) = self.node.upgrade() {
            node.record_rejected();
        }
    }

    /// The users with a connection on this node.
    pub fn local_users(&self) -> Vec<UserId> {
        self.node
            .upgrade()
            .map(|node| node.local_users())
            .unwrap_or_default()
    }
}

/// A shared backplane, as the hub holds it.
pub(crate) type SharedBackplane = Arc<dyn Backplane>;

/// A backplane shared with the application (to read its health or stats
/// while the hub uses it): `Hub::builder().backplane(Arc::clone(&shared))`.
impl<B: Backplane> Backplane for Arc<B> {
    fn start(&self, node: NodeLink) {
        (**self).start(node);
    }

    fn publish(&self, user: &UserId, event: &EncodedEvent) -> Result<(), BackplaneError> {
        (**self).publish(user, event)
    }

    fn user_joined(&self, user: &UserId) {
        (**self).user_joined(user);
    }

    fn user_left(&self, user: &UserId) {
        (**self).user_left(user);
    }

    fn ready_for<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<(), BackplaneError>> {
        (**self).ready_for(user)
    }

    fn disconnect_user(&self, user: &UserId, frame: &CloseFrame) -> Result<(), BackplaneError> {
        (**self).disconnect_user(user, frame)
    }

    fn is_online<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        (**self).is_online(user)
    }

    fn online_count(&self) -> BoxFuture<'_, Result<u64, BackplaneError>> {
        (**self).online_count()
    }

    fn admit<'a>(
        &'a self,
        user: &'a UserId,
        limit: usize,
    ) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        (**self).admit(user, limit)
    }

    fn release(&self, user: &UserId) {
        (**self).release(user);
    }

    fn keeps_streams(&self) -> bool {
        (**self).keeps_streams()
    }

    fn read_stream<'a>(
        &'a self,
        user: &'a UserId,
        since: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<StreamRead, BackplaneError>> {
        (**self).read_stream(user, since)
    }
}
