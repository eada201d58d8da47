//! Session resume on one node, over the in-memory transport: a client that
//! comes back with `since` gets what it missed, exactly once, in order,
//! before live events, or is told `recovered: false` and gets none of it.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use ws_lifecycle::auth::AuthOutcome;
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::stream::{Epoch, HistoryConfig, Position};
use ws_lifecycle::transport::memory::{self, MemoryClient};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

/// Sends a `ready` frame with the connection's stream position, as the
/// example servers do.
struct Ready;

impl Handler for Ready {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        let resume = conn
            .resume()
            .expect("the hub joins the stream before on_ready");
        let ready = Event::custom(EventName::new("ready").unwrap(), Value::Null)
            .with_resume(resume)
            .with_field("replayed", resume.replayed)
            .and_then(|e| e.with_field("connection_id", conn.id().as_str()))
            .unwrap();
        conn.emit(ready).unwrap();
        Ok(())
    }

    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

/// A client and the task serving its connection.
struct Client {
    socket: MemoryClient,
    served: tokio::task::JoinHandle<ws_lifecycle::CloseReport>,
}

/// A connection of `user`, resuming from `since`; returns the client and
/// its `ready` frame (the first frame).
async fn connect(hub: &Hub, user: &UserId, since: Option<Position>) -> (Client, Value) {
    let (transport, mut client) = memory::pair(4096);
    let mut outcome = AuthOutcome::new(user.clone());
    if let Some(since) = since {
        outcome = outcome.with_since(since);
    }
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(outcome)
        .await
        .unwrap_or_else(|r| panic!("refused: {r}"));
    let hub = hub.clone();
    let served = tokio::spawn(async move { hub.run(conn, &Ready).await });
    let ready = next_json(&mut client).await;
    assert_eq!(ready["type"], "ready", "the first frame is ready: {ready}");
    assert!(ready.get("off").is_some() && ready["seq"] == 1);
    (
        Client {
            socket: client,
            served,
        },
        ready,
    )
}

fn position(ready: &Value) -> Position {
    Position {
        epoch: Epoch::new(ready["epoch"].as_str().unwrap()).unwrap(),
        offset: ready["off"].as_u64().unwrap(),
    }
}

fn send(hub: &Hub, user: &UserId, n: u64) -> Option<u64> {
    hub.send_to_user(user, &event("note", json!(n)))
        .unwrap()
        .offset
}

/// The next `n` frames' (`off`, payload).
async fn offsets(client: &mut Client, n: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let f = next_json(&mut client.socket).await;
        out.push((f["off"].as_u64().unwrap(), f["payload"].as_u64().unwrap()));
    }
    out
}

/// Closes the client and waits for its connection to end: it is out of the
/// routing table before the events it should miss are sent.
async fn leave(mut client: Client, hub: &Hub, user: &UserId) {
    client.socket.close(None).await;
    client.served.await.unwrap();
    assert!(!hub.is_online(user));
}

/// Nothing else was written (the frames checked before were read in
/// order after the last send, so anything more would be there already).
fn nothing_more(client: &mut Client) {
    assert_eq!(client.socket.try_recv(), None, "nothing else was written");
}

#[tokio::test]
async fn a_client_resuming_after_k_missed_events_gets_them_once_in_order_then_live() {
    let hub = Hub::new();
    let alice = user("alice");
    let (mut client, ready) = connect(&hub, &alice, None).await;
    assert_eq!(
        (ready["off"].as_u64(), ready["recovered"].as_bool()),
        (Some(0), Some(false))
    );
    for n in 1..=3 {
        assert_eq!(send(&hub, &alice, n), Some(n));
    }
    assert_eq!(offsets(&mut client, 3).await, [(1, 1), (2, 2), (3, 3)]);
    let seen = Position {
        epoch: position(&ready).epoch,
        offset: 3,
    };
    leave(client, &hub, &alice).await;

    for n in 4..=8 {
        assert_eq!(send(&hub, &alice, n), Some(n), "kept while alice is away");
    }
    let (mut client, ready) = connect(&hub, &alice, Some(seen.clone())).await;
    assert_eq!(ready["recovered"], true);
    assert_eq!(
        (ready["off"].as_u64(), ready["replayed"].as_u64()),
        (Some(8), Some(5))
    );
    assert_eq!(ready["epoch"], seen.epoch.as_str());
    let replayed = offsets(&mut client, 5).await;
    assert_eq!(replayed, (4..=8).map(|n| (n, n)).collect::<Vec<_>>());
    send(&hub, &alice, 9);
    assert_eq!(offsets(&mut client, 1).await, [(9, 9)]);
    nothing_more(&mut client);
    let m = hub.metrics();
    assert_eq!(
        (
            m.resumes_recovered,
            m.resumes_not_recovered,
            m.events_replayed
        ),
        (1, 0, 5)
    );
}

#[tokio::test]
async fn a_resume_at_the_latest_offset_is_recovered_with_nothing_to_replay() {
    let hub = Hub::new();
    let alice = user("alice");
    let (client, ready) = connect(&hub, &alice, None).await;
    send(&hub, &alice, 1);
    let seen = Position {
        epoch: position(&ready).epoch,
        offset: 1,
    };
    leave(client, &hub, &alice).await;
    let (mut client, ready) = connect(&hub, &alice, Some(seen)).await;
    assert_eq!(
        (ready["recovered"].as_bool(), ready["replayed"].as_u64()),
        (Some(true), Some(0))
    );
    send(&hub, &alice, 2);
    assert_eq!(offsets(&mut client, 1).await, [(2, 2)]);
}

/// Leaves after seeing offset 2, misses 3..=6, and comes back with `since`
/// as `wrong` makes it: the resume must say `recovered: false` and write
/// nothing of 3..=6, only live events after the position it joined at.
async fn not_recovered(hub: Hub, wrong: impl FnOnce(Position) -> Position) {
    let alice = user("alice");
    let (client, ready) = connect(&hub, &alice, None).await;
    send(&hub, &alice, 1);
    send(&hub, &alice, 2);
    let seen = Position {
        epoch: position(&ready).epoch,
        offset: 2,
    };
    leave(client, &hub, &alice).await;
    for n in 3..=6 {
        send(&hub, &alice, n);
    }
    let (mut client, ready) = connect(&hub, &alice, Some(wrong(seen))).await;
    assert_eq!(ready["recovered"], false, "{ready}");
    assert_eq!(ready["replayed"], 0);
    let joined = ready["off"].as_u64().unwrap();
    let live = send(&hub, &alice, 7).unwrap();
    assert_eq!(
        offsets(&mut client, 1).await,
        [(live, 7)],
        "no partial replay"
    );
    assert!(live > joined);
    nothing_more(&mut client);
    let m = hub.metrics();
    assert_eq!(
        (
            m.resumes_recovered,
            m.resumes_not_recovered,
            m.events_replayed
        ),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn a_resume_with_another_epoch_is_not_recovered() {
    not_recovered(Hub::new(), |seen| Position {
        epoch: Epoch::mint(),
        ..seen
    })
    .await;
}

#[tokio::test]
async fn a_resume_ahead_of_the_stream_is_not_recovered() {
    not_recovered(Hub::new(), |seen| Position {
        offset: 100,
        ..seen
    })
    .await;
}

#[tokio::test]
async fn a_resume_past_the_trimmed_history_is_not_recovered() {
    let hub = hub_with(|c| c.history.max_events_per_user = 3);
    not_recovered(hub, |seen| seen).await;
}

#[tokio::test]
async fn a_resume_past_the_window_is_not_recovered() {
    let hub = hub_with(|c| c.history.window = Duration::from_millis(20));
    not_recovered(hub, |seen| {
        // Longer than the window: the missed events are no longer kept.
        std::thread::sleep(Duration::from_millis(60));
        seen
    })
    .await;
}

#[tokio::test]
async fn with_history_off_offsets_go_on_and_every_resume_is_not_recovered() {
    let hub = hub_with(|c| c.history = HistoryConfig::off());
    not_recovered(hub, |seen| seen).await;
}

#[tokio::test]
async fn another_users_position_yields_nothing_of_theirs() {
    let hub = Hub::new();
    let (alice, bob) = (user("alice"), user("bob"));
    let (_bob_client, bob_ready) = connect(&hub, &bob, None).await;
    for n in 1..=4 {
        send(&hub, &bob, 100 + n);
    }
    // Alice presents bob's epoch and an offset inside bob's history.
    let bobs = Position {
        epoch: position(&bob_ready).epoch,
        offset: 1,
    };
    let (mut client, ready) = connect(&hub, &alice, Some(bobs)).await;
    assert_eq!(ready["recovered"], false);
    assert_ne!(ready["epoch"], bob_ready["epoch"], "alice's own stream");
    send(&hub, &alice, 1);
    assert_eq!(offsets(&mut client, 1).await, [(1, 1)]);
    nothing_more(&mut client);
}

#[tokio::test]
async fn events_sent_before_on_ready_follow_the_ready_frame_with_their_offsets() {
    let hub = Hub::new();
    let alice = user("alice");
    let (transport, mut socket) = memory::pair(64);
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(alice.clone().into())
        .await
        .unwrap();
    // Routable, not ready: held, and written after `ready` (nothing is
    // written before it), as part of this connection's stream.
    assert_eq!(
        hub.send_to_user(&alice, &event("note", json!(1)))
            .unwrap()
            .buffered,
        1
    );
    let runner = hub.clone();
    tokio::spawn(async move { runner.run(conn, &Ready).await });
    let ready = next_json(&mut socket).await;
    assert_eq!(
        (ready["type"].as_str(), ready["seq"].as_u64()),
        (Some("ready"), Some(1))
    );
    assert_eq!(ready["off"], 0, "it started listening before offset 1");
    send(&hub, &alice, 2);
    for (seq, off) in [(2, 1), (3, 2)] {
        let f = next_json(&mut socket).await;
        assert_eq!(
            (f["seq"].as_u64(), f["off"].as_u64()),
            (Some(seq), Some(off))
        );
    }
}

#[tokio::test]
async fn a_full_replay_followed_by_live_events_does_not_overflow_the_queue() {
    // The default history keeps as many events per user as the default
    // outbound queue holds: the replay must not count against the queue.
    let hub = Hub::new();
    let alice = user("alice");
    let (client, ready) = connect(&hub, &alice, None).await;
    let seen = position(&ready);
    leave(client, &hub, &alice).await;
    let max = hub.config().history.max_events_per_user as u64;
    for n in 1..=max {
        send(&hub, &alice, n);
    }
    let (mut client, ready) = connect(&hub, &alice, Some(seen)).await;
    assert_eq!(
        (ready["recovered"].as_bool(), ready["replayed"].as_u64()),
        (Some(true), Some(max))
    );
    for n in max + 1..=max + 50 {
        let d = hub.send_to_user(&alice, &event("note", json!(n))).unwrap();
        assert_eq!(d.queued, 1, "live event {n} refused behind the replay");
    }
    let got = offsets(&mut client, (max + 50) as usize).await;
    assert_eq!(got, (1..=max + 50).map(|n| (n, n)).collect::<Vec<_>>());
}

#[tokio::test]
async fn every_connection_of_a_user_sees_the_same_offsets_and_per_connection_events_have_none() {
    let hub = Hub::new();
    let alice = user("alice");
    let (mut one, one_ready) = connect(&hub, &alice, None).await;
    let (mut two, _) = connect(&hub, &alice, None).await;
    let team = [alice.clone(), user("bob")];
    let fan = hub.send_to_users(&team, &event("note", json!(1))).unwrap();
    assert_eq!((fan.users, fan.streamed, fan.missed), (2, 2, 1));
    send(&hub, &alice, 2);
    for client in [&mut one, &mut two] {
        assert_eq!(offsets(client, 2).await, [(1, 1), (2, 2)]);
    }
    let id: ws_lifecycle::id::ConnectionId = one_ready["connection_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let seq = hub.send_to_connection(&id, event("own", json!(0))).unwrap();
    let own = next_json(&mut one.socket).await;
    assert_eq!(
        (own["type"].as_str(), own["seq"].as_u64()),
        (Some("own"), Some(seq))
    );
    assert!(own.get("off").is_none(), "{own}");
    send(&hub, &alice, 3);
    assert_eq!(offsets(&mut two, 1).await, [(3, 3)], "two never saw `own`");
}

#[tokio::test]
async fn the_stream_position_and_delivery_report_the_offset() {
    let hub = Hub::new();
    let alice = user("alice");
    assert_eq!(hub.stream_position(&alice).await.unwrap(), None);
    assert_eq!(
        send(&hub, &alice, 1),
        Some(1),
        "kept for a resume though offline"
    );
    let position = hub.stream_position(&alice).await.unwrap().unwrap();
    assert_eq!(position.offset, 1);
}

#[tokio::test]
async fn a_flood_to_many_users_stays_within_the_byte_budget() {
    let budget = 1 << 20;
    let hub = hub_with(|c| c.history.max_bytes = budget);
    let payload = json!("x".repeat(200));
    for i in 0..20_000 {
        let _ = hub.send_to_user(&user(&format!("u{i}")), &event("note", payload.clone()));
    }
    let usage = hub.history_usage();
    assert!(usage.bytes <= budget, "{usage:?}");
    assert!(
        usage.streams < 20_000,
        "old streams were forgotten: {usage:?}"
    );
    assert!(usage.streams > 0);
}
