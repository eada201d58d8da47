//! Streams kept in Redis (`RedisConfig::streams`, the default): offsets
//! are the same on every node, a client resumes on any node, and a node
//! that misses a pub/sub message repairs from the history before it
//! delivers anything later. Several hubs in one process, each with its own
//! `RedisBackplane`, on one real `redis-server`.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use redis_server::{Flow, Proxy, RedisServer, admin, config, connect, healthy, node_with};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{event, next_json, read_to_close, user};
use tokio::sync::mpsc;
use ws_lifecycle::auth::AuthOutcome;
use ws_lifecycle::backplane::Remote;
use ws_lifecycle::backplane::redis::RedisBackplane;
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::config::HubConfig;
use ws_lifecycle::id::UserId;
use ws_lifecycle::stream::{Epoch, Position, ResumeOutcome};
use ws_lifecycle::transport::memory::{self, MemoryClient};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

const WAIT: Duration = Duration::from_secs(20);

async fn node(url: &str) -> (Hub, Arc<RedisBackplane>) {
    node_with(config(url), HubConfig::default()).await
}

async fn nodes(server: &RedisServer, n: usize) -> Vec<Hub> {
    let mut hubs = Vec::new();
    for _ in 0..n {
        hubs.push(node(&server.url()).await.0);
    }
    hubs
}

/// Hands each connection's resume outcome to the test from `on_ready`.
struct Resumer {
    ready: mpsc::UnboundedSender<Option<ResumeOutcome>>,
}

impl Handler for Resumer {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        let _ = self.ready.send(conn.resume().cloned());
        Ok(())
    }

    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

/// Connects `user` on `hub`, resuming after `since`; returns once Ready,
/// with the outcome `on_ready` read.
async fn join(
    hub: &Hub,
    user: &UserId,
    since: Option<&Position>,
) -> (MemoryClient, ConnectionHandle, ResumeOutcome) {
    let (transport, client) = memory::pair(4096);
    let mut auth = AuthOutcome::new(user.clone());
    if let Some(since) = since {
        auth = auth.with_since(since.clone());
    }
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(auth)
        .await
        .unwrap_or_else(|report| panic!("refused: {report}"));
    let handle = conn.handle();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hub = hub.clone();
    tokio::spawn(async move { hub.run(conn, &Resumer { ready: tx }).await });
    let outcome = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("not ready in time")
        .expect("the connection ended before on_ready")
        .expect("no resume outcome");
    handle.wait_ready(WAIT).await.unwrap();
    (client, handle, outcome)
}

/// The offset and payload of the next frame, which must be an `m` event.
async fn next_event(client: &mut MemoryClient) -> (u64, Value) {
    let frame = next_json(client).await;
    assert_eq!(frame["type"], "m", "{frame}");
    let off = frame["off"]
        .as_u64()
        .unwrap_or_else(|| panic!("no off: {frame}"));
    (off, frame["payload"].clone())
}

fn send(hub: &Hub, to: &UserId, payload: Value) {
    let sent = hub.send_to_user(to, &event("m", payload)).unwrap();
    assert_eq!(sent.remote, Remote::Published);
    assert_eq!(sent.offset, None, "the offset is Redis's to assign");
}

/// Closes a client; returns the offsets of the events it read on the way.
async fn leave(client: &mut MemoryClient) -> Vec<u64> {
    client.close(None).await;
    let (frames, _) = read_to_close(client).await;
    frames
        .iter()
        .filter(|f| f["type"] == "m")
        .map(|f| f["off"].as_u64().unwrap())
        .collect()
}

/// (a) Two nodes' connections of one user see the same offsets for the
/// same events, whichever node sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_the_same_on_every_node() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 3).await;
    let ada = user("ada");
    let (mut on_a, _, a_ready) = join(&hubs[0], &ada, None).await;
    let (mut on_b, _, b_ready) = join(&hubs[1], &ada, None).await;
    assert_eq!(a_ready.position, b_ready.position, "one stream, one epoch");
    assert_eq!(a_ready.position.offset, 0);
    for i in 0..60u64 {
        send(&hubs[(i % 3) as usize], &ada, json!(i));
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..60 {
        seen_a.push(next_event(&mut on_a).await);
        seen_b.push(next_event(&mut on_b).await);
    }
    assert_eq!(seen_a, seen_b, "the same events at the same offsets");
    let offs: Vec<u64> = seen_a.iter().map(|(off, _)| *off).collect();
    assert_eq!(offs, (1..=60).collect::<Vec<_>>());
    // Each sender's events keep their order.
    for sender in 0..3u64 {
        let from: Vec<u64> = seen_a
            .iter()
            .map(|(_, p)| p.as_u64().unwrap())
            .filter(|i| i % 3 == sender)
            .collect();
        assert!(from.is_sorted(), "node {sender}: {from:?}");
    }
    for hub in &hubs {
        let position = hub.stream_position(&ada).await.unwrap().unwrap();
        assert_eq!(position.epoch, a_ready.position.epoch);
        assert_eq!(position.offset, 60);
    }
}

/// (b) A client reads on node A up to offset k and leaves; node C sends
/// meanwhile; it resumes on node B and gets exactly k+1..=head, in order,
/// then live events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 3).await;
    let (a, b, c) = (&hubs[0], &hubs[1], &hubs[2]);
    let bea = user("bea");
    // Sees every event of the stream as it is placed.
    let (mut watcher, _, _) = join(c, &bea, None).await;
    let (mut on_a, _, ready) = join(a, &bea, None).await;
    let epoch = ready.position.epoch.clone();
    for i in 1..=4u64 {
        send(c, &bea, json!(i));
    }
    for i in 1..=4u64 {
        assert_eq!(next_event(&mut on_a).await, (i, json!(i)));
    }
    assert!(leave(&mut on_a).await.is_empty());
    for i in 5..=9u64 {
        send(c, &bea, json!(i));
    }
    // The sends were queued: wait until they are placed.
    for i in 1..=9u64 {
        assert_eq!(next_event(&mut watcher).await.0, i);
    }
    let since = Position {
        epoch: epoch.clone(),
        offset: 4,
    };
    let (mut on_b, _, resumed) = join(b, &bea, Some(&since)).await;
    assert_eq!(resumed.requested, Some(since));
    assert!(resumed.recovered, "{resumed:?}");
    assert_eq!(resumed.replayed, 5);
    assert_eq!(
        resumed.position,
        Position {
            epoch: epoch.clone(),
            offset: 9
        }
    );
    for i in 5..=9u64 {
        assert_eq!(next_event(&mut on_b).await, (i, json!(i)), "replayed");
    }
    // Live, from two nodes (whose order Redis decides).
    send(a, &bea, json!("a"));
    send(c, &bea, json!("c"));
    let (first, second) = (next_event(&mut on_b).await, next_event(&mut on_b).await);
    assert_eq!((first.0, second.0), (10, 11), "live");
    let mut payloads = [first.1, second.1];
    payloads.sort_by_key(ToString::to_string);
    assert_eq!(payloads, [json!("a"), json!("c")]);
}

/// (c) A publisher sends without pause while the client leaves and
/// resumes 30 times, alternating nodes: across all the connections it
/// receives every offset exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_under_continuous_publishing_lose_and_repeat_nothing() {
    let server = RedisServer::start().await;
    let hubs = Arc::new(nodes(&server, 3).await);
    let cid = user("cid");
    // The first connection joins the empty stream before anything is sent.
    let (first, _, ready) = join(&hubs[0], &cid, None).await;
    assert_eq!(ready.position.offset, 0);
    let epoch = ready.position.epoch.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let (hubs, cid, stop, sent) = (
            Arc::clone(&hubs),
            cid.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
        );
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                i += 1;
                send(&hubs[2], &cid, json!(i));
                sent.store(i, Ordering::Release);
            }
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut client = first;
    for round in 1..=30 {
        // A few events, then away (with whatever was already written).
        for _ in 0..3 {
            let (off, payload) = next_event(&mut client).await;
            assert_eq!(
                payload,
                json!(off),
                "the publisher's i-th event is at offset i"
            );
            seen.push(off);
        }
        seen.extend(leave(&mut client).await);
        let since = Position {
            epoch: epoch.clone(),
            offset: *seen.last().unwrap(),
        };
        let (next, _, outcome) = join(&hubs[round % 2], &cid, Some(&since)).await;
        assert!(outcome.recovered, "round {round}: {outcome:?}");
        assert_eq!(outcome.position.epoch, epoch);
        assert_eq!(
            outcome.replayed,
            outcome.position.offset - since.offset,
            "round {round}"
        );
        client = next;
    }
    stop.store(true, Ordering::Release);
    publisher.await.unwrap();
    // The last connection drains the rest (replayed, then live).
    let total = sent.load(Ordering::Acquire);
    while seen.last() != Some(&total) {
        seen.push(next_event(&mut client).await.0);
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every offset once, in order"
    );
}

/// (d) A `since` of another epoch, or ahead of the stream: not recovered,
/// nothing replayed, live events follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_epoch_or_an_offset_ahead_is_not_recovered() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 2).await;
    let dot = user("dot");
    let (mut first, _, ready) = join(&hubs[0], &dot, None).await;
    for i in 1..=3u64 {
        send(&hubs[1], &dot, json!(i));
    }
    for i in 1..=3u64 {
        assert_eq!(next_event(&mut first).await.0, i);
    }
    let epoch = ready.position.epoch.clone();
    let other = Epoch::new("another-epoch").unwrap();
    let mut head = 3;
    for since in [
        Position {
            epoch: other,
            offset: 1,
        },
        Position { epoch, offset: 9 },
    ] {
        let (mut client, _, outcome) = join(&hubs[1], &dot, Some(&since)).await;
        assert!(!outcome.recovered, "{since}: {outcome:?}");
        assert_eq!(outcome.replayed, 0);
        assert_eq!(outcome.position.offset, head);
        send(&hubs[0], &dot, json!("live"));
        let live = next_event(&mut first).await.0;
        head = live;
        assert_eq!(
            next_event(&mut client).await.0,
            live,
            "{since}: nothing replayed, the live event first"
        );
    }
    // The same position as the stream's: recovered, nothing to replay.
    let at_head = hubs[0].stream_position(&dot).await.unwrap().unwrap();
    let (_client, _, outcome) = join(&hubs[1], &dot, Some(&at_head)).await;
    assert!(outcome.recovered && outcome.replayed == 0, "{outcome:?}");
}

/// What the library's append script is, read from its source so the test
/// runs the very script the nodes run.
fn append_script() -> &'static str {
    const SOURCE: &str = include_str!("../src/backplane/redis/append.rs");
    let start = SOURCE.find("pub(super) const APPEND: &str = r\"").unwrap();
    let text = &SOURCE[start..];
    let text = &text[text.find('"').unwrap() + 1..];
    &text[..text.find("\";").unwrap()]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Places an event in `user`'s stream as a node would, signed with the
/// test cluster key, but without publishing it: the pub/sub message of an
/// event every node missed. Returns its offset.
async fn append_unpublished(url: &str, user: &UserId, payload: Value) -> u64 {
    let hex_user = hex(user.as_str().as_bytes());
    let channel = format!("wsl:u:{hex_user}");
    let body = event("m", payload).encode().unwrap().to_wire();
    let node = "test-node";
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(redis_server::CLUSTER_KEY).unwrap();
    mac.update(format!("{channel}\n{node}\nS\n{body}").as_bytes());
    let head = format!("v2\n{node}\nS\n{}\n", hex(&mac.finalize().into_bytes()));
    let mut admin = admin(url).await;
    let placed: Vec<u64> = redis::cmd("EVAL")
        .arg(append_script())
        .arg(2)
        .arg(format!("wsl:s:{hex_user}"))
        .arg(format!("wsl:h:{hex_user}"))
        // History length, trim period, window, lease, renewal slack, fresh
        // epoch, and `0`: not published.
        .arg(1000)
        .arg(62)
        .arg(120_000)
        .arg(86_400_000)
        .arg(30_000)
        .arg("unused-fresh-epoch")
        .arg(0)
        .arg(channel)
        .arg(1)
        .arg(head)
        .arg(body)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(placed.len(), 1, "{placed:?}");
    placed[0]
}

/// (e) A pub/sub message every node missed: the next event reveals the
/// hole, the node reads the missing event from the history first, and the
/// connection gets every offset once, in order, with no `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_message_is_repaired_from_the_history_before_the_next_event() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 2).await;
    let eve = user("eve");
    let (mut client, _, _) = join(&hubs[0], &eve, None).await;
    send(&hubs[1], &eve, json!("one"));
    assert_eq!(next_event(&mut client).await, (1, json!("one")));
    assert_eq!(
        append_unpublished(&server.url(), &eve, json!("missed")).await,
        2
    );
    send(&hubs[1], &eve, json!("three"));
    send(&hubs[1], &eve, json!("four"));
    assert_eq!(next_event(&mut client).await, (2, json!("missed")));
    assert_eq!(next_event(&mut client).await, (3, json!("three")));
    assert_eq!(next_event(&mut client).await, (4, json!("four")));
    assert_eq!(hubs[0].metrics().gaps_notified, 0);
}

/// A missed message the history no longer holds: the connection is told
/// (`gap`, `stream_hole`), then delivery goes on in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_the_history_cannot_fill_is_a_gap_then_delivery_goes_on() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 2).await;
    let fay = user("fay");
    let (mut client, _, _) = join(&hubs[0], &fay, None).await;
    send(&hubs[1], &fay, json!("one"));
    assert_eq!(next_event(&mut client).await, (1, json!("one")));
    let off = append_unpublished(&server.url(), &fay, json!("missed")).await;
    let mut admin = admin(&server.url()).await;
    let removed: u64 = redis::cmd("XDEL")
        .arg(format!("wsl:h:{}", hex(b"fay")))
        .arg(format!("{off}-0"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    send(&hubs[1], &fay, json!("three"));
    let gap = next_json(&mut client).await;
    assert_eq!(
        (gap["type"].as_str(), gap["payload"]["reason"].as_str()),
        (Some("gap"), Some("stream_hole")),
        "{gap}"
    );
    assert_eq!(next_event(&mut client).await, (3, json!("three")));
    send(&hubs[1], &fay, json!("four"));
    assert_eq!(next_event(&mut client).await, (4, json!("four")));
}

/// Events the publishing connection lost: the other nodes' connections of
/// the user get a `gap` (a `G` message), and so do the publishing node's
/// own (which would have got them back through Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_by_the_publisher_are_a_gap_on_its_own_node_too() {
    let server = RedisServer::start().await;
    let proxy = Proxy::to(server.port).await;
    let (x, x_backplane) = node(&proxy.url()).await;
    let (y, _) = node(&server.url()).await;
    let gus = user("gus");
    let (mut on_x, _, _) = join(&x, &gus, None).await;
    let (mut on_y, _, _) = join(&y, &gus, None).await;
    send(&x, &gus, json!(0));
    assert_eq!(next_event(&mut on_x).await.0, 1);
    assert_eq!(next_event(&mut on_y).await.0, 1);

    proxy.set(Flow::Drop, Flow::Drop);
    let mut published = 0;
    for i in 1..=5 {
        let sent = x.send_to_user(&gus, &event("m", json!(i))).unwrap();
        published += u32::from(sent.remote == Remote::Published);
    }
    assert!(
        published > 0,
        "X reported the outage before it lost anything"
    );
    let mut health = x_backplane.health();
    tokio::time::timeout(WAIT, health.wait_for(|h| !*h))
        .await
        .unwrap()
        .unwrap();
    proxy.set(Flow::Forward, Flow::Forward);
    healthy(&mut health).await;

    for (name, client) in [("x", &mut on_x), ("y", &mut on_y)] {
        let reasons = gaps_until_lost(client).await;
        assert!(
            reasons.contains(&"backplane_lost_events".to_owned()),
            "{name}: {reasons:?}"
        );
    }
    assert!(x.metrics().backplane_lost > 0);
    send(&x, &gus, json!("after"));
    for client in [&mut on_x, &mut on_y] {
        // (X's subscriber reconnected too: maybe another gap first.)
        let mut frame = next_json(client).await;
        while frame["type"] == "gap" {
            frame = next_json(client).await;
        }
        assert_eq!(
            (frame["off"].as_u64(), &frame["payload"]),
            (Some(2), &json!("after"))
        );
    }
}

/// Reads `gap` frames until one says `backplane_lost_events`; returns the
/// reasons seen. No event may come first: the lost ones never got an
/// offset.
async fn gaps_until_lost(client: &mut MemoryClient) -> Vec<String> {
    let mut reasons = Vec::new();
    while !reasons.contains(&"backplane_lost_events".to_owned()) {
        let frame = next_json(client).await;
        assert_eq!(frame["type"], "gap", "{frame}");
        reasons.push(frame["payload"]["reason"].as_str().unwrap().to_owned());
    }
    reasons
}

/// `send_to_users` in stream mode: every listed user's connections get
/// the event through Redis (the sending node's too), at each user's own
/// offset; an unlisted user gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_users_reaches_the_listed_users_through_their_streams() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 2).await;
    let (a, b) = (&hubs[0], &hubs[1]);
    let (gina, hank, ivan) = (user("gina"), user("hank"), user("ivan"));
    let (mut gina_b, _) = connect(b, &gina).await;
    let (mut hank_a, _) = connect(a, &hank).await;
    let (mut ivan_b, _) = connect(b, &ivan).await;
    send(a, &hank, json!("first"));
    assert_eq!(next_event(&mut hank_a).await.0, 1);
    let sent = a
        .send_to_users([&gina, &hank], &event("m", json!(7)))
        .unwrap();
    // Nothing is delivered by the sender itself; nothing is a miss.
    assert_eq!(
        (sent.users, sent.queued, sent.missed, sent.streamed),
        (2, 0, 0, 0)
    );
    assert_eq!(sent.remote_failed, 0);
    assert_eq!(next_event(&mut gina_b).await, (1, json!(7)));
    assert_eq!(next_event(&mut hank_a).await, (2, json!(7)));
    send(a, &ivan, json!("fence"));
    assert_eq!(
        next_event(&mut ivan_b).await,
        (1, json!("fence")),
        "ivan got an event addressed to others"
    );
}

/// A Redis that loses its data (restarted empty): the stream starts a new
/// epoch, connections are told (`gap`, `stream_restarted`), and a resume
/// with the old epoch is not recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_lost_by_redis_restarts_with_a_new_epoch() {
    let server = RedisServer::start().await;
    let hubs = nodes(&server, 2).await;
    let hal = user("hal");
    let (mut client, _, ready) = join(&hubs[0], &hal, None).await;
    send(&hubs[1], &hal, json!(1));
    assert_eq!(next_event(&mut client).await.0, 1);
    let mut admin = admin(&server.url()).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    send(&hubs[1], &hal, json!(2));
    let gap = next_json(&mut client).await;
    assert_eq!(gap["payload"]["reason"], "stream_restarted", "{gap}");
    assert_eq!(next_event(&mut client).await, (1, json!(2)));
    let old = Position {
        epoch: ready.position.epoch.clone(),
        offset: 1,
    };
    let (_c, _, outcome) = join(&hubs[1], &hal, Some(&old)).await;
    assert!(!outcome.recovered);
    assert_ne!(outcome.position.epoch, old.epoch);
    assert_eq!(outcome.position.offset, 1);
}
