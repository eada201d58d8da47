//! The axum adapter over real sockets on 127.0.0.1 (port 0), serving the
//! demo app exactly as `examples/axum_chat.rs` does (through
//! `adapters::axum::serve`), with tokio-tungstenite
//! clients: the shared adapter suite.

#![cfg(all(feature = "axum", feature = "tungstenite", feature = "jwt"))]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod adapter_cases;
#[path = "../examples/common/axum_app.rs"]
mod axum_app;
#[path = "../examples/common/chat.rs"]
mod chat;
#[allow(dead_code)] // the listening helpers are the examples'
#[path = "../examples/common/server.rs"]
mod server;
mod support;
mod ws_client;

use ws_lifecycle::Hub;

async fn start() -> (Hub, std::net::SocketAddr) {
    let _ = server::prometheus(); // before the hub, as the example's `main`
    let hub = adapter_cases::hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = axum_app::serve(
        listener,
        hub.clone(),
        adapter_cases::SECRET,
        "single node",
        std::future::pending(),
    );
    tokio::spawn(serving.unwrap());
    (hub, addr)
}

adapter_cases::adapter_suite!(start);

#[tokio::test]
async fn demo_routes_name_the_node_and_share_the_metrics() {
    let (hub, addr) = start().await;
    adapter_cases::demo_routes_name_the_node_and_share_the_metrics(hub, addr).await;
}

#[tokio::test]
async fn serving_stops_on_shutdown_and_leaves_upgraded_connections_to_the_hub() {
    let hub = adapter_cases::hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let serving = axum_app::serve(
        listener,
        hub.clone(),
        adapter_cases::SECRET,
        "single node",
        shutdown,
    );
    let serving = tokio::spawn(serving.unwrap());
    adapter_cases::serving_stops_on_shutdown_and_leaves_upgraded_connections_to_the_hub(
        hub, addr, stop, serving,
    )
    .await;
}
