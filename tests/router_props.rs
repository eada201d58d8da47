//! Invariants 3 (accounted delivery), 4 (isolation) and 5 (table hygiene)
//! across many connections: generated sequences of connects, sends to users
//! and to single connections, peer closes, peer resets and dropped drivers,
//! over a handful of users.
//!
//! Every connection is bound through the typestate API and driven by a
//! spawned `Hub::run` on a current-thread runtime, so a connection makes
//! progress only while the test awaits. Each op that ends a connection awaits
//! its `JoinHandle` (and so its `CloseReport`) before the next op: at every
//! step the set of routable connections is known exactly, and the model
//! predicts each `Delivery`, each sequence number and, at the end, each
//! client's frames.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use ws_lifecycle::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::{ConnectionId, UserId};
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::Message;
use ws_lifecycle::transport::memory::{self, MemoryClient};
use ws_lifecycle::{CloseReport, ConnectionHandle, Delivery, Handler, Hub, Inbound, SendError};

const USERS: usize = 6;
const MAX_CONNECTIONS: usize = 12;

/// One step. Connection indexes are taken modulo the connections made so
/// far; an op on an index when there are none, or on a connection that has
/// ended where that makes no sense, does nothing.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Binds a new connection for user `.0` and spawns `Hub::run` for it.
    Connect(usize),
    /// `Hub::send_to_user` to user `.0`.
    SendToUser(usize),
    /// `Hub::send_to_connection` to connection `.0` (an ended one must
    /// refuse and hand the event back).
    SendToConnection(usize),
    /// The client sends a close frame; the test awaits the connection's end.
    ClosePeer(usize),
    /// The client drops its sending side without a close frame (a TCP
    /// reset); the test awaits the connection's end.
    AbortPeer(usize),
    /// The connection's owner is dropped: the task running `Hub::run` is
    /// aborted, so the future holding the `Connection` is dropped (before
    /// or after Ready, depending on how far it got). The test awaits the
    /// aborted task.
    DropHandle(usize),
    /// Waits (on the state watch) until the connection is Ready, letting
    /// every spawned task run meanwhile.
    AwaitReady(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let conn = 0..MAX_CONNECTIONS;
    prop_oneof![
        3 => user.clone().prop_map(Op::Connect),
        5 => user.prop_map(Op::SendToUser),
        2 => conn.clone().prop_map(Op::SendToConnection),
        1 => conn.clone().prop_map(Op::ClosePeer),
        1 => conn.clone().prop_map(Op::AbortPeer),
        1 => conn.clone().prop_map(Op::DropHandle),
        1 => conn.prop_map(Op::AwaitReady),
    ]
}

/// How a connection ended, from the test's side.
#[derive(Debug)]
enum End {
    /// Still routable.
    Open,
    /// Its driver returned this report.
    Report(CloseReport),
    /// Its driver was dropped.
    Dropped,
}

/// A connection, its client, and what the model says it must receive.
struct Conn {
    user: usize,
    id: ConnectionId,
    client: MemoryClient,
    driver: Option<JoinHandle<CloseReport>>,
    end: End,
    /// Message ids accepted for this connection while it was routable, in
    /// the order they are written: its own in send order, and the user's
    /// stream's in send order once it is Ready.
    expected: Vec<u64>,
    /// The user's stream's messages that reached it before Ready: written
    /// after what it had of its own by then (they take their sequence
    /// numbers at Ready).
    held: Vec<u64>,
    /// Seen Ready by the model.
    ready: bool,
}

impl Conn {
    fn is_open(&self) -> bool {
        matches!(self.end, End::Open)
    }
}

/// The application: ignores inbound messages.
struct App;

impl Handler for App {
    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn reason(text: &'static str) -> CloseReason {
    CloseReason::new(text).expect("reason")
}

fn done() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, reason("done"))
}

fn bye() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, reason("bye"))
}

/// What the server answers to a peer's close frame.
fn normal_reply() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, reason(""))
}

fn message(id: u64, to_user: &UserId, to_conn: Option<&ConnectionId>) -> Event {
    Event::custom(
        EventName::new("msg").expect("event name"),
        json!({
            "id": id,
            "to_user": to_user.as_str(),
            "to_conn": to_conn.map(ConnectionId::as_str),
        }),
    )
}

/// Moves what the model held for connections that have become Ready
/// (which they do in their own task, between the script's steps) to
/// their written order.
fn sync_ready(hub: &Hub, conns: &mut [Conn]) {
    for conn in conns.iter_mut().filter(|c| c.is_open() && !c.ready) {
        let ready = hub
            .connection(&conn.id)
            .is_some_and(|h| h.state() == ConnectionState::Ready);
        if ready {
            let held = std::mem::take(&mut conn.held);
            conn.expected.extend(held);
            conn.ready = true;
        }
    }
}

/// Asserts the routing table agrees with the model.
fn check_table(hub: &Hub, users: &[UserId], conns: &[Conn]) -> Result<(), TestCaseError> {
    let open: Vec<&Conn> = conns.iter().filter(|c| c.is_open()).collect();
    prop_assert_eq!(hub.connection_count(), open.len());
    let online: BTreeSet<usize> = open.iter().map(|c| c.user).collect();
    prop_assert_eq!(hub.user_count(), online.len());
    for (u, user) in users.iter().enumerate() {
        prop_assert_eq!(
            hub.is_online(user),
            online.contains(&u),
            "is_online({})",
            user
        );
        let mut routed: Vec<ConnectionId> = hub
            .connections_of(user)
            .iter()
            .map(|h| h.id().clone())
            .collect();
        let mut want: Vec<ConnectionId> = open
            .iter()
            .filter(|c| c.user == u)
            .map(|c| c.id.clone())
            .collect();
        routed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        prop_assert_eq!(routed, want, "connections_of({})", user);
    }
    for conn in conns {
        let routable = hub.connection(&conn.id);
        prop_assert_eq!(
            routable.is_some(),
            conn.is_open(),
            "connection({})",
            conn.id
        );
        if let Some(handle) = routable {
            prop_assert_eq!(handle.user(), &users[conn.user]);
        }
    }
    Ok(())
}

/// Awaits the end of `conn`'s driver, which the op has just provoked.
async fn await_end(conn: &mut Conn, dropped: bool) -> Result<(), TestCaseError> {
    let driver = conn.driver.take().expect("an open connection has a driver");
    if dropped {
        driver.abort();
    }
    match tokio::time::timeout(Duration::from_secs(10), driver).await {
        Err(_) => Err(TestCaseError::fail(format!(
            "connection {} did not end within 10 s",
            conn.id
        ))),
        Ok(Ok(report)) if !dropped => {
            prop_assert_eq!(&report.connection_id, &conn.id);
            conn.end = End::Report(report);
            Ok(())
        }
        Ok(Err(error)) if dropped && error.is_cancelled() => {
            conn.end = End::Dropped;
            Ok(())
        }
        Ok(other) => Err(TestCaseError::fail(format!(
            "connection {} ended unexpectedly: {other:?}",
            conn.id
        ))),
    }
}

async fn check_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let hub = Hub::new();
    let users: Vec<UserId> = (0..USERS)
        .map(|u| UserId::new(format!("user{u}")).expect("user id"))
        .collect();
    // Room for every message a connection can be sent, plus the close frame:
    // no writer ever waits on the client.
    let capacity = ops.len() + 2;
    let mut conns: Vec<Conn> = Vec::new();
    let mut next_id = 0u64;
    let mut accepted = 0u64;
    let mut misses = 0u64;

    let mut offsets = [0u64; USERS];
    for &op in ops {
        sync_ready(&hub, &mut conns);
        let pick = |i: usize, n: usize| (n > 0).then(|| i % n);
        match op {
            Op::Connect(u) => {
                if conns.len() == MAX_CONNECTIONS {
                    continue;
                }
                let (transport, client) = memory::pair(capacity);
                let conn = hub
                    .connect()
                    .accept(transport)
                    .authenticate(users[u].clone().into())
                    .await
                    .unwrap_or_else(|report| panic!("bind refused: {report}"));
                prop_assert_eq!(conn.state(), ConnectionState::Authenticated);
                let id = conn.id().clone();
                let driver = tokio::spawn({
                    let hub = hub.clone();
                    async move { hub.run(conn, &App).await }
                });
                conns.push(Conn {
                    user: u,
                    id,
                    client,
                    driver: Some(driver),
                    end: End::Open,
                    expected: Vec::new(),
                    held: Vec::new(),
                    ready: false,
                });
            }
            Op::SendToUser(u) => {
                next_id += 1;
                // Which of the user's connections are Ready decides queued
                // versus buffered; nothing runs between this look and the
                // send on a current-thread runtime.
                // Every send takes the user's next offset.
                offsets[u] += 1;
                let mut want = Delivery {
                    offset: Some(offsets[u]),
                    ..Delivery::default()
                };
                for conn in conns.iter().filter(|c| c.is_open() && c.user == u) {
                    if conn.ready {
                        want.queued += 1;
                    } else {
                        want.buffered += 1;
                    }
                }
                let got = hub
                    .send_to_user(&users[u], &message(next_id, &users[u], None))
                    .expect("encodes");
                prop_assert_eq!(got, want, "send_to_user({}) #{}", &users[u], next_id);
                if got.is_miss() {
                    misses += 1;
                }
                accepted += u64::from(got.accepted());
                for conn in conns.iter_mut().filter(|c| c.is_open() && c.user == u) {
                    if conn.ready {
                        conn.expected.push(next_id);
                    } else {
                        conn.held.push(next_id);
                    }
                }
            }
            Op::SendToConnection(i) => {
                let Some(i) = pick(i, conns.len()) else {
                    continue;
                };
                next_id += 1;
                let conn = &mut conns[i];
                let event = message(next_id, &users[conn.user], Some(&conn.id));
                let got = hub.send_to_connection(&conn.id, event.clone());
                if conn.is_open() {
                    conn.expected.push(next_id);
                    accepted += 1;
                    prop_assert_eq!(got, Ok(conn.expected.len() as u64), "sequence number");
                } else {
                    misses += 1;
                    prop_assert_eq!(got, Err(SendError::Closed(event)));
                }
            }
            Op::ClosePeer(i) | Op::AbortPeer(i) | Op::DropHandle(i) => {
                let Some(i) = pick(i, conns.len()) else {
                    continue;
                };
                let conn = &mut conns[i];
                if !conn.is_open() {
                    continue;
                }
                match op {
                    Op::ClosePeer(_) => conn.client.close(Some(bye())).await,
                    Op::AbortPeer(_) => conn.client.abort(),
                    _ => {}
                }
                await_end(conn, matches!(op, Op::DropHandle(_))).await?;
            }
            Op::AwaitReady(i) => {
                let Some(i) = pick(i, conns.len()) else {
                    continue;
                };
                let conn = &conns[i];
                if let Some(handle) = hub.connection(&conn.id) {
                    let ready = handle.wait_ready(Duration::from_secs(10)).await;
                    prop_assert_eq!(ready, Ok(()), "connection {} never became ready", conn.id);
                }
            }
        }
        check_table(&hub, &users, &conns)?;
    }

    // End every connection still open with an orderly close, which writes
    // everything accepted first (one not Ready yet becomes Ready first).
    for conn in &mut conns {
        let held = std::mem::take(&mut conn.held);
        conn.expected.extend(held);
    }
    for conn in conns.iter_mut().filter(|c| c.is_open()) {
        let handle = hub.connection(&conn.id).expect("open means routable");
        prop_assert!(handle.close(done()));
        await_end(conn, false).await?;
    }
    check_table(&hub, &users, &conns)?;

    // What each client received.
    let mut written = 0u64;
    for conn in &mut conns {
        let user = &users[conn.user];
        let mut ids = Vec::new();
        let mut close: Option<Option<CloseFrame>> = None;
        let client = &mut conn.client;
        let read_all = async {
            let mut messages = Vec::new();
            while let Some(m) = client.recv().await {
                messages.push(m);
            }
            messages
        };
        let Ok(messages) = tokio::time::timeout(Duration::from_secs(10), read_all).await else {
            return Err(TestCaseError::fail(format!(
                "the transport of {} never ended",
                conn.id
            )));
        };
        for m in messages {
            prop_assert!(
                close.is_none(),
                "{} got {:?} after its close frame",
                conn.id,
                m
            );
            match m {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).expect("frame is JSON");
                    // Isolation first, with a message that says so.
                    prop_assert_eq!(
                        frame["payload"]["to_user"].as_str(),
                        Some(user.as_str()),
                        "{} of {} got a message for another user: {}",
                        conn.id,
                        user,
                        text
                    );
                    if let Some(to) = frame["payload"]["to_conn"].as_str() {
                        prop_assert_eq!(
                            to,
                            conn.id.as_str(),
                            "{} got a message for another connection",
                            conn.id
                        );
                    }
                    prop_assert_eq!(
                        frame["seq"].as_u64(),
                        Some(ids.len() as u64 + 1),
                        "{} sequence",
                        conn.id
                    );
                    ids.push(frame["payload"]["id"].as_u64().expect("payload id"));
                }
                Message::Close(frame) => close = Some(frame),
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            }
        }
        written += ids.len() as u64;
        // In order, at most once: a prefix of what was accepted for it.
        prop_assert!(
            ids.len() <= conn.expected.len() && ids[..] == conn.expected[..ids.len()],
            "{} received {:?}, accepted {:?}",
            conn.id,
            ids,
            conn.expected
        );
        match &conn.end {
            End::Open => unreachable!("every connection was ended above"),
            End::Dropped => prop_assert_eq!(close, None, "a dropped driver sends no close"),
            End::Report(report) => {
                prop_assert_eq!(report.user.as_ref(), Some(user));
                // Whatever was not written is reported, exactly.
                prop_assert_eq!(
                    ids.len() as u64 + report.undelivered,
                    conn.expected.len() as u64,
                    "{} undelivered",
                    conn.id
                );
                let (cause, state, frame) = match &report.cause {
                    CloseCause::Requested(_) => (
                        CloseCause::Requested(done()),
                        ConnectionState::Closed,
                        Some(done()),
                    ),
                    CloseCause::PeerClosed(_) => (
                        CloseCause::PeerClosed(Some(bye())),
                        ConnectionState::Closed,
                        Some(normal_reply()),
                    ),
                    _ => (CloseCause::PeerGone, ConnectionState::Failed, None),
                };
                prop_assert_eq!(&report.cause, &cause);
                prop_assert_eq!(report.state, state);
                prop_assert_eq!(close, Some(frame), "{} close frame", conn.id);
                if cause == CloseCause::Requested(done()) {
                    // Open to the end: every message for it arrived.
                    prop_assert_eq!(report.undelivered, 0);
                    prop_assert_eq!(&ids, &conn.expected, "{} missed messages", conn.id);
                }
            }
        }
    }

    // Hygiene and accounting once everything has ended.
    prop_assert_eq!(hub.connection_count(), 0);
    prop_assert_eq!(hub.user_count(), 0);
    for user in &users {
        prop_assert!(!hub.is_online(user));
    }
    let m = hub.metrics();
    prop_assert_eq!(m.isolation_refusals, 0);
    prop_assert_eq!(m.events_buffered + m.events_queued, accepted);
    prop_assert_eq!(m.events_written, written);
    prop_assert_eq!(
        m.events_buffered + m.events_queued,
        m.events_written + m.dropped_overflow + m.dropped_on_close
    );
    prop_assert_eq!(m.routing_misses, misses);
    prop_assert_eq!(
        (
            m.refused_closed,
            m.refused_before_ready,
            m.refused_queue_full
        ),
        (0, 0, 0)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No client receives another user's (or another connection's)
    /// message; each connection receives, in order and at most once, what
    /// was sent to it while it was routable (all of it when it stayed open);
    /// `Delivery` matches the routing table; every exit path empties the
    /// table.
    #[test]
    fn routing_is_isolated_ordered_complete_and_every_exit_leaves_the_table(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        runtime().block_on(check_ops(&ops))?;
    }
}
