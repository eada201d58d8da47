//! [`Hub`]: mints ids, owns the routing table, and runs connections.
//!
//! | module | holds |
//! |---|---|
//! | `builder` | [`HubBuilder`] |
//! | `send` | the send paths and their one routing helper; [`Delivery`], [`FanOut`] |
//! | `serve` | driving a connection's whole life: [`Hub::serve`], [`Hub::run`] … |
//! | `admission` | the upgrade semaphore, the live count, the closing latch |
//! | `shutdown` | [`Hub::close_all`], [`Hub::shutdown`] |
//! | `node` | the hub's side of the connection and backplane seams |

use std::sync::Arc;

use crate::backplane::{BackplaneError, SharedBackplane};
use crate::config::HubConfig;
use crate::connection::{Connecting, Connection, Context, Origin};
use crate::event::EncodedEvent;
use crate::id::{IdGenerator, UserId};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::router::Router;
use crate::stream::table::Table;

mod admission;
mod builder;
mod node;
mod send;
mod serve;
mod shutdown;

pub(crate) use admission::{Admission, Slot};
pub use builder::HubBuilder;
pub use send::{Delivery, FanOut};
pub use shutdown::{ShutdownKind, ShutdownReport};

/// What every clone of a hub shares.
pub(crate) struct Inner {
    ctx: Arc<Context>,
    admission: Arc<Admission>,
    router: Router,
    ids: Arc<dyn IdGenerator>,
    backplane: Option<SharedBackplane>,
    /// The users' streams as this node knows them: offsets and history, or
    /// (when the backplane keeps the streams) where this node's deliveries
    /// stand.
    streams: Table<EncodedEvent>,
    /// Whether the backplane keeps the streams.
    remote_streams: bool,
}

/// Runs connections and routes events to them. Cheap to clone: clones share
/// one routing table.
///
/// # Examples
///
/// ```
/// use ws_lifecycle::{Hub, ConnectionHandle, Handler, Inbound, close::CloseFrame};
/// use ws_lifecycle::event::{Event, EventName};
/// use ws_lifecycle::id::UserId;
/// use ws_lifecycle::transport::{memory, Message};
///
/// struct Quiet;
/// impl Handler for Quiet {
///     async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new();
/// let alice = UserId::new("alice")?;
/// let (transport, mut client) = memory::pair(16);
///
/// // Bound to alice and routable, not ready yet: events are buffered.
/// let conn = hub.connect().accept(transport).authenticate(alice.clone().into()).await?;
/// let hello = Event::custom(EventName::new("hello")?, serde_json::json!("hi"));
/// assert_eq!(hub.send_to_user(&alice, &hello)?.buffered, 1);
///
/// // Drive it: on-ready hook, Ready (the buffer is flushed), reader loop.
/// let server = tokio::spawn({
///     let hub = hub.clone();
///     async move { hub.run(conn, &Quiet).await }
/// });
/// let Some(Message::Text(frame)) = client.recv().await else { panic!() };
/// // `seq`: this connection's frame counter; `off`: alice's stream offset.
/// assert_eq!(frame, r#"{"v":1,"seq":1,"off":1,"type":"hello","payload":"hi"}"#);
///
/// client.close(None).await;
/// let report = server.await?;
/// assert!(!hub.is_online(&alice));
/// # let _ = report;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.inner.router.len())
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub with the default configuration and id generator.
    pub fn new() -> Self {
        // The default configuration is valid (`config::tests`).
        HubBuilder::default().assemble()
    }

    /// A builder, to set the configuration or the id generator.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    pub(crate) fn admission(&self) -> &Arc<Admission> {
        &self.inner.admission
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.ctx.config
    }

    /// The id generator: mint thread, run and request ids here so every id
    /// comes from one source.
    pub fn ids(&self) -> &dyn IdGenerator {
        &*self.inner.ids
    }

    /// A point-in-time copy of the metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.ctx.metrics.snapshot()
    }

    /// Starts a connection: mints its id, first, before anything else. Its
    /// span's `adapter` is `none`: the application drives it by hand.
    pub fn connect(&self) -> Connection<Connecting> {
        self.connect_from(Origin::BY_HAND)
    }

    /// [`connect`](Hub::connect), its span saying where it came from.
    pub(crate) fn connect_from(&self, origin: Origin) -> Connection<Connecting> {
        self.inner.admission.add_live();
        self.start(origin)
    }

    /// Starts a connection in a place [`upgrade::decide`](crate::upgrade::decide)
    /// already counted.
    pub(crate) fn connect_in(&self, slot: Slot, origin: Origin) -> Connection<Connecting> {
        slot.transfer();
        self.start(origin)
    }

    fn start(&self, origin: Origin) -> Connection<Connecting> {
        let id = self.inner.ids.mint_connection_id();
        Connection::new(
            Arc::clone(&self.inner) as Arc<dyn crate::connection::Owner>,
            id,
            origin,
        )
    }

    /// Counts an upgrade refused with 503.
    pub(crate) fn count_upgrade_refused(&self) {
        Metrics::inc(&self.inner.ctx.metrics.c.upgrades_refused);
    }

    /// Whether `user` has a connection on any node (this one only, without
    /// a backplane).
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the cluster cannot be asked.
    pub async fn is_online_anywhere(&self, user: &UserId) -> Result<bool, BackplaneError> {
        if self.is_online(user) {
            return Ok(true);
        }
        match &self.inner.backplane {
            Some(backplane) => backplane.is_online(user).await,
            None => Ok(false),
        }
    }

    /// Users with a connection on any node (this one only, without a
    /// backplane).
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the cluster cannot be asked.
    pub async fn online_count(&self) -> Result<u64, BackplaneError> {
        match &self.inner.backplane {
            Some(backplane) => backplane.online_count().await,
            None => Ok(self.user_count() as u64),
        }
    }

    /// Whether `user` has a routable connection on this node.
    pub fn is_online(&self, user: &UserId) -> bool {
        self.inner.router.has_user(user)
    }

    /// What this node's stream table holds now: the users it tracks and
    /// the bytes counted against
    /// [`HistoryConfig::max_bytes`](crate::stream::HistoryConfig::max_bytes).
    pub fn history_usage(&self) -> crate::stream::HistoryUsage {
        crate::stream::HistoryUsage {
            streams: self.inner.streams.users(),
            bytes: self.inner.streams.bytes(),
            retained: self.inner.streams.retained(),
        }
    }

    /// `user`'s current position in their stream: its epoch and the offset
    /// of its latest event (see [`stream`](crate::stream)). Read from the
    /// backplane when it keeps the streams; otherwise this node's, `None`
    /// when it has none for the user (no connection here and no retained
    /// history).
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the backplane cannot be read.
    ///
    /// ```
    /// # use ws_lifecycle::{Hub, event::{Event, EventName}, id::UserId};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::new();
    /// let alice = UserId::new("alice")?;
    /// let note = Event::custom(EventName::new("note")?, serde_json::json!("hi"));
    /// let delivery = hub.send_to_user(&alice, &note)?;
    /// assert_eq!(delivery.offset, Some(1)); // kept: alice can resume it
    /// let position = hub.stream_position(&alice).await?.expect("retained");
    /// assert_eq!(position.offset, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stream_position(
        &self,
        user: &UserId,
    ) -> Result<Option<crate::stream::Position>, BackplaneError> {
        match &self.inner.backplane {
            Some(backplane) if self.inner.remote_streams => backplane
                .read_stream(user, None)
                .await
                .map(|read| Some(read.position)),
            _ => Ok(self.inner.streams.position(user)),
        }
    }

    /// Connections in the routing table.
    pub fn connection_count(&self) -> usize {
        self.inner.router.len()
    }

    /// Users with at least one connection in the routing table.
    pub fn user_count(&self) -> usize {
        self.inner.router.user_count()
    }
}
