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
//! Ctrl-C closes every connection with 1001 and exits once they are closed.

#[path = "common/chat.rs"]
mod chat;
#[path = "common/server.rs"]
mod server;

#[path = "common/axum_app.rs"]
mod axum_app;

use std::time::Duration;

use ws_lifecycle::Hub;
use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};

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
            let going_away = CloseFrame::new(
                CloseCode::GOING_AWAY,
                CloseReason::new("going_away").unwrap_or_else(|| unreachable!()),
            );
            let asked = hub.close_all(going_away);
            println!("closing {asked} connections");
            let _ = tokio::time::timeout(Duration::from_secs(5), hub.idle()).await;
        }
    };
    axum::serve(listener, axum_app::router(hub, &server::demo_secret())?)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
