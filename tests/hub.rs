//! The hub driving whole connection lives over the in-memory transport: the
//! readiness gate, every exit path leaving the routing table, limits, slow
//! consumers, authentication failures and id generation.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use support::*;
use ws_lifecycle::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use ws_lifecycle::close::{CloseCause, CloseCode};
use ws_lifecycle::config::{
    BufferLimit, ConnectionLimitPolicy, HubConfig, PreReadyOverflow, SlowConsumerPolicy,
};
use ws_lifecycle::event::{AgentEventKind, Event, WireMode};
use ws_lifecycle::id::{ConnectionId, ContextIds, IdGenerator, RequestId, RunId, ThreadId, UserId};
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::memory;
use ws_lifecycle::{CloseReport, ConnectionHandle, Hub, SendError};

fn assert_gone(hub: &Hub, user: &UserId) {
    assert_eq!(hub.connection_count(), 0, "routing table not empty");
    assert_eq!(hub.user_count(), 0, "user index not empty");
    assert!(!hub.is_online(user));
}

#[tokio::test]
async fn nothing_is_written_before_ready_and_the_buffer_flushes_in_order() {
    let hub = Hub::new();
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    for i in 1..=3 {
        let d = hub
            .send_to_user(&alice, &event("e", json!(i)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.buffered, d.queued, d.refused), (1, 0, 0));
    }
    assert_eq!(client.try_recv(), None, "written while authenticated");
    let conn = conn.services_ready();
    assert_eq!(conn.state(), ConnectionState::ServicesReady);
    assert_eq!(client.try_recv(), None, "written while services-ready");

    let conn = conn.ready();
    let after = hub
        .send_to_user(&alice, &event("e", json!(4)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.queued, 1);
    for i in 1..=4u64 {
        let f = next_json(&mut client).await;
        assert_eq!(
            (f["seq"].as_u64(), f["payload"].as_u64()),
            (Some(i), Some(i))
        );
    }
    let history: Vec<_> = conn.history().map(|t| (t.from, t.to, t.reason)).collect();
    use ConnectionState::*;
    assert_eq!(
        history,
        [
            (Connecting, Accepted, "upgraded"),
            (Accepted, Authenticated, "auth_ok"),
            (Authenticated, ServicesReady, "services_ready"),
            (ServicesReady, Ready, "ready"),
        ]
    );
    let report = conn.close(CloseCause::Requested(frame(1000, "bye"))).await;
    assert_eq!(report.state, Closed);
    assert_gone(&hub, &alice);
    assert_accounted(&hub.metrics());
}

#[tokio::test]
async fn events_emitted_by_on_ready_come_first_and_wait_ready_wakes() {
    let hub = Hub::new();
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    let handle = conn.handle();
    let handler = Scripted {
        on_ready: OnReady::Emit(vec!["first", "second"]),
        ..Default::default()
    };
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &handler).await }
    });
    handle
        .wait_ready(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = hub.send_to_user(&alice, &event("third", json!(null)));
    let names: Vec<_> = [
        next_json(&mut client).await,
        next_json(&mut client).await,
        next_json(&mut client).await,
    ]
    .iter()
    .map(|f| (f["seq"].as_u64(), f["type"].as_str().map(str::to_owned)))
    .collect();
    assert_eq!(
        names,
        [
            (Some(1), Some("first".to_owned())),
            (Some(2), Some("second".to_owned())),
            (Some(3), Some("third".to_owned())),
        ]
    );
    client.close(None).await;
    let report = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.cause, CloseCause::PeerClosed(None));
    assert_gone(&hub, &alice);
}

#[tokio::test]
async fn a_send_after_close_hands_the_event_back() {
    let hub = Hub::new();
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    let handle = conn.handle();
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    client.close(Some(frame(1000, "done"))).await;
    let report = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.state, ConnectionState::Closed);
    assert_eq!(handle.state(), ConnectionState::Closed);

    let ev = event("late", json!({"keep": "me"}));
    match handle.emit(ev.clone()) {
        Err(SendError::Closed(back)) => assert_eq!(back, ev),
        other => panic!("expected Closed, got {other:?}"),
    }
    let misses_before = hub.metrics().routing_misses;
    let d = hub
        .send_to_user(&alice, &ev)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(d.is_miss());
    assert_eq!(hub.metrics().routing_misses, misses_before + 1);
    match hub.send_to_connection(handle.id(), ev.clone()) {
        Err(SendError::Closed(back)) => assert_eq!(back, ev),
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// One exit path: how the test ends the connection, and what it must see.
async fn exit_path(
    handler: Scripted,
    config: impl FnOnce(&mut HubConfig),
    end: impl AsyncFnOnce(&mut memory::MemoryClient, &ConnectionHandle),
) -> (CloseReport, Option<ws_lifecycle::close::CloseFrame>) {
    let hub = hub_with(config);
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    let handle = conn.handle();
    assert!(hub.is_online(&alice));
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &handler).await }
    });
    end(&mut client, &handle).await;
    let (_, close) = read_to_close(&mut client).await;
    let report = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.state.is_terminal());
    assert_eq!(&report.connection_id, handle.id(), "the id changed");
    assert_eq!(report.user.as_ref(), Some(&alice));
    assert_gone(&hub, &alice);
    assert_accounted(&hub.metrics());
    (report, close)
}

#[tokio::test]
async fn peer_close_frame_is_answered_with_1000() {
    let (report, close) = exit_path(
        Scripted::default(),
        |_| {},
        async |client, _| {
            client.close(Some(frame(1000, "bye"))).await;
        },
    )
    .await;
    assert_eq!(
        report.cause,
        CloseCause::PeerClosed(Some(frame(1000, "bye")))
    );
    assert_eq!(report.state, ConnectionState::Closed);
    assert_eq!(close.map(|f| f.code), Some(CloseCode::NORMAL));
}

#[tokio::test]
async fn peer_reset_without_close_frame_fails_the_connection() {
    let (report, close) = exit_path(
        Scripted::default(),
        |_| {},
        async |client, _| {
            client.abort();
        },
    )
    .await;
    assert_eq!(report.cause, CloseCause::PeerGone);
    assert_eq!(report.state, ConnectionState::Failed);
    assert_eq!(close, None);
}

#[tokio::test]
async fn handler_close_frame_closes_with_it() {
    let handler = Scripted {
        on_message: OnMessage::Close(frame(4400, "bad_message")),
        ..Default::default()
    };
    let (report, close) = exit_path(
        handler,
        |_| {},
        async |client, _| {
            let _ = client.send_text("hello").await;
        },
    )
    .await;
    assert_eq!(
        report.cause,
        CloseCause::Requested(frame(4400, "bad_message"))
    );
    assert_eq!(close, Some(frame(4400, "bad_message")));
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_connection_with_1011() {
    let handler = Scripted {
        on_message: OnMessage::Panic,
        ..Default::default()
    };
    let (report, close) = exit_path(
        handler,
        |_| {},
        async |client, _| {
            let _ = client.send_text("boom").await;
        },
    )
    .await;
    assert_eq!(report.cause, CloseCause::HandlerPanicked);
    assert_eq!(report.state, ConnectionState::Failed);
    assert_eq!(close.map(|f| f.code), Some(CloseCode::INTERNAL_ERROR));
}

#[tokio::test]
async fn a_panicking_on_ready_hook_closes_with_1011() {
    let handler = Scripted {
        on_ready: OnReady::Panic,
        ..Default::default()
    };
    let (report, close) = exit_path(handler, |_| {}, async |_, _| {}).await;
    assert_eq!(report.cause, CloseCause::HandlerPanicked);
    assert_eq!(close.map(|f| f.code), Some(CloseCode::INTERNAL_ERROR));
}

#[tokio::test(start_paused = true)]
async fn an_on_ready_hook_past_its_deadline_closes_with_1013() {
    let handler = Scripted {
        on_ready: OnReady::Hang,
        ..Default::default()
    };
    let (report, close) = exit_path(
        handler,
        |_| {},
        async |_, handle| {
            let _ = handle.emit(event("never", json!(1)));
        },
    )
    .await;
    assert_eq!(report.cause, CloseCause::NotReadyInTime);
    assert_eq!(report.undelivered, 1, "the buffered event is reported");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::TRY_AGAIN_LATER));
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let (report, close) = exit_path(
        Scripted::default(),
        |c| c.max_message_size = 8,
        async |client, _| {
            let _ = client.send_text("123456789").await;
        },
    )
    .await;
    assert_eq!(report.cause, CloseCause::MessageTooBig);
    assert_eq!(close.map(|f| f.code), Some(CloseCode::MESSAGE_TOO_BIG));
}

#[tokio::test]
async fn an_application_close_drains_queued_events_first() {
    let hub = Hub::new();
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 64).await;
    let handle = conn.handle();
    for i in 0..10 {
        let _ = handle.emit(event("e", json!(i)));
    }
    assert!(handle.close(frame(4403, "revoked")));
    assert!(!handle.close(frame(1000, "again")), "the first close wins");
    let report = hub.run(conn, &Scripted::default()).await;
    let (frames, close) = read_to_close(&mut client).await;
    assert_eq!(frames.len(), 10, "queued events were not drained");
    assert_eq!(close, Some(frame(4403, "revoked")));
    assert_eq!(report.undelivered, 0);
    assert_gone(&hub, &alice);
    assert_accounted(&hub.metrics());
}

#[tokio::test]
async fn dropping_the_serving_future_removes_the_connection() {
    let hub = Hub::new();
    let alice = user("alice");
    let (transport, mut client) = memory::pair(16);
    let (tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let server = tokio::spawn({
        let (hub, alice) = (hub.clone(), alice.clone());
        async move { hub.serve(transport, alice, &handler).await }
    });
    let Some(handle) = ready.recv().await else {
        panic!("never ready")
    };
    let _ = hub.send_to_user(&alice, &event("hello", json!(1)));
    assert_eq!(next_json(&mut client).await["type"], "hello");
    assert_eq!(handle.state(), ConnectionState::Ready);
    server.abort();
    assert!(server.await.is_err_and(|e| e.is_cancelled()));
    assert_gone(&hub, &alice);
    assert_eq!(handle.state(), ConnectionState::Failed);
    assert_eq!(hub.metrics().connections.get("failed"), Some(&1));
    assert_accounted(&hub.metrics());
}

#[tokio::test]
async fn the_per_user_limit_refuses_the_newest_with_4429() {
    let hub = hub_with(|c| c.max_connections_per_user = 2);
    let alice = user("alice");
    let (_a, _ca) = bind(&hub, &alice, 4).await;
    let (_b, _cb) = bind(&hub, &alice, 4).await;
    let (transport, mut client) = memory::pair(4);
    let refused = hub
        .connect()
        .accept(transport)
        .authenticate(alice.clone().into())
        .await;
    let report = match refused {
        Err(report) => report,
        Ok(_) => panic!("third connection admitted"),
    };
    assert_eq!(report.cause, CloseCause::ConnectionLimit);
    let (_, close) = read_to_close(&mut client).await;
    assert_eq!(close.map(|f| f.code), Some(CloseCode::RATE_LIMITED));
    assert_eq!(hub.connections_of(&alice).len(), 2);
    assert_eq!(hub.metrics().connection_limit_closes, 1);
}

#[tokio::test]
async fn the_per_user_limit_can_evict_the_oldest() {
    let hub = hub_with(|c| {
        c.max_connections_per_user = 1;
        c.connection_limit_policy = ConnectionLimitPolicy::EvictOldest;
    });
    let alice = user("alice");
    let (old, mut old_client) = bind(&hub, &alice, 4).await;
    let old_id = old.id().clone();
    let old_server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(old, &Scripted::default()).await }
    });
    let (new, _new_client) = bind(&hub, &alice, 4).await;
    let report = old_server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.cause, CloseCause::ConnectionLimit);
    let (_, close) = read_to_close(&mut old_client).await;
    assert_eq!(close.map(|f| f.code), Some(CloseCode::RATE_LIMITED));
    let live: Vec<_> = hub
        .connections_of(&alice)
        .iter()
        .map(|h| h.id().clone())
        .collect();
    assert_eq!(live, [new.id().clone()]);
    assert_ne!(live, [old_id]);
}

#[tokio::test]
async fn a_full_outbound_queue_closes_a_slow_consumer_with_4409() {
    let hub = hub_with(|c| {
        c.outbound_queue = BufferLimit::new(4, 1 << 20);
        c.slow_consumer = SlowConsumerPolicy::Close;
    });
    let alice = user("alice");
    // Room for one frame in flight: the writer blocks on the second.
    let (conn, mut client) = bind(&hub, &alice, 1).await;
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    // Once the first frame is read the connection is Ready. On this
    // single-threaded runtime the writer does not run between the sends
    // below, so four queue up and the fifth overflows.
    let _ = hub.send_to_user(&alice, &event("e", json!(0)));
    let first = next_json(&mut client).await;
    assert_eq!(first["seq"], 1);
    let mut refused = 0;
    for i in 1..=20 {
        let d = hub
            .send_to_user(&alice, &event("e", json!(i)))
            .unwrap_or_else(|e| panic!("{e}"));
        refused += d.refused;
    }
    assert!(refused > 0, "the queue never filled");
    let (frames, close) = read_to_close(&mut client).await;
    assert_eq!(close.map(|f| f.code), Some(CloseCode::SLOW_CONSUMER));
    let seqs: Vec<_> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(seqs.iter().zip(2..).all(|(s, want)| *s == want), "{seqs:?}");
    let report = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.cause, CloseCause::SlowConsumer);
    let m = hub.metrics();
    assert!(m.refused_queue_full >= 1);
    assert_accounted(&m);
    assert_gone(&hub, &alice);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_write_closes_a_slow_consumer_even_when_the_queue_has_room() {
    let hub = hub_with(|c| c.slow_consumer = SlowConsumerPolicy::DropNewest);
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 1).await;
    let handle = conn.handle();
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    handle
        .wait_ready(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        let _ = handle.emit(event("e", json!(i)));
    }
    // The client reads nothing: the writer's second write stalls past the
    // write timeout.
    let report = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.cause, CloseCause::SlowConsumer);
    assert!(client.try_recv().is_some(), "the first frame was written");
    assert_gone(&hub, &alice);
    assert_accounted(&hub.metrics());
}

#[tokio::test]
async fn pre_ready_overflow_close_policy_closes_with_1013() {
    let hub = hub_with(|c| {
        c.pre_ready_buffer = BufferLimit::new(2, 1 << 20);
        c.pre_ready_overflow = PreReadyOverflow::Close;
    });
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    let handle = conn.handle();
    assert!(handle.emit(event("e", json!(1))).is_ok());
    assert!(handle.emit(event("e", json!(2))).is_ok());
    assert!(matches!(
        handle.emit(event("e", json!(3))),
        Err(SendError::Full(_))
    ));
    assert!(handle.is_closing());
    let report = hub.run(conn, &Scripted::default()).await;
    assert_eq!(report.cause, CloseCause::PreReadyOverflow);
    assert_eq!(report.undelivered, 2);
    let (frames, close) = read_to_close(&mut client).await;
    assert!(frames.is_empty(), "written before Ready: {frames:?}");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::TRY_AGAIN_LATER));
    assert_accounted(&hub.metrics());
}

#[tokio::test]
async fn send_to_user_reaches_only_that_users_connections() {
    let hub = Hub::new();
    let (alice, bob) = (user("alice"), user("bob"));
    let mut clients = Vec::new();
    for u in [&alice, &alice, &bob] {
        let (conn, client) = bind(&hub, u, 16).await;
        let hub = hub.clone();
        tokio::spawn(async move { hub.run(conn, &Scripted::default()).await });
        clients.push(client);
    }
    let d = hub
        .send_to_user(&alice, &event("for.alice", json!(1)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.accepted(), 2);
    let to_bob = hub
        .send_to_user(&bob, &event("for.bob", json!(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(to_bob.accepted(), 1);
    for client in clients.iter_mut().take(2) {
        let f = next_json(client).await;
        assert_eq!(
            (f["type"].as_str(), f["seq"].as_u64()),
            (Some("for.alice"), Some(1))
        );
    }
    let Some(bob_client) = clients.get_mut(2) else {
        unreachable!()
    };
    let f = next_json(bob_client).await;
    assert_eq!(
        (f["type"].as_str(), f["seq"].as_u64()),
        (Some("for.bob"), Some(1))
    );

    // send_to_connection reaches that one connection only.
    let alice_conns = hub.connections_of(&alice);
    let Some(target) = alice_conns.first() else {
        unreachable!()
    };
    let seq = hub
        .send_to_connection(target.id(), event("direct", json!(3)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seq, 2);
    assert_eq!(hub.metrics().isolation_refusals, 0);
}

#[tokio::test]
async fn each_connection_can_keep_its_own_wire_mode() {
    let hub = Hub::new();
    let alice = user("alice");
    let mut clients = Vec::new();
    for mode in [WireMode::Named, WireMode::LegacyNumeric] {
        let (transport, client) = memory::pair(16);
        let outcome = AuthOutcome::new(alice.clone()).with_wire_mode(mode);
        let conn = hub
            .connect()
            .accept(transport)
            .authenticate(outcome)
            .await
            .unwrap_or_else(|r| panic!("{r}"));
        let hub = hub.clone();
        tokio::spawn(async move { hub.run(conn, &Scripted::default()).await });
        clients.push(client);
    }
    let ctx = hub.ids().mint_context(&alice);
    let _ = hub.send_to_user(
        &alice,
        &Event::agent(AgentEventKind::ToolExecuting, &ctx.run, json!({})),
    );
    let [named, legacy] = &mut clients[..] else {
        unreachable!()
    };
    assert_eq!(next_json(named).await["type"], "tool_executing");
    assert_eq!(next_json(legacy).await["type"], 3);
}

/// Authenticates from a header; never resolves for `hang`.
struct HeaderAuth;

impl Authenticator for HeaderAuth {
    async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        match request.header("x-test-user") {
            None => Err(AuthError::TokenMissing.into()),
            Some("expired") => Err(AuthError::TokenExpired.into()),
            Some("banned") => Err(AuthError::Forbidden.into()),
            Some("hang") => std::future::pending().await,
            Some(name) => Ok(AuthOutcome::new(
                UserId::new(name).map_err(|_| AuthError::ClaimInvalid("bad user"))?,
            )
            .with_subprotocol("jwt-auth")),
        }
    }
}

async fn serve_with_header(
    hub: &Hub,
    value: Option<&str>,
    handler: &Scripted,
) -> (CloseReport, memory::MemoryClient) {
    let mut request = HandshakeRequest::builder();
    if let Some(value) = value {
        request = request.header("X-Test-User", value);
    }
    let request = request.build().unwrap_or_else(|e| panic!("{e}"));
    let (transport, client) = memory::pair(16);
    let report = hub
        .serve_with_auth(transport, &request, &HeaderAuth, handler)
        .await;
    (report, client)
}

#[tokio::test(start_paused = true)]
async fn failed_authentication_closes_with_its_code_and_never_routes() {
    let hub = Hub::new();
    let cases = [
        (None, 4401, "token_missing"),
        (Some("expired"), 4401, "token_expired"),
        (Some("banned"), 4403, "forbidden"),
        (Some("hang"), 4408, "auth_timeout"),
    ];
    for (value, code, reason) in cases {
        let (report, mut client) = serve_with_header(&hub, value, &Scripted::default()).await;
        assert_eq!(report.state, ConnectionState::Failed, "{value:?}");
        assert_eq!(report.user, None);
        let (frames, close) = read_to_close(&mut client).await;
        assert!(frames.is_empty());
        assert_eq!(close, Some(frame(code, reason)), "{value:?}");
        assert_eq!(
            hub.metrics().auth_failures.get(reason),
            Some(&1),
            "{reason}"
        );
        assert_eq!(hub.connection_count(), 0);
    }
    assert_eq!(hub.metrics().connections.get("authenticated"), Some(&0));
    assert_eq!(hub.metrics().connections.get("failed"), Some(&4));
}

#[tokio::test]
async fn successful_authentication_binds_the_user_it_names() {
    let hub = Hub::new();
    let carol = user("carol");
    let (tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { serve_with_header(&hub, Some("carol"), &handler).await }
    });
    let Some(handle) = ready.recv().await else {
        panic!("never ready")
    };
    assert!(hub.is_online(&carol));
    handle
        .wait_ready(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(handle.user(), &carol);
    assert!(handle.close(frame(1000, "done")));
    let (report, _client) = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.user, Some(carol.clone()));
    assert_gone(&hub, &carol);
}

#[test]
fn refusing_before_the_upgrade_counts_and_fails() {
    let hub = Hub::new();
    let report = hub.connect().refuse(&AuthError::SignatureInvalid);
    assert_eq!(report.state, ConnectionState::Failed);
    assert_eq!(
        hub.metrics().auth_failures.get("signature_invalid"),
        Some(&1)
    );
    assert_eq!(AuthError::SignatureInvalid.http_status(), 401);
    assert_eq!(hub.connection_count(), 0);
}

/// A generator with its own format: a counter.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl IdGenerator for Counter {
    fn mint_connection_id(&self) -> ConnectionId {
        ConnectionId::from_custom(&format!("conn_{}", self.next()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn mint_context(&self, _: &UserId) -> ContextIds {
        let n = self.next();
        let thread =
            ThreadId::from_custom(&format!("thread_{n}")).unwrap_or_else(|e| panic!("{e}"));
        let run =
            RunId::from_custom(&thread, &format!("run_{n}")).unwrap_or_else(|e| panic!("{e}"));
        let request = RequestId::from_custom(&format!("req_{n}")).unwrap_or_else(|e| panic!("{e}"));
        ContextIds {
            thread,
            run,
            request,
        }
    }
}

#[tokio::test]
async fn a_custom_id_generator_mints_every_id() {
    let hub = Hub::builder()
        .id_generator(Counter::default())
        .build()
        .unwrap();
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    assert_eq!(conn.id().as_str(), "conn_1");
    let id = conn.id().clone();
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    let ctx = hub.ids().mint_context(&alice);
    assert_eq!(ctx.run.as_str(), "run_2");
    assert_eq!(ctx.run.thread_id().as_str(), "thread_2");
    let _ = hub.send_to_user(
        &alice,
        &Event::agent(AgentEventKind::AgentStarted, &ctx.run, json!({})),
    );
    let f = next_json(&mut client).await;
    assert_eq!(
        (f["run_id"].as_str(), f["thread_id"].as_str()),
        (Some("run_2"), Some("thread_2"))
    );
    assert!(hub.connection(&id).is_some());
    client.close(None).await;
    let report = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.connection_id, id);
}

#[tokio::test]
async fn metrics_count_connections_by_state() {
    let hub = Hub::new();
    let (alice, bob) = (user("alice"), user("bob"));
    let (a, _ca) = bind(&hub, &alice, 16).await;
    let (b, _cb) = bind(&hub, &bob, 16).await;
    let a = a.services_ready().ready();
    let m = hub.metrics();
    assert_eq!(m.connections.get("ready"), Some(&1));
    assert_eq!(m.connections.get("authenticated"), Some(&1));
    let _ = a.close(CloseCause::Requested(frame(1000, "bye"))).await;
    drop(b);
    let m = hub.metrics();
    assert_eq!(m.connections.get("ready"), Some(&0));
    assert_eq!(m.connections.get("authenticated"), Some(&0));
    assert_eq!(m.connections.get("closed"), Some(&1));
    assert_eq!(m.connections.get("failed"), Some(&1));
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Hub>();
    send_sync::<ConnectionHandle>();
    send_sync::<CloseReport>();
    send_sync::<SendError<Event>>();
    send_sync::<ws_lifecycle::metrics::MetricsSnapshot>();

    fn send<T: Send>(_: &T) {}
    let hub = Hub::new();
    let (transport, _client) = memory::pair(1);
    let handler = Scripted::default();
    let serving = hub.serve(transport, user("a"), &handler);
    send(&serving);
    let request = HandshakeRequest::default();
    let (transport, _client) = memory::pair(1);
    let authenticating = hub.serve_with_auth(transport, &request, &HeaderAuth, &handler);
    send(&authenticating);
}

#[tokio::test(start_paused = true)]
async fn a_close_cut_short_reports_every_unwritten_event() {
    let hub = hub_with(|c| c.close_timeout = Duration::from_millis(50));
    let alice = user("alice");
    // The client never reads: one frame fits, the writer stalls on the next.
    let (conn, mut client) = bind(&hub, &alice, 1).await;
    let conn = conn.services_ready().ready();
    for i in 0..10 {
        conn.send(event("e", json!(i))).unwrap();
    }
    let report = conn.close(CloseCause::Requested(frame(1000, "bye"))).await;
    let m = hub.metrics();
    assert_eq!(m.events_written, 1);
    assert_eq!(
        report.undelivered, 9,
        "the report must match what was never written"
    );
    assert_eq!(m.dropped_on_close, 9);
    assert_accounted(&m);
    let mut received = 0;
    while let Some(message) = client.recv().await {
        if matches!(message, ws_lifecycle::transport::Message::Text(_)) {
            received += 1;
        }
    }
    assert_eq!(received, 1);
}

#[tokio::test]
async fn send_to_users_reaches_exactly_the_listed_users_each_in_its_own_sequence() {
    let hub = Hub::new();
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let (a, mut a_client) = bind(&hub, &alice, 16).await;
    let (b, mut b_client) = bind(&hub, &bob, 16).await;
    let (c, mut c_client) = bind(&hub, &carol, 16).await;
    let (a, b, c) = (
        a.services_ready().ready(),
        b.services_ready().ready(),
        c.services_ready().ready(),
    );
    // Bob is one event ahead, so his sequence differs from Alice's.
    let _ = hub.send_to_user(&bob, &event("solo", json!(0))).unwrap();
    let sent = hub
        .send_to_users([&alice, &bob, &dave, &alice], &event("team", json!(1)))
        .unwrap();
    assert_eq!(
        (
            sent.users,
            sent.missed,
            sent.queued,
            sent.buffered,
            sent.refused
        ),
        (4, 1, 3, 0, 0),
        "dave has no connection; alice is listed twice"
    );
    assert_eq!(sent.accepted(), 3);
    for seq in [1, 2] {
        let f = next_json(&mut a_client).await;
        assert_eq!(
            (f["type"].as_str(), f["seq"].as_u64()),
            (Some("team"), Some(seq))
        );
    }
    let solo = next_json(&mut b_client).await;
    assert_eq!(solo["type"], "solo");
    let f = next_json(&mut b_client).await;
    assert_eq!(
        (f["type"].as_str(), f["seq"].as_u64()),
        (Some("team"), Some(2))
    );
    // Carol was not listed: nothing reaches her.
    tokio::task::yield_now().await;
    assert_eq!(c_client.try_recv(), None, "an unlisted user got the event");
    let m = hub.metrics();
    assert_eq!((m.routing_misses, m.events_queued), (1, 4));
    for conn in [a, b, c] {
        let _ = conn.close(CloseCause::Requested(frame(1000, "bye"))).await;
    }
    assert_accounted(&hub.metrics());
}
