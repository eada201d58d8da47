//! The Redis backplane's bookkeeping under the races and faults that used
//! to lose events or state silently, against a real `redis-server`. Each
//! window is widened deterministically: a delay injected through the
//! `Backplane` seam, or a proxy that holds the bytes of one command.
//!
//! Behind the `redis` feature; `scripts/test.sh` installs `redis-server`.

#![cfg(feature = "redis")]
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod redis_server;
mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis_server::{
    Flow, Proxy, RedisServer, admin, config, config_set, connect, healthy, node_with,
    notifications, start, until_count,
};
use serde_json::json;
use support::{bind, event, next_json, user};
use tokio::sync::oneshot;
use ws_lifecycle::Hub;
use ws_lifecycle::backplane::redis::{ClusterKey, RedisBackplane, RedisConfig, RedisConfigError};
use ws_lifecycle::backplane::{Backplane, BackplaneError, BoxFuture, NodeLink};
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::config::HubConfig;
use ws_lifecycle::event::EncodedEvent;
use ws_lifecycle::id::UserId;

const WAIT: Duration = Duration::from_secs(20);

async fn node(url: &str) -> (Hub, Arc<RedisBackplane>) {
    node_with(config(url), HubConfig::default()).await
}

/// Forwards to a Redis backplane, but can stall the next `user_left` call:
/// it reports the call, then blocks its thread until released — the
/// slowest scheduling a real hub could meet.
struct SlowLeave {
    inner: Arc<RedisBackplane>,
    stall: Mutex<Option<(oneshot::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
    joined: tokio::sync::Notify,
    left: tokio::sync::Notify,
}

impl Backplane for SlowLeave {
    fn start(&self, node: NodeLink) {
        self.inner.start(node);
    }
    fn publish(&self, user: &UserId, event: &EncodedEvent) -> Result<(), BackplaneError> {
        self.inner.publish(user, event)
    }
    fn user_joined(&self, user: &UserId) {
        self.inner.user_joined(user);
        self.joined.notify_one();
    }
    fn user_left(&self, user: &UserId) {
        let stall = self.stall.lock().take();
        if let Some((started, release)) = stall {
            let _ = started.send(());
            let _ = release.recv_timeout(Duration::from_secs(5));
            self.inner.user_left(user);
            self.left.notify_one();
        } else {
            self.inner.user_left(user);
        }
    }
    fn ready_for<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.inner.ready_for(user)
    }
    fn disconnect_user(&self, user: &UserId, frame: &CloseFrame) -> Result<(), BackplaneError> {
        self.inner.disconnect_user(user, frame)
    }
    fn is_online<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        self.inner.is_online(user)
    }
    fn online_count(&self) -> BoxFuture<'_, Result<u64, BackplaneError>> {
        self.inner.online_count()
    }
    fn keeps_streams(&self) -> bool {
        self.inner.keeps_streams()
    }
    fn read_stream<'a>(
        &'a self,
        user: &'a UserId,
        since: Option<&'a ws_lifecycle::stream::Position>,
    ) -> BoxFuture<'a, Result<ws_lifecycle::backplane::StreamRead, BackplaneError>> {
        self.inner.read_stream(user, since)
    }
}

/// Defect: the last connection leaving while a new one joined could run
/// `user_left` after `user_joined`, unsubscribing a user who still had a
/// Ready connection, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_who_rejoins_while_their_last_connection_leaves_stays_subscribed() {
    let server = RedisServer::start().await;
    let inner = Arc::new(RedisBackplane::new(config(&server.url())).unwrap());
    let slow = Arc::new(SlowLeave {
        inner: Arc::clone(&inner),
        stall: Mutex::new(None),
        joined: tokio::sync::Notify::new(),
        left: tokio::sync::Notify::new(),
    });
    let mut health = inner.health();
    let x = Hub::builder().backplane(Arc::clone(&slow)).build().unwrap();
    healthy(&mut health).await;
    let (c, _) = node(&server.url()).await;
    let jane = user("jane");

    let (mut a, _) = connect(&x, &jane).await;
    slow.joined.notified().await;
    let (started_tx, started) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *slow.stall.lock() = Some((started_tx, release_rx));
    a.close(None).await;
    // A's leave has begun and is stalled; B joins meanwhile.
    started.await.unwrap();
    let joined = tokio::spawn({
        let x = x.clone();
        let jane = jane.clone();
        async move { connect(&x, &jane).await }
    });
    // Let B's join run as far as it can: into the hub's membership hook,
    // or (as it must) blocked behind the leave that holds the user's
    // routing shard, which is what the bound is for. Then let the leave
    // finish.
    let _ = tokio::time::timeout(Duration::from_millis(300), slow.joined.notified()).await;
    release.send(()).unwrap();
    let (mut b, _) = joined.await.unwrap();
    // The stalled leave has finished; the node's subscriptions settle.
    slow.left.notified().await;
    tokio::time::timeout(WAIT, inner.settled()).await.unwrap();
    assert!(
        inner.subscribed_users().contains(&jane),
        "jane has a Ready connection but her node no longer listens for her"
    );
    let _ = c.send_to_user(&jane, &event("remote", json!(1))).unwrap();
    assert_eq!(next_json(&mut b).await["type"], "remote");
}

/// Defect: a connection could become Ready while its user's UNSUBSCRIBE
/// was in flight, then miss what was published before the resubscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_not_ready_while_its_users_unsubscribe_is_in_flight() {
    let server = RedisServer::start().await;
    let proxy = Proxy::to(server.port).await;
    let (x, x_backplane) = node(&proxy.url()).await;
    let (c, _) = node(&server.url()).await;
    let kate = user("kate");
    let (mut a, _) = connect(&x, &kate).await;
    proxy.hold_on(b"UNSUBSCRIBE");
    a.close(None).await;
    tokio::time::timeout(WAIT, proxy.held.notified())
        .await
        .unwrap();
    // The UNSUBSCRIBE is held between node X and Redis; B arrives.
    let (mut b, b_handle) = start(&x, &kate).await;
    let early = tokio::time::timeout(Duration::from_millis(300), b_handle.wait_ready(WAIT)).await;
    assert!(
        early.is_err(),
        "B became Ready while its node's subscription for kate was being torn down"
    );
    proxy.set(Flow::Forward, Flow::Forward);
    b_handle.wait_ready(WAIT).await.unwrap();
    assert!(x_backplane.subscribed_users().contains(&kate));
    let _ = c
        .send_to_user(&kate, &event("after_ready", json!(1)))
        .unwrap();
    assert_eq!(next_json(&mut b).await["type"], "after_ready");
}

/// Defect: events accepted by the publishing connection and lost with it
/// were only logged; the other nodes' connections never heard of the hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_by_the_publishing_connection_reach_their_users_as_a_gap() {
    let server = RedisServer::start().await;
    let proxy = Proxy::to(server.port).await;
    let (x, x_backplane) = node(&proxy.url()).await;
    let (y, _) = node(&server.url()).await;
    let liam = user("liam");
    let (mut on_y, _) = connect(&y, &liam).await;
    let _ = x.send_to_user(&liam, &event("before", json!(0))).unwrap();
    let before = next_json(&mut on_y).await;
    assert_eq!(before["type"], "before", "{before}");

    // X's connections to Redis go silent, and what X sends is lost.
    proxy.set(Flow::Drop, Flow::Drop);
    let mut published = 0;
    for i in 0..5 {
        let sent = x.send_to_user(&liam, &event("during", json!(i))).unwrap();
        published += u32::from(sent.remote == ws_lifecycle::backplane::Remote::Published);
    }
    assert!(
        published > 0,
        "X reported the outage before it could lose anything"
    );
    let mut health = x_backplane.health();
    tokio::time::timeout(WAIT, health.wait_for(|h| !*h))
        .await
        .unwrap()
        .unwrap();
    proxy.set(Flow::Forward, Flow::Forward);
    healthy(&mut health).await;

    // Y's connection gets either the events or a gap after them; here they
    // were lost, so a gap.
    let mut seen = Vec::new();
    let gap = loop {
        let frame = next_json(&mut on_y).await;
        if frame["type"] == "gap" {
            break frame;
        }
        seen.push(frame["payload"].as_u64().unwrap());
    };
    assert_eq!(gap["payload"]["reason"], "backplane_lost_events");
    assert!(
        seen.len() < 5,
        "nothing was lost: the window was not widened"
    );
    let lost = x.metrics().backplane_lost + x.metrics().backplane_failures;
    assert!(lost >= 5 - seen.len() as u64, "losses not counted: {lost}");
    // And delivery works again.
    let _ = x.send_to_user(&liam, &event("after", json!(1))).unwrap();
    assert_eq!(next_json(&mut on_y).await["type"], "after");
    // Published in an earlier round trip of X's one publishing connection
    // than "after", so counted by now.
    assert!(x_backplane.stats().gaps_published >= 1);
}

fn limited() -> HubConfig {
    let mut hub_config = HubConfig::default();
    hub_config.max_connections_per_user = 2;
    hub_config.cluster_connection_limit = true;
    hub_config
}

/// Defect: a lost admit reply, a cancelled admission or a deleted field
/// left the cluster count wrong until the node restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_count_returns_to_the_truth_after_lost_replies_cancels_and_deletions() {
    let server = RedisServer::start().await;
    let url = server.url();
    let proxy = Proxy::to(server.port).await;
    let mut x_config = config(&proxy.url());
    x_config.presence_ttl = Duration::from_secs(3);
    let (x, x_backplane) = node_with(x_config, limited()).await;
    let mon = user("mon");
    let truth = |n| until_count(&url, &x_backplane, &mon, n, Duration::from_secs(10));

    // 1. The admission's reply is lost after Redis ran it: the hub admits
    //    (the backplane did not answer) and the count is the truth.
    proxy.set(Flow::Forward, Flow::Drop);
    let (_first, first_conn) = start(&x, &mon).await;
    proxy.set(Flow::Forward, Flow::Forward);
    first_conn.wait_ready(WAIT).await.unwrap();
    truth(1).await;

    // 2. An admission cancelled while its EVAL is on its way.
    proxy.hold_on(b"EVAL");
    let attempt = tokio::spawn({
        let x = x.clone();
        let mon = mon.clone();
        async move {
            let (transport, _client) = ws_lifecycle::transport::memory::pair(8);
            let _ = x.connect().accept(transport).authenticate(mon.into()).await;
        }
    });
    tokio::time::timeout(WAIT, proxy.held.notified())
        .await
        .unwrap();
    attempt.abort();
    let _ = attempt.await;
    proxy.set(Flow::Forward, Flow::Forward);
    truth(1).await;

    // 3. Someone deletes the node's field (as when its heartbeat lapsed).
    let mut admin = admin(&url).await;
    let hex: String = "mon".bytes().map(|b| format!("{b:02x}")).collect();
    redis::cmd("DEL")
        .arg(format!("wsl:count:{hex}"))
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    truth(1).await;
}

/// Defect: `where:<user>` sets never expired and kept dead nodes' ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_claims_expire_and_dead_nodes_are_pruned() {
    use futures_util::StreamExt;
    let server = RedisServer::start().await;
    let key = format!(
        "wsl:where:{}",
        "nina"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // Every change of the claim set wakes the test: no polling.
    let changes = notifications(&server.url(), "Kz", &format!("__keyspace@0__:{key}")).await;
    let mut changes = std::pin::pin!(changes);
    let mut admin = admin(&server.url()).await;
    let members = |admin: &redis::aio::MultiplexedConnection| {
        let mut admin = admin.clone();
        let key = key.clone();
        async move {
            let mut members: Vec<String> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut admin)
                .await
                .unwrap();
            members.sort();
            members
        }
    };

    let mut short = config(&server.url());
    short.presence_ttl = Duration::from_secs(1);
    let (y, y_backplane) = node_with(short, HubConfig::default()).await;
    let nina = user("nina");
    let (_on_y, _) = connect(&y, &nina).await;
    let proxy = Proxy::to(server.port).await;
    let mut via_proxy = config(&proxy.url());
    via_proxy.presence_ttl = Duration::from_secs(1);
    let (x, x_backplane) = node_with(via_proxy, HubConfig::default()).await;
    let (_on_x, _) = connect(&x, &nina).await;
    let mut both = vec![
        y_backplane.node_id().to_owned(),
        x_backplane.node_id().to_owned(),
    ];
    both.sort();
    tokio::time::timeout(Duration::from_secs(10), async {
        while members(&admin).await != both {
            changes.next().await;
        }
    })
    .await
    .expect("both nodes never claimed nina");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(ttl > 0, "the claim set has no expiry ({ttl})");
    // X vanishes without cleaning up (a crash, a partition); Y's refreshes
    // prune X's claim once it has expired.
    proxy.cut();
    let y_only = vec![y_backplane.node_id().to_owned()];
    tokio::time::timeout(Duration::from_secs(10), async {
        while members(&admin).await != y_only {
            changes.next().await;
        }
    })
    .await
    .expect("the dead node's claim was never pruned");
    assert!(y.is_online_anywhere(&nina).await.unwrap());
}

/// Defect: a Redis that refuses writes (out of memory, read-only) made
/// every new connection wait out the services-ready timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_writes_degrades_presence_not_readiness() {
    refusing_writes(false).await;
}

/// The same in stream mode, where placing an event in its stream is a
/// write: readiness and presence as above, but the events Redis refuses
/// reach their users as a `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_stream_mode_events_a_redis_refuses_to_write_are_a_gap() {
    refusing_writes(true).await;
}

async fn refusing_writes(streams: bool) {
    let server = RedisServer::start().await;
    let mut hub_config = HubConfig::default();
    hub_config.services_ready_timeout = Duration::from_secs(60);
    let with_streams = |mut config: RedisConfig| {
        config.streams = streams;
        config
    };
    let (x, x_backplane) = node_with(with_streams(config(&server.url())), hub_config).await;
    let (y, _) = node_with(with_streams(config(&server.url())), HubConfig::default()).await;
    config_set(
        &server.url(),
        &[("maxmemory-policy", "noeviction"), ("maxmemory", "1")],
    )
    .await;
    let olga = user("olga");
    let (_client, handle) = start(&x, &olga).await;
    handle
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("readiness waited for presence writes Redis refuses");
    let mut presence = x_backplane.presence();
    tokio::time::timeout(WAIT, presence.wait_for(|ok| !*ok))
        .await
        .expect("refused presence writes went unnoticed")
        .unwrap();
    assert!(x_backplane.stats().presence_failures > 0);
    let (mut on_x, _) = (_client, handle);
    let _ = y.send_to_user(&olga, &event("still", json!(1))).unwrap();
    let frame = next_json(&mut on_x).await;
    if streams {
        // Redis refused to place the event: Y lost it and says so.
        assert_eq!(
            (frame["type"].as_str(), frame["payload"]["reason"].as_str()),
            (Some("gap"), Some("backplane_lost_events")),
            "{frame}"
        );
        assert!(y.metrics().backplane_lost >= 1);
    } else {
        // Delivery across nodes still works.
        assert_eq!(frame["type"], "still");
    }
}

/// Defect: anyone able to PUBLISH on the Redis server could inject events
/// or close connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_not_signed_with_the_cluster_key_is_dropped_and_counted() {
    let server = RedisServer::start().await;
    let (x, x_backplane) = node(&server.url()).await;
    let mut other = config(&server.url());
    other.cluster_key = ClusterKey::new(b"a different cluster key, 32 bytes!").unwrap();
    let (intruder, _) = node_with(other, HubConfig::default()).await;
    let pia = user("pia");
    let (mut on_x, _) = connect(&x, &pia).await;
    let hex: String = "pia".bytes().map(|b| format!("{b:02x}")).collect();
    let channel = format!("wsl:u:{hex}");
    let mut admin = admin(&server.url()).await;
    // The old unsigned format, a forged signature, and a well-signed
    // message from a node with another key.
    for payload in [
        "v1\nnode\nD\n4403\nrevoked".to_owned(),
        format!("v2\nnode\nD\n{}\n4403\nrevoked", "00".repeat(32)),
    ] {
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
    }
    let _ = intruder
        .send_to_user(&pia, &event("injected", json!(1)))
        .unwrap();
    // A fence from a real node: everything before it was seen and dropped.
    let (y, _) = node(&server.url()).await;
    let _ = y.send_to_user(&pia, &event("fence", json!(0))).unwrap();
    // Stream mode: the intruder's event took offset 1 in Redis (writing to
    // Redis can burn or reorder offsets, never forge an event), so the
    // fence, at 2, reveals a hole; its entry in the history fails the
    // signature check too (a fourth rejection), and X's connection is told
    // of the hole, then gets the fence.
    let gap = next_json(&mut on_x).await;
    assert_eq!(
        (gap["type"].as_str(), gap["payload"]["reason"].as_str()),
        (Some("gap"), Some("stream_hole")),
        "{gap}"
    );
    let fence = next_json(&mut on_x).await;
    assert_eq!(
        (fence["type"].as_str(), fence["off"].as_u64()),
        (Some("fence"), Some(2))
    );
    assert_eq!(x.metrics().backplane_rejected, 4);
    assert_eq!(x_backplane.stats().rejected, 4);
}

#[test]
fn settings_that_would_panic_a_background_task_are_refused_when_built() {
    let key = || ClusterKey::new([7u8; 32]).unwrap();
    let zero = Duration::ZERO;
    let mut cases: Vec<(RedisConfig, &str)> = Vec::new();
    let mut c = RedisConfig::new("redis://127.0.0.1/", key());
    c.command_timeout = zero;
    cases.push((c, "command_timeout"));
    let mut c = RedisConfig::new("redis://127.0.0.1/", key());
    c.presence_ttl = zero;
    cases.push((c, "presence_ttl"));
    let mut c = RedisConfig::new("redis://127.0.0.1/", key());
    c.presence_ttl = c.command_timeout;
    cases.push((c, "presence_ttl"));
    let mut c = RedisConfig::new("redis://127.0.0.1/", key());
    c.max_backoff = zero;
    cases.push((c, "max_backoff"));
    let mut c = RedisConfig::new("redis://127.0.0.1/", key());
    c.publish_queue = 0;
    cases.push((c, "publish_queue"));
    for (config, field) in cases {
        match RedisBackplane::new(config) {
            Err(error @ RedisConfigError::InvalidSetting { .. }) => {
                assert!(error.to_string().contains(field), "{error}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(matches!(
        ClusterKey::new(""),
        Err(RedisConfigError::ClusterKeyTooShort { len: 0, min: 32 })
    ));
}

#[test]
fn debug_output_hides_the_password_and_the_cluster_key() {
    let config = RedisConfig::new(
        "redis://admin:hunter2@127.0.0.1:6379/",
        ClusterKey::new(b"super secret cluster key material").unwrap(),
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("super secret"), "{shown}");
    let error = RedisBackplane::new(RedisConfig::new(
        "redis://admin:hunter2@[not a host/",
        ClusterKey::new([1u8; 32]).unwrap(),
    ))
    .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// Defect: releasing a counted connection spawned a task, which panics when
/// the connection is dropped outside a runtime.
#[test]
fn a_counted_connection_dropped_outside_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(RedisServer::start());
    let (hub, _backplane, conn) = runtime.block_on(async {
        let (hub, backplane) = node_with(config(&server.url()), limited()).await;
        let (conn, _client) = bind(&hub, &user("quinn"), 8).await;
        (hub, backplane, conn)
    });
    // Dropped here, on a thread with no runtime.
    drop(conn);
    assert_eq!(hub.connection_count(), 0);
    drop(runtime);
}

/// The publish queue was bounded in messages only: large events waiting for
/// a slow Redis could pile up without a bound in bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_queue_is_bounded_in_bytes() {
    let server = RedisServer::start().await;
    let proxy = Proxy::to(server.port).await;
    let mut small = config(&proxy.url());
    small.publish_queue_bytes = 1024;
    small.command_timeout = Duration::from_secs(2);
    small.presence_ttl = Duration::from_secs(30);
    let (x, _) = node_with(small, HubConfig::default()).await;
    let rita = user("rita");
    // Redis stops answering X: the publisher holds one batch in flight and
    // the rest waits in the queue.
    proxy.set(Flow::Hold, Flow::Hold);
    let big = "x".repeat(400);
    let outcomes: Vec<_> = (0..10)
        .map(|i| {
            x.send_to_user(&rita, &event("big", json!([i, big])))
                .unwrap()
                .remote
        })
        .collect();
    let overloaded = outcomes
        .iter()
        .filter(|r| **r == ws_lifecycle::backplane::Remote::Failed(BackplaneError::Overloaded))
        .count();
    assert!(
        (1..10).contains(&(10 - overloaded)) && overloaded >= 6,
        "{outcomes:?}"
    );
    proxy.set(Flow::Forward, Flow::Forward);
}
