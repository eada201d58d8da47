//! Regression tests for defects found in review, each named for the
//! behaviour it pins.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[cfg(feature = "jwt")]
#[allow(dead_code)] // only the demo secret's check is tested here
#[path = "../examples/common/server.rs"]
mod server;
mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use support::*;
use ws_lifecycle::Hub;
use ws_lifecycle::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use ws_lifecycle::close::{CloseCause, CloseCode};
use ws_lifecycle::id::{ConnectionId, ContextIds, IdGenerator, RequestId, RunId, ThreadId, UserId};
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::{Message, memory};

/// Dropping the serving future while `Ready::close` waits for the writer
/// must stop the writer too: nothing is written after the connection ended.
#[tokio::test(start_paused = true)]
async fn no_frame_is_written_after_a_dropped_connection_ended() {
    let hub = hub_with(|c| {
        c.write_timeout = Duration::from_secs(3600);
        c.close_timeout = Duration::from_secs(3600);
    });
    let alice = user("alice");
    let (transport, mut client) = memory::pair(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let server = tokio::spawn({
        let (hub, alice) = (hub.clone(), alice.clone());
        async move { hub.serve(transport, alice, &handler).await }
    });
    let handle = rx.recv().await.unwrap();
    handle.wait_ready(Duration::from_secs(5)).await.unwrap();
    for i in 0..3 {
        let _ = hub.send_to_user(&alice, &event("e", json!(i))).unwrap();
    }
    // Virtual time: the writer has one frame in the pipe and blocks on the
    // second; then the driver waits for it inside `Ready::close`.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(handle.close(frame(1000, "bye")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.abort();
    let _ = server.await;
    assert_eq!(handle.state(), ConnectionState::Failed);
    tokio::time::timeout(Duration::from_secs(1), hub.idle())
        .await
        .expect("idle resolves");
    let mut after = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), client.recv()).await {
        after.push(m);
    }
    assert!(
        after.len() <= 1,
        "the writer kept writing after the end: {after:?}"
    );
    assert_accounted(&hub.metrics());
}

/// A connection bound after `close_all` (it was mid-handshake) is closed
/// too, so `idle` is reached.
#[tokio::test(start_paused = true)]
async fn close_all_also_closes_connections_bound_after_it() {
    let hub = Hub::new();
    let alice = user("alice");
    let (transport, mut client) = memory::pair(8);
    let in_flight = hub.connect().accept(transport);
    assert_eq!(hub.close_all(frame(1001, "going_away")), 0);
    let conn = in_flight.authenticate(alice.clone().into()).await.unwrap();
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    tokio::time::timeout(Duration::from_secs(60), hub.idle())
        .await
        .expect("idle after close_all");
    assert_eq!(
        read_to_close(&mut client).await.1,
        Some(frame(1001, "going_away"))
    );
    assert_eq!(
        server.await.unwrap().cause,
        CloseCause::Requested(frame(1001, "going_away"))
    );
}

/// An id generator that repeats itself.
struct Repeats;

impl IdGenerator for Repeats {
    fn mint_connection_id(&self) -> ConnectionId {
        ConnectionId::from_custom("conn_1").unwrap()
    }
    fn mint_context(&self, _: &UserId) -> ContextIds {
        let thread = ThreadId::from_custom("thread_1").unwrap();
        let run = RunId::from_custom(&thread, "run_1").unwrap();
        ContextIds {
            thread,
            run,
            request: RequestId::from_custom("req_1").unwrap(),
        }
    }
}

/// A repeated connection id is refused (1011), never routed: one user's
/// event can never reach another through it, and the first connection's
/// entry survives.
#[tokio::test]
async fn a_repeated_connection_id_is_refused_and_never_crosses_users() {
    let hub = Hub::builder().id_generator(Repeats).build().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let (a, mut a_client) = bind(&hub, &alice, 8).await;
    let a_id = a.id().clone();
    let (transport, mut b_client) = memory::pair(8);
    let refused = hub
        .connect()
        .accept(transport)
        .authenticate(bob.clone().into())
        .await;
    let Err(report) = refused else {
        panic!("a duplicate id was admitted")
    };
    assert_eq!(report.state, ConnectionState::Closed);
    let (_, close) = read_to_close(&mut b_client).await;
    assert_eq!(
        close.map(|f| (f.code, f.reason.as_str().to_owned())),
        Some((
            CloseCode::INTERNAL_ERROR,
            "duplicate_connection_id".to_owned()
        ))
    );
    assert!(!hub.is_online(&bob));
    let _a = a.services_ready().ready();
    let seq = hub
        .send_to_connection(&a_id, event("for_alice", json!("secret")))
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(next_json(&mut a_client).await["type"], "for_alice");
    assert_eq!(hub.connection(&a_id).map(|h| h.user().clone()), Some(alice));
}

/// The next text frame, with no client-side timeout: time is paused and the
/// server's own deadlines are what these tests observe.
async fn recv_json(client: &mut memory::MemoryClient) -> serde_json::Value {
    loop {
        match client.recv().await {
            // Answered as a real client's WebSocket stack does.
            Some(Message::Ping(data)) => {
                let _ = client.send(Message::Pong(data)).await;
            }
            Some(Message::Text(text)) => return serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Admits anyone as alice with credentials that expire in two minutes,
/// and re-authenticates them with credentials that do not expire.
struct NoExpiryOnReauth;

impl Authenticator for NoExpiryOnReauth {
    async fn authenticate(&self, _: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        Ok(AuthOutcome::new(UserId::new("alice").unwrap())
            .with_expiry(SystemTime::now() + Duration::from_secs(120)))
    }

    async fn reauthenticate(
        &self,
        _: &HandshakeRequest,
        _: &str,
    ) -> Result<AuthOutcome, AuthFailure> {
        Ok(AuthOutcome::new(UserId::new("alice").unwrap()))
    }
}

/// Re-authenticating with credentials that do not expire cancels the
/// deadline: the connection outlives the old expiry.
#[tokio::test(start_paused = true)]
async fn reauth_without_expiry_cancels_the_deadline() {
    let hub = Hub::new();
    let alice = user("alice");
    let (transport, mut client) = memory::pair(16);
    let request = upgrade_request();
    let ws_lifecycle::upgrade::Decision::Upgrade(admitted) =
        ws_lifecycle::upgrade::decide(&hub, "GET", &request, &NoExpiryOnReauth).await
    else {
        panic!("not admitted");
    };
    let server = tokio::spawn({
        let hub = hub.clone();
        async move {
            let handler = Scripted::default();
            admitted
                .serve(&hub, transport, &request, &NoExpiryOnReauth, &handler)
                .await
        }
    });
    assert_eq!(recv_json(&mut client).await["type"], "reauth_required");
    client
        .send_text(r#"{"type":"reauth","token":"a.b.c"}"#)
        .await
        .unwrap();
    let ok = recv_json(&mut client).await;
    assert_eq!(
        (ok["type"].as_str(), ok["payload"]["expires_at"].is_null()),
        (Some("reauth_ok"), true)
    );
    tokio::time::advance(Duration::from_secs(3600)).await;
    let d = hub
        .send_to_user(&alice, &event("still.here", json!(1)))
        .unwrap();
    assert_eq!(d.queued, 1);
    assert_eq!(recv_json(&mut client).await["type"], "still.here");
    client.close(None).await;
    assert_eq!(server.await.unwrap().cause, CloseCause::PeerClosed(None));
}

/// A signed token with an `exp` past what `SystemTime` holds is refused,
/// not a panic.
#[cfg(feature = "jwt")]
#[tokio::test]
async fn an_exp_out_of_range_is_refused_not_a_panic() {
    use ws_lifecycle::auth::JwtAuthenticator;
    let auth = JwtAuthenticator::builder()
        .hs256(support::tokens::SECRET)
        .any_issuer()
        .any_audience()
        .build()
        .unwrap();
    let token = support::tokens::hs256(&json!({ "sub": "alice", "exp": u64::MAX }));
    let request = HandshakeRequest::builder()
        .header("Authorization", format!("Bearer {token}"))
        .build()
        .unwrap();
    let failure = auth.authenticate(&request).await.unwrap_err();
    assert_eq!(
        failure.error,
        AuthError::ClaimInvalid("exp is out of range")
    );
    assert!(auth.verify_token(&token).is_err());
}

/// `WsUpgrade`'s `Debug` never shows the offered subprotocols.
#[cfg(feature = "axum")]
#[tokio::test]
async fn the_axum_upgrade_debug_hides_the_subprotocol_token() {
    use axum::routing::any;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use ws_lifecycle::adapters::axum::WsUpgrade;
    let router =
        axum::Router::new().route("/ws", any(|u: WsUpgrade| async move { format!("{u:?}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Protocol: jwt-auth, jwt.SECRETHEADER.SECRETPAYLOAD.SECRETSIG\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    assert!(out.contains("WsUpgrade"), "the handler ran: {out}");
    assert!(
        !out.contains("SECRET"),
        "Debug of WsUpgrade shows the token:\n{out}"
    );
}

/// Never finishes.
struct Hangs;

impl Authenticator for Hangs {
    async fn authenticate(&self, _: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        std::future::pending().await
    }
}

/// The adapters' upgrade decision is bounded by `auth_timeout` (408).
#[tokio::test(start_paused = true)]
async fn the_upgrade_decision_is_bounded_by_the_auth_timeout() {
    let hub = Hub::new();
    let request = HandshakeRequest::builder()
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .build()
        .unwrap();
    let decided = ws_lifecycle::upgrade::decide(&hub, "GET", &request, &Hangs).await;
    let ws_lifecycle::upgrade::Decision::Refuse(refusal) = decided else {
        panic!("upgraded")
    };
    assert_eq!((refusal.status, refusal.code), (408, "auth_timeout"));
    assert_eq!(hub.metrics().auth_failures.get("auth_timeout"), Some(&1));
}

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output
/// (32 bytes for HS256, 48 for HS384, 64 for HS512). A shorter one is
/// refused when the authenticator is built, and when keys are replaced.
#[cfg(feature = "jwt")]
#[test]
fn hmac_keys_shorter_than_the_hash_output_are_refused() {
    use ws_lifecycle::auth::{JwtAlgorithm, JwtAuthenticator, JwtConfigError, JwtKey, JwtKeySet};
    let build = |algorithm: JwtAlgorithm, secret: &[u8]| {
        JwtAuthenticator::builder()
            .algorithms(&[algorithm])
            .keys(JwtKeySet::new().with_kid("k", JwtKey::hmac(secret)))
            .issuer("https://auth.example")
            .audience("ws")
            .build()
    };
    for (algorithm, min) in [
        (JwtAlgorithm::HS256, 32),
        (JwtAlgorithm::HS384, 48),
        (JwtAlgorithm::HS512, 64),
    ] {
        let short = vec![7u8; min - 1];
        let too_short = JwtConfigError::HmacKeyTooShort {
            algorithm: algorithm.name(),
            min,
            actual: min - 1,
        };
        assert_eq!(
            build(algorithm, &short).map(|_| ()),
            Err(too_short.clone()),
            "{algorithm:?} built with a {}-byte key",
            min - 1
        );
        let auth = build(algorithm, &vec![7u8; min]).unwrap();
        assert_eq!(
            auth.replace_keys(JwtKeySet::new().with_default(JwtKey::hmac(&short))),
            Err(too_short),
            "{algorithm:?} rotated to a {}-byte key",
            min - 1
        );
    }
    // The hs256 shorthand too, and the longest hash of a list decides.
    let shorthand = JwtAuthenticator::builder()
        .hs256("demo-secret")
        .issuer("https://auth.example")
        .audience("ws")
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        shorthand,
        JwtConfigError::HmacKeyTooShort {
            algorithm: "HS256",
            min: 32,
            actual: 11
        }
    );
    assert_eq!(
        shorthand.to_string(),
        "an HMAC key is 11 bytes, but HS256 needs at least 32 (RFC 7518 section 3.2): \
         use a random secret of 32 bytes or more"
    );
    let mixed = JwtAuthenticator::builder()
        .algorithms(&[JwtAlgorithm::HS256, JwtAlgorithm::HS512])
        .keys(JwtKeySet::new().with_default(JwtKey::hmac([7u8; 32])))
        .issuer("https://auth.example")
        .audience("ws")
        .build();
    assert_eq!(
        mixed.map(|_| ()),
        Err(JwtConfigError::HmacKeyTooShort {
            algorithm: "HS512",
            min: 64,
            actual: 32
        }),
        "a 32-byte key allowed for HS512"
    );
}

/// `iss` and `aud` are checked unless the embedder waived each one: a
/// token minted for another service of the same identity provider is not
/// accepted by default.
#[cfg(feature = "jwt")]
#[test]
fn issuer_and_audience_must_be_configured_or_explicitly_waived() {
    use ws_lifecycle::auth::{JwtAuthenticator, JwtConfigError};
    let secret = support::tokens::SECRET;
    let built = |b: ws_lifecycle::auth::JwtAuthenticatorBuilder| b.build().map(|_| ());
    let missing = |issuer, audience| Err(JwtConfigError::ClaimPolicyMissing { issuer, audience });
    let hs = || JwtAuthenticator::builder().hs256(secret);
    assert_eq!(built(hs()), missing(true, true));
    assert_eq!(
        built(hs().issuer("https://auth.example")),
        missing(false, true)
    );
    assert_eq!(built(hs().audience("ws")), missing(true, false));
    assert_eq!(built(hs().any_issuer()), missing(false, true));
    assert_eq!(built(hs().any_audience()), missing(true, false));
    // The message names both ways out, for each claim.
    let message = hs().build().map(|_| ()).unwrap_err().to_string();
    for option in ["issuer(", "any_issuer()", "audience(", "any_audience()"] {
        assert!(message.contains(option), "{option} missing from: {message}");
    }
    assert_eq!(
        built(
            hs().issuer("https://auth.example")
                .any_issuer()
                .any_audience()
        ),
        Err(JwtConfigError::ClaimPolicyConflict { claim: "issuer" })
    );
    assert_eq!(
        built(hs().any_issuer().audience("ws").any_audience()),
        Err(JwtConfigError::ClaimPolicyConflict { claim: "audience" })
    );

    // Configured: another service's token is refused; waived: accepted.
    let strict = hs()
        .issuer("https://auth.example")
        .audience("ws")
        .build()
        .unwrap();
    let waived = hs().any_issuer().any_audience().build().unwrap();
    let exp = support::tokens::now() + 3600;
    let ours = support::tokens::hs256(
        &json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example", "aud": "ws" }),
    );
    let billing = support::tokens::hs256(
        &json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example", "aud": "billing" }),
    );
    let bare = support::tokens::hs256(&json!({ "sub": "alice", "exp": exp }));
    assert!(strict.verify_token(&ours).is_ok());
    assert_eq!(
        strict.verify_token(&billing).map(|_| ()),
        Err(AuthError::ClaimInvalid("aud is not an accepted audience"))
    );
    assert_eq!(
        strict.verify_token(&bare).map(|_| ()).map_err(|e| e.code()),
        Err("claim_invalid")
    );
    for token in [&ours, &billing, &bare] {
        assert!(waived.verify_token(token).is_ok());
    }
}

/// The examples' default demo secret is long enough for HS256, and a
/// shorter `WS_LIFECYCLE_DEMO_SECRET` stops an example before it starts,
/// saying why.
#[cfg(feature = "jwt")]
#[test]
fn a_demo_secret_too_short_for_hs256_refuses_to_start_and_says_why() {
    assert!(server::DEMO_SECRET.len() >= 32);
    assert_eq!(
        server::checked_demo_secret(None).as_deref(),
        Ok(server::DEMO_SECRET)
    );
    let refused = server::checked_demo_secret(Some("demo-secret".into())).unwrap_err();
    for why in [
        "WS_LIFECYCLE_DEMO_SECRET",
        "11 bytes",
        "HS256",
        "at least 32",
    ] {
        assert!(refused.contains(why), "{why:?} missing from: {refused}");
    }
    let long = "x".repeat(32);
    assert_eq!(server::checked_demo_secret(Some(long.clone())), Ok(long));
}
