//! Invariants 2 (readiness gate) and 3 (ordered, accounted delivery) on one
//! connection, driven directly through the typestate API on a current-thread
//! runtime.
//!
//! A generated script interleaves `ConnectionHandle::emit`,
//! `Hub::send_to_user`, yields (so the writer task may run) and non-blocking
//! reads, with the Ready transition at a generated position. A model of the
//! outbox predicts, for every call, its sequence number or refusal and, at the
//! end, the exact frames the client must have received. The model also knows
//! the three pre-ready overflow policies, which three of the properties
//! exercise with a tiny pre-ready buffer; a last test runs the `Close` policy
//! under `Hub::run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod support;

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use support::{bind, hub_with};
use ws_lifecycle::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::config::{BufferLimit, HubConfig, PreReadyOverflow};
use ws_lifecycle::connection::{Authenticated, Connection, Ready};
use ws_lifecycle::event::{AgentEventKind, Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::Message;
use ws_lifecycle::transport::memory::MemoryTransport;
use ws_lifecycle::{CloseReport, ConnectionHandle, Delivery, Handler, Hub, Inbound, SendError};

/// One step of a script.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `ConnectionHandle::emit` of a custom event.
    Emit,
    /// `Hub::send_to_user` of an agent event to the connection's user.
    SendToUser,
    /// Yields to the runtime: once Ready, the writer task may run here.
    Yield,
    /// Takes whatever already reached the client, without waiting.
    Read,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Emit),
        4 => Just(Op::SendToUser),
        1 => Just(Op::Yield),
        1 => Just(Op::Read),
    ]
}

/// A script and the index before which the connection becomes Ready
/// (`ops.len()`: after the last op).
fn script(max_ops: usize) -> impl Strategy<Value = (Vec<Op>, usize)> {
    prop::collection::vec(op(), 0..=max_ops).prop_flat_map(|ops| {
        let n = ops.len();
        (Just(ops), 0..=n)
    })
}

/// How the event that reached the outbox came in: decides its wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Emit,
    User,
}

/// What the outbox must answer to one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted(u64),
    Full,
    Closed,
}

/// The outbox as the invariants describe it: sequence numbers from 1 taken
/// only by accepted events; before Ready a buffer of `limit` events under the
/// overflow policy; at Ready the buffer is flushed first: the connection's
/// own events in emission order (they took their numbers then), then the
/// events of the user's stream that arrived meanwhile, in offset order,
/// numbered as they are queued (a resume's replay goes between the two, so
/// the stream's events wait for their place).
#[derive(Debug)]
struct Model {
    limit: usize,
    policy: PreReadyOverflow,
    ready: bool,
    /// Set when the `Close` policy fired.
    overflow_closed: bool,
    next_seq: u64,
    /// The connection's own events before Ready: `(seq, id, via)`.
    buffer: VecDeque<(u64, u64, Via)>,
    /// The user's stream's events before Ready: their ids.
    held: VecDeque<u64>,
    /// `(seq, id, via)` the client must receive, in this order.
    written: Vec<(u64, u64, Via)>,
    /// Buffered when the `Close` policy fired, so never written.
    undelivered: u64,
    dropped_overflow: u64,
    refused_before_ready: u64,
    refused_closed: u64,
}

impl Model {
    fn new(config: &HubConfig) -> Self {
        Model {
            limit: config.pre_ready_buffer.max_events,
            policy: config.pre_ready_overflow,
            ready: false,
            overflow_closed: false,
            next_seq: 1,
            buffer: VecDeque::new(),
            held: VecDeque::new(),
            written: Vec::new(),
            undelivered: 0,
            dropped_overflow: 0,
            refused_before_ready: 0,
            refused_closed: 0,
        }
    }

    fn push(&mut self, id: u64, via: Via) -> Answer {
        if self.overflow_closed {
            self.refused_closed += 1;
            return Answer::Closed;
        }
        // The scripts stay far below the default outbound queue, so only the
        // pre-ready buffer can overflow.
        if !self.ready && self.buffered() >= self.limit {
            match self.policy {
                PreReadyOverflow::Reject => {
                    self.refused_before_ready += 1;
                    return Answer::Full;
                }
                PreReadyOverflow::Close => {
                    self.refused_before_ready += 1;
                    self.overflow_closed = true;
                    return Answer::Full;
                }
                PreReadyOverflow::DropOldest => {
                    // The connection's own first, then the stream's.
                    while self.buffered() >= self.limit
                        && (self.buffer.pop_front().is_some() || self.held.pop_front().is_some())
                    {
                        self.dropped_overflow += 1;
                    }
                    if self.buffered() >= self.limit {
                        // A zero-event buffer: nothing can be made room for.
                        self.refused_before_ready += 1;
                        return Answer::Full;
                    }
                }
                other => panic!("policy {other:?} not modelled"),
            }
        }
        if !self.ready && via == Via::User {
            // Held without a number until Ready.
            self.held.push_back(id);
            return Answer::Accepted(0);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.ready {
            self.written.push((seq, id, via));
        } else {
            self.buffer.push_back((seq, id, via));
        }
        Answer::Accepted(seq)
    }

    fn buffered(&self) -> usize {
        self.buffer.len() + self.held.len()
    }

    fn become_ready(&mut self) {
        self.ready = true;
        if self.overflow_closed {
            // The writer sends the 1013 close frame without writing anything.
            self.undelivered = self.buffered() as u64;
            self.buffer.clear();
            self.held.clear();
        } else {
            self.written.extend(self.buffer.drain(..));
            for id in std::mem::take(&mut self.held) {
                self.written.push((self.next_seq, id, Via::User));
                self.next_seq += 1;
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn done() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, CloseReason::new("done").expect("reason"))
}

fn alice() -> UserId {
    UserId::new("alice").expect("user id")
}

/// The connection in whichever stage the script has reached.
enum Driven {
    Before(Connection<Authenticated<MemoryTransport>>),
    Ready(Connection<Ready<MemoryTransport>>),
}

/// Runs `ops` against a fresh hub built from `config`, with the Ready
/// transition before op `ready_at`, and checks every answer, every frame and
/// the metrics against the model.
async fn check_script(config: HubConfig, ops: &[Op], ready_at: usize) -> Result<(), TestCaseError> {
    let mut model = Model::new(&config);
    let hub = Hub::builder().config(config).build().unwrap();
    let user = alice();
    // Room for every event and the close frame: the writer never waits.
    let (conn, mut client) = bind(&hub, &user, ops.len() + 2).await;
    let handle = conn.handle();
    let mut stage = Some(Driven::Before(conn));
    let run = hub.ids().mint_context(&user).run;
    let name = EventName::new("e").expect("event name");
    let mut received = Vec::new();
    let mut next_id = 0u64;
    let mut user_sends = 0u64;

    for i in 0..=ops.len() {
        if i == ready_at {
            let Some(Driven::Before(conn)) = stage.take() else {
                panic!("ready twice")
            };
            prop_assert_eq!(client.try_recv(), None, "a frame was written before Ready");
            let conn = conn.services_ready();
            prop_assert_eq!(conn.state(), ConnectionState::ServicesReady);
            prop_assert_eq!(client.try_recv(), None, "a frame was written before Ready");
            let conn = conn.ready();
            prop_assert_eq!(conn.state(), ConnectionState::Ready);
            model.become_ready();
            stage = Some(Driven::Ready(conn));
        }
        let Some(op) = ops.get(i) else { break };
        match op {
            Op::Emit => {
                next_id += 1;
                let event = Event::custom(name.clone(), json!({ "id": next_id }));
                let got = handle.emit(event.clone());
                let want = match model.push(next_id, Via::Emit) {
                    Answer::Accepted(seq) => Ok(seq),
                    Answer::Full => Err(SendError::Full(event)),
                    Answer::Closed => Err(SendError::Closed(event)),
                };
                prop_assert_eq!(got, want, "emit #{}", next_id);
            }
            Op::SendToUser => {
                next_id += 1;
                let event = Event::agent(
                    AgentEventKind::AgentThinking,
                    &run,
                    json!({ "id": next_id }),
                );
                let got = hub.send_to_user(&user, &event).expect("encodes");
                let ready = model.ready;
                user_sends += 1;
                // Every send takes the stream's next offset, taken or not.
                let offset = Some(user_sends);
                let want = match model.push(next_id, Via::User) {
                    Answer::Accepted(_) if ready => Delivery {
                        queued: 1,
                        offset,
                        ..Delivery::default()
                    },
                    Answer::Accepted(_) => Delivery {
                        buffered: 1,
                        offset,
                        ..Delivery::default()
                    },
                    Answer::Full | Answer::Closed => Delivery {
                        refused: 1,
                        offset,
                        ..Delivery::default()
                    },
                };
                prop_assert_eq!(got, want, "send_to_user #{}", next_id);
            }
            Op::Yield => tokio::task::yield_now().await,
            Op::Read => {
                while let Some(message) = client.try_recv() {
                    received.push(message);
                }
            }
        }
        if !model.ready {
            prop_assert_eq!(client.try_recv(), None, "a frame was written before Ready");
        }
        // Only the `Close` policy may end the connection; the others keep it
        // open and routable.
        prop_assert_eq!(handle.is_closing(), model.overflow_closed);
        if !model.overflow_closed {
            prop_assert!(hub.is_online(&user));
        }
    }

    let Some(Driven::Ready(conn)) = stage.take() else {
        panic!("never became ready")
    };
    let report = conn.close(CloseCause::Requested(done())).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(message) = client.recv().await {
            rest.push(message);
        }
        rest
    })
    .await;
    let Ok(rest) = rest else {
        return Err(TestCaseError::fail("the transport never ended after close"));
    };
    received.extend(rest);

    // The frames: exactly the model's, then one close frame, then nothing.
    let Some(Message::Close(close)) = received.pop() else {
        return Err(TestCaseError::fail(format!(
            "the last message is not a close frame: {received:?}"
        )));
    };
    let mut frames = Vec::new();
    for message in &received {
        let Message::Text(text) = message else {
            return Err(TestCaseError::fail(format!(
                "unexpected message before close: {message:?}"
            )));
        };
        let frame: Value = serde_json::from_str(text).expect("frame is JSON");
        prop_assert_eq!(&frame["v"], &json!(1));
        let via = match frame["type"].as_str() {
            Some("e") => Via::Emit,
            Some("agent_thinking") => Via::User,
            other => return Err(TestCaseError::fail(format!("unexpected type {other:?}"))),
        };
        let seq = frame["seq"].as_u64().expect("seq");
        let id = frame["payload"]["id"].as_u64().expect("payload id");
        frames.push((seq, id, via));
    }
    prop_assert_eq!(&frames, &model.written);

    let expected_cause = if model.overflow_closed {
        prop_assert_eq!(
            close.as_ref().map(|f| f.code),
            Some(CloseCode::TRY_AGAIN_LATER)
        );
        CloseCause::PreReadyOverflow
    } else {
        prop_assert_eq!(close, Some(done()));
        CloseCause::Requested(done())
    };
    let want = (expected_cause, ConnectionState::Closed, model.undelivered);
    prop_assert_eq!((report.cause, report.state, report.undelivered), want);

    // Accounting (invariant 3) and hygiene after the close.
    let m = hub.metrics();
    prop_assert_eq!(m.events_written, model.written.len() as u64);
    prop_assert_eq!(m.dropped_overflow, model.dropped_overflow);
    prop_assert_eq!(m.refused_before_ready, model.refused_before_ready);
    prop_assert_eq!(m.refused_closed, model.refused_closed);
    prop_assert_eq!(m.dropped_on_close, model.undelivered);
    prop_assert_eq!(m.isolation_refusals, 0);
    prop_assert_eq!(
        m.events_buffered + m.events_queued,
        m.events_written + m.dropped_overflow + m.dropped_on_close
    );
    prop_assert!(matches!(
        handle.emit(Event::custom(name, json!(null))),
        Err(SendError::Closed(_))
    ));
    prop_assert!(!hub.is_online(&user));
    prop_assert_eq!(hub.connection_count(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Default configuration: every event is accepted, written exactly once,
    /// in emission order, with sequence numbers 1..=n, and nothing reaches
    /// the transport before Ready.
    #[test]
    fn any_interleaving_with_ready_delivers_every_event_once_in_order_and_gap_free(
        (ops, ready_at) in script(64),
    ) {
        runtime().block_on(check_script(HubConfig::default(), &ops, ready_at))?;
    }

    /// `Reject`: an emit past the pre-ready limit comes back as
    /// `SendError::Full` with the event; the connection stays open; the
    /// accepted events still arrive gap-free.
    #[test]
    fn reject_hands_excess_events_back_keeps_the_connection_and_stays_gap_free(
        limit in 0usize..=4,
        (ops, ready_at) in script(24),
    ) {
        let config = config_with(limit, PreReadyOverflow::Reject);
        runtime().block_on(check_script(config, &ops, ready_at))?;
    }

    /// `DropOldest`: the newest `limit` buffered events are written, the
    /// sequence gaps are exactly the dropped events, and `dropped_overflow`
    /// counts them.
    #[test]
    fn drop_oldest_writes_the_newest_events_with_gaps_exactly_at_the_drops(
        limit in 0usize..=4,
        (ops, ready_at) in script(24),
    ) {
        let config = config_with(limit, PreReadyOverflow::DropOldest);
        runtime().block_on(check_script(config, &ops, ready_at))?;
    }

    /// `Close`: the event that overflows is handed back, later ones are
    /// refused as closed, and the client gets only a 1013 close frame.
    #[test]
    fn close_policy_refuses_the_overflowing_event_and_closes_with_1013(
        limit in 0usize..=4,
        (ops, ready_at) in script(24),
    ) {
        let config = config_with(limit, PreReadyOverflow::Close);
        runtime().block_on(check_script(config, &ops, ready_at))?;
    }
}

fn config_with(limit: usize, policy: PreReadyOverflow) -> HubConfig {
    let mut config = HubConfig::default();
    config.pre_ready_buffer = BufferLimit::new(limit, 1 << 20);
    config.pre_ready_overflow = policy;
    config
}

/// The application: ignores inbound messages.
struct App;

impl Handler for App {
    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

/// The `Close` policy under the hub's own driver: `Hub::run` sees the
/// overflow before Ready and closes with 1013 without writing a single event.
#[tokio::test]
async fn close_policy_under_hub_run_closes_with_1013_and_writes_nothing() {
    let limit = 3;
    let hub = hub_with(|c| {
        c.pre_ready_buffer = BufferLimit::new(limit, 1 << 20);
        c.pre_ready_overflow = PreReadyOverflow::Close;
    });
    let user = alice();
    let (conn, mut client) = bind(&hub, &user, 16).await;
    let handle = conn.handle();
    let name = EventName::new("e").expect("event name");
    for seq in 1..=limit as u64 {
        assert_eq!(
            handle.emit(Event::custom(name.clone(), json!(seq))),
            Ok(seq)
        );
    }
    let overflow = Event::custom(name.clone(), json!("overflow"));
    assert_eq!(
        handle.emit(overflow.clone()),
        Err(SendError::Full(overflow))
    );
    let late = Event::custom(name, json!("late"));
    assert_eq!(handle.emit(late.clone()), Err(SendError::Closed(late)));
    assert_eq!(client.try_recv(), None, "a frame was written before Ready");

    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &App).await }
    });
    let report: CloseReport = server.await.expect("run task");
    assert_eq!(report.cause, CloseCause::PreReadyOverflow);
    assert_eq!(report.undelivered, limit as u64);
    let Some(Message::Close(Some(frame))) = client.recv().await else {
        panic!("expected a close frame first")
    };
    assert_eq!(frame.code, CloseCode::TRY_AGAIN_LATER);
    assert_eq!(client.recv().await, None);
    assert!(!hub.is_online(&user));
    let m = hub.metrics();
    assert_eq!(
        (m.events_written, m.refused_before_ready, m.dropped_on_close),
        (0, 1, limit as u64)
    );
}
