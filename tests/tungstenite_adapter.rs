//! The tokio-tungstenite adapter over real sockets on 127.0.0.1 (port 0),
//! serving the demo app: the shared adapter suite, plus the request-head
//! deadline this adapter enforces itself.

#![cfg(all(feature = "tungstenite", feature = "jwt"))]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod adapter_cases;
#[path = "../examples/common/chat.rs"]
mod chat;
#[allow(dead_code)] // the listening helpers are the examples'
#[path = "../examples/common/server.rs"]
mod server;
mod support;
mod ws_client;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use ws_lifecycle::Hub;
use ws_lifecycle::adapters::tungstenite;

async fn start() -> (Hub, std::net::SocketAddr) {
    let hub = adapter_cases::hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(server::demo_authenticator(adapter_cases::SECRET).unwrap());
    let app = Arc::new(chat::ChatApp::new(hub.clone()));
    let served = hub.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let (hub, auth, app) = (served.clone(), Arc::clone(&auth), Arc::clone(&app));
            tokio::spawn(async move {
                tungstenite::serve(stream, Some(peer), &hub, &*auth, &*app).await
            });
        }
    });
    (hub, addr)
}

adapter_cases::adapter_suite!(start);

#[tokio::test(start_paused = true)]
async fn a_request_head_that_never_completes_times_out() {
    let hub = Hub::new();
    let (mut client, server) = tokio::io::duplex(1024);
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let auth = server::demo_authenticator(adapter_cases::SECRET).unwrap();
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

#[tokio::test]
async fn a_request_head_over_16_kib_is_refused_with_431() {
    let (hub, addr) = start().await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(ws_client::raw_status(addr, &request).await, 431);
    assert_eq!(hub.connection_count(), 0);
}
