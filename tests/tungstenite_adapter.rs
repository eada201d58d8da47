//! The tokio-tungstenite adapter over real sockets on 127.0.0.1 (port 0),
//! serving the demo app, with tokio-tungstenite clients: the same upgrade
//! policy as the axum adapter, byte for byte where it matters.

#![cfg(all(feature = "tungstenite", feature = "jwt"))]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../examples/common/chat.rs"]
mod chat;
#[allow(dead_code)] // the listening helpers are the examples'
#[path = "../examples/common/server.rs"]
mod server;
mod support;
mod ws_client;

use std::sync::Arc;

use serde_json::json;
use support::tokens::b64url;
use tokio::io::AsyncWriteExt;
use ws_client::Outcome;
use ws_lifecycle::Hub;
use ws_lifecycle::adapters::tungstenite;
use ws_lifecycle::id::UserId;

const SECRET: &str = "tungstenite adapter test secret";

async fn start_with(hub: Hub) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(server::demo_authenticator(SECRET).unwrap());
    let app = Arc::new(chat::ChatApp::new(hub.clone()));
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let (hub, auth, app) = (hub.clone(), Arc::clone(&auth), Arc::clone(&app));
            tokio::spawn(async move {
                tungstenite::serve(stream, Some(peer), &hub, &*auth, &*app).await
            });
        }
    });
    addr
}

fn token(user: &str) -> String {
    server::demo_token(SECRET, &UserId::new(user).unwrap()).unwrap()
}

#[tokio::test]
async fn subprotocol_and_header_clients_reach_ready_and_run_an_agent() {
    let hub = Hub::new();
    let addr = start_with(hub.clone()).await;
    let raw = format!("jwt-auth, jwt.{}", token("alice"));
    let b64 = format!("jwt-auth, jwt.{}", b64url(token("alice").as_bytes()));
    let bearer = format!("Bearer {}", token("alice"));
    for (header, value, echoed) in [
        ("Sec-WebSocket-Protocol", raw.as_str(), Some("jwt-auth")),
        ("Sec-WebSocket-Protocol", b64.as_str(), Some("jwt-auth")),
        ("Authorization", bearer.as_str(), None),
    ] {
        let Outcome::Upgraded(mut c) = ws_client::connect(addr, &[(header, value)]).await else {
            panic!("{header} client not upgraded");
        };
        assert_eq!(c.protocol.as_deref(), echoed);
        let ready = c.client.next_json().await;
        assert_eq!(
            (ready["type"].as_str(), ready["user"].as_str()),
            (Some("ready"), Some("alice"))
        );
        c.client
            .send_json(json!({ "type": "agent_run", "prompt": "p" }))
            .await;
        for (seq, kind) in (2..).zip([
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed",
            "agent_completed",
        ]) {
            let frame = c.client.next_json().await;
            assert_eq!(
                (frame["type"].as_str(), frame["seq"].as_u64()),
                (Some(kind), Some(seq))
            );
        }
        c.client.close().await;
    }
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn refusals_match_the_axum_adapter() {
    let hub = Hub::new();
    let addr = start_with(hub.clone()).await;
    let forged = format!("Bearer {}x", token("alice"));
    let Outcome::Refused {
        status,
        www_authenticate,
        body,
    } = ws_client::connect(addr, &[("Authorization", &forged)]).await
    else {
        panic!("upgraded");
    };
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"signature_invalid"}"#)
    );
    assert_eq!(
        www_authenticate.as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );

    let offer = format!("jwt-auth, jwt.{}x", token("alice"));
    let Outcome::Upgraded(mut c) =
        ws_client::connect(addr, &[("Sec-WebSocket-Protocol", &offer)]).await
    else {
        panic!("not upgraded");
    };
    assert_eq!(c.protocol.as_deref(), Some("jwt-auth"));
    assert_eq!(
        c.client.next_close().await,
        Some((4401, "signature_invalid".to_owned()))
    );

    let offer = format!("jwt-auth, jwt.{}", token("alice"));
    for (request, status) in [
        (format!("POST /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"), 400),
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"), 426),
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"), 400),
        ("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_owned(), 401),
        (format!("GET /ws HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)), 431),
    ] {
        assert_eq!(ws_client::raw_status(addr, &request).await, status, "{}", &request[..40]);
    }
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(
        hub.metrics().auth_failures.get("signature_invalid"),
        Some(&2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_head_that_never_completes_times_out() {
    let hub = Hub::new();
    let (mut client, server) = tokio::io::duplex(1024);
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let auth = server::demo_authenticator(SECRET).unwrap();
    let app = chat::ChatApp::new(hub.clone());
    let outcome = tungstenite::serve(server, None, &hub, &auth, &app).await;
    assert!(
        matches!(outcome, Err(tungstenite::UpgradeError::Timeout)),
        "{outcome:?}"
    );
    assert_eq!(
        hub.metrics().connections.get("failed"),
        Some(&0),
        "no connection was minted"
    );
}
