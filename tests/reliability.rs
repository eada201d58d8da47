//! When things go wrong: silent peers, floods, protocol violations,
//! overload at the door, and shutting down with connections that will not
//! cooperate. Time is Tokio's paused clock throughout.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::time::Instant;
use ws_lifecycle::auth::{AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use ws_lifecycle::close::CloseCause;
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::memory::{self, MemoryClient, MemorySink, MemoryTransport};
use ws_lifecycle::transport::{Message, Transport, TransportError, TransportStream};
use ws_lifecycle::upgrade::{Decision, decide};
use ws_lifecycle::{CloseReport, Hub};

/// Serves `user` on `hub` over a fresh pair; returns the client and the
/// task driving the connection.
async fn serve(
    hub: &Hub,
    name: &str,
    cap: usize,
) -> (MemoryClient, tokio::task::JoinHandle<CloseReport>) {
    let (conn, client) = bind(hub, &user(name), cap).await;
    let hub = hub.clone();
    (
        client,
        tokio::spawn(async move { hub.run(conn, &Scripted::default()).await }),
    )
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_pinged_then_closed_within_ping_plus_pong_timeout() {
    let hub = Hub::new();
    let started = Instant::now();
    let (mut client, server) = serve(&hub, "alice", 16).await;
    // The client reads but never answers: a half-open peer.
    assert_eq!(
        client.recv().await,
        Some(Message::Ping(bytes::Bytes::new()))
    );
    let pinged = started.elapsed();
    assert!(
        pinged >= Duration::from_secs(25) && pinged < Duration::from_secs(26),
        "{pinged:?}"
    );
    let report = server.await.unwrap();
    let gone = started.elapsed();
    assert!(
        gone >= Duration::from_secs(35) && gone < Duration::from_secs(36),
        "{gone:?}"
    );
    assert_eq!(
        (report.cause, report.state),
        (CloseCause::HeartbeatTimeout, ConnectionState::Failed)
    );
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_pings_stays_up() {
    let hub = Hub::new();
    let (mut client, server) = serve(&hub, "alice", 16).await;
    let until = Instant::now() + Duration::from_secs(300);
    let mut pings = 0;
    while Instant::now() < until {
        match client.recv().await {
            Some(Message::Ping(data)) => {
                pings += 1;
                client.send(Message::Pong(data)).await.unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 10, "{pings} pings in 300 s");
    assert!(hub.is_online(&user("alice")));
    client.close(None).await;
    assert_eq!(server.await.unwrap().cause, CloseCause::PeerClosed(None));
}

#[tokio::test(start_paused = true)]
async fn a_flood_is_closed_with_4429_and_a_steady_sender_is_not() {
    let hub = Hub::new();
    let (mut flooder, flood_server) = serve(&hub, "flooder", 16).await;
    let (mut steady, steady_server) = serve(&hub, "steady", 16).await;
    for i in 0..60 {
        if flooder.send_text(format!("{i}")).await.is_err() {
            break;
        }
    }
    let (_, close) = read_to_close(&mut flooder).await;
    assert_eq!(close, Some(frame(4429, "rate_limited")));
    assert_eq!(flood_server.await.unwrap().cause, CloseCause::RateLimited);
    // 10 a second for 30 s: under the 20/s limit.
    for i in 0..300 {
        steady.send_text(format!("{i}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hub.is_online(&user("steady")));
    steady.close(None).await;
    assert_eq!(
        steady_server.await.unwrap().cause,
        CloseCause::PeerClosed(None)
    );
}

/// A transport whose peer breaks the protocol as soon as it is read.
struct Broken(MemoryTransport);

struct BrokenStream;

impl TransportStream for BrokenStream {
    async fn next(&mut self) -> Option<Result<Message, TransportError>> {
        Some(Err(TransportError::Protocol(
            "invalid close code 1005".into(),
        )))
    }
}

impl Transport for Broken {
    type Sink = MemorySink;
    type Stream = BrokenStream;

    fn split(self) -> (MemorySink, BrokenStream) {
        (self.0.split().0, BrokenStream)
    }
}

#[tokio::test]
async fn a_protocol_violation_closes_with_1002() {
    let hub = Hub::new();
    let (transport, mut client) = memory::pair(16);
    let report = hub
        .serve(Broken(transport), user("alice"), &Scripted::default())
        .await;
    assert_eq!(
        (report.cause, report.state),
        (CloseCause::ProtocolError, ConnectionState::Failed)
    );
    assert_eq!(
        read_to_close(&mut client).await.1,
        Some(frame(1002, "protocol_error"))
    );
}

/// Never finishes.
struct Hangs;

impl Authenticator for Hangs {
    async fn authenticate(&self, _: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        std::future::pending().await
    }
}

fn busy(decision: &Decision) -> bool {
    matches!(decision, Decision::Refuse(r) if (r.status, r.code) == (503, "server_busy"))
}

#[tokio::test(start_paused = true)]
async fn overload_at_the_door_is_answered_503_at_once() {
    // Upgrades in flight.
    let hub = hub_with(|c| c.max_upgrades_in_flight = 1);
    let request = upgrade_request();
    let stuck = tokio::spawn({
        let (hub, request) = (hub.clone(), request.clone());
        async move { decide(&hub, "GET", &request, &Hangs).await }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    assert!(
        busy(&decide(&hub, "GET", &request, &Alice).await),
        "a second upgrade while one is in flight"
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
    stuck.abort();

    // The connection cap.
    let hub = hub_with(|c| c.max_connections = Some(1));
    let (_client, _server) = serve(&hub, "bob", 16).await;
    assert!(
        busy(&decide(&hub, "GET", &request, &Alice).await),
        "past the connection cap"
    );
    assert_eq!(hub.metrics().upgrades_refused, 1);

    // Shutting down.
    let hub = Hub::new();
    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown(Duration::from_secs(1)).await }
    });
    tokio::task::yield_now().await;
    assert!(
        busy(&decide(&hub, "GET", &request, &Alice).await),
        "while shutting down"
    );
    shutdown.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_everyone_with_1012_in_batches_and_reports() {
    let hub = Hub::new();
    let mut clients = Vec::new();
    for i in 0..250 {
        let (client, server) = serve(&hub, &format!("user-{}", i % 50), 16).await;
        clients.push((client, server));
    }
    let _ = hub.send_to_user(&user("user-0"), &event("last.words", json!(1)));
    let started = Instant::now();
    let report = hub.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        (report.connections, report.closed_cleanly, report.forced),
        (250, 250, 0)
    );
    assert_eq!(report.undelivered, 0);
    // Batches of 100: the last connections were asked 2 pauses after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    for (client, server) in &mut clients {
        let (frames, close) = read_to_close(client).await;
        assert_eq!(close, Some(frame(1012, "restart")));
        assert!(frames.iter().all(|f| f["type"] == "last.words"));
        assert_eq!(server.await.unwrap().state, ConnectionState::Closed);
    }
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_forces_a_peer_that_never_reads_after_the_deadline() {
    let hub = hub_with(|c| {
        c.write_timeout = Duration::from_secs(3600);
        c.close_timeout = Duration::from_secs(3600);
    });
    let (mut cooperative, cooperative_server) = serve(&hub, "alice", 16).await;
    // One frame fits in the stalled client's pipe; the rest stay queued.
    let (_stalled, stalled_server) = serve(&hub, "bob", 1).await;
    for i in 0..10 {
        let _ = hub.send_to_user(&user("bob"), &event("e", json!(i)));
    }
    tokio::task::yield_now().await;
    let started = Instant::now();
    let report = hub.shutdown(Duration::from_secs(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (report.connections, report.closed_cleanly, report.forced),
        (2, 1, 1)
    );
    assert!(report.undelivered >= 8, "{report:?}");
    assert_eq!(
        read_to_close(&mut cooperative).await.1,
        Some(frame(1012, "restart"))
    );
    assert_eq!(
        cooperative_server.await.unwrap().state,
        ConnectionState::Closed
    );
    let stalled = stalled_server.await.unwrap();
    assert!(stalled.undelivered >= 8, "{stalled:?}");
    assert_eq!(hub.connection_count(), 0);
    assert_accounted(&hub.metrics());
}
