//! The demo chat and agent-run server on axum.
//!
//! Run with: `cargo run --example axum_chat --features axum`
//! then open <http://127.0.0.1:3000/> in two tabs.
//!
//! * `/` the demo page;
//! * `/demo-token?user=NAME` an HS256 demo token (EXAMPLE ONLY: anyone can
//!   mint one for any user; secret from `WS_LIFECYCLE_DEMO_SECRET`);
//! * `/ws` the WebSocket endpoint (`shared/bench-protocol.md`);
//! * `/metrics` the hub's metrics, Prometheus text, plus the routing
//!   table's connections and users and the runtime's alive tasks.
//!
//! `--addr HOST:PORT` or `WS_LIFECYCLE_ADDR` changes where it listens;
//! `WS_LIFECYCLE_INBOUND_RATE=0` turns the per-connection inbound rate
//! limit off (for load tests: `scripts/bench.sh`).
//! Ctrl-C shuts down gracefully: clients are closed with 1012 (restart) in
//! batches, after their queued events, within 10 s.

#[path = "common/chat.rs"]
mod chat;
#[path = "common/server.rs"]
mod server;

#[path = "common/axum_app.rs"]
mod axum_app;

use axum::serve::ListenerExt;
use ws_lifecycle::Hub;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    server::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let addr = server::listen_addr()?;
    let hub = Hub::builder().config(server::hub_config()?).build();
    let listener = server::listen(addr)?;
    println!(
        "ws-lifecycle axum_chat listening on http://{}/",
        listener.local_addr()?
    );

    let shutdown = server::shutdown_on_ctrl_c(hub.clone());
    // No Nagle: the hub batches frames itself, so delaying small writes
    // only adds latency (40 ms stalls against delayed ACKs).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, axum_app::router(hub, &server::demo_secret())?)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
