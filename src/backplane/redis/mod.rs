//! [`RedisBackplane`]: multi-node routing and presence on Redis pub/sub.
//!
//! * **Channels.** One channel per user, `<prefix>:u:<hex of the user id>`,
//!   subscribed only while this node has a connection of that user: a node
//!   receives traffic for its own users, not for everyone's. Hex encoding is
//!   injective, so `alice`, `alice:x` and `Alice` never share a channel, and
//!   no pattern subscription is ever made on a user-derived name. Every node
//!   also listens on `<prefix>:ctl` for cluster-wide control.
//! * **Signed messages.** Every message carries an HMAC-SHA256 under the
//!   cluster's [`ClusterKey`], bound to its channel, and is checked before
//!   anything in it is used: a client of the Redis server without the key
//!   can neither inject events nor close connections (dropped messages are
//!   counted in [`MetricsSnapshot::backplane_rejected`](crate::metrics::MetricsSnapshot::backplane_rejected)).
//!   The format is in `wire.rs` and docs/scaling.md.
//! * **Order.** One publishing connection per node, and Redis keeps a
//!   connection's order: events from one node to one user arrive in publish
//!   order on every connection.
//! * **Streams** ([`RedisConfig::streams`], on by
//!   default). Redis keeps each user's stream, so offsets are the same on
//!   every node and a client resumes (`since=<epoch>:<offset>`) on any
//!   node. Keys per user: `<prefix>:s:<hex>`, a hash of `epoch`, `off`
//!   (the latest offset) and `renew` (see below), and `<prefix>:h:<hex>`,
//!   the history, a Redis stream with entry ids `<off>-0` holding the
//!   message as published and its publish time. Each run of queued events
//!   goes through **one Lua script** call (`EVALSHA`, loaded with
//!   `SCRIPT LOAD` at every connection of the publisher, `EVAL` when the
//!   server answers `NOSCRIPT`; see `append.rs`), pipelined like the plain
//!   `PUBLISH`es: atomically, per user, it creates a missing meta with a
//!   fresh epoch (deleting any history left of an older life) or advances
//!   `off` by the user's events of the call; per event it appends the
//!   signed message to the history (`XADD … MAXLEN ~`
//!   [`max_events_per_user`](crate::stream::HistoryConfig::max_events_per_user);
//!   skipped when the hub keeps no history) and publishes it with its
//!   `<epoch>:<offset>` (kind `S`). The history expires one
//!   [`window`](crate::stream::HistoryConfig::window) after the last event
//!   and the meta a day after it (or the window if longer, renewed by
//!   events and resume reads: a client still connected must not see its
//!   stream restart because nobody sent it anything for a while); the
//!   expiries are renewed only when the meta's `renew` time is due, so
//!   each key may live up to the renewal slack (a quarter of the window, at
//!   most a minute) longer. Every
//!   node, the sender included, delivers it from the subscription: the hub
//!   does not deliver stream events locally. A resume reads the meta and
//!   the missed entries in one script
//!   ([`Backplane::read_stream`](crate::backplane::Backplane::read_stream)),
//!   checks they are exactly the missing offsets and recent enough, and
//!   checks each one's signature.
//! * **Positioning.** Pub/sub is at most once (a subscriber that reconnects
//!   misses what was published meanwhile). So a node delivers a user's
//!   events only in offset order: an event past the next one (a *hole*)
//!   makes it read the missing offsets from the history (a regular
//!   connection, within the command timeout) and deliver them first; if the
//!   history cannot supply them all (trimmed, expired, Redis slow or down,
//!   an entry that fails its signature), the user's connections on that
//!   node get a `gap` (`stream_hole`) and delivery goes on from the event.
//! * **What the signature covers in stream mode.** The position is assigned
//!   inside Redis, after the node signed the message, so it is outside the
//!   MAC: someone with write access to the Redis server can reorder, drop
//!   or repeat authentic events of a user's stream (they could delete the
//!   keys anyway), and clients see holes (`gap`) or repeats at other
//!   offsets; they can never forge or alter an event, or move it to another
//!   user.
//! * **Ready means listening.** A connection becomes Ready only once Redis
//!   has confirmed this node's subscription for its user; the set of
//!   subscribed users follows the routing table's users exactly (the hub
//!   updates it under the table's lock), and a user leaves the subscribed
//!   set *before* its UNSUBSCRIBE is sent, so a connection that arrives
//!   meanwhile waits for the resubscription.
//! * **No silent loss.** An event this node accepted for other nodes and
//!   could not publish (the connection failed under it, the queue was
//!   full, Redis was down) is counted in
//!   [`MetricsSnapshot::backplane_lost`](crate::metrics::MetricsSnapshot::backplane_lost)
//!   or [`backplane_failures`](crate::metrics::MetricsSnapshot::backplane_failures),
//!   and its user's connections on the other nodes get a `gap` event as soon
//!   as this node can publish again. A node that lost its own subscription
//!   tells all its connections the same once it is back.
//! * **Presence** (see `presence.rs`): each node's heartbeat key is the
//!   lease of what it writes; per-user sets of nodes are pruned as they go
//!   stale and expire, so [`is_online`](crate::backplane::Backplane::is_online) is one round
//!   trip. Presence never gates readiness.
//! * **Cluster connection limit** (see `admission.rs`): per-node absolute
//!   counts, rewritten from the node's own table at every change and
//!   refresh, so a lost reply, a cancelled admission or a failed release
//!   heals within one refresh.
//! * **TLS.** A `rediss://` URL connects over TLS (feature `redis-tls`;
//!   [`RedisConfig::tls`] for a private CA or a client certificate).
//!   Without the feature, such a URL fails [`RedisBackplane::new`]; it never
//!   falls back to plaintext.
//! * **Failures.** Every command has a timeout (default 2 s), which also
//!   catches a Redis that hangs rather than dies. While Redis is unreachable,
//!   publishes fail fast with [`BackplaneError::Down`] (without streams,
//!   local delivery goes on), the tasks reconnect with capped backoff, and
//!   after reconnecting the node resubscribes every local user *before* it
//!   reports healthy. In stream mode, also: an event the publisher had
//!   accepted and lost (its connection failed, or Redis refused the script:
//!   out of memory, read-only) is a `gap` for the user's connections on
//!   every node, this one included (they would have got it back through
//!   Redis); a Redis that lost its data (restarted empty, keys deleted or
//!   expired) starts the stream again under a new epoch, which connections
//!   learn as a `gap` (`stream_restarted`) and resumes as `recovered:
//!   false`; a resume read that fails (Redis down) is not recovered.

mod admission;
mod append;
mod client;
mod config;
mod presence;
mod publisher;
mod seam;
mod stream;
mod subscriber;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::{Notify, mpsc, watch};

#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use self::client::TlsOptions;
pub use self::config::{ClusterKey, RedisConfig, RedisConfigError};
use self::publisher::Losses;
use self::subscriber::Subscriptions;
use self::wire::{Kind, Outgoing};
use super::{BackplaneError, NodeLink};
use crate::id::UserId;
use crate::stream::HistoryConfig;

/// The Redis [`Backplane`](crate::backplane::Backplane). See the [module docs](self).
///
/// ```no_run
/// use ws_lifecycle::Hub;
/// use ws_lifecycle::backplane::redis::{ClusterKey, RedisBackplane, RedisConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = ClusterKey::new(std::env::var("CLUSTER_KEY")?)?;
/// let backplane = RedisBackplane::new(RedisConfig::new("redis://127.0.0.1:6379/", key))?;
/// let hub = Hub::builder().backplane(backplane).build()?;
/// # Ok(()) }
/// ```
pub struct RedisBackplane {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// The publisher's end of the queue, until `start` hands it over.
    queue: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    queue_tx: mpsc::Sender<Outgoing>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.shared.node)
            .field("healthy", &self.shared.is_healthy())
            .finish_non_exhaustive()
    }
}

/// Counters of a [`RedisBackplane`], beside the hub's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Events accepted for other nodes and lost when the publishing
    /// connection failed, or (stream mode) refused by Redis: out of memory,
    /// read-only (their users were sent a `gap`; also in the hub's
    /// [`backplane_lost`](crate::metrics::MetricsSnapshot::backplane_lost)).
    pub lost: u64,
    /// `gap` messages published for users (or, once each, for everyone)
    /// whose events the other nodes missed.
    pub gaps_published: u64,
    /// Received messages dropped: bad signature or malformed (also, in
    /// stream mode, history entries that fail the same checks, and `E`
    /// messages from a node without streams).
    pub rejected: u64,
    /// Presence refreshes that did not land (Redis down, read-only, out of
    /// memory).
    pub presence_failures: u64,
}

#[derive(Debug, Default)]
struct Stats {
    lost: AtomicU64,
    gaps_published: AtomicU64,
    rejected: AtomicU64,
    presence_failures: AtomicU64,
}

struct Shared {
    node: String,
    client: Client,
    config: RedisConfig,
    signer: wire::Signer,
    /// The users this node has, and those it is subscribed for.
    subs: Mutex<Subscriptions>,
    /// Wakes the subscriber and presence tasks when `subs.desired` or the
    /// connection counts change.
    subscriber_wake: Notify,
    presence_wake: Notify,
    /// Bumped after every change of `subs.subscribed` or of the
    /// subscriber's health, for [`Backplane::ready_for`](crate::backplane::Backplane::ready_for).
    generation: watch::Sender<u64>,
    /// Whether the publishing connection is up.
    publisher_up: watch::Sender<bool>,
    subscriber_up: AtomicBool,
    /// Counts the subscriber's lost connections: a change tells the
    /// publisher to reconnect too (its connection, idle or not, may be to a
    /// server that no longer exists). A counter, not a permit, so a stale
    /// signal never resets a fresh connection.
    subscriber_losses: watch::Sender<u64>,
    /// `publisher_up && subscriber_up`, for [`RedisBackplane::health`].
    health: watch::Sender<bool>,
    /// Whether the last presence refresh landed.
    presence_up: watch::Sender<bool>,
    /// The users whose presence claim the last refresh wrote (changes bump
    /// `generation`).
    claimed: Mutex<std::collections::HashSet<UserId>>,
    /// A connection for presence queries, once one is up.
    queries: Mutex<Option<MultiplexedConnection>>,
    losses: Losses,
    /// Bytes of the messages in the publish queue.
    queued_bytes: std::sync::atomic::AtomicUsize,
    admission: admission::Admission,
    stats: Stats,
    /// The hub's link and history settings, once it started the backplane.
    started: OnceLock<(NodeLink, HistoryConfig)>,
}

impl Shared {
    fn is_healthy(&self) -> bool {
        *self.publisher_up.borrow() && self.subscriber_up.load(Ordering::Acquire)
    }

    /// Recomputes [`Shared::health`] after a connection came up or went down.
    fn update_health(&self) {
        let healthy = self.is_healthy();
        self.health
            .send_if_modified(|h| std::mem::replace(h, healthy) != healthy);
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.command_timeout))
            .set_response_timeout(Some(self.config.command_timeout))
    }

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await
    }

    /// The presence task's connection, or a fresh one while it has none.
    async fn query_connection(&self) -> Result<MultiplexedConnection, BackplaneError> {
        let existing = self.queries.lock().clone();
        match existing {
            Some(conn) => Ok(conn),
            None => self.within(self.connect()).await,
        }
    }

    async fn within<T>(
        &self,
        fut: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, BackplaneError> {
        match tokio::time::timeout(self.config.command_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(BackplaneError::Down),
        }
    }

    /// The hub's history settings (the defaults before it started).
    fn history(&self) -> HistoryConfig {
        self.started.get().map(|(_, h)| *h).unwrap_or_default()
    }

    /// The hub's link, once it started the backplane.
    fn link(&self) -> Option<&NodeLink> {
        self.started.get().map(|(link, _)| link)
    }

    /// `<prefix>:<kind>:<hex of the user id>`, built without `format!`:
    /// the publisher builds two per user and call.
    fn key(&self, kind: &str, user: &UserId) -> String {
        let prefix = &self.config.prefix;
        let user = user.as_str().as_bytes();
        let mut key = String::with_capacity(prefix.len() + kind.len() + 2 + user.len() * 2);
        key.push_str(prefix);
        key.push(':');
        key.push_str(kind);
        key.push(':');
        wire::push_hex(&mut key, user);
        key
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBackplane {
    /// A backplane for the server in `config`. Nothing connects until the
    /// hub is built (within a Tokio runtime); until then, and whenever Redis
    /// is unreachable, remote operations fail fast.
    ///
    /// # Errors
    ///
    /// [`RedisConfigError`] when the URL does not parse, asks for TLS this
    /// build lacks, or a setting is out of range.
    pub fn new(config: RedisConfig) -> Result<Self, RedisConfigError> {
        config.validate()?;
        let client = client::open(&config).map_err(|e| RedisConfigError::Unusable {
            url: config::redacted(&config.url),
            reason: e.to_string(),
        })?;
        let (queue_tx, queue_rx) = mpsc::channel(config.publish_queue);
        Ok(RedisBackplane {
            shared: Arc::new(Shared {
                node: ulid::Ulid::generate().to_string(),
                client,
                signer: wire::Signer::new(config.cluster_key.as_bytes()),
                config,
                subs: Mutex::new(Subscriptions::default()),
                subscriber_wake: Notify::new(),
                presence_wake: Notify::new(),
                generation: watch::Sender::new(0),
                publisher_up: watch::Sender::new(false),
                subscriber_up: AtomicBool::new(false),
                subscriber_losses: watch::Sender::new(0),
                health: watch::Sender::new(false),
                presence_up: watch::Sender::new(false),
                claimed: Mutex::new(std::collections::HashSet::new()),
                queries: Mutex::new(None),
                losses: Losses::default(),
                queued_bytes: std::sync::atomic::AtomicUsize::new(0),
                admission: admission::Admission::default(),
                stats: Stats::default(),
                started: OnceLock::new(),
            }),
            stop: watch::Sender::new(false),
            queue: Mutex::new(Some(queue_rx)),
            queue_tx,
        })
    }

    /// This node's id, carried on every message it publishes.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// Whether both the publishing and the subscribing connection are up
    /// (and, after a reconnect, every local user is resubscribed): whether
    /// delivery across nodes works.
    pub fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }

    /// Watches [`is_healthy`](RedisBackplane::is_healthy), for readiness
    /// probes and alerts: changes as Redis goes away and comes back.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.shared.health.subscribe()
    }

    /// Whether this node's last presence refresh landed. `false` while
    /// Redis refuses writes (a read-only replica, out of memory) or is
    /// unreachable: presence answers and the cluster connection limit are
    /// then stale, while delivery (see [`health`](RedisBackplane::health))
    /// may still work.
    pub fn presence_ok(&self) -> bool {
        *self.shared.presence_up.borrow()
    }

    /// Watches [`presence_ok`](RedisBackplane::presence_ok), for alerts.
    pub fn presence(&self) -> watch::Receiver<bool> {
        self.shared.presence_up.subscribe()
    }

    /// The backplane's own counters.
    pub fn stats(&self) -> RedisStats {
        let s = &self.shared.stats;
        RedisStats {
            lost: s.lost.load(Ordering::Relaxed),
            gaps_published: s.gaps_published.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            presence_failures: s.presence_failures.load(Ordering::Relaxed),
        }
    }

    /// Resolves once this node's subscriptions agree with its users (every
    /// user with a local connection subscribed, no other) and the
    /// subscriber is up: for tests and for a readiness probe that wants the
    /// backplane caught up, not just connected.
    pub async fn settled(&self) {
        let shared = &self.shared;
        let mut generation = shared.generation.subscribe();
        loop {
            if shared.subscriber_up.load(Ordering::Acquire) {
                let subs = shared.subs.lock();
                if subs.desired == subs.subscribed {
                    return;
                }
            }
            if generation.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves once this node's presence claim for `user` is written, so
    /// [`is_online`](crate::backplane::Backplane::is_online) on any node sees it. Presence
    /// follows a connection within a round trip but does not gate its
    /// Ready; this is for tests and for code that must know.
    pub async fn claimed(&self, user: &UserId) {
        let shared = &self.shared;
        let mut generation = shared.generation.subscribe();
        while !shared.claimed.lock().contains(user) {
            if generation.changed().await.is_err() {
                return;
            }
        }
    }

    /// The users this node is subscribed for right now (confirmed by Redis).
    pub fn subscribed_users(&self) -> Vec<UserId> {
        self.shared.subs.lock().subscribed.iter().cloned().collect()
    }

    /// How many connections `user` has across the live nodes, as the
    /// cluster connection limit counts them.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Down`] when Redis cannot be asked.
    pub async fn cluster_connections(&self, user: &UserId) -> Result<u64, BackplaneError> {
        let shared = &self.shared;
        let mut conn = shared.query_connection().await?;
        shared
            .within(
                redis::cmd("EVAL")
                    .arg(admission::COUNT)
                    .arg(1)
                    .arg(shared.key("count", user))
                    .arg(&shared.config.prefix)
                    .query_async(&mut conn),
            )
            .await
    }

    /// Signs a message for `user`'s channel (its body written by `body`)
    /// and queues it for the publisher.
    fn enqueue(
        &self,
        user: &UserId,
        kind: Kind,
        body_len: usize,
        body: impl FnOnce(&mut String),
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        let result = if shared.is_healthy() {
            let channel = wire::user_channel(&shared.config.prefix, user);
            let (payload, body_at) =
                shared
                    .signer
                    .seal_at(&channel, &shared.node, kind, body_len, body);
            let size = payload.len();
            let before = shared.queued_bytes.fetch_add(size, Ordering::AcqRel);
            if before.saturating_add(size) > shared.config.publish_queue_bytes {
                shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                Err(BackplaneError::Overloaded)
            } else {
                let item = Outgoing {
                    user: user.clone(),
                    kind,
                    channel,
                    payload,
                    body_at,
                };
                match self.queue_tx.try_send(item) {
                    Ok(()) => Ok(()),
                    Err(refused) => {
                        shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                        Err(match refused {
                            mpsc::error::TrySendError::Full(_) => BackplaneError::Overloaded,
                            mpsc::error::TrySendError::Closed(_) => BackplaneError::Down,
                        })
                    }
                }
            }
        } else {
            Err(BackplaneError::Down)
        };
        if result.is_err() && kind.is_event() {
            // The caller hears of it; the user's connections on other nodes
            // hear of it as a `gap` once this node can publish again.
            self.shared
                .losses
                .record(user, self.shared.config.publish_queue);
        }
        result
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        // Stops the tasks: this node's presence then expires on its own.
        let _ = self.stop.send(true);
    }
}

/// Waits before the next reconnection attempt (doubling, capped), unless
/// asked to stop. Returns `false` when stopping.
async fn back_off(backoff: &mut Duration, max: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(max);
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        _ = stop.changed() => false,
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
