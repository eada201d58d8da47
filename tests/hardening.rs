//! Holes a hostile or careless peer, or a careless embedder, could use:
//! each test is named for the behaviour it pins, and failed before its fix.

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
use ws_lifecycle::auth::HandshakeRequest;
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::config::BufferLimit;
use ws_lifecycle::transport::memory::{self, MemoryClient, MemorySink, MemoryStream};
use ws_lifecycle::transport::{Message, Transport, TransportError, TransportSink};
use ws_lifecycle::upgrade::{Decision, decide};
use ws_lifecycle::{ConnectionHandle, Hub, SendError, ShutdownKind};

/// Serves `user` on `hub` over an in-memory pair; returns the client and
/// the handle once the connection is Ready.
async fn ready(hub: &Hub, name: &str) -> (MemoryClient, ConnectionHandle) {
    let (transport, client) = memory::pair(64);
    serve_on(hub, name, transport, client).await
}

async fn serve_on<T: Transport>(
    hub: &Hub,
    name: &str,
    transport: T,
    client: MemoryClient,
) -> (MemoryClient, ConnectionHandle) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let (hub, who) = (hub.clone(), user(name));
    tokio::spawn(async move { hub.serve(transport, who, &handler).await });
    let handle = rx.recv().await.unwrap();
    handle.wait_ready(Duration::from_secs(5)).await.unwrap();
    (client, handle)
}

async fn close_code(client: &mut MemoryClient) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), read_to_close(client))
        .await
        .expect("the connection was not closed")
        .1
        .map(|f| f.code.as_u16())
}

/// `max_connections` used to be checked against connections already
/// minted, so parallel upgrades all saw room and overshot it.
#[tokio::test]
async fn max_connections_holds_against_parallel_upgrades() {
    let hub = hub_with(|c| c.max_connections = Some(2));
    let request = upgrade_request();
    let decisions =
        futures_util::future::join_all((0..10).map(|_| decide(&hub, "GET", &request, &Alice)))
            .await;
    let admitted: Vec<_> = decisions
        .into_iter()
        .filter_map(|d| match d {
            Decision::Upgrade(admitted) => Some(admitted),
            Decision::Refuse(r) => {
                assert_eq!((r.status, r.code), (503, "server_busy"));
                None
            }
            _ => None,
        })
        .collect();
    assert_eq!(admitted.len(), 2, "the cap was overshot");
    // An admitted upgrade that never completes gives its place back.
    drop(admitted);
    tokio::time::timeout(Duration::from_secs(1), hub.idle())
        .await
        .expect("places were not given back");
    assert!(matches!(
        decide(&hub, "GET", &request, &Alice).await,
        Decision::Upgrade(_)
    ));
}

/// An event larger than the whole outbound queue used to close an idle
/// connection as a slow consumer (4409).
#[tokio::test]
async fn an_event_larger_than_the_queue_is_handed_back_and_the_connection_lives() {
    let hub = hub_with(|c| c.outbound_queue = BufferLimit::new(100, 4096));
    let (mut client, handle) = ready(&hub, "alice").await;
    let big = event("big", json!("x".repeat(8192)));
    match handle.emit(big.clone()) {
        Err(SendError::TooLarge(back)) => assert_eq!(back, big),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let sent = hub.send_to_user(&user("alice"), &big).unwrap();
    assert_eq!((sent.queued, sent.refused), (0, 1));
    assert_eq!(hub.metrics().refused_too_large, 2);
    // The connection is untouched: the next event is written.
    let _ = hub
        .send_to_user(&user("alice"), &event("small", json!(1)))
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "small");
    assert!(hub.is_online(&user("alice")));
}

/// A transport whose sink panics when it is fed a frame containing "boom".
struct Panicky(memory::MemoryTransport);
struct PanickySink(MemorySink);

impl Transport for Panicky {
    type Sink = PanickySink;
    type Stream = MemoryStream;
    fn split(self) -> (PanickySink, MemoryStream) {
        let (sink, stream) = self.0.split();
        (PanickySink(sink), stream)
    }
}

impl TransportSink for PanickySink {
    async fn feed(&mut self, message: Message) -> Result<(), TransportError> {
        if matches!(&message, Message::Text(t) if t.contains("boom")) {
            panic!("the transport's sink panicked");
        }
        self.0.feed(message).await
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().await
    }
    async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), TransportError> {
        self.0.close(frame).await
    }
}

/// A panicking writer used to go unnoticed: the connection stayed Ready and
/// routable, and nothing told the peer.
#[tokio::test]
async fn a_panicking_writer_closes_the_connection_with_1011_and_unroutes_it() {
    let hub = Hub::new();
    let (transport, client) = memory::pair(64);
    let (mut client, _handle) = serve_on(&hub, "alice", Panicky(transport), client).await;
    let _ = hub
        .send_to_user(&user("alice"), &event("boom", json!(1)))
        .unwrap();
    assert_eq!(close_code(&mut client).await, Some(1011));
    tokio::time::timeout(Duration::from_secs(5), hub.idle())
        .await
        .expect("the connection did not end");
    assert!(!hub.is_online(&user("alice")));
}

/// Pings used to bypass the inbound rate limit: a ping flood cost a pong
/// each, unlimited.
#[tokio::test]
async fn a_ping_flood_is_rate_limited_like_messages() {
    let hub = hub_with(|c| c.inbound_rate = Some(ws_lifecycle::limits::RateLimit::new(1.0, 5.0)));
    let (mut client, _handle) = ready(&hub, "alice").await;
    for _ in 0..20 {
        if client
            .send(Message::Ping(bytes::Bytes::new()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut client).await, Some(4429));
}

/// The crate never sent 1001: a shutdown for good and a drain for restart
/// were the same 1012.
#[tokio::test]
async fn a_shutdown_says_going_away_or_restart_as_asked() {
    for (kind, code) in [
        (ShutdownKind::GoingAway, 1001),
        (ShutdownKind::Restart, 1012),
    ] {
        let hub = Hub::new();
        let (mut client, _handle) = ready(&hub, "alice").await;
        let report = hub.shutdown_as(kind, Duration::from_secs(5)).await;
        assert_eq!(report.closed_cleanly, 1);
        assert_eq!(close_code(&mut client).await, Some(code), "{kind:?}");
    }
}

/// An offer of 10,000 subprotocols (67 KiB) used to be upgraded.
#[test]
fn an_oversized_subprotocol_offer_is_refused_with_400_before_any_token_is_parsed() {
    let many = (0..10_000)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let too_long = format!("jwt-auth, jwt.{}", "a".repeat(13 * 1024));
    let seventeen = (0..17)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for offer in [many, too_long, seventeen] {
        let error = HandshakeRequest::builder()
            .header("Sec-WebSocket-Protocol", offer.as_str())
            .build()
            .unwrap_err();
        assert_eq!(error.http_status(), 400, "{error}");
    }
    // What a browser sends still passes: the marker and an 8 KiB token.
    let browser = format!("jwt-auth, jwt.{}", "a".repeat(8 * 1024));
    let request = HandshakeRequest::builder()
        .header("Sec-WebSocket-Protocol", browser.as_str())
        .build()
        .unwrap();
    assert_eq!(request.subprotocols().len(), 2);
}

/// Takes no credentials from the handshake, only `{"type":"auth","token":"good"}`
/// as the first message.
struct FirstMessage;

impl ws_lifecycle::auth::Authenticator for FirstMessage {
    async fn authenticate(
        &self,
        _: &HandshakeRequest,
    ) -> Result<ws_lifecycle::auth::AuthOutcome, ws_lifecycle::auth::AuthFailure> {
        Err(ws_lifecycle::auth::AuthError::TokenMissing.into())
    }

    fn first_message_auth(&self) -> bool {
        true
    }

    async fn authenticate_message(
        &self,
        _: &HandshakeRequest,
        token: &str,
    ) -> Result<ws_lifecycle::auth::AuthOutcome, ws_lifecycle::auth::AuthFailure> {
        match token {
            "good" => Ok(ws_lifecycle::auth::AuthOutcome::new(user("alice"))),
            _ => Err(ws_lifecycle::auth::AuthError::SignatureInvalid.into()),
        }
    }
}

/// First-message authentication used to exist only on `Hub::serve_with_auth`,
/// outside admission control: sockets that never authenticated were held
/// with no cap. Through `decide` it is admitted like any upgrade, holds its
/// upgrade permit until the first message is decided, and is bounded by the
/// auth timeout.
#[tokio::test(start_paused = true)]
async fn first_message_auth_goes_through_admission_and_is_bounded() {
    let hub = hub_with(|c| {
        c.max_upgrades_in_flight = 2;
        c.auth_timeout = Duration::from_secs(15);
    });
    let request = upgrade_request();
    let admit = || async {
        match decide(&hub, "GET", &request, &FirstMessage).await {
            Decision::Upgrade(admitted) => Some(admitted),
            Decision::Refuse(r) => {
                assert_eq!((r.status, r.code), (503, "server_busy"));
                None
            }
            other => panic!("{other:?}"),
        }
    };
    let (quiet, good) = (admit().await.unwrap(), admit().await.unwrap());
    assert_eq!(good.subprotocol(), None);
    // Both unauthenticated sockets hold their upgrade permits.
    assert!(admit().await.is_none(), "a third in-band auth was admitted");

    // One authenticates with its first message and becomes Ready.
    let (transport, client) = memory::pair(16);
    let (tx, mut bound) = tokio::sync::mpsc::unbounded_channel();
    let served = tokio::spawn({
        let (hub, request) = (hub.clone(), request.clone());
        async move {
            let handler = Scripted {
                on_ready: OnReady::Signal(tx),
                ..Default::default()
            };
            good.serve(&hub, transport, &request, &FirstMessage, &handler)
                .await
        }
    });
    client
        .send_text(r#"{"type":"auth","token":"good"}"#)
        .await
        .unwrap();
    let handle = tokio::time::timeout(Duration::from_secs(5), bound.recv())
        .await
        .expect("the first-message authentication did not bind the user")
        .unwrap();
    assert_eq!(handle.user(), &user("alice"));
    // Its permit is back: another upgrade is admitted.
    let third = admit().await.expect("the permit was not given back");
    drop(third);

    // The silent one is closed at the auth timeout with 4408.
    let (transport, mut silent) = memory::pair(16);
    let quiet = tokio::spawn({
        let (hub, request) = (hub.clone(), request.clone());
        async move {
            let handler = Scripted::default();
            quiet
                .serve(&hub, transport, &request, &FirstMessage, &handler)
                .await
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut silent))
        .await
        .expect("the silent socket was not closed");
    assert_eq!(closed.1.map(|f| f.code.as_u16()), Some(4408));
    let report = quiet.await.unwrap();
    assert_eq!(report.user, None);
    served.abort();
}

/// Pings before the first message count against the inbound burst.
#[tokio::test]
async fn a_ping_flood_before_first_message_auth_is_cut_off() {
    let hub = hub_with(|c| c.inbound_rate = Some(ws_lifecycle::limits::RateLimit::new(1.0, 5.0)));
    let request = upgrade_request();
    let Decision::Upgrade(admitted) = decide(&hub, "GET", &request, &FirstMessage).await else {
        panic!("not admitted");
    };
    let (transport, mut client) = memory::pair(64);
    let served = tokio::spawn({
        let (hub, request) = (hub.clone(), request.clone());
        async move {
            let handler = Scripted::default();
            admitted
                .serve(&hub, transport, &request, &FirstMessage, &handler)
                .await
        }
    });
    for _ in 0..20 {
        if client
            .send(Message::Ping(bytes::Bytes::new()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(close_code(&mut client).await.is_some());
    let report = served.await.unwrap();
    assert_eq!(report.user, None, "never authenticated");
}
