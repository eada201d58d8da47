//! [`Hub`]: mints ids, owns the routing table, and drives each connection's
//! life.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::sync::Notify;

use crate::backplane::{Backplane, BackplaneError, NodeLink, Remote, SharedBackplane};
use crate::close::{CloseCause, CloseFrame};
use crate::config::{ConfigError, HubConfig};
use crate::connection::{Connecting, Connection};
use crate::emitter::{Accepted, Addressee, Refused, Routed};
use crate::event::{EncodeError, EncodedEvent, Event, EventName};
use crate::handle::{ConnectionHandle, SendError};
use crate::id::{ConnectionId, IdGenerator, UlidGenerator, UserId};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::router::Router;

/// The `gap` event: `{"type":"gap","payload":{"reason":…}}`.
fn gap_event(reason: &'static str) -> Option<EncodedEvent> {
    let name = EventName::new("gap").ok()?;
    Event::custom(name, serde_json::json!({ "reason": reason }))
        .encode()
        .ok()
}

/// Configuration and metrics every connection of a hub shares.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) config: HubConfig,
    pub(crate) metrics: Metrics,
    /// Connections minted and not yet terminal.
    pub(crate) live: AtomicUsize,
    /// Notified when `live` drops to zero.
    pub(crate) idle: Notify,
    /// Set by [`Hub::close_all`]: connections authenticated from then on
    /// are asked to close with this frame too.
    pub(crate) closing: parking_lot::Mutex<Option<CloseFrame>>,
    /// Upgrades in progress (admission control).
    pub(crate) upgrades: Arc<tokio::sync::Semaphore>,
}

impl Env {
    /// One live connection (or admitted place) fewer; wakes
    /// [`Hub::idle`] at zero.
    pub(crate) fn release_live(&self) {
        if self.live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn new(config: HubConfig) -> Self {
        Env {
            metrics: Metrics::default(),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: parking_lot::Mutex::new(None),
            upgrades: Arc::new(tokio::sync::Semaphore::new(
                config.max_upgrades_in_flight.max(1),
            )),
            config,
        }
    }
}

/// One place among the hub's live connections, taken at the decision:
/// counted in `live` from then on, given back on drop unless a connection
/// took it over.
pub(crate) struct Slot {
    env: Option<Arc<Env>>,
}

impl Slot {
    /// Takes a place, unless `max` live connections (or places) exist.
    pub(crate) fn take(env: &Arc<Env>, max: Option<usize>) -> Option<Slot> {
        env.live
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |live| match max {
                    Some(max) if live >= max => None,
                    _ => Some(live + 1),
                },
            )
            .ok()?;
        Some(Slot {
            env: Some(Arc::clone(env)),
        })
    }

    /// A connection takes the place over (its end gives it back).
    pub(crate) fn transfer(mut self) {
        self.env = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(env) = self.env.take() {
            env.release_live();
        }
    }
}

pub(crate) struct Inner {
    env: Arc<Env>,
    router: Router,
    ids: Arc<dyn IdGenerator>,
    backplane: Option<SharedBackplane>,
}

/// The outcome of [`Hub::send_to_user`]: how many of the user's connections
/// took the event, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "a Delivery says whether anyone got the event"]
pub struct Delivery {
    /// Ready connections that queued it for writing.
    pub queued: u32,
    /// Connections not ready yet that buffered it (flushed at Ready).
    pub buffered: u32,
    /// Connections that refused it (closing, full, too large for their
    /// buffer, or misaddressed); each refusal is also counted in the hub's
    /// metrics.
    pub refused: u32,
    /// Whether it was handed on to the other nodes.
    pub remote: Remote,
}

impl Delivery {
    /// Connections that accepted the event (queued or buffered).
    pub fn accepted(&self) -> u32 {
        self.queued + self.buffered
    }

    /// Whether the user had no connection on this node at all.
    pub fn is_miss(&self) -> bool {
        self.accepted() == 0 && self.refused == 0
    }
}

/// The outcome of [`Hub::send_to_users`], summed over the users (each
/// count saturates at `u32::MAX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "a FanOut says whether anyone got the event"]
#[non_exhaustive]
pub struct FanOut {
    /// Users addressed.
    pub users: u32,
    /// Users with no connection on this node (each also counted as a
    /// routing miss in the metrics).
    pub missed: u32,
    /// Ready connections that queued the event for writing.
    pub queued: u32,
    /// Connections not ready yet that buffered it (flushed at Ready).
    pub buffered: u32,
    /// Connections that refused it (closing, full, or misaddressed); each
    /// refusal is also counted in the hub's metrics.
    pub refused: u32,
    /// Users for whom the backplane could not take the event (their other
    /// nodes will not see it; counted as backplane failures). Always 0
    /// without a backplane.
    pub remote_failed: u32,
}

impl FanOut {
    /// Connections that accepted the event (queued or buffered).
    pub fn accepted(&self) -> u32 {
        self.queued.saturating_add(self.buffered)
    }
}

/// Builds a [`Hub`].
///
/// ```
/// use ws_lifecycle::{Hub, config::HubConfig, id::UlidGenerator};
///
/// # fn main() -> Result<(), ws_lifecycle::config::ConfigError> {
/// let hub = Hub::builder()
///     .config(HubConfig::default())
///     .id_generator(UlidGenerator::new())
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct HubBuilder {
    config: HubConfig,
    ids: Option<Arc<dyn IdGenerator>>,
    backplane: Option<SharedBackplane>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// Uses `config` (default: [`HubConfig::default`]).
    pub fn config(mut self, config: HubConfig) -> Self {
        self.config = config;
        self
    }

    /// Mints every id with `ids` (default: [`UlidGenerator`]).
    pub fn id_generator(mut self, ids: impl IdGenerator) -> Self {
        self.ids = Some(Arc::new(ids));
        self
    }

    /// Routes to and from other nodes through `backplane` (default: none,
    /// this node only).
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Some(Arc::new(backplane));
        self
    }

    /// Builds the hub (and starts its backplane, if any: call within a
    /// Tokio runtime then).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a setting is out of range
    /// ([`HubConfig::validate`]): caught here, once, rather than as a
    /// busy loop or a refused event later.
    pub fn build(self) -> Result<Hub, ConfigError> {
        self.config.validate()?;
        Ok(self.assemble())
    }

    /// Builds without validating: for configurations known to be valid
    /// (the default, checked by a test).
    fn assemble(self) -> Hub {
        let router = Router::new(self.config.router_shards);
        let inner = Arc::new(Inner {
            env: Arc::new(Env::new(self.config)),
            router,
            ids: self.ids.unwrap_or_else(|| Arc::new(UlidGenerator::new())),
            backplane: self.backplane,
        });
        if let Some(backplane) = &inner.backplane {
            backplane.start(NodeLink {
                inner: Arc::downgrade(&inner),
            });
        }
        Hub { inner }
    }
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
/// assert_eq!(frame, r#"{"v":1,"seq":1,"type":"hello","payload":"hi"}"#);
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

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Hub {
        Hub { inner }
    }

    pub(crate) fn env(&self) -> &Arc<Env> {
        &self.inner.env
    }

    pub(crate) fn backplane(&self) -> Option<&SharedBackplane> {
        self.inner.backplane.as_ref()
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.env.config
    }

    /// The id generator: mint thread, run and request ids here so every id
    /// comes from one source.
    pub fn ids(&self) -> &dyn IdGenerator {
        &*self.inner.ids
    }

    /// A point-in-time copy of the metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.env.metrics.snapshot()
    }

    /// Starts a connection: mints its id, first, before anything else.
    pub fn connect(&self) -> Connection<Connecting> {
        self.inner
            .env
            .live
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let id = self.inner.ids.mint_connection_id();
        Connection::new(self.clone(), id)
    }

    /// Starts a connection in a place [`upgrade::decide`](crate::upgrade::decide)
    /// already counted.
    pub(crate) fn connect_in(&self, slot: Slot) -> Connection<Connecting> {
        slot.transfer();
        let id = self.inner.ids.mint_connection_id();
        Connection::new(self.clone(), id)
    }

    /// Sends `event` to every connection of `user` on this node. The event
    /// is serialised once; each connection splices in its own sequence
    /// number. Never blocks: a full connection applies its overflow policy.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the event cannot be serialised (nothing was sent).
    ///
    /// With a [`Backplane`], the same bytes are also published for the
    /// other nodes; [`Delivery::remote`] says whether that worked (local
    /// delivery never depends on it).
    pub fn send_to_user(&self, user: &UserId, event: &Event) -> Result<Delivery, EncodeError> {
        let routed = Arc::new(Routed {
            to: Addressee::User(user.clone()),
            event: event.encode()?,
        });
        let mut delivery = self.deliver(user, &routed);
        if let Some(backplane) = &self.inner.backplane {
            let c = &self.inner.env.metrics.c;
            delivery.remote = match backplane.publish(user, &routed.event) {
                Ok(()) => {
                    Metrics::inc(&c.backplane_published);
                    Remote::Published
                }
                Err(error) => {
                    Metrics::inc(&c.backplane_failures);
                    Remote::Failed(error)
                }
            };
        }
        Ok(delivery)
    }

    /// Sends `event` to every connection of each of `users` on this node
    /// (and, with a [`Backplane`], to their connections on other nodes):
    /// a broadcast to a team or a room. The event is serialised once for
    /// all of them; each connection splices in its own sequence number.
    /// Never blocks, like [`send_to_user`](Hub::send_to_user).
    ///
    /// A user listed twice gets the event twice.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the event cannot be serialised (nothing was sent).
    ///
    /// ```
    /// # use ws_lifecycle::{Hub, event::{Event, EventName}, id::UserId};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::new();
    /// let team = [UserId::new("alice")?, UserId::new("bob")?];
    /// let event = Event::custom(EventName::new("standup")?, serde_json::json!("in 5 min"));
    /// let sent = hub.send_to_users(&team, &event)?;
    /// assert_eq!((sent.users, sent.missed), (2, 2)); // nobody is connected
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_to_users<'u>(
        &self,
        users: impl IntoIterator<Item = &'u UserId>,
        event: &Event,
    ) -> Result<FanOut, EncodeError> {
        let encoded = event.encode()?;
        let mut out = FanOut::default();
        for user in users {
            let routed = Arc::new(Routed {
                to: Addressee::User(user.clone()),
                event: encoded.clone(),
            });
            let d = self.deliver(user, &routed);
            out.users = out.users.saturating_add(1);
            out.missed = out.missed.saturating_add(u32::from(d.is_miss()));
            out.queued = out.queued.saturating_add(d.queued);
            out.buffered = out.buffered.saturating_add(d.buffered);
            out.refused = out.refused.saturating_add(d.refused);
            if let Some(backplane) = &self.inner.backplane {
                let c = &self.inner.env.metrics.c;
                if backplane.publish(user, &routed.event).is_ok() {
                    Metrics::inc(&c.backplane_published);
                } else {
                    Metrics::inc(&c.backplane_failures);
                    out.remote_failed = out.remote_failed.saturating_add(1);
                }
            }
        }
        Ok(out)
    }

    /// Delivers an already encoded event (from another node) locally.
    pub(crate) fn deliver_encoded(&self, user: &UserId, event: EncodedEvent) -> Delivery {
        Metrics::inc(&self.inner.env.metrics.c.backplane_received);
        let routed = Arc::new(Routed {
            to: Addressee::User(user.clone()),
            event,
        });
        self.deliver(user, &routed)
    }

    /// Asks this node's connections of `user` to close with `frame`.
    pub(crate) fn close_user_locally(&self, user: &UserId, frame: &CloseFrame) -> usize {
        let conns = self.inner.router.with_user(user, <[_]>::to_vec);
        conns
            .iter()
            .filter(|c| c.outbox.request_close(CloseCause::Requested(frame.clone())))
            .count()
    }

    /// Sends a `gap` event to every local connection.
    pub(crate) fn notify_gap(&self, reason: &'static str) -> usize {
        let Some(encoded) = gap_event(reason) else {
            return 0;
        };
        // Serialised once; each user's copy only differs in its addressee.
        self.local_users()
            .iter()
            .map(|user| self.tell_gap(user, &encoded))
            .sum()
    }

    /// Sends a `gap` event to `user`'s local connections.
    pub(crate) fn notify_gap_to(&self, user: &UserId, reason: &'static str) -> usize {
        gap_event(reason).map_or(0, |encoded| self.tell_gap(user, &encoded))
    }

    fn tell_gap(&self, user: &UserId, encoded: &EncodedEvent) -> usize {
        let routed = Arc::new(Routed {
            to: Addressee::User(user.clone()),
            event: encoded.clone(),
        });
        let told = self.deliver(user, &routed).accepted() as usize;
        Metrics::add(&self.inner.env.metrics.c.gaps_notified, told as u64);
        told
    }

    pub(crate) fn record_backplane_lost(&self, n: u64) {
        Metrics::add(&self.inner.env.metrics.c.backplane_lost, n);
    }

    pub(crate) fn record_backplane_rejected(&self) {
        Metrics::inc(&self.inner.env.metrics.c.backplane_rejected);
    }

    /// Users with a connection on this node.
    pub(crate) fn local_users(&self) -> Vec<UserId> {
        self.inner.router.users()
    }

    /// Closes `user`'s connections on every node with `frame` (revocation:
    /// for example 4403). Local ones are asked at once; the others through
    /// the backplane. Returns how many local connections were asked.
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the other nodes could not be told (the local
    /// connections are closing regardless).
    pub fn disconnect_user(
        &self,
        user: &UserId,
        frame: CloseFrame,
    ) -> Result<usize, BackplaneError> {
        let local = self.close_user_locally(user, &frame);
        if let Some(backplane) = &self.inner.backplane {
            backplane.disconnect_user(user, &frame)?;
        }
        Ok(local)
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

    /// Counts a new connection of `user` cluster-wide when that is on:
    /// `Some(true)` admitted (release it when it ends), `Some(false)`
    /// refused, `None` not counted (off, or no backplane). A backplane that
    /// cannot answer admits: availability over the limit, and the
    /// connection is still released when it ends.
    pub(crate) async fn admit_cluster(&self, user: &UserId) -> Option<bool> {
        let config = &self.inner.env.config;
        let backplane = self
            .inner
            .backplane
            .as_ref()
            .filter(|_| config.cluster_connection_limit)?;
        match backplane.admit(user, config.max_connections_per_user).await {
            Ok(admitted) => Some(admitted),
            Err(error) => {
                tracing::warn!(
                    code = error.code(),
                    "cluster connection limit not checked: admitting"
                );
                Some(true)
            }
        }
    }

    /// Releases a connection counted by [`Hub::admit_cluster`].
    pub(crate) fn release_cluster(&self, user: &UserId) {
        if let Some(backplane) = &self.inner.backplane {
            backplane.release(user);
        }
    }

    /// A user got their first connection on this node.
    pub(crate) fn user_joined(&self, user: &UserId) {
        if let Some(backplane) = &self.inner.backplane {
            backplane.user_joined(user);
        }
    }

    /// A user lost their last connection on this node.
    pub(crate) fn user_left(&self, user: &UserId) {
        if let Some(backplane) = &self.inner.backplane {
            backplane.user_left(user);
        }
    }

    pub(crate) fn deliver(&self, user: &UserId, routed: &Arc<Routed>) -> Delivery {
        let delivery = self.inner.router.with_user(user, |conns| {
            let mut d = Delivery::default();
            for conn in conns {
                match conn.push(routed) {
                    Ok((_, Accepted::Queued)) => d.queued += 1,
                    Ok((_, Accepted::Buffered)) => d.buffered += 1,
                    Err(
                        Refused::Closed | Refused::Full | Refused::Misaddressed | Refused::TooLarge,
                    ) => d.refused += 1,
                }
            }
            d
        });
        if delivery.is_miss() {
            Metrics::inc(&self.inner.env.metrics.c.routing_misses);
        }
        delivery
    }

    /// Sends `event` to one connection; returns its sequence number there.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when no such connection is routable (never
    /// authenticated, or closing), otherwise as [`ConnectionHandle::emit`].
    pub fn send_to_connection(
        &self,
        id: &ConnectionId,
        event: Event,
    ) -> Result<u64, SendError<Event>> {
        match self.inner.router.connection(id) {
            Some(shared) => ConnectionHandle { shared }.emit(event),
            None => {
                Metrics::inc(&self.inner.env.metrics.c.routing_misses);
                Err(SendError::Closed(event))
            }
        }
    }

    /// `user`'s routable connections on this node.
    pub fn connections_of(&self, user: &UserId) -> Vec<ConnectionHandle> {
        self.inner.router.with_user(user, |conns| {
            conns
                .iter()
                .map(|shared| ConnectionHandle {
                    shared: Arc::clone(shared),
                })
                .collect()
        })
    }

    /// A routable connection by id.
    pub fn connection(&self, id: &ConnectionId) -> Option<ConnectionHandle> {
        self.inner
            .router
            .connection(id)
            .map(|shared| ConnectionHandle { shared })
    }

    /// Whether `user` has a routable connection on this node.
    pub fn is_online(&self, user: &UserId) -> bool {
        self.inner.router.with_user(user, |conns| !conns.is_empty())
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
