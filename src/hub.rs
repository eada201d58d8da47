//! [`Hub`]: mints ids, owns the routing table, and drives each connection's
//! life.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use crate::backplane::{Backplane, BackplaneError, NodeLink, Remote, SharedBackplane};
use crate::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use crate::config::HubConfig;
use crate::connection::{Accepted as AcceptedStage, Authenticated, Connecting, Connection};
use crate::emitter::{Accepted, Addressee, Refused, Routed};
use crate::event::{EncodeError, EncodedEvent, Event, EventName};
use crate::handle::{ConnectionHandle, SendError};
use crate::handler::{CloseReport, Handler, Inbound};
use crate::id::{ConnectionId, IdGenerator, UlidGenerator, UserId};
use crate::limits::Bucket;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::router::Router;
use crate::transport::{Message, Transport, TransportError, TransportStream};

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
    pub(crate) upgrades: tokio::sync::Semaphore,
}

impl Env {
    pub(crate) fn new(config: HubConfig) -> Self {
        Env {
            metrics: Metrics::default(),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: parking_lot::Mutex::new(None),
            upgrades: tokio::sync::Semaphore::new(config.max_upgrades_in_flight.max(1)),
            config,
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
    /// Connections that refused it (closing, full, or misaddressed); each
    /// refusal is also counted in the hub's metrics.
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

/// How [`Hub::shutdown`] went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections asked to close.
    pub connections: usize,
    /// Of those, the ones that closed within the deadline.
    pub closed_cleanly: usize,
    /// The ones force-closed after it.
    pub forced: usize,
    /// Events queued but never written (dropped as connections closed).
    pub undelivered: u64,
}

/// Builds a [`Hub`].
///
/// ```
/// use ws_lifecycle::{Hub, config::HubConfig, id::UlidGenerator};
///
/// let hub = Hub::builder()
///     .config(HubConfig::default())
///     .id_generator(UlidGenerator::new())
///     .build();
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
    pub fn build(self) -> Hub {
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
        HubBuilder::default().build()
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
        let Ok(name) = EventName::new("gap") else {
            return 0;
        };
        let event = Event::custom(name, serde_json::json!({ "reason": reason }));
        let mut told = 0;
        for user in self.local_users() {
            if let Ok(encoded) = event.encode() {
                let routed = Arc::new(Routed {
                    to: Addressee::User(user.clone()),
                    event: encoded,
                });
                told += self.deliver(&user, &routed).accepted() as usize;
            }
        }
        told
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
    /// `Some(true)` counted, `Some(false)` refused, `None` not counted (off,
    /// no backplane, or the backplane could not answer).
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
                None
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
                    Err(Refused::Closed | Refused::Full | Refused::Misaddressed) => d.refused += 1,
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

    /// Asks every routable connection to close with `frame` after writing
    /// what it has queued (as [`ConnectionHandle::close`]); returns how many
    /// were asked. For example `1001 going_away` on Ctrl-C, then
    /// [`idle`](Hub::idle).
    ///
    /// From then on the hub is closing: a connection authenticated later
    /// (say, mid-handshake when this was called) is closed with `frame` as
    /// soon as it is bound, so [`idle`](Hub::idle) is reached.
    pub fn close_all(&self, frame: CloseFrame) -> usize {
        // The latch first, the scan second (see `Connection::authenticate`).
        *self.inner.env.closing.lock() = Some(frame.clone());
        let conns = self.inner.router.all();
        let asked = conns
            .iter()
            .filter(|c| c.outbox.request_close(CloseCause::Requested(frame.clone())))
            .count();
        tracing::info!(asked, code = %frame.code, "closing every connection");
        asked
    }

    /// Counts an upgrade refused with 503, and returns the refusal.
    pub(crate) fn count_busy(&self) -> crate::upgrade::Refusal {
        Metrics::inc(&self.inner.env.metrics.c.upgrades_refused);
        crate::upgrade::Refusal::busy()
    }

    /// Shuts the hub down gracefully, within `deadline`:
    ///
    /// 1. stops accepting: upgrades get 503, and a connection bound from now
    ///    on is closed at once;
    /// 2. asks every connection to close with 1012 (restart) after writing
    ///    what it has queued, in batches of
    ///    [`shutdown_batch`](crate::config::HubConfig::shutdown_batch) spread
    ///    over at most half the deadline, so a fleet of clients does not
    ///    reconnect in one spike;
    /// 3. waits for them, up to the deadline;
    /// 4. force-closes the rest (1012 without waiting for their queues) and
    ///    waits for their writers, at most
    ///    [`write_timeout`](crate::config::HubConfig::write_timeout) more.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the pacing and the waiting; connections
    /// already asked to close still close.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let env = &self.inner.env;
        let started = Instant::now();
        let restart = CloseFrame::new(CloseCode::RESTART, CloseReason::from_static("restart"));
        *env.closing.lock() = Some(restart.clone());
        let dropped_before = env.metrics.snapshot().dropped_on_close;
        let conns = self.inner.router.all();
        let batch = env.config.shutdown_batch.max(1);
        let batches = conns.len().div_ceil(batch);
        let pause = if batches > 1 {
            (deadline / 2 / u32::try_from(batches - 1).unwrap_or(u32::MAX))
                .min(env.config.shutdown_batch_interval)
        } else {
            Duration::ZERO
        };
        tracing::info!(connections = conns.len(), batches, "shutting down");
        for (i, chunk) in conns.chunks(batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for conn in chunk {
                conn.outbox
                    .request_close(CloseCause::Requested(restart.clone()));
            }
        }
        let clean = tokio::time::timeout_at(started + deadline, self.idle())
            .await
            .is_ok();
        let mut forced = 0;
        if !clean {
            for conn in &conns {
                if !conn.state.state().is_terminal() {
                    conn.outbox.force_close();
                    forced += 1;
                }
            }
            let grace = env.config.write_timeout + env.config.write_timeout;
            let _ = tokio::time::timeout(grace, self.idle()).await;
        }
        let report = ShutdownReport {
            connections: conns.len(),
            closed_cleanly: conns.len() - forced,
            forced,
            undelivered: env.metrics.snapshot().dropped_on_close - dropped_before,
        };
        tracing::info!(?report, "shut down");
        report
    }

    /// Resolves once no connection of this hub is alive (every one minted
    /// has reached `Closed` or `Failed`), so their close frames have been
    /// written or given up on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn idle(&self) {
        let env = &self.inner.env;
        loop {
            let notified = env.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if env.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Runs a whole connection over `transport` for a user authenticated at
    /// the upgrade (the adapters' path): mint the id, accept, bind the user
    /// (entering the routing table), run [`Handler::on_ready`], become Ready
    /// and flush what was buffered, dispatch inbound messages until the
    /// connection ends, clean up.
    ///
    /// Returns how it ended. Every exit, including this future being
    /// dropped, removes the connection from the routing table.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the connection (`Failed`, cause `dropped`)
    /// and removes it from the routing table; queued events are counted as
    /// dropped.
    pub async fn serve<T: Transport, H: Handler>(
        &self,
        transport: T,
        auth: impl Into<AuthOutcome>,
        handler: &H,
    ) -> CloseReport {
        let conn = self.connect().accept(transport);
        match conn.authenticate(auth.into()).await {
            Ok(conn) => self.run(conn, handler).await,
            Err(report) => report,
        }
    }

    /// Like [`serve`](Hub::serve), but authenticates after the transport is
    /// open, with `authenticator` reading `request` (and, when it allows,
    /// the first message: `{"type":"auth","token":"…"}`), all within
    /// [`HubConfig::auth_timeout`]. A failure closes the connection with
    /// [`AuthError::close_frame`] (4401, 4403, 4408 …) and counts it; the
    /// connection never enters the routing table.
    ///
    /// This is the path for clients that must learn *why* they were refused
    /// (a browser cannot read the HTTP status of a refused upgrade).
    pub async fn serve_with_auth<T: Transport, A: Authenticator, H: Handler>(
        &self,
        transport: T,
        request: &HandshakeRequest,
        authenticator: &A,
        handler: &H,
    ) -> CloseReport {
        let mut conn = self.connect().accept(transport);
        let config = &self.inner.env.config;
        let deadline = tokio::time::Instant::now() + config.auth_timeout;
        let span = conn.span().clone();
        let authenticated = async {
            match authenticator.authenticate(request).await {
                Err(failure)
                    if failure.error == AuthError::TokenMissing
                        && authenticator.first_message_auth() =>
                {
                    let token = first_message_token(&mut conn, config.max_message_size).await?;
                    authenticator.authenticate_message(request, &token).await
                }
                other => other,
            }
        };
        let outcome = tokio::time::timeout_at(deadline, authenticated.instrument(span))
            .await
            .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
        match outcome {
            Ok(outcome) => match conn.authenticate(outcome).await {
                Ok(conn) => self.run(conn, handler).await,
                Err(report) => report,
            },
            Err(failure) => {
                tracing::info!(parent: conn.span(), code = failure.error.code(), "authentication failed");
                conn.reject(&failure.error).await
            }
        }
    }

    /// Drives an authenticated connection to its end: on-ready hook (bounded
    /// by `services_ready_timeout`), Ready, the reader loop, close.
    pub async fn run<T: Transport, H: Handler>(
        &self,
        conn: Connection<Authenticated<T>>,
        handler: &H,
    ) -> CloseReport {
        let span = conn.span().clone();
        self.run_inner(conn, handler).instrument(span).await
    }

    async fn run_inner<T: Transport, H: Handler>(
        &self,
        conn: Connection<Authenticated<T>>,
        handler: &H,
    ) -> CloseReport {
        let config = &self.inner.env.config;
        let handle = conn.handle();
        let hook = AssertUnwindSafe(handler.on_ready(&handle)).catch_unwind();
        let early = match tokio::time::timeout(config.services_ready_timeout, hook).await {
            Err(_) => Some(CloseCause::NotReadyInTime),
            Ok(Err(_)) => Some(CloseCause::HandlerPanicked),
            Ok(Ok(Err(frame))) => Some(CloseCause::Requested(frame)),
            // An orderly close asked for meanwhile (`ConnectionHandle::close`)
            // still becomes Ready, so what was buffered is written before the
            // close frame; any other cause ends the connection here.
            Ok(Ok(Ok(()))) => handle.shared.outbox.close_cause().filter(|c| !c.drains()),
        };
        if let Some(cause) = early {
            let report = conn.close(cause).await;
            notify_close(handler, &handle, &report);
            return report;
        }
        // Every event published after Ready must reach this connection, so
        // the backplane listens for its user first. A backplane that is down
        // answers at once: local delivery goes on, and the connection gets a
        // `gap` event once the backplane is back.
        if let Some(backplane) = &self.inner.backplane {
            let subscribed = tokio::time::timeout(
                config.services_ready_timeout,
                backplane.ready_for(handle.user()),
            )
            .await;
            if !matches!(subscribed, Ok(Ok(()))) {
                tracing::warn!(
                    "backplane not listening for this user yet: remote events may be missed"
                );
            }
        }
        let mut conn = conn.services_ready().ready();
        let mut expiry = conn.take_expiry();
        let mut bucket = config.inbound_rate.map(Bucket::new);
        // Heartbeat: a ping after `ping_interval` of silence, then the peer
        // has `pong_timeout` to show any sign of life.
        let mut next_ping = Instant::now() + config.ping_interval;
        let mut pong_due: Option<Instant> = None;
        let cause = loop {
            let deadline = expiry
                .as_ref()
                .and_then(|e| e.deadline(config.reauth_ahead, config.expiry_grace));
            let next = tokio::select! {
                biased;
                cause = handle.shared.outbox.closed() => break cause,
                () = until(deadline) => {
                    match expiry.as_mut().and_then(|e| e.on_deadline(&handle)) {
                        Some(cause) => break cause,
                        None => continue,
                    }
                }
                () = tokio::time::sleep_until(pong_due.unwrap_or(next_ping)) => {
                    if pong_due.is_some() {
                        break CloseCause::HeartbeatTimeout;
                    }
                    handle.shared.outbox.request_ping();
                    pong_due = Some(Instant::now() + config.pong_timeout);
                    continue;
                }
                next = conn.stage.stream.next() => next,
            };
            // Anything from the peer is a sign of life.
            pong_due = None;
            next_ping = Instant::now() + config.ping_interval;
            let inbound = match next {
                None => break CloseCause::PeerGone,
                Some(Err(TransportError::MessageTooBig { .. })) => break CloseCause::MessageTooBig,
                Some(Err(TransportError::Protocol(_))) => break CloseCause::ProtocolError,
                Some(Err(_)) => break CloseCause::TransportError,
                Some(Ok(Message::Close(frame))) => break CloseCause::PeerClosed(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) if message.len() > config.max_message_size => {
                    break CloseCause::MessageTooBig;
                }
                Some(Ok(_)) if bucket.as_mut().is_some_and(|b| !b.take()) => {
                    break CloseCause::RateLimited;
                }
                Some(Ok(Message::Text(text))) => {
                    let metrics = &self.inner.env.metrics;
                    match expiry
                        .as_mut()
                        .and_then(|e| e.on_message(&text, &handle, metrics))
                    {
                        Some(Ok(())) => continue,
                        Some(Err(cause)) => break cause,
                        None => Inbound::Text(text),
                    }
                }
                Some(Ok(Message::Binary(bytes))) => Inbound::Binary(bytes),
            };
            match AssertUnwindSafe(handler.on_message(&handle, inbound))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(frame)) => break CloseCause::Requested(frame),
                Err(_) => break CloseCause::HandlerPanicked,
            }
        };
        let report = conn.close(cause).await;
        notify_close(handler, &handle, &report);
        report
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn notify_close<H: Handler>(handler: &H, handle: &ConnectionHandle, report: &CloseReport) {
    let closed = std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_close(handle, report)));
    if closed.is_err() {
        tracing::error!("on_close callback panicked");
    }
}

/// Reads the first data message of a connection that authenticates in-band
/// and returns its token. Pings and pongs are skipped; anything else fails.
async fn first_message_token<T: Transport>(
    conn: &mut Connection<AcceptedStage<T>>,
    max_len: usize,
) -> Result<String, AuthFailure> {
    let malformed = || AuthError::ProtocolInvalid("the first message is not an auth message");
    loop {
        match conn.stage.stream.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(text))) if text.len() <= max_len => {
                return crate::reauth::auth_token(&text).ok_or_else(|| malformed().into());
            }
            Some(Ok(_)) => return Err(malformed().into()),
            None | Some(Err(_)) => return Err(AuthError::TokenMissing.into()),
        }
    }
}
