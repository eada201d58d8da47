//! Invariants 3, 4 and 5 under real concurrency: 200 connections over 40
//! users on a four-worker runtime, hundreds of sender tasks, and connections
//! being bound, becoming Ready and ending (client close, client reset,
//! orderly close, dropped driver) while the senders run.
//!
//! Sequencing uses a barrier and join handles only:
//!
//! * phase 1: 120 stable connections (3 per user) are bound, so routable,
//!   before any task passes the barrier; their drivers (`Hub::run`) start
//!   after it, so they become Ready while events are flowing. They are closed
//!   only after every sender has finished, so each must receive every event
//!   sent to its user.
//! * phase 2: 40 churn tasks bind, run and end 2 connections each while the
//!   senders run; those are checked for isolation and order only.
//!
//! Everything is checked from the receiving side, from frames the clients
//! recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;
use ws_lifecycle::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::config::HubConfig;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::{ConnectionId, UserId};
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::Message;
use ws_lifecycle::transport::memory::{self, MemoryClient};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

const USERS: usize = 40;
const STABLE_PER_USER: usize = 3;
const CHURN_TASKS: usize = 40;
const CHURN_ROUNDS: usize = 2;
const SENDERS: usize = 200;
const SENDS_PER_SENDER: u64 = 100;
/// Larger than anything one connection can be sent (20,000 events over 40
/// users: 441 to 536 per user with these seeds), so a writer never waits on
/// its reader and no write can time out: a slow test machine cannot turn into
/// a slow-consumer close. The same bound keeps every queue under the default
/// 1,000-event limits.
const CLIENT_CAPACITY: usize = 4096;
/// Generous bound for anything awaited; reaching it is a failure, never a
/// synchronisation.
const DEADLINE: Duration = Duration::from_secs(60);

/// One data frame as a client saw it.
#[derive(Debug, Clone)]
struct Frame {
    seq: u64,
    to: String,
    sender: u64,
    n: u64,
}

/// What a client does besides reading.
#[derive(Debug)]
enum PeerAction {
    /// Sends a close frame.
    Close,
    /// Drops its sending side without one (a TCP reset).
    Abort,
}

/// Everything a client received.
#[derive(Debug)]
struct Received {
    frames: Vec<Frame>,
    close: Option<Option<CloseFrame>>,
}

/// What woke a reader.
enum Next {
    /// An action, or `None` when the test dropped the sender instead.
    Act(Option<PeerAction>),
    Message(Option<Message>),
}

/// Reads `client` until the server side is gone, acting on `action` when
/// told to. Cancel safe: `recv` and a oneshot receiver both are.
fn spawn_reader(
    mut client: MemoryClient,
    mut action: Option<oneshot::Receiver<PeerAction>>,
) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut received = Received {
            frames: Vec::new(),
            close: None,
        };
        loop {
            let next = match action.as_mut() {
                Some(rx) => tokio::select! {
                    biased;
                    act = rx => Next::Act(act.ok()),
                    m = client.recv() => Next::Message(m),
                },
                None => Next::Message(client.recv().await),
            };
            let message = match next {
                Next::Act(act) => {
                    action = None;
                    match act {
                        Some(PeerAction::Close) => client.close(Some(bye())).await,
                        Some(PeerAction::Abort) => client.abort(),
                        None => {}
                    }
                    continue;
                }
                Next::Message(message) => message,
            };
            let Some(message) = message else {
                return received;
            };
            assert!(
                received.close.is_none(),
                "message after the close frame: {message:?}"
            );
            match message {
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(&text).expect("frame is JSON");
                    received.frames.push(Frame {
                        seq: v["seq"].as_u64().expect("seq"),
                        to: v["payload"]["to"].as_str().expect("to").to_owned(),
                        sender: v["payload"]["sender"].as_u64().expect("sender"),
                        n: v["payload"]["n"].as_u64().expect("n"),
                    });
                }
                Message::Close(frame) => received.close = Some(frame),
                other => panic!("unexpected message {other:?}"),
            }
        }
    })
}

/// The application: ignores inbound messages.
struct App;

impl Handler for App {
    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

fn bye() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, CloseReason::new("bye").expect("reason"))
}

fn done() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, CloseReason::new("done").expect("reason"))
}

/// A small deterministic generator, so a failure replays.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One connection's record for the final checks.
struct Record {
    user: usize,
    id: ConnectionId,
    received: Received,
}

/// Isolation, gap-free sequence numbers and per-sender order on one
/// connection's frames.
fn check_connection(users: &[UserId], record: &Record) {
    let user = users[record.user].as_str();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, frame) in record.received.frames.iter().enumerate() {
        assert_eq!(
            frame.to, user,
            "connection {} of {user} got a frame for another user: {frame:?}",
            record.id
        );
        assert_eq!(
            frame.seq,
            i as u64 + 1,
            "connection {}: sequence numbers not 1, 2, 3, ...",
            record.id
        );
        if let Some(&prev) = last.get(&frame.sender) {
            assert!(
                frame.n > prev,
                "connection {}: sender {} reordered ({prev} then {})",
                record.id,
                frame.sender,
                frame.n
            );
        }
        last.insert(frame.sender, frame.n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_churn_no_frame_crosses_users_order_holds_and_stable_connections_get_everything() {
    // Nothing here is about timeouts: a loaded machine must not turn a
    // delayed write or a slow drain into a close. (Every await below is
    // still bounded by DEADLINE.)
    let mut config = HubConfig::default();
    config.write_timeout = DEADLINE;
    config.close_timeout = DEADLINE;
    let hub = Hub::builder().config(config).build().unwrap();
    let users: Arc<Vec<UserId>> = Arc::new(
        (0..USERS)
            .map(|u| UserId::new(format!("user{u}")).expect("user id"))
            .collect(),
    );
    let stable_count = USERS * STABLE_PER_USER;
    let barrier = Arc::new(Barrier::new(stable_count + SENDERS + CHURN_TASKS));

    // Phase 1: bind every stable connection (routable from here on); their
    // drivers wait at the barrier with everyone else.
    let mut stable = Vec::new();
    for i in 0..stable_count {
        let u = i % USERS;
        let (transport, client) = memory::pair(CLIENT_CAPACITY);
        let conn = hub
            .connect()
            .accept(transport)
            .authenticate(users[u].clone().into())
            .await
            .unwrap_or_else(|report| panic!("bind refused: {report}"));
        let handle = conn.handle();
        let reader = spawn_reader(client, None);
        let driver = tokio::spawn({
            let (hub, barrier) = (hub.clone(), Arc::clone(&barrier));
            async move {
                barrier.wait().await;
                hub.run(conn, &App).await
            }
        });
        stable.push((u, handle, driver, reader));
    }
    assert_eq!(hub.connection_count(), stable_count);
    assert_eq!(hub.user_count(), USERS);

    // Senders: each sends to pseudo-random users with its own counter.
    let senders: Vec<JoinHandle<Vec<(usize, u64)>>> = (0..SENDERS as u64)
        .map(|sender| {
            let (hub, users, barrier) = (hub.clone(), Arc::clone(&users), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let name = EventName::new("msg").expect("event name");
                let mut rng = sender.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut sent = Vec::new();
                for n in 1..=SENDS_PER_SENDER {
                    let u = (xorshift(&mut rng) % USERS as u64) as usize;
                    let event = Event::custom(
                        name.clone(),
                        json!({ "to": users[u].as_str(), "sender": sender, "n": n }),
                    );
                    let delivery = hub.send_to_user(&users[u], &event).expect("encodes");
                    // The stable connections are routable throughout and
                    // never full or closing: each must take every event.
                    assert!(
                        delivery.accepted() >= STABLE_PER_USER as u32,
                        "{} accepted by fewer than its stable connections: {delivery:?}",
                        users[u]
                    );
                    sent.push((u, n));
                    if n % 4 == 0 {
                        // A scheduling point, so senders interleave with
                        // binds, Ready transitions and closes.
                        tokio::task::yield_now().await;
                    }
                }
                sent
            })
        })
        .collect();

    // Phase 2: churn, concurrently with the senders.
    let churners: Vec<JoinHandle<Vec<Record>>> = (0..CHURN_TASKS)
        .map(|t| {
            let (hub, users, barrier) = (hub.clone(), Arc::clone(&users), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut records = Vec::new();
                for round in 0..CHURN_ROUNDS {
                    let u = (t * 7 + round * 13) % USERS;
                    let (transport, client) = memory::pair(CLIENT_CAPACITY);
                    let conn = hub
                        .connect()
                        .accept(transport)
                        .authenticate(users[u].clone().into())
                        .await
                        .unwrap_or_else(|report| panic!("bind refused: {report}"));
                    let id = conn.id().clone();
                    let handle = conn.handle();
                    let (act, action) = oneshot::channel();
                    let reader = spawn_reader(client, Some(action));
                    let driver = tokio::spawn({
                        let hub = hub.clone();
                        async move { hub.run(conn, &App).await }
                    });
                    if round % 2 == 0 {
                        // Half of them end after Ready, half whenever.
                        handle.wait_ready(DEADLINE).await.expect("becomes ready");
                    }
                    let how = (t + round) % 4;
                    match how {
                        0 => act.send(PeerAction::Close).expect("reader alive"),
                        1 => act.send(PeerAction::Abort).expect("reader alive"),
                        2 => assert!(handle.close(done())),
                        _ => driver.abort(),
                    }
                    let ended = tokio::time::timeout(DEADLINE, driver)
                        .await
                        .expect("connection ends");
                    match (how, ended) {
                        (0, Ok(report)) => {
                            assert_eq!(report.cause, CloseCause::PeerClosed(Some(bye())));
                        }
                        (1, Ok(report)) => assert_eq!(report.cause, CloseCause::PeerGone),
                        (2, Ok(report)) => {
                            assert_eq!(report.cause, CloseCause::Requested(done()));
                            assert_eq!(report.undelivered, 0);
                        }
                        (3, Err(error)) => assert!(error.is_cancelled()),
                        (how, other) => panic!("ending {how} gave {other:?}"),
                    }
                    assert!(hub.connection(&id).is_none(), "{id} still routable");
                    let received = tokio::time::timeout(DEADLINE, reader)
                        .await
                        .expect("transport ends")
                        .expect("reader");
                    records.push(Record {
                        user: u,
                        id,
                        received,
                    });
                }
                records
            })
        })
        .collect();

    // Everything each user was sent, once every sender is done.
    let mut sent_to: Vec<Vec<(u64, u64)>> = vec![Vec::new(); USERS];
    for (sender, task) in senders.into_iter().enumerate() {
        for (u, n) in task.await.expect("sender") {
            sent_to[u].push((sender as u64, n));
        }
    }
    for list in &mut sent_to {
        list.sort_unstable();
    }
    let mut records = Vec::new();
    for task in churners {
        records.extend(task.await.expect("churn task"));
    }
    assert_eq!(records.len(), CHURN_TASKS * CHURN_ROUNDS);

    // Churn connections: isolation and order, and nothing that was not sent.
    for record in &records {
        check_connection(&users, record);
        for frame in &record.received.frames {
            assert!(
                sent_to[record.user]
                    .binary_search(&(frame.sender, frame.n))
                    .is_ok(),
                "connection {} got a frame nobody sent to its user: {frame:?}",
                record.id
            );
        }
    }

    // Phase 1 ends: orderly closes, which write everything queued first.
    for (u, handle, driver, reader) in stable {
        let id = handle.id().clone();
        assert!(handle.close(done()), "{id} was closing already");
        let report = tokio::time::timeout(DEADLINE, driver)
            .await
            .expect("connection ends")
            .expect("driver");
        assert_eq!(report.cause, CloseCause::Requested(done()));
        assert_eq!(report.state, ConnectionState::Closed);
        assert_eq!(report.undelivered, 0, "{id} left events unwritten");
        let received = tokio::time::timeout(DEADLINE, reader)
            .await
            .expect("transport ends")
            .expect("reader");
        assert_eq!(received.close, Some(Some(done())));
        let record = Record {
            user: u,
            id,
            received,
        };
        check_connection(&users, &record);
        let mut got: Vec<(u64, u64)> = record
            .received
            .frames
            .iter()
            .map(|f| (f.sender, f.n))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got, sent_to[u],
            "stable connection {} of {} did not get exactly what its user was sent",
            record.id, users[u]
        );
    }

    assert_eq!(hub.connection_count(), 0, "routing table not empty");
    assert_eq!(hub.user_count(), 0, "user index not empty");
    for user in users.iter() {
        assert!(!hub.is_online(user), "{user} still online");
    }
    let m = hub.metrics();
    assert_eq!(m.isolation_refusals, 0);
    assert_eq!(
        m.events_buffered + m.events_queued,
        m.events_written + m.dropped_overflow + m.dropped_on_close,
        "accepted events not accounted for: {m:?}"
    );
    assert_eq!(m.dropped_overflow, 0);
}
