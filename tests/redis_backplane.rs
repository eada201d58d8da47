//! Several hubs in one process, each with its own Redis connections, against
//! a real `redis-server` each test starts on a free loopback port:
//! cross-node delivery, presence, revocation, and Redis dying or hanging.
//!
//! Behind the `redis` feature; `scripts/test.sh` installs `redis-server`.
//! Without the binary these tests fail with the command that installs it.

#![cfg(feature = "redis")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod cluster_cases;
mod redis_server;
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use redis_server::{Proxy, RedisServer, connect, healthy};
use serde_json::json;
use support::{event, next_json, read_to_close, user};
use tokio::sync::watch;
use ws_lifecycle::Hub;
use ws_lifecycle::backplane::redis::RedisBackplane;
use ws_lifecycle::backplane::{BackplaneError, Remote};

/// A node: a hub on a Redis backplane at `url`, returned once the backplane
/// is up. Short timeouts keep the outage tests quick.
async fn node(url: &str, presence_ttl: Duration) -> (Hub, watch::Receiver<bool>, String) {
    node_streams(url, presence_ttl, true).await
}

/// [`node`], keeping the users' streams in Redis (the default) or not.
async fn node_streams(
    url: &str,
    presence_ttl: Duration,
    streams: bool,
) -> (Hub, watch::Receiver<bool>, String) {
    let mut config = redis_server::config(url);
    config.presence_ttl = presence_ttl;
    config.streams = streams;
    let backplane = RedisBackplane::new(config).unwrap();
    let (mut health, id) = (backplane.health(), backplane.node_id().to_owned());
    let hub = Hub::builder().backplane(backplane).build().unwrap();
    healthy(&mut health).await;
    (hub, health, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_vanished_node_goes_offline_within_its_ttl() {
    let server = RedisServer::start().await;
    let ttl = Duration::from_secs(1);
    let (a, mut a_health, _) = node(&server.url(), ttl).await;
    let proxy = Proxy::to(server.port).await;
    let (b, _b_health, b_id) = node(&proxy.url(), ttl).await;
    healthy(&mut a_health).await;
    let bob = user("bob");
    assert!(!a.is_online_anywhere(&bob).await.unwrap());
    // Presence is written right after the join, but no longer gates Ready
    // (a Redis refusing writes must not hold connections): watch the claim
    // land instead of assuming it.
    let claims = redis_server::notifications(&server.url(), "Ezx", "__keyevent@0__:zadd").await;
    let mut claims = std::pin::pin!(claims);
    let (_client, _handle) = connect(&b, &bob).await;
    assert!(!a.is_online(&bob), "not on node A itself");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !a.is_online_anywhere(&bob).await.unwrap() {
            claims.next().await;
        }
    })
    .await
    .expect("never online through node B");
    assert_eq!(a.online_count().await.unwrap(), 1);

    // Watch for node B's heartbeat key to expire, then cut B off from Redis
    // without any cleanup, as a crash or a partition would.
    let expired = redis_server::notifications(&server.url(), "Ezx", "__keyevent@0__:expired").await;
    let mut expired = std::pin::pin!(expired);
    proxy.cut();
    let key = format!("wsl:node:{b_id}");
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = expired.next().await {
            if message.get_payload::<String>().unwrap() == key {
                return;
            }
        }
    })
    .await
    .expect("node B's presence did not expire within 10 s");
    assert!(
        !a.is_online_anywhere(&bob).await.unwrap(),
        "offline once node B is gone"
    );
    assert_eq!(a.online_count().await.unwrap(), 0);
    drop(b);
}

/// A user on nodes A and B, a stream of sends from A while Redis goes away
/// (killed, or frozen), then back. Without streams kept in Redis: local
/// delivery goes on meanwhile (in stream mode every delivery, local ones
/// included, goes through Redis).
async fn outage(freeze: bool) {
    let mut server = RedisServer::start().await;
    let port = server.port;
    let ttl = Duration::from_secs(30);
    let (a, mut a_health, _) = node_streams(&server.url(), ttl, false).await;
    let (b, mut b_health, _) = node_streams(&server.url(), ttl, false).await;
    healthy(&mut a_health).await;
    healthy(&mut b_health).await;
    let erin = user("erin");
    let (mut on_a, _) = connect(&a, &erin).await;
    let (mut on_b, _) = connect(&b, &erin).await;
    let _ = a.send_to_user(&erin, &event("before", json!(0))).unwrap();
    assert_eq!(next_json(&mut on_a).await["type"], "before");
    assert_eq!(next_json(&mut on_b).await["type"], "before");

    if freeze {
        server.stop();
    } else {
        server.kill().await;
    }
    tokio::time::timeout(Duration::from_secs(10), a_health.wait_for(|h| !*h))
        .await
        .expect("the outage was not noticed within 10 s")
        .unwrap();
    // Local delivery goes on; the remote side reports the failure.
    for i in 0..5 {
        let delivery = a.send_to_user(&erin, &event("during", json!(i))).unwrap();
        assert_eq!(delivery.queued, 1, "local delivery");
        assert_eq!(delivery.remote, Remote::Failed(BackplaneError::Down));
        assert_eq!(next_json(&mut on_a).await["payload"], i);
    }
    assert!(a.metrics().backplane_failures >= 5);

    if freeze {
        server.resume();
    } else {
        server = RedisServer::start_on(port).await;
    }
    healthy(&mut a_health).await;
    healthy(&mut b_health).await;
    // Both nodes tell their connections they may have missed events.
    let gap = next_json(&mut on_a).await;
    assert_eq!(
        (gap["type"].as_str(), gap["payload"]["reason"].as_str()),
        (Some("gap"), Some("backplane_reconnected"))
    );
    let gap = next_json(&mut on_b).await;
    assert_eq!(
        gap["type"], "gap",
        "node B never saw the outage's events and says so"
    );
    // Remote delivery resumes without restarting either hub. (B may also
    // hear from A of the events A failed to publish: another gap.)
    let delivery = a.send_to_user(&erin, &event("after", json!(1))).unwrap();
    assert_eq!(delivery.remote, Remote::Published);
    assert_eq!(next_json(&mut on_a).await["type"], "after");
    let mut next = next_json(&mut on_b).await;
    while next["type"] == "gap" {
        next = next_json(&mut on_b).await;
    }
    assert_eq!(next["type"], "after");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_keeps_local_delivery_reports_remote_errors_and_recovers() {
    outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_caught_by_the_command_timeout_and_recovers() {
    outage(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_limit_can_hold_across_nodes() {
    let server = RedisServer::start().await;
    let limited = |url: String| async move {
        let backplane =
            std::sync::Arc::new(RedisBackplane::new(redis_server::config(&url)).unwrap());
        let mut health = backplane.health();
        let mut hub_config = ws_lifecycle::config::HubConfig::default();
        hub_config.max_connections_per_user = 2;
        hub_config.cluster_connection_limit = true;
        let hub = Hub::builder()
            .config(hub_config)
            .backplane(std::sync::Arc::clone(&backplane))
            .build()
            .unwrap();
        healthy(&mut health).await;
        (hub, backplane)
    };
    let (a, a_backplane) = limited(server.url()).await;
    let (b, _) = limited(server.url()).await;
    let frank = user("frank");
    let url = server.url();
    let settle =
        |n| redis_server::until_count(&url, &a_backplane, &frank, n, Duration::from_secs(5));

    let (mut first, _) = connect(&a, &frank).await;
    let (_second, _) = connect(&b, &frank).await;
    settle(2).await;
    // A third, on either node, is refused: the limit is the cluster's.
    for hub in [&a, &b] {
        let (transport, mut client) = ws_lifecycle::transport::memory::pair(8);
        let refused = hub
            .connect()
            .accept(transport)
            .authenticate(frank.clone().into())
            .await;
        assert!(refused.is_err(), "a third connection was admitted");
        assert_eq!(
            read_to_close(&mut client).await.1.map(|f| f.code.as_u16()),
            Some(4429)
        );
    }
    assert_eq!(
        a.connections_of(&frank).len() + b.connections_of(&frank).len(),
        2
    );
    // The refusals left no count behind.
    settle(2).await;

    // One leaves; once its release lands, a new one is admitted.
    first.close(None).await;
    let _ = read_to_close(&mut first).await;
    settle(1).await;
    let (_third, _) = connect(&a, &frank).await;
    assert_eq!(
        a.connections_of(&frank).len() + b.connections_of(&frank).len(),
        2
    );
    settle(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_to_every_connection_of_its_user_once_in_order() {
    let server = RedisServer::start().await;
    let nodes = redis_nodes(&server, 3).await;
    cluster_cases::every_event_reaches_every_connection_of_its_user_once_in_order(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_user_on_one_node_closes_the_users_connections_on_the_others_within_1s() {
    let server = RedisServer::start().await;
    let nodes = redis_nodes(&server, 3).await;
    cluster_cases::disconnect_user_closes_the_users_connections_on_every_node(&nodes).await;
}

/// Without streams kept in Redis: the case counts local deliveries on the
/// sending node, which stream mode makes through Redis (its own version of
/// this case is in `tests/redis_resume.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_users_reaches_the_listed_users_on_other_nodes_and_no_one_else() {
    let server = RedisServer::start().await;
    let nodes = redis_nodes_streams(&server, 2, false).await;
    cluster_cases::send_to_users_reaches_the_listed_users_and_no_one_else(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_streams_three_nodes_deliver_every_message_to_every_connection_once_in_order() {
    let server = RedisServer::start().await;
    let nodes = redis_nodes_streams(&server, 3, false).await;
    cluster_cases::every_event_reaches_every_connection_of_its_user_once_in_order(&nodes).await;
}

/// `n` nodes on `server`, each returned once its backplane is up.
async fn redis_nodes(server: &RedisServer, n: usize) -> Vec<Hub> {
    redis_nodes_streams(server, n, true).await
}

/// [`redis_nodes`], keeping the users' streams in Redis or not.
async fn redis_nodes_streams(server: &RedisServer, n: usize, streams: bool) -> Vec<Hub> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let (hub, _, _) = node_streams(&server.url(), Duration::from_secs(30), streams).await;
        nodes.push(hub);
    }
    nodes
}
