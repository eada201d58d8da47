//! Three nodes on one real `redis-server`, publishing continuously while
//! the backplane goes through, in turn: Redis killed and restarted, Redis
//! frozen (SIGSTOP), only one node's publishing connection cut, only one
//! node's subscribing connection cut, and Redis refusing writes. After each
//! fault, once the cluster is healthy again:
//!
//! * every event reached every connection of its user exactly once, or that
//!   connection got a `gap` during the phase (never a duplicate, never a
//!   silent hole);
//! * every node's subscriptions equal the users in its routing table;
//! * the cluster connection count of every user equals its connections.
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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis_server::{Proxy, RedisServer, config, config_set, until_count};
use serde_json::json;
use support::{event, user};
use tokio::sync::Notify;
use ws_lifecycle::Hub;
use ws_lifecycle::backplane::redis::RedisBackplane;
use ws_lifecycle::config::HubConfig;
use ws_lifecycle::id::UserId;
use ws_lifecycle::transport::Message;

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    hub: Hub,
    backplane: Arc<RedisBackplane>,
    proxy: Proxy,
}

/// What one connection saw in the current phase.
#[derive(Default)]
struct Seen {
    ids: Vec<u64>,
    gaps: usize,
    fences: BTreeSet<u64>,
}

struct Conn {
    user: UserId,
    node: usize,
    seen: Arc<Mutex<Seen>>,
    fence: Arc<Notify>,
}

async fn healthy(backplane: &RedisBackplane) {
    redis_server::healthy(&mut backplane.health()).await;
}

async fn start_node(port: u16) -> Node {
    let proxy = Proxy::to(port).await;
    let mut cfg = config(&proxy.url());
    cfg.presence_ttl = Duration::from_secs(3);
    let mut hub_config = HubConfig::default();
    hub_config.cluster_connection_limit = true;
    hub_config.max_connections_per_user = 16;
    let (hub, backplane) = redis_server::node_with(cfg, hub_config).await;
    Node {
        hub,
        backplane,
        proxy,
    }
}

/// Connects `user` on `node` and reads its frames into a [`Seen`].
async fn open(nodes: &[Node], node: usize, user: &UserId) -> Conn {
    let (mut client, _handle) = redis_server::connect(&nodes[node].hub, user).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fence = Arc::new(Notify::new());
    let (sink, wake) = (Arc::clone(&seen), Arc::clone(&fence));
    tokio::spawn(async move {
        while let Some(Message::Text(text)) = client.recv().await {
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut seen = sink.lock();
            match frame["type"].as_str() {
                Some("gap") => seen.gaps += 1,
                Some("chaos") => seen.ids.push(frame["payload"].as_u64().unwrap()),
                Some("fence") => {
                    seen.fences.insert(frame["payload"].as_u64().unwrap());
                    wake.notify_one();
                }
                other => panic!("unexpected frame {other:?}: {text}"),
            }
        }
    });
    Conn {
        user: user.clone(),
        node,
        seen,
        fence,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillRedis,
    FreezeRedis,
    CutPublisher,
    CutSubscriber,
    RefuseWrites,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_once_or_with_a_gap_through_every_fault_and_the_books_balance() {
    let mut server = RedisServer::start().await;
    let port = server.port;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(port).await);
    }
    // Six users, each on two of the three nodes.
    let users: Vec<UserId> = (0..6).map(|i| user(&format!("chaos{i}"))).collect();
    let mut conns = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for node in [i % 3, (i + 1) % 3] {
            conns.push(open(&nodes, node, u).await);
        }
    }
    let nodes = Arc::new(nodes);
    let next_id = Arc::new(AtomicU64::new(1));

    for (phase, fault) in [
        Fault::KillRedis,
        Fault::FreezeRedis,
        Fault::CutPublisher,
        Fault::CutSubscriber,
        Fault::RefuseWrites,
    ]
    .into_iter()
    .enumerate()
    {
        for conn in &conns {
            *conn.seen.lock() = Seen::default();
        }
        // Publishers: every node sends numbered events to every user in
        // turn, recording what it sent to whom.
        let sent: Arc<Mutex<HashMap<UserId, Vec<u64>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut publishers = Vec::new();
        for from in 0..3 {
            let (nodes, users, sent, stop, next_id) = (
                Arc::clone(&nodes),
                users.clone(),
                Arc::clone(&sent),
                Arc::clone(&stop),
                Arc::clone(&next_id),
            );
            publishers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(3));
                let mut turn = from;
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    let to = &users[turn % users.len()];
                    turn += 1;
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    sent.lock().entry(to.clone()).or_default().push(id);
                    let _ = nodes[from]
                        .hub
                        .send_to_user(to, &event("chaos", json!(id)))
                        .unwrap();
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        match fault {
            Fault::KillRedis => {
                server.kill().await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                server = RedisServer::start_on(port).await;
            }
            Fault::FreezeRedis => {
                server.stop();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                server.resume();
            }
            Fault::CutPublisher => nodes[0].proxy.cut_where(b"PUBLISH"),
            Fault::CutSubscriber => nodes[1].proxy.cut_where(b"SUBSCRIBE"),
            Fault::RefuseWrites => {
                let refuse = [("maxmemory-policy", "noeviction"), ("maxmemory", "1")];
                config_set(&server.url(), &refuse).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                config_set(&server.url(), &[("maxmemory", "0")]).await;
            }
        }
        for node in nodes.iter() {
            healthy(&node.backplane).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Release);
        for publisher in publishers {
            publisher.await.unwrap();
        }
        // A fence from every node to every user: once a connection has all
        // three, everything published before them has arrived or is lost
        // (and any gap owed for it was sent before the fence).
        let fence_base = 1_000_000_000 * (phase as u64 + 1);
        for (from, node) in nodes.iter().enumerate() {
            for u in &users {
                let sent = node
                    .hub
                    .send_to_user(u, &event("fence", json!(fence_base + from as u64)))
                    .unwrap();
                assert_eq!(
                    sent.remote,
                    ws_lifecycle::backplane::Remote::Published,
                    "{fault:?}: node {from} cannot publish after healing"
                );
            }
        }
        for conn in &conns {
            tokio::time::timeout(WAIT, async {
                while conn.seen.lock().fences.len() < 3 {
                    conn.fence.notified().await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{fault:?}: fences did not reach {}", conn.user));
        }

        // Exactly once, or a gap.
        let sent = sent.lock().clone();
        for conn in &conns {
            let seen = conn.seen.lock();
            let unique: BTreeSet<u64> = seen.ids.iter().copied().collect();
            assert_eq!(
                unique.len(),
                seen.ids.len(),
                "{fault:?}: a duplicate on {}'s connection on node {}",
                conn.user,
                conn.node
            );
            let expected = sent.get(&conn.user).cloned().unwrap_or_default();
            let missing = expected.iter().filter(|id| !unique.contains(id)).count();
            let foreign = unique.iter().filter(|id| !expected.contains(id)).count();
            assert_eq!(
                foreign, 0,
                "{fault:?}: {} got another user's events",
                conn.user
            );
            assert!(
                missing == 0 || seen.gaps > 0,
                "{fault:?}: {}'s connection on node {} silently missed {missing} of {} events",
                conn.user,
                conn.node,
                expected.len()
            );
        }
        let (missed, gapped): (usize, usize) = conns.iter().fold((0, 0), |(m, g), conn| {
            let seen = conn.seen.lock();
            let expected = sent.get(&conn.user).map_or(0, Vec::len);
            (
                m + expected.saturating_sub(seen.ids.len()),
                g + usize::from(seen.gaps > 0),
            )
        });
        // Shown with `--nocapture`: how hard each fault hit.
        println!("{fault:?}: {missed} deliveries missed, {gapped} of 12 connections told of a gap");

        // The books: subscriptions follow the routing tables, counts the
        // connections.
        for (i, node) in nodes.iter().enumerate() {
            tokio::time::timeout(WAIT, node.backplane.settled())
                .await
                .unwrap();
            let subscribed: BTreeSet<UserId> =
                node.backplane.subscribed_users().into_iter().collect();
            let local: BTreeSet<UserId> = conns
                .iter()
                .filter(|c| c.node == i)
                .map(|c| c.user.clone())
                .collect();
            assert_eq!(subscribed, local, "{fault:?}: node {i}'s subscriptions");
        }
        for u in &users {
            let truth = conns.iter().filter(|c| &c.user == u).count() as u64;
            until_count(
                &server.url(),
                &nodes[0].backplane,
                u,
                truth,
                Duration::from_secs(10),
            )
            .await;
        }
    }
}
