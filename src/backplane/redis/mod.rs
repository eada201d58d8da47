//! [`RedisBackplane`]: multi-node routing and presence on Redis pub/sub.
//!
//! * **Channels.** One channel per user, `<prefix>:u:<hex of the user id>`,
//!   subscribed only while this node has a connection of that user: a node
//!   receives traffic for its own users, not for everyone's. Hex encoding is
//!   injective, so `alice`, `alice:x` and `Alice` never share a channel, and
//!   no pattern subscription is ever made on a user-derived name.
//! * **Messages.** `v1\n<node id>\nE\n<event>` (the event serialised once by
//!   the sender, forwarded as is) or `v1\n<node id>\nD\n<code>\n<reason>`
//!   (close that user's connections). A node skips its own messages: it has
//!   delivered locally already.
//! * **Order.** One publishing connection per node, and Redis keeps a
//!   connection's order: events from one node to one user arrive in publish
//!   order on every connection.
//! * **Presence.** Each node refreshes `<prefix>:node:<id>` (expiring after
//!   [`presence_ttl`](RedisConfig::presence_ttl), default 30 s) and keeps,
//!   per user, the set of nodes that have them. A user is online while some
//!   node in their set is alive, so a crashed node's users disappear within
//!   the TTL.
//! * **Failures.** Every command has a timeout (default 2 s), which also
//!   catches a Redis that hangs rather than dies. While Redis is unreachable,
//!   publishes fail fast with [`BackplaneError::Down`] (local delivery goes
//!   on), the tasks reconnect with capped backoff, and after reconnecting the
//!   node resubscribes every local user *before* it reports healthy, then
//!   sends every local connection a `gap` event: it may have missed remote
//!   events, and must not trust a silent hole.
//! * **TLS.** A `rediss://` URL connects over TLS (feature `redis-tls`;
//!   `RedisConfig::tls` for a private CA or a client certificate). Without
//!   the feature, such a URL fails [`RedisBackplane::new`].

mod client;

#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use client::TlsOptions;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::{Notify, mpsc, watch};

use super::{Backplane, BackplaneError, BoxFuture, NodeLink};
use crate::close::{CloseCode, CloseFrame, CloseReason};
use crate::event::EncodedEvent;
use crate::id::UserId;

/// Settings of a [`RedisBackplane`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server, for example `redis://127.0.0.1:6379/`.
    pub url: String,
    /// Prefix of every key and channel, so several deployments can share a
    /// server. Default: `wsl`.
    pub prefix: String,
    /// Longest any Redis command (or connection attempt) may take before
    /// Redis counts as down. Default: 2 s.
    pub command_timeout: Duration,
    /// How long a node's presence outlives its last refresh: a crashed
    /// node's users are offline after at most this. Default: 30 s.
    pub presence_ttl: Duration,
    /// Events waiting for the publishing connection; past it, publishes
    /// fail with [`BackplaneError::Overloaded`]. Default: 4,096.
    pub publish_queue: usize,
    /// Longest wait between reconnection attempts. Default: 5 s.
    pub max_backoff: Duration,
    /// TLS settings for a `rediss://` URL: a CA to trust instead of the
    /// system's roots, a client certificate. Default: `None` (the system's
    /// roots, no client certificate). Set with a `redis://` URL, it fails
    /// [`RedisBackplane::new`] rather than being ignored.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub tls: Option<TlsOptions>,
}

impl RedisConfig {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "wsl".into(),
            command_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(30),
            publish_queue: 4096,
            max_backoff: Duration::from_secs(5),
            #[cfg(feature = "redis-tls")]
            tls: None,
        }
    }
}

/// A [`RedisConfig`] that cannot work: a URL that does not parse, a
/// `rediss://` URL without feature `redis-tls`, or TLS settings that cannot
/// (a malformed certificate or key, or set with a `redis://` URL).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RedisConfigError(#[from] client::OpenError);

/// The Redis [`Backplane`]. See the [module docs](self).
///
/// ```no_run
/// use ws_lifecycle::Hub;
/// use ws_lifecycle::backplane::redis::{RedisBackplane, RedisConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backplane = RedisBackplane::new(RedisConfig::new("redis://127.0.0.1:6379/"))?;
/// let hub = Hub::builder().backplane(backplane).build();
/// # Ok(()) }
/// ```
pub struct RedisBackplane {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// The publisher's end of the queue, until `start` hands it over.
    queue: Mutex<Option<mpsc::Receiver<(String, String)>>>,
    queue_tx: mpsc::Sender<(String, String)>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.shared.node)
            .field("healthy", &self.shared.is_healthy())
            .finish_non_exhaustive()
    }
}

struct Shared {
    node: String,
    client: Client,
    config: RedisConfig,
    /// Users this node has: what the subscriber and presence tasks follow.
    desired: Mutex<HashSet<UserId>>,
    /// Wakes the subscriber and presence tasks when `desired` changes.
    subscriber_wake: Notify,
    presence_wake: Notify,
    /// Users whose channel is subscribed right now.
    subscribed: Mutex<HashSet<UserId>>,
    /// Users whose presence is written right now.
    present: Mutex<HashSet<UserId>>,
    /// Bumped after every change of `subscribed`.
    generation: watch::Sender<u64>,
    /// Whether the publishing connection is up (a watch, so the subscriber
    /// can wait for it before it reports the node healthy again).
    publisher_up: watch::Sender<bool>,
    subscriber_up: AtomicBool,
    /// `publisher_up && subscriber_up`, for [`RedisBackplane::health`].
    health: watch::Sender<bool>,
    /// Tells the publisher to drop its connection and reconnect: the
    /// subscriber saw Redis go away, so the publishing connection, idle or
    /// not, is to a server that no longer exists.
    publisher_reset: Notify,
    /// A connection for presence queries, once one is up.
    queries: Mutex<Option<MultiplexedConnection>>,
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

    fn channel(&self, user: &UserId) -> String {
        format!("{}:u:{}", self.config.prefix, hex(user.as_str()))
    }

    fn user_of(&self, channel: &str) -> Option<UserId> {
        let hex_user = channel
            .strip_prefix(&self.config.prefix)?
            .strip_prefix(":u:")?;
        UserId::new(unhex(hex_user)?).ok()
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
}

fn hex(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes()
        .fold(String::with_capacity(text.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RedisBackplane {
    /// A backplane for the server in `config`. Nothing connects until the
    /// hub is built (within a Tokio runtime); until then, and whenever Redis
    /// is unreachable, remote operations fail fast.
    ///
    /// # Errors
    ///
    /// [`RedisConfigError`] when the URL does not parse, is `rediss://` in
    /// a build without feature `redis-tls`, or the TLS settings are unusable.
    pub fn new(config: RedisConfig) -> Result<Self, RedisConfigError> {
        let client = client::open(&config)?;
        let (queue_tx, queue_rx) = mpsc::channel(config.publish_queue.max(1));
        Ok(RedisBackplane {
            shared: Arc::new(Shared {
                node: ulid::Ulid::generate().to_string(),
                client,
                config,
                desired: Mutex::new(HashSet::new()),
                subscriber_wake: Notify::new(),
                presence_wake: Notify::new(),
                subscribed: Mutex::new(HashSet::new()),
                present: Mutex::new(HashSet::new()),
                generation: watch::Sender::new(0),
                publisher_up: watch::Sender::new(false),
                subscriber_up: AtomicBool::new(false),
                health: watch::Sender::new(false),
                publisher_reset: Notify::new(),
                queries: Mutex::new(None),
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
    /// (and, after a reconnect, every local user is resubscribed).
    pub fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }

    /// Watches [`is_healthy`](RedisBackplane::is_healthy), for readiness
    /// probes and alerts: changes as Redis goes away and comes back.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.shared.health.subscribe()
    }

    fn enqueue(&self, channel: String, payload: String) -> Result<(), BackplaneError> {
        if !self.shared.is_healthy() {
            return Err(BackplaneError::Down);
        }
        match self.queue_tx.try_send((channel, payload)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(BackplaneError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BackplaneError::Down),
        }
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        // Stops the tasks: this node's presence then expires on its own.
        let _ = self.stop.send(true);
    }
}

impl Backplane for RedisBackplane {
    fn start(&self, node: NodeLink) {
        let Some(queue) = self.queue.lock().take() else {
            return;
        };
        let shared = &self.shared;
        tokio::spawn(publisher(Arc::clone(shared), queue, self.stop.subscribe()));
        tokio::spawn(subscriber(Arc::clone(shared), node, self.stop.subscribe()));
        tokio::spawn(presence(Arc::clone(shared), self.stop.subscribe()));
    }

    fn publish(&self, user: &UserId, event: &EncodedEvent) -> Result<(), BackplaneError> {
        let payload = format!("v1\n{}\nE\n{}", self.shared.node, event.to_wire());
        self.enqueue(self.shared.channel(user), payload)
    }

    fn user_joined(&self, user: &UserId) {
        self.shared.desired.lock().insert(user.clone());
        self.shared.subscriber_wake.notify_one();
        self.shared.presence_wake.notify_one();
    }

    fn user_left(&self, user: &UserId) {
        self.shared.desired.lock().remove(user);
        self.shared.subscriber_wake.notify_one();
        self.shared.presence_wake.notify_one();
    }

    fn ready_for<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<(), BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut generation = shared.generation.subscribe();
            loop {
                if !shared.subscriber_up.load(Ordering::Acquire) {
                    return Err(BackplaneError::Down);
                }
                if shared.subscribed.lock().contains(user) && shared.present.lock().contains(user) {
                    return Ok(());
                }
                if generation.changed().await.is_err() {
                    return Err(BackplaneError::Down);
                }
            }
        })
    }

    fn disconnect_user(&self, user: &UserId, frame: &CloseFrame) -> Result<(), BackplaneError> {
        let payload = format!(
            "v1\n{}\nD\n{}\n{}",
            self.shared.node,
            frame.code.as_u16(),
            frame.reason.as_str()
        );
        self.enqueue(self.shared.channel(user), payload)
    }

    fn is_online<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.query_connection().await?;
            let prefix = &shared.config.prefix;
            let where_key = format!("{prefix}:where:{}", hex(user.as_str()));
            let nodes: Vec<String> = shared
                .within(
                    redis::cmd("SMEMBERS")
                        .arg(&where_key)
                        .query_async(&mut conn),
                )
                .await?;
            for node in nodes {
                let alive: bool = shared
                    .within(
                        redis::cmd("EXISTS")
                            .arg(format!("{prefix}:node:{node}"))
                            .query_async(&mut conn),
                    )
                    .await?;
                if alive {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn admit<'a>(
        &'a self,
        user: &'a UserId,
        limit: usize,
    ) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.query_connection().await?;
            let prefix = &shared.config.prefix;
            let admitted: i64 = shared
                .within(
                    redis::cmd("EVAL")
                        .arg(ADMIT)
                        .arg(1)
                        .arg(format!("{prefix}:count:{}", hex(user.as_str())))
                        .arg(&shared.node)
                        .arg(limit)
                        .arg(prefix)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(admitted == 1)
        })
    }

    fn release(&self, user: &UserId) {
        let shared = Arc::clone(&self.shared);
        let key = format!("{}:count:{}", shared.config.prefix, hex(user.as_str()));
        // Off the caller's path; a lost release only matters until this
        // node's presence expires, after which its counts are ignored.
        tokio::spawn(async move {
            if let Ok(mut conn) = shared.query_connection().await {
                let _ = shared
                    .within(
                        redis::cmd("HINCRBY")
                            .arg(&key)
                            .arg(&shared.node)
                            .arg(-1)
                            .query_async::<i64>(&mut conn),
                    )
                    .await;
            }
        });
    }

    fn online_count(&self) -> BoxFuture<'_, Result<u64, BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.query_connection().await?;
            let prefix = &shared.config.prefix;
            let since = now_ms().saturating_sub(duration_ms(shared.config.presence_ttl));
            let nodes: Vec<String> = shared
                .within(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(format!("{prefix}:nodes"))
                        .arg(since)
                        .arg("+inf")
                        .query_async(&mut conn),
                )
                .await?;
            if nodes.is_empty() {
                return Ok(0);
            }
            let mut union = redis::cmd("SUNION");
            for node in &nodes {
                union.arg(format!("{prefix}:users:{node}"));
            }
            let users: Vec<String> = shared.within(union.query_async(&mut conn)).await?;
            Ok(users.len() as u64)
        })
    }
}

/// Counts a connection against a cluster-wide per-user limit, atomically:
/// sums the per-node counts of live nodes (dropping dead nodes' counts) and
/// increments this node's unless the limit is reached.
const ADMIT: &str = r"
local total = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if redis.call('EXISTS', ARGV[3] .. ':node:' .. counts[i]) == 1 then
    total = total + tonumber(counts[i + 1])
  else
    redis.call('HDEL', KEYS[1], counts[i])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
";

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// Most `PUBLISH`es sent in one pipeline.
const PUBLISH_BATCH: u64 = 256;

/// Owns the publishing connection; drains the queue in order.
async fn publisher(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut conn = match shared.within(shared.connect()).await {
            Ok(conn) => conn,
            Err(_) => {
                if !back_off(&mut backoff, shared.config.max_backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        shared.publisher_up.send_replace(true);
        shared.update_health();
        // An idle connection is pinged, so a server that went away is
        // noticed before the next event is trusted to it.
        let mut ping = tokio::time::interval(shared.config.command_timeout);
        let mut lost = 0u64;
        loop {
            let (channel, payload) = tokio::select! {
                _ = stop.changed() => return,
                () = shared.publisher_reset.notified() => break,
                _ = ping.tick() => {
                    if shared.within(redis::cmd("PING").query_async::<redis::Value>(&mut conn)).await.is_err() {
                        break;
                    }
                    continue;
                }
                next = queue.recv() => match next {
                    Some(item) => item,
                    None => return,
                },
            };
            // Whatever else is already queued goes in the same round trip,
            // in order: one pipeline per wake-up, not one per event.
            let mut pipe = redis::pipe();
            pipe.cmd("PUBLISH").arg(&channel).arg(&payload).ignore();
            let mut batch = 1u64;
            while batch < PUBLISH_BATCH {
                let Ok((channel, payload)) = queue.try_recv() else {
                    break;
                };
                pipe.cmd("PUBLISH").arg(&channel).arg(&payload).ignore();
                batch += 1;
            }
            if shared
                .within(pipe.query_async::<()>(&mut conn))
                .await
                .is_err()
            {
                lost = batch;
                break;
            }
        }
        shared.publisher_up.send_replace(false);
        shared.update_health();
        // What was queued behind the failure is stale by the time Redis is
        // back; receivers are told about the hole with a `gap` event.
        while queue.try_recv().is_ok() {
            lost += 1;
        }
        tracing::warn!(
            lost,
            "Redis backplane: publishing connection lost; reconnecting"
        );
    }
}

/// Owns the subscribing connection: follows `desired`, delivers what
/// arrives, pings to detect a hung server, resubscribes after reconnecting.
async fn subscriber(shared: Arc<Shared>, link: NodeLink, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    let mut reconnecting = false;
    let mut failures = client::FailureLog::default();
    loop {
        let pubsub = shared
            .within(async { failures.observe(shared.client.get_async_pubsub().await) })
            .await;
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(_) => {
                if !back_off(&mut backoff, shared.config.max_backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        shared.subscribed.lock().clear();
        shared.generation.send_modify(|g| *g += 1);
        if reconcile(&shared, &mut sink).await.is_ok() {
            backoff = FIRST_BACKOFF;
            // Healthy only once every local user is listened for again.
            shared.subscriber_up.store(true, Ordering::Release);
            shared.update_health();
            shared.generation.send_modify(|g| *g += 1);
            // After an outage, or at start-up with connections that became
            // Ready before the backplane was up, local connections may have
            // missed remote events: tell them once delivery works again.
            if reconnecting || !link.local_users().is_empty() {
                let mut publisher = shared.publisher_up.subscribe();
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = publisher.wait_for(|up| *up) => {}
                }
                let told = link.notify_gap("backplane_reconnected");
                tracing::warn!(
                    told,
                    "Redis backplane: reconnected; local connections told of a possible gap"
                );
            }
            let mut ping = tokio::time::interval(shared.config.command_timeout);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    message = stream.next() => match message {
                        Some(message) => receive(&shared, &link, &message),
                        None => break,
                    },
                    () = shared.subscriber_wake.notified() => {
                        if reconcile(&shared, &mut sink).await.is_err() {
                            break;
                        }
                    }
                    _ = ping.tick() => {
                        // In subscribed mode the reply is an array: accept any reply.
                        if shared.within(sink.ping::<redis::Value>()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        shared.subscriber_up.store(false, Ordering::Release);
        shared.publisher_up.send_replace(false);
        shared.update_health();
        shared.publisher_reset.notify_one();
        shared.generation.send_modify(|g| *g += 1);
        tracing::warn!("Redis backplane: subscription lost; reconnecting");
        reconnecting = true;
        if !back_off(&mut backoff, shared.config.max_backoff, &mut stop).await {
            return;
        }
    }
}

/// Subscribes to the users this node has and unsubscribes from the others.
async fn reconcile(shared: &Shared, sink: &mut PubSubSink) -> Result<(), BackplaneError> {
    let desired = shared.desired.lock().clone();
    let subscribed = shared.subscribed.lock().clone();
    for user in desired.difference(&subscribed) {
        shared.within(sink.subscribe(shared.channel(user))).await?;
        shared.subscribed.lock().insert(user.clone());
        shared.generation.send_modify(|g| *g += 1);
    }
    for user in subscribed.difference(&desired) {
        shared
            .within(sink.unsubscribe(shared.channel(user)))
            .await?;
        shared.subscribed.lock().remove(user);
    }
    Ok(())
}

/// Handles one message from a user's channel.
fn receive(shared: &Shared, link: &NodeLink, message: &redis::Msg) {
    let Some(user) = shared.user_of(message.get_channel_name()) else {
        return;
    };
    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
        return;
    };
    let mut parts = payload.splitn(4, '\n');
    let (Some("v1"), Some(node), Some(kind), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        tracing::warn!("Redis backplane: ignored a malformed message");
        return;
    };
    if node == shared.node {
        return;
    }
    match kind {
        "E" => match EncodedEvent::from_wire(body) {
            Some(event) => {
                let _ = link.deliver(&user, event);
            }
            None => tracing::warn!("Redis backplane: ignored a malformed event"),
        },
        "D" => {
            let frame = body.split_once('\n').and_then(|(code, reason)| {
                let code = CloseCode::new(code.parse().ok()?)?;
                Some(CloseFrame::new(code, CloseReason::new(reason.to_owned())?))
            });
            if let Some(frame) = frame {
                link.disconnect_local(&user, &frame);
            }
        }
        _ => {}
    }
}

/// Keeps this node's presence: its heartbeat key, its entry in the live
/// node index, and which users it has.
async fn presence(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let prefix = shared.config.prefix.clone();
    let ttl = duration_ms(shared.config.presence_ttl).max(1);
    let node = shared.node.clone();
    let mut tick = tokio::time::interval(shared.config.presence_ttl / 3);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut written: HashSet<UserId> = HashSet::new();
    loop {
        let full = tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => true,
            () = shared.presence_wake.notified() => false,
        };
        if conn.is_none() {
            conn = shared.within(shared.connect()).await.ok();
            *shared.queries.lock() = conn.clone();
            // A restarted Redis has lost everything: write it all again.
            written.clear();
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let desired = shared.desired.lock().clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{prefix}:node:{node}"))
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .ignore();
        let now = now_ms();
        pipe.cmd("ZADD")
            .arg(format!("{prefix}:nodes"))
            .arg(now)
            .arg(&node)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(format!("{prefix}:nodes"))
            .arg("-inf")
            .arg(now.saturating_sub(ttl))
            .ignore();
        let users_key = format!("{prefix}:users:{node}");
        let add: Vec<&UserId> = if full {
            desired.iter().collect()
        } else {
            desired.difference(&written).collect()
        };
        for user in add {
            let hex_user = hex(user.as_str());
            pipe.cmd("SADD")
                .arg(format!("{prefix}:where:{hex_user}"))
                .arg(&node)
                .ignore();
            pipe.cmd("SADD").arg(&users_key).arg(&hex_user).ignore();
        }
        for user in written.difference(&desired) {
            let hex_user = hex(user.as_str());
            pipe.cmd("SREM")
                .arg(format!("{prefix}:where:{hex_user}"))
                .arg(&node)
                .ignore();
            pipe.cmd("SREM").arg(&users_key).arg(&hex_user).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&users_key).arg(ttl).ignore();
        if shared.within(pipe.query_async::<()>(c)).await.is_ok() {
            written = desired;
            *shared.present.lock() = written.clone();
            shared.generation.send_modify(|g| *g += 1);
        } else {
            conn = None;
            *shared.queries.lock() = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_injective() {
        let backplane = RedisBackplane::new(RedisConfig::new("redis://127.0.0.1:1/")).unwrap();
        let users = ["alice", "alice:x", "Alice", "ali", "ce", "ü"];
        let names: Vec<String> = users
            .iter()
            .map(|u| backplane.shared.channel(&UserId::new(u).unwrap()))
            .collect();
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for (user, name) in users.iter().zip(&names) {
            let back = backplane.shared.user_of(name);
            assert_eq!(back.as_ref().map(UserId::as_str), Some(*user));
        }
        assert!(backplane.shared.user_of("wsl:u:zz").is_none());
        assert!(backplane.shared.user_of("other:u:61").is_none());
    }
}
