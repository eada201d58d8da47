//! The demo chat and agent-run server on axum.
//!
//! Run with: `cargo run --example axum_chat --features axum`
//! then open <http://127.0.0.1:3000/> in two tabs.
//!
//! * `/` the demo page;
//! * `/demo-token?user=NAME` an HS256 demo token (EXAMPLE ONLY: anyone can
//!   mint one for any user; secret from `WS_LIFECYCLE_DEMO_SECRET`);
//! * `/ws` the WebSocket endpoint (`shared/bench-protocol.md`);
//! * `/metrics` the hub's metrics, Prometheus text.
//!
//! `--addr HOST:PORT` or `WS_LIFECYCLE_ADDR` changes where it listens.
//! Ctrl-C shuts down gracefully: clients are closed with 1012 (restart) in
//! batches, after their queued events, within 10 s.

#[path = "common/chat.rs"]
mod chat;
#[path = "common/server.rs"]
mod server;

#[path = "common/axum_app.rs"]
mod axum_app;

use std::time::Duration;

use ws_lifecycle::Hub;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let addr = server::listen_addr()?;
    let hub = Hub::new();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "ws-lifecycle axum_chat listening on http://{}/",
        listener.local_addr()?
    );

    let shutdown = {
        let hub = hub.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            let report = hub.shutdown(Duration::from_secs(10)).await;
            println!("shut down: {report:?}");
        }
    };
    axum::serve(listener, axum_app::router(hub, &server::demo_secret())?)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
