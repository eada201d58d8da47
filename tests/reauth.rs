//! Credentials on a live connection: `reauth_required` ahead of expiry,
//! in-band re-authentication for the same user only, close 4401 after the
//! grace; and first-message authentication under the auth deadline.

#![cfg(feature = "jwt")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;
#[cfg(all(feature = "axum", feature = "tungstenite"))]
mod ws_client;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::tokens::{self, hs256, now};
use support::{OnReady, Scripted, event, frame, user};
use tokio::sync::mpsc;
use ws_lifecycle::auth::{
    AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest, JwtAuthenticator,
    TokenSources,
};
use ws_lifecycle::close::{CloseCause, CloseFrame};
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::Message;
use ws_lifecycle::transport::memory::{self, MemoryClient};
use ws_lifecycle::{CloseReport, ConnectionHandle, Hub};

fn authenticator(first_message: bool) -> JwtAuthenticator {
    let mut sources = TokenSources::default();
    sources.first_message = first_message;
    JwtAuthenticator::builder()
        .hs256(tokens::SECRET)
        .any_issuer()
        .any_audience()
        .sources(sources)
        .build()
        .unwrap()
}

fn browser_request(token: &str) -> HandshakeRequest {
    HandshakeRequest::builder()
        .header("Sec-WebSocket-Protocol", format!("jwt-auth, jwt.{token}"))
        .build()
        .unwrap()
}

fn token(sub: &str, ttl: u64) -> String {
    hs256(&json!({ "sub": sub, "exp": now() + ttl }))
}

/// Serves one connection with `serve_with_auth`; returns the client, the
/// handle once Ready, and the server task.
async fn serve<A: Authenticator + 'static>(
    hub: &Hub,
    auth: A,
    request: HandshakeRequest,
) -> (
    MemoryClient,
    mpsc::UnboundedReceiver<ConnectionHandle>,
    tokio::task::JoinHandle<CloseReport>,
) {
    let (transport, client) = memory::pair(64);
    let (tx, ready) = mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let server = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.serve_with_auth(transport, &request, &auth, &handler)
                .await
        }
    });
    (client, ready, server)
}

/// The next message, without a client-side timeout (time is paused, and the
/// server's own deadlines are what the test observes).
/// Answers pings as a real client's WebSocket stack does.
async fn next(client: &mut MemoryClient) -> Result<Value, Option<CloseFrame>> {
    loop {
        match client.recv().await {
            Some(Message::Ping(data)) => {
                let _ = client.send(Message::Pong(data)).await;
            }
            Some(Message::Text(text)) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Message::Close(frame)) => return Err(frame),
            None => return Err(None),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn expiring_credentials_get_reauth_required_then_4401() {
    let hub = Hub::new();
    let alice = user("alice");
    let (mut client, mut ready, server) = serve(
        &hub,
        authenticator(false),
        browser_request(&token("alice", 90)),
    )
    .await;
    let handle = ready.recv().await.unwrap();
    assert_eq!(handle.user(), &alice);

    let warning = next(&mut client).await.unwrap();
    assert_eq!(warning["type"], "reauth_required");
    let expires_at = warning["payload"]["expires_at"].as_u64().unwrap();
    assert!(expires_at >= now() + 80 && expires_at <= now() + 90);

    assert_eq!(
        next(&mut client).await,
        Err(Some(frame(4401, "token_expired")))
    );
    let report = server.await.unwrap();
    assert_eq!(report.state, ConnectionState::Failed);
    assert!(matches!(report.cause, CloseCause::AuthFailed(_)));
    assert!(!hub.is_online(&alice));
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_valid_reauth_for_the_same_user_extends_the_connection() {
    let hub = Hub::new();
    let alice = user("alice");
    let auth = authenticator(false);
    // The adapters' path: decided (and authenticated) before the upgrade,
    // then `Admitted::serve`.
    let request = HandshakeRequest::builder()
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header(
            "Sec-WebSocket-Protocol",
            format!("jwt-auth, jwt.{}", token("alice", 90)),
        )
        .build()
        .unwrap();
    let ws_lifecycle::upgrade::Decision::Upgrade(admitted) =
        ws_lifecycle::upgrade::decide(&hub, "GET", &request, &auth).await
    else {
        panic!("not admitted");
    };
    assert_eq!(admitted.subprotocol(), Some("jwt-auth"));
    let (transport, mut client) = memory::pair(64);
    let server = tokio::spawn({
        let hub = hub.clone();
        async move {
            let handler = Scripted::default();
            admitted
                .serve(&hub, transport, &request, &auth, &handler)
                .await
        }
    });

    assert_eq!(next(&mut client).await.unwrap()["type"], "reauth_required");
    let fresh = token("alice", 7200);
    let reauth = json!({ "type": "reauth", "token": fresh }).to_string();
    client.send_text(reauth).await.unwrap();
    let ok = next(&mut client).await.unwrap();
    assert_eq!(ok["type"], "reauth_ok");
    assert!(ok["payload"]["expires_at"].as_u64().unwrap() >= now() + 7000);

    // Well past the first token's expiry and grace: still served.
    tokio::time::advance(std::time::Duration::from_secs(600)).await;
    let delivery = hub
        .send_to_user(&alice, &event("still.here", json!(1)))
        .unwrap();
    assert_eq!(delivery.queued, 1);
    assert_eq!(next(&mut client).await.unwrap()["type"], "still.here");

    client.close(None).await;
    let report = server.await.unwrap();
    assert_eq!(report.cause, CloseCause::PeerClosed(None));
}

#[tokio::test(start_paused = true)]
async fn a_reauth_for_another_user_closes_with_4403_and_never_rebinds() {
    let hub = Hub::new();
    let (alice, mallory) = (user("alice"), user("mallory"));
    let (mut client, mut ready, server) = serve(
        &hub,
        authenticator(false),
        browser_request(&token("alice", 3600)),
    )
    .await;
    let _handle = ready.recv().await.unwrap();
    let reauth = json!({ "type": "reauth", "token": token("mallory", 3600) }).to_string();
    client.send_text(reauth).await.unwrap();
    assert_eq!(
        next(&mut client).await,
        Err(Some(frame(4403, "user_mismatch")))
    );
    let report = server.await.unwrap();
    assert_eq!(report.user, Some(alice.clone()));
    assert!(!hub.is_online(&mallory));
    assert!(!hub.is_online(&alice));
    assert_eq!(hub.metrics().auth_failures.get("user_mismatch"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_reauth_is_refused_and_the_deadline_stands() {
    let hub = Hub::new();
    let (mut client, mut ready, server) = serve(
        &hub,
        authenticator(false),
        browser_request(&token("alice", 90)),
    )
    .await;
    let _handle = ready.recv().await.unwrap();
    let forged = {
        let valid = token("alice", 7200);
        let (head, _) = valid.rsplit_once('.').unwrap();
        format!("{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    };
    let reauth = json!({ "type": "reauth", "token": forged }).to_string();
    client.send_text(reauth).await.unwrap();
    let refused = next(&mut client).await.unwrap();
    assert_eq!(refused["type"], "reauth_failed");
    assert_eq!(refused["payload"]["code"], "signature_invalid");
    assert_eq!(next(&mut client).await.unwrap()["type"], "reauth_required");
    assert_eq!(
        next(&mut client).await,
        Err(Some(frame(4401, "token_expired")))
    );
    assert_eq!(server.await.unwrap().state, ConnectionState::Failed);
}

#[tokio::test(start_paused = true)]
async fn first_message_auth_binds_only_after_the_token_verifies() {
    let hub = Hub::new();
    let alice = user("alice");
    let request = HandshakeRequest::builder().build().unwrap();
    let (client, mut ready, server) = serve(&hub, authenticator(true), request).await;
    // Upgraded, not authenticated: not routable, nothing buffered for it.
    assert_eq!(hub.connection_count(), 0);
    let refused = hub.send_to_user(&alice, &event("early", json!(1))).unwrap();
    assert!(refused.is_miss());

    let auth = json!({ "type": "auth", "token": token("alice", 3600) }).to_string();
    client.send_text(auth).await.unwrap();
    let handle = ready.recv().await.unwrap();
    assert_eq!(handle.user(), &alice);
    assert!(hub.is_online(&alice));
    assert!(handle.close(frame(1000, "done")));
    assert_eq!(server.await.unwrap().state, ConnectionState::Closed);
}

#[tokio::test(start_paused = true)]
async fn first_message_auth_times_out_with_4408() {
    let hub = Hub::new();
    let request = HandshakeRequest::builder().build().unwrap();
    let (mut client, _ready, server) = serve(&hub, authenticator(true), request).await;
    assert_eq!(
        next(&mut client).await,
        Err(Some(frame(4408, "auth_timeout")))
    );
    let report = server.await.unwrap();
    assert_eq!((report.state, report.user), (ConnectionState::Failed, None));
    assert_eq!(hub.metrics().auth_failures.get("auth_timeout"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn a_first_message_that_is_not_auth_closes_with_4400() {
    let hub = Hub::new();
    let request = HandshakeRequest::builder().build().unwrap();
    let (mut client, _ready, server) = serve(&hub, authenticator(true), request).await;
    client
        .send_text(r#"{"type":"publish","to":"bob"}"#)
        .await
        .unwrap();
    assert_eq!(
        next(&mut client).await,
        Err(Some(frame(4400, "protocol_invalid")))
    );
    assert_eq!(server.await.unwrap().user, None);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn first_message_auth_is_off_by_default() {
    let hub = Hub::new();
    let request = HandshakeRequest::builder().build().unwrap();
    let (mut client, _ready, server) = serve(&hub, authenticator(false), request).await;
    assert_eq!(
        next(&mut client).await,
        Err(Some(frame(4401, "token_missing")))
    );
    assert_eq!(server.await.unwrap().state, ConnectionState::Failed);
}

/// What an application puts around the JWT authenticator: a ban list,
/// checked on every decision it makes.
#[derive(Clone)]
struct Banning {
    jwt: JwtAuthenticator,
    banned: Arc<Mutex<HashSet<String>>>,
}

impl Banning {
    fn new(jwt: JwtAuthenticator) -> Self {
        Banning {
            jwt,
            banned: Arc::default(),
        }
    }

    fn ban(&self, user: &str) {
        self.banned.lock().unwrap().insert(user.to_owned());
    }
}

impl Authenticator for Banning {
    async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        let outcome = self.jwt.authenticate(request).await?;
        if self.banned.lock().unwrap().contains(outcome.user.as_str()) {
            return Err(AuthFailure::after_upgrade(
                AuthError::Forbidden,
                outcome.selected_subprotocol,
            ));
        }
        Ok(outcome)
    }
}

/// A user banned after admission cannot keep the connection alive with
/// fresh tokens: the in-band re-authentication goes through the
/// authenticator the connection was admitted with (the ban list included),
/// and its `forbidden` closes the connection with 4403.
#[tokio::test(start_paused = true)]
async fn a_reauth_goes_through_the_admitting_authenticator_and_a_ban_closes_with_4403() {
    let hub = Hub::new();
    let alice = user("alice");
    let banning = Banning::new(authenticator(false));
    let (mut client, mut ready, server) = serve(
        &hub,
        banning.clone(),
        browser_request(&token("alice", 3600)),
    )
    .await;
    let handle = ready.recv().await.unwrap();
    assert_eq!(handle.user(), &alice);

    banning.ban("alice");
    let reauth = json!({ "type": "reauth", "token": token("alice", 7200) }).to_string();
    client.send_text(reauth).await.unwrap();
    assert_eq!(next(&mut client).await, Err(Some(frame(4403, "forbidden"))));
    let report = server.await.unwrap();
    assert_eq!(report.user, Some(alice.clone()));
    assert!(matches!(report.cause, CloseCause::AuthFailed(_)));
    assert!(!hub.is_online(&alice));
    assert_eq!(hub.metrics().auth_failures.get("forbidden"), Some(&1));
}

/// The same through the axum adapter, whose connections run in tasks of
/// their own: the connection keeps the admitting authenticator, the ban
/// list included.
#[cfg(all(feature = "axum", feature = "tungstenite"))]
#[tokio::test]
async fn the_axum_adapter_reauthenticates_through_the_admitting_authenticator() {
    use axum::routing::any;
    use ws_lifecycle::adapters::axum::WsUpgrade;

    let hub = Hub::new();
    let banning = Banning::new(authenticator(false));
    let router = axum::Router::new().route(
        "/ws",
        any({
            let (hub, banning) = (hub.clone(), banning.clone());
            move |upgrade: WsUpgrade| async move {
                let handler = std::sync::Arc::new(Scripted::default());
                upgrade.serve(&hub, &banning, handler).await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let offer = format!("jwt-auth, jwt.{}", token("alice", 3600));
    let ws_client::Outcome::Upgraded(mut connected) =
        ws_client::connect(addr, &[("Sec-WebSocket-Protocol", &offer)]).await
    else {
        panic!("not upgraded");
    };
    let reauth = || json!({ "type": "reauth", "token": token("alice", 7200) });
    connected.client.send_json(reauth()).await;
    assert_eq!(connected.client.next_json().await["type"], "reauth_ok");

    banning.ban("alice");
    connected.client.send_json(reauth()).await;
    assert_eq!(
        connected.client.next_close().await,
        Some((4403, "forbidden".to_owned()))
    );
    assert_eq!(hub.metrics().auth_failures.get("forbidden"), Some(&1));
}
